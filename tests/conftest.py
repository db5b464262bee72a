"""Shared fixtures: the real embedded model (loaded once per session) and the tiny test model."""

import pytest

from helpers import models


@pytest.fixture(scope="session")
def embedded():
    """The real embedded SmolLM2-135M-Instruct as ``(model, tokenizer)`` on the CPU."""
    return models.load_base_model(models.EMBEDDED_MODEL, device="cpu")


@pytest.fixture(scope="session")
def tokenizer(embedded):
    """The embedded model's tokenizer."""
    return embedded[1]


@pytest.fixture
def tiny():
    """A fresh tiny random Llama with the embedded tokenizer, as ``(model, tokenizer)``."""
    return models.tiny_model(seed=0)
