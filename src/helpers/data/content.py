"""Message content: one string, or OpenAI's list of content parts, and the text it stands for.

OpenAI's chat fine-tuning format takes a message's content as a string or as a list
of parts. Text parts (``{"type": "text", "text": "..."}``) are accepted on system,
user and assistant messages and stand for their texts joined with a line break, as
vLLM joins them for text-only chat templates. Images, audio, files and refusals are
not supported here: each is reported with the code ``unsupported_content_part``; a
malformed part gets ``invalid_content_part``.
"""

from __future__ import annotations

from helpers.data.jsonl import _json_type, _short

TEXT_PART_SEPARATOR = "\n"
TEXT_PART = '{"type": "text", "text": "..."}'
# Part type -> (what one part is, what is not supported), for the error message.
UNSUPPORTED_PARTS = {
    "image_url": ("an image", "images are"),
    "image": ("an image", "images are"),
    "input_image": ("an image", "images are"),
    "input_audio": ("audio", "audio is"),
    "audio": ("audio", "audio is"),
    "file": ("a file", "files are"),
    "input_file": ("a file", "files are"),
    "refusal": ("a refusal", "refusal parts are"),
}


def content_text(content) -> str | None:
    """Return the text a content stands for: the string, or its text parts joined; else None."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(_is_text_part(part) for part in content):
        return TEXT_PART_SEPARATOR.join(part["text"] for part in content)
    return None


def plain_messages(messages: list[dict]) -> list[dict]:
    """Return messages as ``{"role", "content"}`` with content as one string (for templates)."""
    return [{"role": m["role"], "content": content_text(m["content"])} for m in messages]


def _is_text_part(part) -> bool:
    return (
        isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
    )


def check_parts(where: str, parts: list) -> list[tuple[str, str]]:
    """Return ``(code, message)`` for every problem of a content given as a list of parts."""
    if not parts:
        return [("empty_content", f"{where}: content is an empty list of parts")]
    problems = [
        problem
        for index, part in enumerate(parts)
        if (problem := _check_part(f"{where}: content[{index}]", part))
    ]
    if not problems and not content_text(parts).strip():
        problems.append(("empty_content", f"{where}: the text parts are empty or only whitespace"))
    return problems


def _check_part(where: str, part) -> tuple[str, str] | None:
    """Return the problem of one content part, or None for a good text part."""
    if not isinstance(part, dict):
        return (
            "invalid_content_part",
            f"{where} is {_json_type(part)}, not a part like {TEXT_PART}",
        )
    kind = part.get("type")
    if isinstance(kind, str) and kind in UNSUPPORTED_PARTS:
        noun, what = UNSUPPORTED_PARTS[kind]
        return (
            "unsupported_content_part",
            f"{where} is {noun} part (type {_short(kind)}): {what} not supported here, only "
            "text, so the example is left out",
        )
    if kind != "text":
        said = 'has no "type"' if "type" not in part else f"has type {_short(kind)}"
        return ("invalid_content_part", f"{where} {said}; a text part is {TEXT_PART}")
    if not isinstance(part.get("text"), str):
        said = 'no "text"' if "text" not in part else f'"text" as {_json_type(part["text"])}'
        return (
            "invalid_content_part",
            f'{where} is a text part with {said}; give "text" as a string',
        )
    return None
