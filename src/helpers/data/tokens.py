"""Token counts: OpenAI's encodings (offline, as its cookbook counts) and a chat template's."""

from __future__ import annotations

import warnings
from functools import lru_cache

from helpers.data.content import content_text, plain_messages

DEFAULT_OPENAI_MODEL = "gpt-4o-mini-2024-07-18"


def _encoding_name(model: str) -> str | None:
    """Return the OpenAI encoding a model name uses, by family (None if unknown)."""
    name = model.lower().removeprefix("ft:")
    if name in ("o200k_base", "cl100k_base"):
        return name
    if name.startswith(("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4")):
        return "o200k_base"
    if name.startswith(("gpt-3.5", "gpt-35", "gpt-4", "davinci-002", "babbage-002")):
        return "cl100k_base"
    return None


@lru_cache(maxsize=8)
def openai_encoding(model: str = DEFAULT_OPENAI_MODEL):
    """Return ``(encoding, library)`` for an OpenAI model, from bpe-openai (offline)."""
    with warnings.catch_warnings():  # bpe-openai reads its data with a deprecated importlib call
        warnings.simplefilter("ignore", DeprecationWarning)
        import bpe_openai

        name = _encoding_name(model)
        if model.lower() in bpe_openai.list_supported_models():
            name = bpe_openai.encoding_name_for_model(model)
        if name is None:
            raise ValueError(
                f"Cannot tell which tokenizer encoding {model!r} uses; give an OpenAI model such "
                f"as {DEFAULT_OPENAI_MODEL!r} (gpt-4o*/gpt-4.1*/o-series: o200k_base; "
                "gpt-3.5*/gpt-4: cl100k_base)"
            )
        return bpe_openai.get_encoding(name), "bpe-openai"


def count_openai_tokens(messages: list[dict], model: str = DEFAULT_OPENAI_MODEL) -> int:
    """Count tokens as OpenAI's cookbook does: 3 per message, its text, 1 per name, 3 to reply.

    Only text values are counted (role, content, name); ``weight`` is not text. Content
    given as text parts counts as their joined text.
    """
    encoding, _ = openai_encoding(model)
    total = 3
    for message in messages:
        total += 3
        for key, value in message.items():
            if key == "content":
                value = content_text(value)
            if isinstance(value, str):
                total += len(encoding.encode_ordinary(value)) + (key == "name")
    return total


def _template_token_counts(tokenizer, examples: list[dict]) -> list[int]:
    """Count tokens of each example rendered with the tokenizer's chat template (as trained)."""
    from helpers.models import ensure_chat_template  # imports torch: only when counting

    ensure_chat_template(tokenizer)  # as training does: ChatML for a tokenizer without one
    texts = [
        tokenizer.apply_chat_template(plain_messages(example["messages"]), tokenize=False)
        for example in examples
    ]
    if not texts:
        return []
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
