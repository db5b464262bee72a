"""Content as a list of text parts (OpenAI accepts it): validated, counted and cleaned as text."""

import copy
import json

from helpers import data


def text(*texts) -> list[dict]:
    """Return content as text parts."""
    return [{"type": "text", "text": t} for t in texts]


PARTS = {
    "messages": [
        {"role": "system", "content": text("You are the assistant", "for XYZ Corp.")},
        {"role": "user", "content": text("How do I return a product?")},
        {"role": "assistant", "content": text("Hello! Use the prepaid label.", "Contact us.")},
    ]
}
JOINED = {
    "messages": [
        {"role": "system", "content": "You are the assistant\nfor XYZ Corp."},
        {"role": "user", "content": "How do I return a product?"},
        {"role": "assistant", "content": "Hello! Use the prepaid label.\nContact us."},
    ]
}


def test_text_parts_are_valid_on_every_role():
    report = data.validate([PARTS])
    assert report.problems == [] and report.examples == [PARTS]


def test_unsupported_parts_say_what_is_not_supported_and_where(tmp_path):
    user = {"role": "user", "content": "Look:"}
    reply = {"role": "assistant", "content": "Hello!"}
    kinds = {
        "image_url": "images are not supported",
        "input_audio": "audio is not supported",
        "file": "files are not supported",
    }
    lines = [
        json.dumps({"messages": [{"role": "user", "content": [*text("x"), {"type": kind}]}, reply]})
        for kind in kinds
    ]
    path = tmp_path / "parts.jsonl"
    path.write_text("\n".join([json.dumps(PARTS), *lines, json.dumps({"messages": [user, reply]})]))
    report = data.validate(path)
    assert [(p.line, p.code) for p in report.problems] == [
        (2, "unsupported_content_part"),
        (3, "unsupported_content_part"),
        (4, "unsupported_content_part"),
    ]
    for problem, (kind, words) in zip(report.problems, kinds.items(), strict=True):
        assert problem.message.startswith("messages[0] (user): content[1] is ")
        assert f'(type "{kind}")' in problem.message and words in problem.message
    assert report.lines == [1, 5]


def test_malformed_parts_never_crash_the_validator():
    weird = [None, 1, "x", [], {}, {"type": None}, {"type": {}}, {"type": "text", "text": None}]
    examples = [
        {"messages": [{"role": "user", "content": [part]}, {"role": "assistant", "content": "A"}]}
        for part in weird
    ]
    report = data.validate([*examples, PARTS])
    assert {p.code for p in report.problems} == {"invalid_content_part"}
    assert report.lines == [len(weird) + 1]


def test_content_text_joins_text_parts_and_refuses_anything_else():
    assert data.content_text(text("a", "b")) == "a" + data.TEXT_PART_SEPARATOR + "b" == "a\nb"
    assert data.content_text("as is ") == "as is "
    assert data.content_text([*text("a"), {"type": "image_url"}]) is None
    assert data.plain_messages(PARTS["messages"]) == JOINED["messages"]


def test_openai_counts_and_template_counts_use_the_joined_text(tokenizer):
    assert data.count_openai_tokens(PARTS["messages"]) == data.count_openai_tokens(
        JOINED["messages"]
    )
    parts, joined = (data.token_stats([e], tokenizer) for e in (PARTS, JOINED))
    assert parts["openai"]["counts"] == joined["openai"]["counts"]
    assert parts["tokenizer"]["counts"] == joined["tokenizer"]["counts"]
    assert data.estimate_cost([PARTS], epochs=1) == data.estimate_cost([JOINED], epochs=1)


def test_clean_joins_text_parts_and_then_finds_duplicates_by_text():
    messy = copy.deepcopy(PARTS)
    messy["messages"][1]["content"] = text(" How do I return a product?")
    before = copy.deepcopy(messy)
    cleaned, changes = data.clean([JOINED, messy])
    assert messy == before and cleaned == [JOINED]
    assert changes == [
        "example 2, messages[0]: text parts joined into one string",
        "example 2, messages[1]: text parts joined into one string and whitespace trimmed",
        "example 2, messages[2]: text parts joined into one string",
        "example 2: removed, exact duplicate of example 1",
    ]
