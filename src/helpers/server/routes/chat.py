"""The Chat Completions API: a reply whole, or streamed as server-sent events.

Parameters the server does not honour are refused (:mod:`helpers.server.params`). The
request's messages are rendered with the model's chat template; its batch
(:mod:`helpers.server.batching`) decodes the reply together with the other requests to
that model. Sampling draws from a generator of its own per request, never from torch's
global one that training's dropout uses.
"""

from __future__ import annotations

import json

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from helpers.chat import render_prompt
from helpers.model_cache import ModelLoadError
from helpers.server.catalogue import MODEL_NAME_PATTERN
from helpers.server.cores import CoreShare
from helpers.server.errors import fault, invalid, no_such_model
from helpers.server.params import refuse_not_honoured
from helpers.server.pool import LoadedModel
from helpers.server.schemas import ChatRequest
from helpers.server.state import ServerState, State
from helpers.server.store import new_id, now

DEFAULT_MAX_TOKENS = 512  # when a request sets no limit: keeps a CPU busy for seconds, not hours
MAX_CHOICES = 8
MAX_STOP_SEQUENCES = 4

router = APIRouter()


def message_text(message: dict, position: int) -> dict:
    """Return a request message as ``{role, content}`` text, or a 400 naming it."""
    role, content = message.get("role"), message.get("content")
    param = f"messages.[{position}]"
    if role == "developer":
        role = "system"
    if role not in ("system", "user", "assistant"):
        raise invalid(f"Role {role!r} is not supported here (system, user, assistant).", param)
    if isinstance(content, list):
        parts = [part.get("text") for part in content if isinstance(part, dict)]
        if len(parts) != len(content) or not all(isinstance(part, str) for part in parts):
            raise invalid("Only text content parts are supported here.", f"{param}.content")
        content = "".join(parts)
    if not isinstance(content, str):
        raise invalid("Each message needs text content.", f"{param}.content")
    return {"role": role, "content": content}


def chat_settings(body: ChatRequest, prompt_tokens: int, context: int) -> dict:
    """Return the generation settings of a request; 400 for values out of range."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = getattr(body, name)
        if value is not None and value < 1:
            raise invalid(f"{name} must be at least 1, got {value}.", name)
    limit = body.max_tokens if body.max_completion_tokens is None else body.max_completion_tokens
    if prompt_tokens >= context:
        raise invalid(
            f"The prompt has {prompt_tokens} tokens; this model's context is {context} tokens.",
            "messages",
            "context_length_exceeded",
        )
    temperature = 1.0 if body.temperature is None else body.temperature
    top_p = 1.0 if body.top_p is None else body.top_p
    n = body.n or 1
    if not 0 <= temperature <= 2:
        raise invalid("temperature must be between 0 and 2.", "temperature")
    if not 0 < top_p <= 1:
        raise invalid("top_p must be greater than 0 and at most 1.", "top_p")
    if not 1 <= n <= MAX_CHOICES:
        raise invalid(f"n must be between 1 and {MAX_CHOICES}.", "n")
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stop) > MAX_STOP_SEQUENCES:
        raise invalid(f"Up to {MAX_STOP_SEQUENCES} stop sequences are allowed.", "stop")
    return {
        "max_tokens": min(limit or DEFAULT_MAX_TOKENS, context - prompt_tokens),
        "temperature": temperature,
        "top_p": top_p,
        "n": n,
        "stop": stop,
        "seed": body.seed,
    }


def chat_model(state: ServerState, name: str) -> LoadedModel:
    """Return the loaded model for a fine-tuned, checkpoint or base model name; 404 if none."""
    if not MODEL_NAME_PATTERN.match(name):
        raise invalid(f"Invalid model name {name!r}.", "model")
    fine_tuned = state.store.adapter_for(name)
    base, adapter = fine_tuned if fine_tuned else (state.catalogue.resolve(name), None)
    if base is None:
        raise no_such_model(name)
    try:
        return state.pool.get(base, adapter)
    except (ModelLoadError, OSError, ValueError) as error:
        raise invalid(f"Model '{name}' could not be loaded: {error}", "model") from None


def chat_events(loaded: LoadedModel, prompt_ids: list[int], settings: dict, cores: CoreShare):
    """Yield the items the model's batch queues for one request; cancel it if closed."""
    chat = loaded.batcher(cores).submit(prompt_ids, settings)
    try:
        while (item := chat.out.get()) is not None:
            if item[0] == "error":
                raise item[2]
            yield item
    finally:
        chat.cancel.set()  # the client went away, or we are done


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    """Return a CompletionUsage object."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion(reply: dict, events, n: int, prompt_tokens: int) -> dict:
    """Return a whole ChatCompletion from a request's items."""
    texts, finishes = [""] * n, [("stop", 0)] * n
    for kind, index, payload in events:
        if kind == "text":
            texts[index] += payload
        else:
            finishes[index] = payload
    choices = [
        {
            "index": index,
            "message": {"role": "assistant", "content": texts[index], "refusal": None},
            "finish_reason": finishes[index][0],
            "logprobs": None,
        }
        for index in range(n)
    ]
    completion_tokens = sum(tokens for _, tokens in finishes)
    return {
        **reply,
        "object": "chat.completion",
        "choices": choices,
        "usage": usage(prompt_tokens, completion_tokens),
    }


def sse_chunks(reply: dict, events, prompt_tokens: int, include_usage: bool):
    """Yield a chat completion as server-sent ``chat.completion.chunk`` events, then [DONE]."""

    def chunk(choices: list[dict], **extra) -> str:
        """Return one chunk event with these choices."""
        body = {**reply, "object": "chat.completion.chunk", "choices": choices, **extra}
        if include_usage:
            body.setdefault("usage", None)
        return f"data: {json.dumps(body)}\n\n"

    started, completion_tokens = set(), 0
    try:
        for kind, index, payload in events:
            if index not in started:
                started.add(index)
                yield chunk([{"index": index, "delta": {"role": "assistant", "content": ""}}])
            if kind == "text":
                yield chunk([{"index": index, "delta": {"content": payload}}])
            else:
                completion_tokens += payload[1]
                yield chunk([{"index": index, "delta": {}, "finish_reason": payload[0]}])
    except Exception as error:  # headers are sent: report the error in the stream
        yield f"data: {json.dumps({'error': fault('streamed chat', error)})}\n\n"
        return
    if include_usage:
        yield chunk([], usage=usage(prompt_tokens, completion_tokens))
    yield "data: [DONE]\n\n"


@router.post("/chat/completions")
def chat_completions(body: ChatRequest, state: State):
    """Answer a conversation with the model's reply (``n`` choices), whole or streamed."""
    refuse_not_honoured(body.model_extra)
    if not body.messages:
        raise invalid("messages must hold at least one message.", "messages")
    messages = [message_text(m, i) for i, m in enumerate(body.messages)]
    loaded = chat_model(state, body.model)
    text = render_prompt(loaded.tokenizer, messages)
    prompt_ids = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
    prompt_tokens = len(prompt_ids)
    context = getattr(loaded.model.config, "max_position_embeddings", 2048)
    settings = chat_settings(body, prompt_tokens, context)
    reply = {"id": new_id("chatcmpl-"), "created": now(), "model": body.model}
    events = chat_events(loaded, prompt_ids, settings, state.cores)
    if not body.stream:
        return completion(reply, events, settings["n"], prompt_tokens)
    include_usage = bool((body.stream_options or {}).get("include_usage"))
    return StreamingResponse(
        sse_chunks(reply, events, prompt_tokens, include_usage), media_type="text/event-stream"
    )
