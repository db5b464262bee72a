"""The checks behind :func:`validate`: every problem of one example, as (code, message).

The format is OpenAI's chat fine-tuning JSONL: one JSON object per line with a
``"messages"`` list of ``{"role", "content"}`` objects, roles ``system``, ``user`` and
``assistant``. An assistant message may carry ``"weight": 0`` (not trained on) or
``1``; any message may carry OpenAI's optional ``"name"``, which our chat templates
ignore. Content is a string or a list of text parts (see :mod:`helpers.data.content`).
Tool and function calling, images, audio and files are not supported and are
reported, never dropped silently.
"""

from __future__ import annotations

from helpers.data.content import check_parts
from helpers.data.jsonl import _json_type, _short

ROLES = ("system", "user", "assistant")
MESSAGE_KEYS = ("role", "content", "weight", "name")
UNSUPPORTED_TOP_LEVEL = ("tools", "functions", "parallel_tool_calls")
UNSUPPORTED_MESSAGE_KEYS = ("tool_calls", "function_call", "tool_call_id")
UNSUPPORTED_ROLES = ("tool", "function")
NO_TOOLS = "tool/function calling is not supported here, so the example is left out"


def _check_message(index: int, message) -> list[tuple[str, str]]:
    """Return ``(code, message)`` for every problem of one message."""
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        return [("message_not_object", f"{where} is {_json_type(message)}, not an object")]
    problems = []
    role = message.get("role")
    if "role" not in message:
        problems.append(("missing_role", f'{where} has no "role" (system, user or assistant)'))
    elif role in UNSUPPORTED_ROLES:
        problems.append(
            (
                "unsupported_feature",
                f"{where} has role {_short(role)}: {NO_TOOLS}",
            )
        )
    elif role not in ROLES:
        hint = " (roles are lower-case)" if isinstance(role, str) and role.lower() in ROLES else ""
        if role == "developer":
            hint = ' (use "system" instead)'
        problems.append(
            (
                "unknown_role",
                f"{where} has role {_short(role)}{hint}; use system, user or assistant",
            )
        )
    if role in ROLES:
        where = f"messages[{index}] ({role})"
    for key in message:
        if key in UNSUPPORTED_MESSAGE_KEYS:
            problems.append(
                (
                    "unsupported_feature",
                    f"{where} has {_short(key)}: {NO_TOOLS}",
                )
            )
        elif key not in MESSAGE_KEYS:
            problems.append(
                (
                    "unknown_key",
                    f"{where} has key {_short(key)}; a message may only have role, content, "
                    "weight (assistant only) and name",
                )
            )
    problems += _check_content(where, message)
    if "weight" in message:
        problems += _check_weight(where, role, message["weight"])
    if "name" in message and not (isinstance(message["name"], str) and message["name"].strip()):
        problems.append(
            (
                "invalid_name",
                f'{where}: "name" must be a non-empty string, got {_json_type(message["name"])}',
            )
        )
    return problems


def _check_content(where: str, message: dict) -> list[tuple[str, str]]:
    """Return the problems of a message's content."""
    content = message.get("content")
    if content is None:
        if any(key in message for key in UNSUPPORTED_MESSAGE_KEYS):
            return []  # a tool call without content: already reported as unsupported
        said = '"content": null' if "content" in message else 'no "content"'
        return [("missing_content", f"{where} has {said}; give the text as a string")]
    if isinstance(content, list):
        return check_parts(where, content)
    if not isinstance(content, str):
        return [
            (
                "content_not_string",
                f"{where}: content is {_json_type(content)}, not a string or a list of text parts",
            )
        ]
    if not content.strip():
        return [("empty_content", f"{where}: content is empty or only whitespace")]
    return []


def _check_weight(where: str, role, weight) -> list[tuple[str, str]]:
    """Return the problems of a message's weight."""
    if role != "assistant":
        return [
            (
                "weight_not_on_assistant",
                f'{where} has a "weight"; only assistant messages may have one',
            )
        ]
    if type(weight) is int and weight in (0, 1):
        return []
    return [("invalid_weight", f"{where}: weight must be the number 0 or 1, got {_short(weight)}")]


def check_example(example) -> list[tuple[str, str, str]]:
    """Return ``(code, message, severity)`` for every problem of one example (empty: valid)."""
    if not isinstance(example, dict):
        hint = " (a JSON array file is not JSONL)" if isinstance(example, list) else ""
        return [
            (
                "not_an_object",
                f"the line is {_json_type(example)} in JSON, not an object with a "
                f'"messages" list{hint}',
                "error",
            )
        ]
    problems = []
    for key in example:
        if key in UNSUPPORTED_TOP_LEVEL:
            problems.append(
                (
                    "unsupported_feature",
                    f"top-level key {_short(key)}: {NO_TOOLS}",
                    "error",
                )
            )
    extra = [k for k in example if k != "messages" and k not in UNSUPPORTED_TOP_LEVEL]
    if extra:
        names = ", ".join(_short(k) for k in extra)
        problems.append(
            (
                "extra_key",
                f"top-level key{'s' if len(extra) > 1 else ''} {names} "
                f"{'are' if len(extra) > 1 else 'is'} not part of OpenAI's chat format: kept "
                "for your own use and ignored by training; remove before uploading to OpenAI",
                "warning",
            )
        )
    return problems + [(*p, "error") for p in _check_messages(example)]


def _check_messages(example: dict) -> list[tuple[str, str]]:
    """Return the problems of an example's ``messages`` list."""
    if "messages" not in example:
        hint = ""
        if "prompt" in example or "completion" in example:
            hint = " (this looks like the legacy prompt/completion format)"
        return [("missing_messages", f'the example has no "messages" list{hint}')]
    messages = example["messages"]
    if not isinstance(messages, list):
        return [("messages_not_list", f'"messages" is {_json_type(messages)}, not a list')]
    if not messages:
        return [("empty_messages", '"messages" is an empty list')]
    problems = []
    for index, message in enumerate(messages):
        problems += _check_message(index, message)
    roles = [m.get("role") for m in messages if isinstance(m, dict)]
    if "assistant" not in roles:
        problems.append(
            ("no_assistant_message", "there is no assistant message: nothing to train on")
        )
    elif isinstance(messages[-1], dict) and messages[-1].get("role") in ("system", "user"):
        problems.append(
            (
                "last_not_assistant",
                f"the last message (messages[{len(messages) - 1}]) is from the "
                f"{messages[-1]['role']}; a training example must end with an assistant reply",
            )
        )
    return problems
