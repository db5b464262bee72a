"""The document index: shapes, nearest documents for paraphrases, add, persistence, prompts."""

import json

import numpy as np
import pytest

from helpers import embeddings
from helpers.retrieval import Hit, Index, rag_messages

DOCS = {
    "pressure": "To lower blood pressure, cut down on salt, stay active and keep a healthy weight.",
    "sleep": "A regular bedtime and a dark, quiet bedroom help you fall asleep.",
    "burn": "Cool a minor burn under running water for twenty minutes.",
    "flu": "A yearly flu vaccine protects you against seasonal influenza.",
}
# Paraphrased questions (no sentence shared with their document) and the document they need.
PARAPHRASES = {
    "What are ways to reduce high blood pressure?": "pressure",
    "I can't fall asleep at night, any tips?": "sleep",
    "What should I do after burning my hand on the stove?": "burn",
    "Should adults get a flu shot every year?": "flu",
}
NEW_DOC = "RSV vaccine: a single dose is recommended for all adults aged 75 and older."
NEW_QUESTION = "Who should get the RSV vaccine?"


@pytest.fixture(scope="module")
def index():
    return Index(list(DOCS.values()), ids=list(DOCS))


def test_shapes_and_order(index):
    assert len(index) == 4 and index.vectors.shape == (4, embeddings.DIM)
    hits = index.search("blood pressure", k=3)
    assert len(hits) == 3 and all(isinstance(hit, Hit) for hit in hits)
    hit_id, text, score = hits[0]  # a hit unpacks as (id, text, score)
    assert text == DOCS[hit_id] and isinstance(score, float)
    scores = [hit.score for hit in hits]
    assert scores == sorted(scores, reverse=True) and all(-1.0 <= s <= 1.0 for s in scores)
    assert len(index.search("blood pressure", k=10)) == 4  # k larger than the index: all of it
    assert Index().search("anything") == []


@pytest.mark.parametrize("question", PARAPHRASES)
def test_paraphrase_finds_its_document_with_a_margin(index, question):
    first, second = index.search(question, k=2)
    assert first.id == PARAPHRASES[question]
    # measured: margins between 0.32 and 0.62 for these four questions
    assert first.score - second.score > 0.2


def test_add_makes_a_new_document_retrievable():
    index = Index(list(DOCS.values()))
    assert index.search(NEW_QUESTION, k=1)[0].text != NEW_DOC
    assert index.add([NEW_DOC]) == [4]  # default ids continue from the positions
    first, second = index.search(NEW_QUESTION, k=2)
    assert (first.id, first.text) == (4, NEW_DOC)
    assert first.score - second.score > 0.2  # measured: 0.71 against 0.36 (the flu vaccine)


def test_save_and_load_round_trip(index, tmp_path, monkeypatch):
    index.save(tmp_path / "ix")

    def refuse(*args, **kwargs):
        raise AssertionError("Index.load must not embed the documents again")

    monkeypatch.setattr(embeddings, "encode", refuse)
    loaded = Index.load(tmp_path / "ix")
    monkeypatch.undo()
    assert loaded.ids == index.ids and loaded.texts == index.texts
    np.testing.assert_array_equal(loaded.vectors, index.vectors)
    assert loaded.search("flu shot", k=2) == index.search("flu shot", k=2)


def test_load_names_what_is_wrong(index, tmp_path):
    with pytest.raises(FileNotFoundError, match="index.json"):
        Index.load(tmp_path / "nothing")
    folder = index.save(tmp_path / "ix")
    meta = json.loads((folder / "index.json").read_text())
    (folder / "index.json").write_text(json.dumps({**meta, "model": "another-model"}))
    with pytest.raises(ValueError, match="another-model"):
        Index.load(folder)
    (folder / "index.json").write_text(json.dumps({**meta, "texts": meta["texts"][:2]}))
    with pytest.raises(ValueError, match="do not match the vectors"):
        Index.load(folder)
    (folder / "index.json").write_text(json.dumps({"model": meta["model"], "ids": []}))
    with pytest.raises(ValueError, match="no 'texts' field"):
        Index.load(folder)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="already in the index"):
        Index(["a cold", "the flu"], ids=["x", "x"])
    with pytest.raises(ValueError, match="2 ids for 1 texts"):
        Index(["a cold"], ids=["x", "y"])
    with pytest.raises(TypeError, match=r"texts\[1\] must be a string"):
        Index(["a cold", None])
    with pytest.raises(ValueError, match=r"texts\[0\] is empty"):
        Index(["  "])
    with pytest.raises(TypeError, match="list of strings"):
        Index("one string")
    index = Index(["a cold"])
    with pytest.raises(ValueError, match="k must be"):
        index.search("cold", k=0)
    with pytest.raises(ValueError, match="query must be"):
        index.search("")


def test_rag_messages_put_the_passages_before_the_question():
    hits = [Hit("a", "First passage.", 0.9), Hit("b", "Second passage.", 0.5)]
    messages = rag_messages("Why?", hits, system="You are careful.")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == "You are careful."
    user = messages[1]["content"]
    assert user.index("[1] First passage.") < user.index("[2] Second passage.")
    assert user.endswith("Question: Why?")
    assert rag_messages("Why?", []) == [{"role": "user", "content": "Why?"}]
    with pytest.raises(ValueError, match="question must be"):
        rag_messages(" ", hits)
