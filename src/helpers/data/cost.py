"""What OpenAI fine-tuning costs: default epochs, list prices, billed tokens, chat requests."""

from __future__ import annotations

import re

from helpers.data.tokens import DEFAULT_OPENAI_MODEL, count_openai_tokens

# OpenAI's default-epochs heuristic, from its cookbook "Data preparation and analysis
# for chat model fine-tuning".
TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25

# US dollars per 1,000 training tokens: OpenAI's published list prices as of June 2025
# (https://openai.com/api/pricing/). Prices change: check the current page before you
# rely on them. The last entry is not an OpenAI price but the seed article's claim.
PRICES_AS_OF = "2025-06"
PRICES_PER_1K_TRAINING_TOKENS = {
    "gpt-4o-mini-2024-07-18": 0.003,
    "gpt-4o-2024-08-06": 0.025,
    "gpt-3.5-turbo-0125": 0.008,
    "gpt-4.1-mini-2025-04-14": 0.005,
    "gpt-4.1-2025-04-14": 0.025,
    "gpt-4.1-nano-2025-04-14": 0.0015,
    "gpt-3.5-turbo (seed article)": 0.012,
}
SEED_ARTICLE_PRICE = "gpt-3.5-turbo (seed article)"

# US dollars per 1M tokens when a model answers, (prompt, completion), for the base model and
# for the same model fine-tuned: OpenAI bills a fine-tuned model's tokens at a higher rate.
# List prices as of PRICES_AS_OF (https://openai.com/api/pricing/); check before relying on them.
PRICES_PER_1M_CHAT_TOKENS = {
    "gpt-4o-mini-2024-07-18": {"base": (0.15, 0.60), "fine-tuned": (0.30, 1.20)},
    "gpt-4o-2024-08-06": {"base": (2.50, 10.00), "fine-tuned": (3.75, 15.00)},
    "gpt-3.5-turbo-0125": {"base": (0.50, 1.50), "fine-tuned": (3.00, 6.00)},
    "gpt-4.1-mini-2025-04-14": {"base": (0.40, 1.60), "fine-tuned": (0.80, 3.20)},
    "gpt-4.1-2025-04-14": {"base": (2.00, 8.00), "fine-tuned": (3.00, 12.00)},
    "gpt-4.1-nano-2025-04-14": {"base": (0.10, 0.40), "fine-tuned": (0.20, 0.80)},
}


def default_epochs(n_examples: int) -> int:
    """Return the number of epochs OpenAI picks by default for ``n_examples`` (cookbook rule)."""
    if n_examples < 1:
        raise ValueError(f"n_examples must be at least 1, got {n_examples}")
    if n_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // n_examples)
    if n_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n_examples)
    return TARGET_EPOCHS


def _snapshots(model: str, table: dict) -> list[str]:
    """Return the table's names for a model: itself, or an undated name's dated snapshots."""
    return [
        name
        for name in table
        if name == model or re.fullmatch(re.escape(model) + r"-(\d{4}-\d{2}-\d{2}|\d{4})", name)
    ]


def _price(model: str, price_per_1k: float | None) -> tuple[float, str]:
    """Return the price per 1K training tokens and where it comes from."""
    if price_per_1k is not None:
        return price_per_1k, "given"
    if model == SEED_ARTICLE_PRICE:
        return PRICES_PER_1K_TRAINING_TOKENS[model], "the seed article's claim, not a price list"
    # An undated name ("gpt-4o-mini") takes the price of its one dated snapshot in the table.
    dated = _snapshots(model, PRICES_PER_1K_TRAINING_TOKENS)
    if len(dated) != 1:
        known = ", ".join(PRICES_PER_1K_TRAINING_TOKENS)
        raise ValueError(
            f"No training price known for {model!r}; known models: {known}. "
            "Pass price_per_1k (check https://openai.com/api/pricing/)."
        )
    snapshot = "" if dated[0] == model else f" for {dated[0]}"
    return PRICES_PER_1K_TRAINING_TOKENS[dated[0]], (
        f"OpenAI list price{snapshot} as of {PRICES_AS_OF}; check current pricing at "
        "https://openai.com/api/pricing/"
    )


def estimate_cost(
    examples_or_token_counts: list,
    model: str = DEFAULT_OPENAI_MODEL,
    epochs: int | None = None,
    price_per_1k: float | None = None,
    max_tokens_per_example: int = 65536,
) -> dict:
    """Estimate an OpenAI fine-tuning bill: tokens per epoch (capped per example) x epochs x price.

    Takes examples (counted with :func:`count_openai_tokens`) or per-example token counts.
    ``epochs=None`` uses OpenAI's default heuristic (:func:`default_epochs`).
    """
    price, price_source = _price(model, price_per_1k)
    items = list(examples_or_token_counts)
    counts = [
        item if isinstance(item, int) else count_openai_tokens(item["messages"], model)
        for item in items
    ]
    if epochs is None:
        epochs, epochs_source = default_epochs(len(counts)), "OpenAI default heuristic"
    elif type(epochs) is not int or epochs < 1:
        raise ValueError(f"epochs must be a whole number of at least 1, got {epochs!r}")
    else:
        epochs_source = "given"
    tokens_per_epoch = sum(min(count, max_tokens_per_example) for count in counts)
    billed = tokens_per_epoch * epochs
    return {
        "model": model,
        "examples": len(counts),
        "tokens_per_epoch": tokens_per_epoch,
        "epochs": epochs,
        "epochs_source": epochs_source,
        "billed_tokens": billed,
        "price_per_1k": price,
        "price_source": price_source,
        "cost_usd": round(billed * price / 1000, 6),
    }


def chat_cost(
    prompt_tokens: float,
    completion_tokens: float = 0,
    model: str = DEFAULT_OPENAI_MODEL,
    fine_tuned: bool = False,
) -> float:
    """Return what one chat request costs on OpenAI in US dollars, at list prices.

    ``model`` is the base model's name (an undated name takes its one dated snapshot);
    ``fine_tuned`` prices the request as sent to a model fine-tuned from it.
    """
    dated = _snapshots(model, PRICES_PER_1M_CHAT_TOKENS)
    if len(dated) != 1:
        known = ", ".join(PRICES_PER_1M_CHAT_TOKENS)
        raise ValueError(f"No chat price known for {model!r}; known models: {known}.")
    prompt, completion = PRICES_PER_1M_CHAT_TOKENS[dated[0]]["fine-tuned" if fine_tuned else "base"]
    return (prompt_tokens * prompt + completion_tokens * completion) / 1e6
