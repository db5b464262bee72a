"""The offline sentence-embedding model: shapes, unit length, meaning, determinism, errors."""

import numpy as np
import pytest

from helpers import embeddings

PRESSURE = "How can I lower my blood pressure?"
PARAPHRASE = "What are ways to reduce high blood pressure?"
UNRELATED = "What is the capital of France?"


def test_shapes_and_dtype():
    batch = embeddings.encode([PRESSURE, UNRELATED])
    assert batch.shape == (2, embeddings.DIM) and batch.dtype == np.float32
    assert embeddings.encode(PRESSURE).shape == (embeddings.DIM,)
    assert embeddings.encode([]).shape == (0, embeddings.DIM)


def test_rows_are_unit_length():
    batch = embeddings.encode([PRESSURE, "a", "word " * 400])  # the last one is truncated
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)


def test_paraphrase_is_closer_than_an_unrelated_sentence():
    a, b, c = embeddings.encode([PRESSURE, PARAPHRASE, UNRELATED])
    # measured: about 0.91 for the paraphrase and 0.05 for the unrelated question
    assert embeddings.cosine(a, b) > 0.7
    assert embeddings.cosine(a, c) < 0.3


def test_deterministic_and_independent_of_batching():
    texts = [PRESSURE, PARAPHRASE, UNRELATED]
    first, second = embeddings.encode(texts), embeddings.encode(texts)
    np.testing.assert_array_equal(first, second)
    one_by_one = np.stack([embeddings.encode(t) for t in texts])
    np.testing.assert_allclose(embeddings.encode(texts, batch_size=2), one_by_one, atol=1e-5)


def test_load_is_cached():
    assert embeddings.load() is embeddings.load()


def test_cosine_of_vectors_and_matrices():
    assert embeddings.cosine([3.0, 4.0], [6.0, 8.0]) == pytest.approx(1.0)
    assert embeddings.cosine([1.0, 0.0], [0.0, 2.0]) == pytest.approx(0.0)
    matrix = embeddings.cosine(np.eye(3), np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]))
    np.testing.assert_allclose(matrix, [[1, 0], [0, 0], [0, -1]], atol=1e-7)


def test_cosine_rejects_zero_and_mismatched_vectors():
    with pytest.raises(ValueError, match="zero vector"):
        embeddings.cosine([0.0, 0.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="differ in length"):
        embeddings.cosine([1.0, 0.0], [1.0, 0.0, 0.0])


def test_bad_texts_are_named():
    with pytest.raises(TypeError, match=r"texts\[1\] must be a string"):
        embeddings.encode(["ok", 3])
    with pytest.raises(TypeError, match="texts must be"):
        embeddings.encode(42)
    with pytest.raises(ValueError, match="batch_size"):
        embeddings.encode(["ok"], batch_size=0)
