"""gpu-check's models and limits: random weights in SmolLM2's real shapes, the device's peak.

Nothing is downloaded: SmolLM2-135M's shape is read from the embedded model's config and
SmolLM2-1.7B's is a literal; a tiny Llama stands in on machines without a CUDA GPU.
"""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from helpers.bench.flops import linear_flops, time_linear
from helpers.models import (
    EMBEDDED_MODEL,
    attention_implementation,
    cpu_description,
    device_type,
    resolve_model_path,
    set_seed,
)

# SmolLM2-1.7B's shape, from HuggingFaceTB/SmolLM2-1.7B's config.json on the Hugging Face hub
# (the rest as SmolLM2-135M's): 1,711,376,384 parameters with tied embeddings, the published
# 1.7B. A literal, so that the check needs no download.
SMOLLM2_1_7B = {
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 24,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 49152,
}
# A tiny Llama for machines without a CUDA GPU: the check's code paths, in seconds.
TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}
SHAPES = {"135m": {}, "1.7b": SMOLLM2_1_7B, "tiny": TINY}


def model_config(shape: str):
    """Return the config of a shape: the embedded SmolLM2-135M's config with ``SHAPES[shape]``."""
    config = AutoConfig.from_pretrained(resolve_model_path(EMBEDDED_MODEL))
    for key, value in SHAPES[shape].items():
        setattr(config, key, value)
    config.head_dim = config.hidden_size // config.num_attention_heads
    return config


def random_model(shape: str, device: str, dtype: torch.dtype = torch.float32, seed: int = 0):
    """Return a model of ``shape`` with random weights, built directly on ``device``."""
    set_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(
            model_config(shape), dtype=dtype, attn_implementation=attention_implementation(device)
        )
    return model


# --- the device's own limits --------------------------------------------------------------


def matmul_peak(device: str, dtype: torch.dtype = torch.bfloat16, size: int = 8192) -> float:
    """Return the FLOP/s of a ``size`` cubed matrix multiply in ``dtype`` on ``device``, timed now.

    On a GPU the best of 10 timed products after 3 warm-ups (random data); on a CPU
    :func:`helpers.bench.flops.time_linear`'s best run.
    """
    if device_type(device) != "cuda":
        return linear_flops(size, size, size) / time_linear(size, size, size, dtype)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    del a, b
    return linear_flops(size, size, size) / min(times)


def device_name(device: str) -> str:
    """Describe ``device`` for people: the GPU's name, else the CPU's model and class."""
    if device_type(device) == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    return cpu_description() if device_type(device) == "cpu" else device
