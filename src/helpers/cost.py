"""What a fine-tuning run costs: FLOPs per token, tokens, hours on a device.

The model, and what it assumes:

- A token's forward pass costs ``2 x N`` FLOPs, N the weights it multiplies (every linear
  layer and the output head; the embedding lookup is free), plus the attention scores,
  ``2 x layers x context x hidden`` (Kaplan et al. 2020, table 1).
- Full fine-tuning: the backward pass costs twice the forward (gradients of the
  activations and of the weights): ``3 x forward``, the familiar ``6 N``.
- LoRA: the frozen weights need no weight gradients, but the backward pass still goes
  through every layer to reach the adapters: ``2 x forward``, plus the adapters' own
  ``3 x 2 r (d_in + d_out)`` per adapted layer.
- Activation checkpointing recomputes the forward pass once more: ``+1 x forward``.
- Time = FLOPs / (peak FLOP/s x MFU), the model FLOPs utilisation: the share of the
  device's quoted peak a run achieves. Optimizer steps, data loading and padding are
  not counted; they are inside the MFU a measured run reveals.
"""

from __future__ import annotations

from dataclasses import dataclass

from helpers.measure import training_memory_gb

METHODS = ("full", "lora")


@dataclass(frozen=True)
class Architecture:
    """The shapes of a Llama-style decoder that decide its FLOPs."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied_embeddings: bool = False

    @classmethod
    def from_config(cls, config) -> Architecture:
        """Read the shapes from a Transformers config (or any object with its attributes)."""
        names = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
        missing = [name for name in names if not hasattr(config, name)]
        if missing:
            raise ValueError(f"config lacks {', '.join(missing)}: not a Llama-style decoder")
        return cls(
            hidden=config.hidden_size,
            intermediate=config.intermediate_size,
            layers=config.num_hidden_layers,
            heads=config.num_attention_heads,
            kv_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
            vocab=config.vocab_size,
            tied_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
        )

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """Return ``{name: (d_in, d_out)}`` for one layer's linear modules."""
        kv = self.hidden * self.kv_heads // self.heads
        h, i = self.hidden, self.intermediate
        return {
            "q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
            "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h),
        }  # fmt: skip

    def matmul_params(self) -> int:
        """Return N: the weights a token is multiplied by (all layers' linears and the head)."""
        per_layer = sum(d_in * d_out for d_in, d_out in self.linear_shapes().values())
        return self.layers * per_layer + self.hidden * self.vocab

    def total_params(self) -> int:
        """Return all parameters: N, the embedding table if untied, and the norms."""
        embedding = 0 if self.tied_embeddings else self.vocab * self.hidden
        norms = (2 * self.layers + 1) * self.hidden
        return self.matmul_params() + embedding + norms


# Published configuration of SmolLM2-135M, the course's embedded model (its config.json).
SMOLLM2_135M = Architecture(
    hidden=576, intermediate=1536, layers=30, heads=9, kv_heads=3, vocab=49152, tied_embeddings=True
)

# Published configuration of LLaMA-7B (Touvron et al. 2023, table 2; its params.json).
LLAMA_7B = Architecture(
    hidden=4096, intermediate=11008, layers=32, heads=32, kv_heads=32, vocab=32000
)


def forward_flops(arch: Architecture, context: int) -> float:
    """Return one token's forward FLOPs: 2 N plus the attention scores over ``context``."""
    return 2 * arch.matmul_params() + 2 * arch.layers * context * arch.hidden


def adapter_flops(arch: Architecture, r: int, targets) -> float:
    """Return one token's LoRA adapter FLOPs in training: 3 x forward, 2 r (d_in + d_out)."""
    shapes = arch.linear_shapes()
    unknown = sorted(set(targets) - set(shapes))
    if unknown:
        raise ValueError(f"unknown LoRA target modules {unknown}; known: {sorted(shapes)}")
    forward = sum(2 * r * (shapes[name][0] + shapes[name][1]) for name in targets)
    return 3 * arch.layers * forward


def train_flops_per_token(
    arch: Architecture,
    method: str,
    context: int,
    checkpointing: bool = False,
    r: int = 8,
    targets=("q_proj", "v_proj"),
) -> float:
    """Return training FLOPs per token for ``"full"`` or ``"lora"`` (see the module's text)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    forward = forward_flops(arch, context)
    passes = (3 if method == "full" else 2) + (1 if checkpointing else 0)
    extra = adapter_flops(arch, r, targets) if method == "lora" else 0.0
    return passes * forward + extra


@dataclass(frozen=True)
class Device:
    """A device's quoted dense peak for 16-bit training, its memory, and the source."""

    name: str
    peak_flops: float
    memory_gb: float
    source: str


DEVICES = {
    "A100 40GB": Device(
        "NVIDIA A100 40GB",
        312e12,
        40,
        "NVIDIA A100 Tensor Core GPU datasheet: BF16 Tensor Core 312 TFLOPS dense "
        "(624 with sparsity), 40 GB HBM2",
    ),
    "RTX 3090": Device(
        "NVIDIA GeForce RTX 3090",
        71e12,
        24,
        "NVIDIA Ampere GA102 GPU Architecture whitepaper, appendix A: peak BF16 Tensor "
        "TFLOPS with FP32 accumulate 71 dense (142 with sparsity), 24 GB GDDR6X",
    ),
}


def dataset_tokens(examples: int, mean_tokens: float, epochs: float = 1.0) -> float:
    """Return the tokens a run trains on: examples x mean tokens per example x epochs."""
    if min(examples, mean_tokens, epochs) <= 0:
        raise ValueError(
            f"examples, mean_tokens and epochs must be positive, got {examples}, "
            f"{mean_tokens}, {epochs}"
        )
    return examples * mean_tokens * epochs


def hours(tokens: float, flops_per_token: float, peak_flops: float, mfu: float) -> float:
    """Return the training hours: tokens x FLOPs per token / (peak x MFU)."""
    if not 0 < mfu <= 1:
        raise ValueError(f"mfu must be in (0, 1], got {mfu}")
    return tokens * flops_per_token / (peak_flops * mfu) / 3600


def tokens_in_hours(h: float, flops_per_token: float, peak_flops: float, mfu: float) -> float:
    """Return the tokens a run trains on in ``h`` hours (the inverse of :func:`hours`)."""
    return h * 3600 * peak_flops * mfu / flops_per_token


def achieved_flops(tokens_per_second: float, flops_per_token: float) -> float:
    """Return the FLOP/s a measured run achieved: its tokens per second x FLOPs per token."""
    return tokens_per_second * flops_per_token


def memory_fits(
    arch: Architecture, method: str, device: Device, r: int = 8, targets=("q_proj", "v_proj")
) -> dict:
    """Return the GB that weights (16-bit), gradients and Adam states need, and if they fit.

    Activations are left out (they depend on batch and context); so a ``fits`` of
    True is necessary, not sufficient.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    total = arch.total_params()
    shapes = arch.linear_shapes()
    adapters = arch.layers * sum(r * (shapes[t][0] + shapes[t][1]) for t in targets)
    trainable = total if method == "full" else adapters
    need = training_memory_gb(total, trainable, weight_bytes=2)["total"]
    return {"needed_gb": need, "device_gb": device.memory_gb, "fits": need <= device.memory_gb}
