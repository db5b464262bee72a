"""How long will this notebook take on this machine? Time one step, then multiply.

Before its long sections a notebook times one training step and one generation step of
the model it has loaded (:func:`probe`), lists the work its parameters ask for in a
:class:`RunPlan` (so many training steps, so many generated tokens, so many scored
tokens), and prints the product: a learner on a slow laptop learns in the first minute
that the run will take twelve minutes, and which parameters shorten it. The notebook's
last section prints the estimate next to the measured time.

The training and scoring probes run one sequence, not a batch, and scale by the batch size:
on a CPU such a step costs in proportion to its tokens. Kernels are chosen on a shape's first
call, so each runs twice and keeps the second time. The generation probe is one call on a
batch of ``decode_batch`` prompts, timed step by step; a decoding step costs little more for
a bigger batch, so :meth:`RunPlan.generate` scales it gently.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from helpers.models import autocast


@dataclass
class Speed:
    """Seconds per token of this machine, measured on the notebook's model."""

    forward_s: float  # one token through the model without gradients (validation loss)
    train_s: dict[str, float]  # one trained token, forward and backward, per method
    decode_s: float  # one generation step of a batch (per generated token, whole batch)
    decode_batch: int  # the batch the decoding step was timed with
    optimizer_s: float  # one AdamW update of every weight (full fine-tuning only)
    prefill_s: float = 0.0  # the prompts' pass before the first generated token (whole batch)
    prompt_tokens: int = 48  # tokens of each prompt in that pass


def _twice(run) -> float:
    """Run ``run`` once to warm the kernels up, then return the seconds of a second run."""
    run()
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def _train_pass_s(model, ids, method: str, bf16: bool | None) -> float:
    """Seconds of one forward and backward pass over ``ids``; the model is left as it was.

    ``"full"`` computes the gradient of every weight. ``"lora"`` freezes the weights and
    asks for the gradient of the input embeddings instead: the backward pass then goes
    through every layer (as it must to reach LoRA's adapters) without weight gradients.
    """
    flags = [p.requires_grad for p in model.parameters()]
    for parameter in model.parameters():
        parameter.requires_grad_(method == "full")
    embed = model.get_input_embeddings()

    def step():
        inputs = embed(ids).detach().requires_grad_(method != "full")
        with autocast(ids.device.type, bf16):
            # The course computes logits only where a trained token follows, about half the
            # tokens of a chat example; a log-sum-exp costs what the cross-entropy does.
            logits = model(inputs_embeds=inputs, logits_to_keep=ids.shape[1] // 2).logits
        logits.float().logsumexp(-1).mean().backward()

    try:
        return _twice(step)
    finally:
        for parameter, flag in zip(model.parameters(), flags, strict=True):
            parameter.requires_grad_(flag)
        model.zero_grad(set_to_none=True)


def _optimizer_s(model, sample: int = 2**22) -> float:
    """Seconds of one AdamW update of every weight, timed on ``sample`` weights and scaled.

    The update reads and writes each number once: its time grows with the count. Timing a
    slice keeps the probe's memory small (the whole model's would be 4 copies of it).
    """
    count = sum(p.numel() for p in model.parameters())
    weight = torch.zeros(min(sample, count), requires_grad=True)
    weight.grad = torch.zeros_like(weight)
    optimizer = torch.optim.AdamW([weight], lr=1e-5, foreach=True)
    seconds = _twice(optimizer.step)
    return seconds * count / weight.numel()


class _StepClock(LogitsProcessor):
    """Note the time of each generation step: ``generate`` calls it once per new token."""

    def __init__(self):
        self.stamps: list[float] = []

    def __call__(self, input_ids, scores):
        self.stamps.append(time.perf_counter())
        return scores


@torch.no_grad()
def _decode_s(
    model, tokenizer, prompt_tokens: int, batch: int, bf16, new_tokens: int = 10
) -> tuple[float, float]:
    """Seconds of the prompts' pass and of one generation step, for ``batch`` prompts.

    One generation, timed step by step: the prompts' pass ends at the first step's logits,
    and a step is the median gap between two steps (robust to the first steps' kernel choice).
    """
    ids = torch.randint(100, 1000, (batch, prompt_tokens), device=model.device)
    clock = _StepClock()
    with autocast(model.device.type, bf16):
        start = time.perf_counter()
        model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            pad_token_id=tokenizer.pad_token_id,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            logits_processor=LogitsProcessorList([clock]),
        )
    return clock.stamps[0] - start, float(np.median(np.diff(clock.stamps)))


def probe(
    model,
    tokenizer,
    seq_len: int = 64,
    decode_batch: int = 8,
    prompt_tokens: int = 48,
    methods: tuple[str, ...] = ("lora",),
    bf16: bool | None = None,
) -> Speed:
    """Time this machine on ``model``: training, scoring and decoding, a few seconds in all.

    The random number generators are left as they were: a notebook's results do not
    depend on whether it probed.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return _probe(model, tokenizer, seq_len, decode_batch, prompt_tokens, methods, bf16)


def _probe(model, tokenizer, seq_len, decode_batch, prompt_tokens, methods, bf16) -> Speed:
    """Run the probes of :func:`probe`."""
    was_training = model.training
    model.eval()  # no dropout: the same work every pass
    ids = torch.randint(100, 1000, (1, seq_len), device=model.device)
    try:
        train_s = {m: _train_pass_s(model, ids, m, bf16) / seq_len for m in methods}
        with torch.no_grad(), autocast(ids.device.type, bf16):
            forward_s = _twice(lambda: model(input_ids=ids)) / seq_len
        prefill_s, decode_s = _decode_s(model, tokenizer, prompt_tokens, decode_batch, bf16)
    finally:
        model.train(was_training)
    optimizer_s = _optimizer_s(model) if "full" in methods else 0.0
    return Speed(forward_s, train_s, decode_s, decode_batch, optimizer_s, prefill_s, prompt_tokens)


def planned_steps(max_steps: int, epochs: float, examples: int, batch: int) -> int:
    """Optimizer steps a run will take: ``max_steps``, or ``epochs`` as Trainer counts them."""
    if max_steps > 0:
        return max_steps
    return math.ceil(epochs * math.ceil(examples / batch))


@dataclass
class RunPlan:
    """The work a notebook's parameters ask for, priced with a measured :class:`Speed`."""

    speed: Speed
    parts: dict[str, float] = field(default_factory=dict)

    def train(
        self,
        name: str,
        steps: int,
        tokens_per_step: float,
        method: str = "lora",
        checkpointing: bool = False,
    ) -> None:
        """Add ``steps`` optimizer steps of ``tokens_per_step`` trained tokens each."""
        per_token = self.speed.train_s[method]
        if checkpointing:  # the forward pass runs twice
            per_token += self.speed.forward_s
        optimizer = self.speed.optimizer_s if method == "full" else 0.0
        self.add(name, steps * (tokens_per_step * per_token + optimizer))

    def score(self, name: str, tokens: float) -> None:
        """Add forward passes without gradients over ``tokens`` tokens (losses, validation)."""
        self.add(name, tokens * self.speed.forward_s)

    def generate(
        self,
        name: str,
        prompts: int,
        new_tokens: int,
        batch: int,
        continuous: bool = False,
        prompt_tokens: float | None = None,
    ) -> None:
        """Add answering ``prompts`` prompts of up to ``new_tokens`` tokens, ``batch`` at once.

        ``continuous``: a server that lets a waiting request join as soon as another ends
        (continuous batching) needs no second full round for a few prompts past ``batch``.
        ``prompt_tokens``: the prompts' mean length, where it is far from the probe's; their
        pass then costs in proportion to the batch's prompt tokens, as a forward pass does.
        """
        batches = prompts / max(batch, 1) if continuous else -(-prompts // max(batch, 1))
        rows = min(batch, prompts)
        # A decoding step costs little more for a bigger batch on a CPU: scale it gently.
        scale = (rows / self.speed.decode_batch) ** 0.5
        prefill = self.speed.prefill_s * scale
        if prompt_tokens is not None:
            probed = self.speed.decode_batch * self.speed.prompt_tokens
            prefill = self.speed.prefill_s * rows * prompt_tokens / probed
        self.add(name, batches * (prefill + new_tokens * self.speed.decode_s * scale))

    def add(self, name: str, seconds: float) -> None:
        """Add ``seconds`` to the part ``name`` (also for fixed costs: loading, time so far)."""
        self.parts[name] = self.parts.get(name, 0.0) + seconds

    def total(self) -> float:
        """Seconds for the whole notebook: the sum of the parts."""
        return sum(self.parts.values())

    def report(self, shorten: str) -> str:
        """Say the estimate, its largest parts, and which parameters shorten the run."""
        largest = sorted(self.parts.items(), key=lambda item: -item[1])[:5]
        parts = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in largest)
        return (
            f"Estimated run time on this machine: about {self.total() / 60:.1f} min ({parts}).\n"
            f"To shorten it: {shorten}."
        )
