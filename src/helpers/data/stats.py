"""Token statistics of a dataset: per-example counts, percentiles and a printable summary."""

from __future__ import annotations

from pathlib import Path

from helpers.data.tokens import (
    DEFAULT_OPENAI_MODEL,
    _template_token_counts,
    count_openai_tokens,
    openai_encoding,
)


def percentile(values, percent: int) -> float:
    """Return the ``percent``-th percentile (0 to 100) with linear interpolation, as NumPy does.

    The arithmetic is that of ``statistics.quantiles(values, n=100, method="inclusive")``:
    whole numbers in, correctly rounded result out, so the figures do not depend on
    float rounding.
    """
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile() needs at least one value")
    if type(percent) is not int or not 0 <= percent <= 100:
        raise ValueError(f"percent must be a whole number from 0 to 100, got {percent!r}")
    low, delta = divmod(percent * (len(ordered) - 1), 100)
    high = ordered[min(low + 1, len(ordered) - 1)]
    return (ordered[low] * (100 - delta) + high * delta) / 100


def _describe(counts: list[int], limit: int | None) -> dict:
    """Return total/min/mean/p50/p90/p95/max of token counts, how many exceed ``limit``."""
    ordered = sorted(counts)
    figures = {"total": sum(counts)}
    if ordered:
        figures |= {
            "min": ordered[0],
            "mean": sum(counts) / len(counts),
            "p50": percentile(ordered, 50),
            "p90": percentile(ordered, 90),
            "p95": percentile(ordered, 95),
            "max": ordered[-1],
        }
    else:
        figures |= dict.fromkeys(("min", "mean", "p50", "p90", "p95", "max"))
    figures["over_limit"] = None if limit is None else sum(c > limit for c in counts)
    figures["counts"] = counts
    return figures


def _tokenizer_name(tokenizer) -> str:
    """Return a short name for a Hugging Face tokenizer (a folder's name, not its path)."""
    name = str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)
    return Path(name).name if Path(name).is_dir() else name


def token_stats(
    examples: list[dict],
    tokenizer=None,
    openai_model: str = DEFAULT_OPENAI_MODEL,
    limit: int | None = None,
) -> dict:
    """Count messages and tokens per example, with OpenAI's encoding and the model's tokenizer.

    The model's count renders each example with its chat template (what training sees);
    OpenAI's follows its cookbook. Call it on validated examples.
    """
    encoding, library = openai_encoding(openai_model)
    messages = [m for example in examples for m in example["messages"]]
    openai_counts = [count_openai_tokens(ex["messages"], openai_model) for ex in examples]
    stats = {
        "examples": len(examples),
        "messages": len(messages),
        "assistant_messages": sum(m.get("role") == "assistant" for m in messages),
        "limit": limit,
        "openai": {
            "model": openai_model,
            "library": library,
            "encoding": encoding.name,
            **_describe(openai_counts, limit),
        },
        "tokenizer": None,
    }
    if tokenizer is not None:
        counts = _template_token_counts(tokenizer, examples)
        stats["tokenizer"] = {"name": _tokenizer_name(tokenizer), **_describe(counts, limit)}
    return stats


def describe_stats(stats: dict, cost: dict | None = None) -> str:
    """Return token statistics (and a cost estimate) as a short human-readable text."""
    openai = stats["openai"]
    rows = [(f"{openai['model']} ({openai['encoding']} via {openai['library']})", openai)]
    if stats["tokenizer"]:
        rows.insert(0, (f"{stats['tokenizer']['name']} (chat template)", stats["tokenizer"]))
    width = max(len(label) for label, _ in rows) + 2
    lines = [
        f"{stats['examples']} examples, {stats['messages']} messages "
        f"({stats['assistant_messages']} from the assistant)",
        f"{'tokens per example':<{width}}{'min':>6}{'mean':>8}{'p50':>8}{'p90':>8}{'p95':>8}"
        f"{'max':>6}{'total':>9}",
    ]
    for label, figures in rows:
        if figures["min"] is None:
            lines.append(f"{label:<{width}}(no examples)")
            continue
        lines.append(
            f"{label:<{width}}{figures['min']:>6}{figures['mean']:>8.1f}{figures['p50']:>8.1f}"
            f"{figures['p90']:>8.1f}{figures['p95']:>8.1f}{figures['max']:>6}"
            f"{figures['total']:>9}"
        )
    if stats["limit"] is not None:
        over = ", ".join(
            f"{label.split(' ')[0]}: {figures['over_limit']}" for label, figures in rows
        )
        lines.append(f"examples over {stats['limit']} tokens: {over}")
    if cost:
        lines.append(
            f"cost estimate for {cost['model']}: {cost['tokens_per_epoch']:,} tokens/epoch x "
            f"{cost['epochs']} epochs ({cost['epochs_source']}) = {cost['billed_tokens']:,} "
            f"billed tokens x ${cost['price_per_1k']}/1K = ${cost['cost_usd']:.4f}"
        )
        lines.append(f"price: {cost['price_source']}")
    return "\n".join(lines)
