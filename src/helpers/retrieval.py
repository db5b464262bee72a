"""A small document index over sentence embeddings: add documents, search the top k.

This is the retrieval half of retrieval-augmented generation (RAG) in notebook 04:
documents are embedded once with all-MiniLM-L6-v2 (:mod:`helpers.embeddings`), a
question is embedded at search time, and the documents with the highest cosine
similarity come back with their scores. Adding a document makes it searchable at once,
with no training: that is why RAG picks up new knowledge in seconds.

The index is a plain matrix of unit vectors searched exhaustively, which is exact and
fast for thousands of documents; a vector database (FAISS, Chroma...) does the same job
for millions. :func:`rag_messages` puts the retrieved passages into the chat prompt.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from helpers import embeddings

INDEX_FILE = "index.json"  # ids, texts and the embedding model's name
VECTORS_FILE = "vectors.npy"  # one unit vector per document, in the same order
RAG_INSTRUCTION = "Use the reference notes below if they help to answer the question."


class Hit(NamedTuple):
    """One search result: the document's id and text, and its cosine similarity to the query."""

    id: int | str
    text: str
    score: float


def _check_texts(texts, name: str = "texts") -> list[str]:
    """Return ``texts`` as a list of non-empty strings, or raise an error naming the bad item."""
    if isinstance(texts, str) or not hasattr(texts, "__iter__"):
        raise TypeError(f"{name} must be a list of strings, got {type(texts).__name__}")
    texts = list(texts)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{name}[{index}] must be a string, got {type(text).__name__}")
        if not text.strip():
            raise ValueError(f"{name}[{index}] is empty or only whitespace")
    return texts


class Index:
    """Documents and their embeddings; ``search`` returns the ``k`` most similar documents."""

    def __init__(self, texts=(), ids=None):
        self.ids: list[int | str] = []
        self.texts: list[str] = []
        self.vectors = np.zeros((0, embeddings.DIM), dtype=np.float32)
        self.add(texts, ids)

    def __len__(self) -> int:
        return len(self.texts)

    def add(self, texts, ids=None) -> list[int | str]:
        """Embed and add documents (ids default to their positions); return their ids."""
        texts = _check_texts(texts)
        if ids is None:
            ids = list(range(len(self), len(self) + len(texts)))
        ids = list(ids)
        if len(ids) != len(texts):
            raise ValueError(f"got {len(ids)} ids for {len(texts)} texts")
        taken = set(self.ids)
        for id_ in ids:
            if id_ in taken:
                raise ValueError(f"document id {id_!r} is already in the index")
            taken.add(id_)
        if texts:
            self.vectors = np.concatenate([self.vectors, embeddings.encode(texts)])
            self.ids += ids
            self.texts += texts
        return ids

    def search(self, query: str, k: int = 3) -> list[Hit]:
        """Return up to ``k`` documents most similar to ``query``, best first."""
        if not isinstance(query, str) or not query.strip():
            raise ValueError(f"query must be a non-empty string, got {query!r}")
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a whole number of at least 1, got {k!r}")
        if not self.texts:
            return []
        scores = self.vectors @ embeddings.encode(query)  # unit vectors: dot product = cosine
        best = np.argsort(-scores, kind="stable")[:k]
        return [Hit(self.ids[i], self.texts[i], float(scores[i])) for i in best]

    def save(self, folder: str | Path) -> Path:
        """Write the index to ``folder`` (``index.json`` and ``vectors.npy``); return the folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"model": embeddings.MODEL_NAME, "ids": self.ids, "texts": self.texts}
        (folder / INDEX_FILE).write_text(json.dumps(meta, ensure_ascii=False, indent=1) + "\n")
        np.save(folder / VECTORS_FILE, self.vectors)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Index:
        """Read an index written by :meth:`save`, without embedding anything again."""
        folder = Path(folder)
        meta_path, vectors_path = folder / INDEX_FILE, folder / VECTORS_FILE
        for path in (meta_path, vectors_path):
            if not path.is_file():
                raise FileNotFoundError(f"{path}: missing; save the index with Index.save first")
        meta = json.loads(meta_path.read_text())
        for key in ("model", "ids", "texts"):
            if key not in meta:
                raise ValueError(f"{meta_path}: no {key!r} field")
        if meta["model"] != embeddings.MODEL_NAME:
            raise ValueError(
                f"{meta_path}: embedded with {meta['model']!r}, but this course embeds with "
                f"{embeddings.MODEL_NAME!r}; rebuild the index"
            )
        vectors = np.load(vectors_path)
        rows = len(meta["texts"])
        if len(meta["ids"]) != rows or vectors.shape != (rows, embeddings.DIM):
            raise ValueError(
                f"{folder}: {len(meta['ids'])} ids and {rows} texts do not match the vectors "
                f"of shape {vectors.shape}"
            )
        index = cls()
        index.ids, index.texts = list(meta["ids"]), list(meta["texts"])
        index.vectors = vectors.astype(np.float32)
        return index


def rag_messages(question: str, hits: list[Hit], system: str | None = None) -> list[dict]:
    """Return the chat messages that ask ``question`` with the retrieved passages in the prompt.

    The passages are numbered in the user message, before the question, so the answer
    can be traced back to them; ``system`` (optional) is kept as the system message.
    """
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"question must be a non-empty string, got {question!r}")
    notes = "\n".join(f"[{number}] {hit.text}" for number, hit in enumerate(hits, start=1))
    content = f"{RAG_INSTRUCTION}\n\n{notes}\n\nQuestion: {question}" if hits else question
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": content}]
