"""Evaluation: batched generation, text metrics, comparisons (losses: :mod:`helpers.losses`)."""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from helpers.chat import prompt_messages, render_prompt

# Re-exported: the notebooks use evaluate.mean_loss, example_losses and MODEL_INPUTS.
from helpers.losses import MODEL_INPUTS as MODEL_INPUTS
from helpers.losses import example_losses as example_losses
from helpers.losses import mean_loss as mean_loss
from helpers.losses import model_device
from helpers.losses import virtual_tokens as virtual_tokens
from helpers.models import autocast, device_type, ensure_chat_template, set_seed, use_bf16
from helpers.prompt_tuning import generate_prompted, prompts_as_embeddings

BASE_MODEL = "__base__"  # PEFT's adapter name for "no adapter" in a mixed-adapter batch


@contextmanager
def cached_casts(model):
    """Let autocast cache the bf16 copies of frozen weights too, for the length of the block.

    Autocast keeps one bf16 copy per weight only for weights that require gradients, so a
    LoRA model's frozen base weights are cast again at every generated token (a third of
    generation time on a CPU). Inside ``torch.no_grad`` the flag builds no graph; it is
    restored on exit.
    """
    frozen = [p for p in model.parameters() if not p.requires_grad]
    for parameter in frozen:
        parameter.requires_grad_(True)
    try:
        yield model
    finally:
        for parameter in frozen:
            parameter.requires_grad_(False)


# Generation's default precision on each kind of device, from ``bench-generate`` at batch 8
# with SmolLM2-135M. An H200: fp32 289 tokens/s, bf16 autocast 94.7 (a small model's decoding
# there waits on kernel launches, and autocast adds casts around every matrix multiply). A
# CPU with native bf16: bf16 86.7, fp32 72.6 (the README). Elsewhere fp32, unmeasured.
GENERATION_BF16 = {"cuda": False, "mps": False}


def generation_bf16(device, requested: bool | None = None) -> bool:
    """Decide bf16 autocast for generation on ``device``: ``requested`` if given, else measured.

    On a CPU that is :func:`helpers.models.use_bf16` (bf16 where the CPU computes it
    natively); on other devices :data:`GENERATION_BF16`.
    """
    if requested is not None:
        return requested
    kind = device_type(device)
    return use_bf16("cpu") if kind == "cpu" else GENERATION_BF16.get(kind, False)


def as_conversation(prompt) -> list[dict]:
    """Turn a prompt (a string, a conversation or a whole example) into the messages to answer."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, dict):
        prompt = prompt["messages"]
    return prompt_messages(prompt)


def lora_model(model) -> bool:
    """Tell whether ``model`` is a PEFT model with LoRA adapters (which can mix in one batch)."""
    from peft import PeftModel

    return isinstance(model, PeftModel) and not prompts_as_embeddings(model)


def generate_new_tokens(model, batch, **kwargs) -> torch.Tensor:
    """Generate from a left-padded batch; return only the new tokens of each row.

    A prompt-tuned model generates through its base model (:mod:`helpers.prompt_tuning`),
    so its answers do not depend on the padding and come as fast as the base model's.
    """
    if prompts_as_embeddings(model):
        return generate_prompted(model, batch["input_ids"], batch["attention_mask"], **kwargs)
    return model.generate(**batch, **kwargs)[:, batch["input_ids"].shape[1] :]


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list,
    max_new_tokens: int | list[int] = 128,
    batch_size: int = 8,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    bf16: bool | None = None,
    progress: bool = True,
    adapters: list[str] | None = None,
) -> list[str]:
    """Answer each prompt with the chat template, in left-padded batches with the KV cache.

    ``max_new_tokens`` may be one cap per prompt: a batch then generates up to its largest cap
    and cuts each reply at its own, so prompts of different tasks share one batch.
    ``bf16`` forces bf16 autocast on or off; by default :func:`generation_bf16` picks the
    faster precision measured on this kind of device. ``adapters`` names, for a PEFT LoRA
    model, the adapter that answers each prompt (:data:`BASE_MODEL`: the adapters off), so that
    one batch serves several adapters and the base model (PEFT's mixed-adapter batches).
    """
    ensure_chat_template(tokenizer)
    texts = [render_prompt(tokenizer, as_conversation(p)) for p in prompts]
    several = isinstance(max_new_tokens, (list, tuple))  # one cap per prompt
    caps = list(max_new_tokens) if several else [max_new_tokens] * len(texts)
    if len(caps) != len(texts):
        raise ValueError(f"{len(caps)} caps in max_new_tokens for {len(texts)} prompts")
    if adapters is not None and len(adapters) != len(texts):
        raise ValueError(f"{len(adapters)} adapters for {len(texts)} prompts")
    if adapters is not None and not lora_model(model):
        raise ValueError("adapters needs a PEFT LoRA model: name one adapter per prompt")
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # less padding per batch
    replies = [""] * len(texts)
    device = model_device(model)
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    was_training = model.training
    model.eval()
    set_seed(seed)
    sampling = {"do_sample": do_sample}
    if do_sample:
        sampling.update(temperature=temperature, top_p=top_p)
    try:
        batches = range(0, len(order), batch_size)
        for start in tqdm(batches, desc="generating", disable=not progress, unit="batch"):
            indices = order[start : start + batch_size]
            batch = tokenizer(
                [texts[i] for i in indices],
                return_tensors="pt",
                padding=True,
                add_special_tokens=False,
            ).to(device)
            with autocast(device.type, generation_bf16(device, bf16)), cached_casts(model):
                new_tokens = generate_new_tokens(
                    model,
                    batch,
                    max_new_tokens=max(caps[i] for i in indices),
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                    **sampling,
                    **({"adapter_names": [adapters[i] for i in indices]} if adapters else {}),
                )
            for index, tokens in zip(indices, new_tokens, strict=True):
                replies[index] = tokenizer.decode(
                    tokens[: caps[index]], skip_special_tokens=True
                ).strip()
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
    return replies


def normalize_text(text: str) -> str:
    """Lower-case, drop punctuation and articles, collapse whitespace (SQuAD's normalisation)."""
    text = "".join(c for c in text.lower() if c not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    """Return 1.0 when the normalised texts are equal, else 0.0."""
    return float(normalize_text(prediction) == normalize_text(reference))


def token_f1(prediction: str, reference: str) -> float:
    """Return the F1 of the normalised word overlap (SQuAD's token F1)."""
    predicted, expected = normalize_text(prediction).split(), normalize_text(reference).split()
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def rouge_l(prediction: str, reference: str) -> float:
    """Return the ROUGE-L F-measure (longest common subsequence), via ``rouge-score``."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    return scorer.score(reference, prediction)["rougeL"].fmeasure


def score(
    predictions: list[str],
    references: list[str] | None = None,
    checks: dict[str, Callable[[str], float]] | None = None,
) -> pd.DataFrame:
    """Score each prediction: exact match, token F1, ROUGE-L, plus task-specific ``checks``."""
    rows = []
    for index, prediction in enumerate(predictions):
        row = {}
        if references is not None:
            reference = references[index]
            row.update(
                exact_match=exact_match(prediction, reference),
                token_f1=token_f1(prediction, reference),
                rouge_l=rouge_l(prediction, reference),
            )
        for name, check in (checks or {}).items():
            row[name] = float(check(prediction))
        rows.append(row)
    return pd.DataFrame(rows)


def compare(
    prompts: list,
    answers: dict[str, list[str]],
    references: list[str] | None = None,
    checks: dict[str, Callable[[str], float]] | None = None,
) -> pd.DataFrame:
    """Return a side-by-side table: each prompt, the reference, and each model's answer.

    ``answers`` maps a model label (``"base"``, ``"fine-tuned"``) to its replies;
    ``checks`` add one pass/fail column per model and check.
    """
    table = pd.DataFrame({"prompt": [as_conversation(p)[-1]["content"] for p in prompts]})
    if references is not None:
        table["reference"] = references
    for label, replies in answers.items():
        table[label] = replies
        for name, check in (checks or {}).items():
            table[f"{label}: {name}"] = ["✓" if check(r) else "✗" for r in replies]
    return table


def metrics_table(
    answers: dict[str, list[str]],
    references: list[str] | None = None,
    checks: dict[str, Callable[[str], float]] | None = None,
) -> pd.DataFrame:
    """Return mean metrics per model label (rows) for the same prompts."""
    return pd.DataFrame(
        {label: score(replies, references, checks).mean() for label, replies in answers.items()}
    ).T


def last_sentence(text: str) -> str:
    """Return the last sentence of a text (split after ``.``, ``!`` or ``?``)."""
    return re.split(r"(?<=[.!?])\s+", text.strip())[-1]


def greets_hello(reply: str) -> bool:
    """The customer-service house style: the reply starts with "Hello!"."""
    return reply.startswith("Hello!")


def closes_with_contact_us(reply: str) -> bool:
    """The customer-service house style: the last sentence invites the user to "contact us"."""
    return "contact us" in last_sentence(reply).lower()


CUSTOMER_SERVICE_CHECKS = {"starts Hello!": greets_hello, "ends contact us": closes_with_contact_us}

# How customers ask for a procedure: "how do I ...", "how can we ...", "how to ...", "what
# should I do", "steps" (not "two-step"), "walk me through", "explain how". On the sample
# data the house style answers with numbered steps nine times in ten when this matches;
# the questions it misses ("I forgot my password.", some "Can I ...?") are answered either
# way in the data. Notebook 01 measures the agreement.
PROCEDURE_REQUEST = re.compile(
    r"\bhow (?:do|can|should|would) (?:i|we)\b|\bhow to\b|\bwhat (?:should|do) i do\b"
    r"|(?<!-)\bsteps?\b|\bwalk (?:me|us) through\b|\b(?:explain|tell me|let me know) how\b",
    re.IGNORECASE,
)
NUMBERED_LINE = re.compile(r"^\s*(\d+)\.\s+\S", re.MULTILINE)
STYLE_CHECKS = ("starts Hello!", "numbered steps", "ends contact us")


def asks_for_procedure(question: str) -> bool:
    """Tell whether a customer asks *how* to do something (see :data:`PROCEDURE_REQUEST`)."""
    return bool(PROCEDURE_REQUEST.search(question))


def has_numbered_steps(reply: str) -> bool:
    """The house style for procedures: a line starting ``1.`` and a later one starting ``2.``."""
    numbers = [int(number) for number in NUMBERED_LINE.findall(reply)]
    return 1 in numbers and 2 in numbers[numbers.index(1) + 1 :]


def style_adherence(question: str, reply: str) -> dict[str, bool]:
    """Check a reply against the customer-service house style, with the checks that apply.

    ``starts Hello!`` and ``ends contact us`` always apply; ``numbered steps`` only when
    the question asks for a procedure (:func:`asks_for_procedure`), so its key is absent
    otherwise: "not asked for", never "passed". Keys follow :data:`STYLE_CHECKS`.
    """
    checks = {"starts Hello!": greets_hello(reply)}
    if asks_for_procedure(question):
        checks["numbered steps"] = has_numbered_steps(reply)
    checks["ends contact us"] = closes_with_contact_us(reply)
    return checks


def save_metrics(metrics: dict, output_dir: str | Path) -> Path:
    """Write a run's metrics as ``metrics.json`` in ``output_dir`` (batch runs collect them)."""
    path = Path(output_dir) / "metrics.json"
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True, default=float) + "\n")
    return path


def styled(table: pd.DataFrame):
    """Return a notebook-friendly view of a text table: wrapped, left-aligned cells."""
    return table.style.set_properties(
        **{"white-space": "pre-wrap", "text-align": "left", "vertical-align": "top"}
    ).hide(axis="index")


# A crude factual-consistency signal: quantities and promise words a reply states that no
# training answer contains. The model cannot know facts its data never showed it.
UNITS = re.compile(
    r"(minute|hour|day|week|month|year|business|point|percent|character|store|off)s?$"
)
PROMISE_WORDS = (
    "guarantee", "warranty", "discount", "voucher", "coupon", "compensation", "promise",
    "refund", "lifetime", "free",
)  # fmt: skip


def claims(text: str) -> set[str]:
    """Return the quantities (``"10 years"``, ``"15%"``, ``"$5"``) and promise words in a text.

    A quantity is a number (with ``%``, ``$``, ``am`` or ``pm`` attached) plus the word after
    it when that word is a unit; list markers such as ``"1. "`` at a line start are skipped.
    """
    text = re.sub(r"(?m)^\s*\d+[.)]\s", "", text.lower())
    found = set()
    for match in re.finditer(r"(\$?\d+(?:[.,:]\d+)*(?:%|am|pm)?)(?:\s+([a-z]+))?", text):
        number, word = match.groups()
        found.add(f"{number} {word}" if word and UNITS.match(word) else number)
    found.update(w for w in PROMISE_WORDS if re.search(rf"\b{w}", text))
    return found


def unsupported_claims(reply: str, known: set[str]) -> list[str]:
    """Return the claims of a reply (see :func:`claims`) absent from ``known``, sorted."""
    return sorted(claims(reply) - known)
