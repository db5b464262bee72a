"""FLOPs, model FLOPs utilisation (MFU) and this machine's measured matmul peaks.

MFU = FLOPs per token x useful (non-padding) tokens per second / peak, with 6 x parameters
FLOPs per token for full fine-tuning and 4 x for LoRA (frozen weights need no weight
gradients). The peak is measured on the spot: matrix multiplies at the model's own layer
shapes in the pipeline's dtype (the limit this machine can reach for this model), and, for
reference, a square 2048 x 2048 matmul.
"""

from __future__ import annotations

import time

import torch


def flops_per_token(params: int, method: str) -> int:
    """Return training FLOPs per token: 6 x params for full fine-tuning, 4 x for LoRA."""
    if method not in ("full", "lora"):
        raise ValueError(f"method must be 'full' or 'lora', not {method!r}")
    return (4 if method == "lora" else 6) * params


def mfu(params: int, method: str, tokens_per_s: float, peak_flops: float) -> float:
    """Return model FLOPs utilisation: FLOPs per token x tokens per second / peak FLOP/s."""
    return flops_per_token(params, method) * tokens_per_s / peak_flops


def linear_flops(tokens: int, d_in: int, d_out: int) -> int:
    """Return the FLOPs of one ``tokens x d_in -> d_out`` linear layer (a multiply-add is 2)."""
    return 2 * tokens * d_in * d_out


def model_linear_shapes(config) -> dict[tuple[int, int], int]:
    """Return ``{(d_in, d_out): count}`` for every linear layer of a Llama-style model's forward."""
    needed = ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers")
    missing = [name for name in (*needed, "vocab_size") if getattr(config, name, None) is None]
    if missing:
        raise ValueError(
            f"bench-train times Llama-style layer shapes; the {config.model_type!r} model's "
            f"config has no {', '.join(missing)}"
        )
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    hidden, inner = config.hidden_size, config.intermediate_size
    per_layer = [
        (hidden, config.num_attention_heads * head_dim),  # q_proj
        (hidden, kv_heads * head_dim),  # k_proj
        (hidden, kv_heads * head_dim),  # v_proj
        (config.num_attention_heads * head_dim, hidden),  # o_proj
        (hidden, inner),  # gate_proj
        (hidden, inner),  # up_proj
        (inner, hidden),  # down_proj
    ]
    shapes: dict[tuple[int, int], int] = {}
    for shape in per_layer:
        shapes[shape] = shapes.get(shape, 0) + config.num_hidden_layers
    lm_head = (hidden, config.vocab_size)
    shapes[lm_head] = shapes.get(lm_head, 0) + 1
    return shapes


def _time_calls(x: torch.Tensor, weight: torch.Tensor, calls: int) -> float:
    """Return the seconds that ``calls`` back-to-back linear layers take."""
    start = time.perf_counter()
    for _ in range(calls):
        torch.nn.functional.linear(x, weight)
    return time.perf_counter() - start


def time_linear(
    tokens: int,
    d_in: int,
    d_out: int,
    dtype: torch.dtype,
    repeats: int = 3,
    min_seconds: float = 0.05,
) -> float:
    """Return the best time in seconds of one ``tokens x d_in -> d_out`` linear layer.

    Calls are timed in runs of at least ``min_seconds`` (a single small matmul takes
    microseconds, less than one scheduler hiccup), and the best run of ``repeats`` counts.
    """
    x = torch.randn(tokens, d_in).to(dtype)
    weight = torch.randn(d_out, d_in).to(dtype)
    calls = 1
    while _time_calls(x, weight, calls) < min_seconds:  # also warms up kernels and threads
        calls *= 2
    return min(_time_calls(x, weight, calls) for _ in range(repeats)) / calls


def model_shape_peak_flops(
    shapes: dict[tuple[int, int], int], tokens: int, dtype: torch.dtype, timer=time_linear
) -> float:
    """Return the FLOP/s this machine reaches on a model's linear layers for ``tokens`` tokens.

    Each shape is timed once and weighted by how often the model uses it, so the figure
    is the whole forward's matmul FLOPs over its matmul time.
    """
    flops = seconds = 0.0
    for (d_in, d_out), count in shapes.items():
        flops += count * linear_flops(tokens, d_in, d_out)
        seconds += count * timer(tokens, d_in, d_out, dtype)
    return flops / seconds


def matmul_peak_flops(dtype: torch.dtype, size: int = 2048) -> float:
    """Return the best measured square matrix-multiply FLOP/s for ``dtype`` on the CPU."""
    return linear_flops(size, size, size) / time_linear(size, size, size, dtype)


# --- the two pipelines --------------------------------------------------------------------


def peaks(shapes: dict, tokens_per_step: float, dtype: torch.dtype) -> tuple[float, float]:
    """Return ``(model-shape peak, square peak)`` FLOP/s for ``dtype`` at a pipeline's batch."""
    tokens = max(round(tokens_per_step), 1)
    return model_shape_peak_flops(shapes, tokens, dtype), matmul_peak_flops(dtype)
