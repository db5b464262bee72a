"""Request parameters the server does not honour: refused with a 400 that names each, never ignored.

Chat completions (:data:`CHAT_NOT_HONOURED`) and fine-tuning jobs (:data:`JOB_NOT_HONOURED`)
are checked.

A client that asks for tools, JSON output or log probabilities and silently gets plain chat
back would be misled; vLLM and OpenAI answer such requests with ``400
invalid_request_error`` and the parameter in ``param``, and so does this server. A
parameter is accepted when it is absent, ``null``, or set to the value that asks for
nothing more than plain text chat (``logprobs: false``, ``response_format: {"type":
"text"}``, a penalty of 0...). Identifiers that do not change an answer, at OpenAI either
(``user``, ``safety_identifier``, ``prompt_cache_key``, ``metadata``), are accepted. Any
other field is refused as unrecognised, as OpenAI does.
"""

from __future__ import annotations

from helpers.server.errors import invalid

# Chat Completions parameters that OpenAI knows and this server does not honour: the reason,
# and the values that ask for nothing beyond plain text chat (accepted, like null).
CHAT_NOT_HONOURED: dict[str, tuple[str, tuple]] = {
    "tools": ("tool calling is not supported here", ()),
    "tool_choice": ("tool calling is not supported here", ("none",)),
    "parallel_tool_calls": ("tool calling is not supported here", ()),
    "functions": ("function calling is not supported here", ()),
    "function_call": ("function calling is not supported here", ("none",)),
    "logprobs": ("log probabilities are not returned here", (False,)),
    "top_logprobs": ("log probabilities are not returned here", (0,)),
    "response_format": ("only plain text answers are produced here", ({"type": "text"},)),
    "frequency_penalty": ("penalties are not applied here", (0,)),
    "presence_penalty": ("penalties are not applied here", (0,)),
    "logit_bias": ("logit_bias is not applied here", ({},)),
    "modalities": ("only text is produced here", (["text"],)),
    "audio": ("audio output is not produced here", ()),
    "prediction": ("predicted outputs are not supported here", ()),
    "reasoning_effort": ("these models do not reason before answering", ()),
    "verbosity": ("verbosity is not supported here", ()),
    "web_search_options": ("web search is not available here", ()),
    "store": ("completions are not stored here", (False,)),
    "service_tier": ("there is one service tier here", ("auto", "default")),
}
# Fine-tuning job parameters that OpenAI knows and this server does not honour.
JOB_NOT_HONOURED: dict[str, tuple[str, tuple]] = {
    "integrations": ("integrations such as Weights & Biases are not run here", ([],)),
}
# Fields that identify the caller or the request and change no answer (at OpenAI either).
IDENTIFIERS = ("user", "safety_identifier", "prompt_cache_key", "metadata")


def refuse_not_honoured(
    extra: dict | None, not_honoured: dict = CHAT_NOT_HONOURED, accepted: tuple = IDENTIFIERS
) -> None:
    """Raise a 400 naming the first field of ``extra`` that asks for what is not done here.

    ``extra`` holds the request's fields beyond those the server honours (pydantic's
    ``model_extra``); fields are checked in the order the client sent them.
    """
    for name, value in (extra or {}).items():
        if name in accepted or value is None:
            continue
        if name not in not_honoured:
            raise invalid(
                f"Unrecognized request argument supplied: {name}", name, "unknown_parameter"
            )
        reason, no_op_values = not_honoured[name]
        if not any(_same(value, allowed) for allowed in no_op_values):
            raise invalid(
                f"Unsupported parameter: '{name}': {reason}; leave it out.",
                name,
                "unsupported_parameter",
            )


def _same(value, allowed) -> bool:
    """Tell whether a JSON value equals an allowed one (False is not 0, 0.0 is 0)."""
    if isinstance(value, bool) != isinstance(allowed, bool):
        return False
    return value == allowed
