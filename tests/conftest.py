"""Shared fixtures: the real embedded model (loaded once per session), its tokenizer, a tiny model.

Every test that uses the ``embedded`` fixture loads the real 135M model, so it is marked
``slow`` here, once: ``pytest -m "not slow"`` then skips it without each file saying so.
"""

import gc
import os

import pytest
import torch

from helpers import models


def pytest_configure(config):
    """Under pytest-xdist (make unit runs two workers), share the cores between the workers.

    Each worker would otherwise start one torch thread per core, and two workers on two cores
    would oversubscribe them (torch's threads spin while they wait for each other); the
    processes the tests start (kernels, servers) inherit the share through OMP_NUM_THREADS.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)  # the kernels and servers tests start


def pytest_collection_finish(session):
    """Keep the objects of the libraries collection imported out of every garbage collection.

    Each training run collects garbage twice (``helpers.models.release_memory`` and
    accelerate, at each Trainer's start); walking the millions of objects that torch and
    Transformers leave took about 0.4 s each time. ``gc.freeze`` moves them to a generation
    that is never walked; what the tests create is collected as before.
    """
    gc.collect()
    gc.freeze()


def pytest_collection_modifyitems(config, items):
    """Mark every test that uses the real embedded model (directly or through a fixture) slow."""
    for item in items:
        if "embedded" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def embedded():
    """The real embedded SmolLM2-135M-Instruct as ``(model, tokenizer)`` on the CPU."""
    return models.load_base_model(models.EMBEDDED_MODEL, device="cpu")


@pytest.fixture(scope="session")
def tokenizer():
    """The embedded model's tokenizer alone (fast: the model is not loaded)."""
    return models.load_tokenizer()


@pytest.fixture
def tiny():
    """A fresh tiny random Llama with the embedded tokenizer, as ``(model, tokenizer)``."""
    return models.tiny_model(seed=0)


@pytest.fixture
def attentive_tiny(tiny):
    """The tiny model with sharp, strong attention: a pad it attends to changes its tokens.

    At its initial scale it answers blank lines whatever it attends to. Scaled like this,
    right padding or a missing attention mask change its greedy answers to test_evaluate's
    CONVERSATIONS, while the smallest gap between its two likeliest tokens (0.009) is
    thousands of times what batching changes in the logits (2e-6).
    """
    model, tokenizer = tiny
    with torch.no_grad():
        for layer in model.model.layers:
            for projection, scale in (
                ("q_proj", 16),
                ("k_proj", 16),
                ("v_proj", 10),
                ("o_proj", 10),
            ):
                getattr(layer.self_attn, projection).weight.mul_(scale)
    return model.eval(), tokenizer
