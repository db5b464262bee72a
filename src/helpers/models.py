"""Base models: loading the embedded SmolLM2 or a hub model, a tiny test model, device and seeds.

The embedded model is converted once into the cache by :mod:`helpers.model_cache`;
:func:`resolve_model_path` turns its name into that folder.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import importlib.util
import os
import platform
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch

from helpers.model_cache import EMBEDDED_MODEL, ModelLoadError, prepare_embedded_model

TINY_MODEL = "tiny-random-llama"  # for fast tests only: see tiny_model()

# Transformers 5.25 (with its dependency ``kernels``) swaps layers for kernels fetched from
# the Hugging Face hub when a model loads, on a GPU (Llama's rotary embedding from
# kernels-community/rotary). Offline that fetch fails at the first training step. The
# course works offline, so hub kernels stay off unless the user sets USE_HUB_KERNELS:
# Transformers reads it at every load (integrations/hub_kernels.py: 1, true, yes, y or on,
# in any case, enable; anything else disables; unset means enabled).
HUB_KERNELS_VARIABLE = "USE_HUB_KERNELS"
HUB_KERNELS_TRUE = ("1", "true", "yes", "y", "on")


def keep_hub_kernels_off(environ=os.environ) -> bool:
    """Set USE_HUB_KERNELS=NO unless the user set it; return whether the user had set it."""
    chosen = HUB_KERNELS_VARIABLE in environ
    environ.setdefault(HUB_KERNELS_VARIABLE, "NO")
    return chosen


HUB_KERNELS_CHOSEN_BY_USER = keep_hub_kernels_off()


def hub_kernels() -> tuple[bool, str]:
    """Return ``(enabled, why)``: whether Transformers will fetch kernels from the hub."""
    value = os.environ.get(HUB_KERNELS_VARIABLE, "")
    setting = f"{HUB_KERNELS_VARIABLE}={value}"
    by_default = not HUB_KERNELS_CHOSEN_BY_USER and value == "NO"
    who = "the course's default" if by_default else "set by you"
    if value.strip().lower() not in HUB_KERNELS_TRUE:
        return False, f"{setting}, {who}; {HUB_KERNELS_VARIABLE}=YES fetches them on GPUs"
    if importlib.util.find_spec("kernels") is None:
        return False, f"{setting}, {who}, but the kernels package is not installed"
    return True, f"{setting}, {who}; on GPUs they come from the hub, which fails offline"


# --- loading ------------------------------------------------------------------------------


def resolve_model_path(name: str) -> str:
    """Return what ``from_pretrained`` should load: the cache folder, a local folder or a hub id."""
    if name == EMBEDDED_MODEL:
        return str(prepare_embedded_model())
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    return name


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Tell quickly whether the Hugging Face hub answers, without the library's long retries."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def quiet_progress_bars():
    """Hide Transformers' own loading and saving bars (each takes about a second here)."""
    from transformers.utils import logging

    was_enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            logging.enable_progress_bar()


def _from_pretrained(loader, name: str, **kwargs):
    """Call ``loader.from_pretrained`` with one clear error when a hub model cannot be reached."""
    with quiet_progress_bars():
        return _load(loader, name, **kwargs)


def _load(loader, name: str, **kwargs):
    """Load a local folder, a cached hub model, or a hub model when the hub answers."""
    path = resolve_model_path(name)
    if path != name or Path(name).exists():
        return loader.from_pretrained(path, **kwargs)
    with contextlib.suppress(OSError):  # already in the Hugging Face cache: no network needed
        return loader.from_pretrained(name, local_files_only=True, **kwargs)
    if not _hub_reachable():
        raise ModelLoadError(
            f"Model '{name}' is not a local folder, is not in the Hugging Face cache, and the hub "
            f"cannot be reached (offline?). Use the embedded default '{EMBEDDED_MODEL}', which "
            f"works offline, or download '{name}' while online first."
        )
    try:
        return loader.from_pretrained(name, **kwargs)
    except OSError as error:
        raise ModelLoadError(
            f"Could not load '{name}' from the Hugging Face hub: {str(error).splitlines()[0]} "
            f"The embedded default '{EMBEDDED_MODEL}' works offline."
        ) from None


# A ChatML template for base models that ship without one (e.g. Llama-2 base).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def ensure_chat_template(tokenizer) -> None:
    """Give a tokenizer a ChatML template if it has none, and a pad token (its EOS) if none."""
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def load_tokenizer(name: str = EMBEDDED_MODEL):
    """Load a tokenizer by model name, ready for chat: see :func:`ensure_chat_template`."""
    from transformers import AutoTokenizer

    tokenizer = _from_pretrained(AutoTokenizer, name)
    ensure_chat_template(tokenizer)
    return tokenizer


def load_base_model(
    name: str = EMBEDDED_MODEL,
    device: str | None = None,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str | None = None,
):
    """Load ``(model, tokenizer)``: the embedded model by default, else a hub id or local folder.

    ``device`` defaults to :func:`pick_device` (this process's GPU under torchrun) and
    ``attn_implementation`` to :func:`attention_implementation` for that device.
    """
    from transformers import AutoModelForCausalLM

    device = device or pick_device()
    if name == TINY_MODEL:
        model, tokenizer = tiny_model()
        return model.to(device).eval(), tokenizer
    attn_implementation = attn_implementation or attention_implementation(device)
    tokenizer = load_tokenizer(name)
    model = _from_pretrained(
        AutoModelForCausalLM, name, dtype=dtype, attn_implementation=attn_implementation
    )
    model.to(device)
    model.eval()
    return model, tokenizer


def tiny_model(seed: int = 0, hidden_size: int = 64, num_layers: int = 2):
    """Return a tiny randomly initialised Llama with the embedded tokenizer, for fast tests only."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = load_tokenizer(EMBEDDED_MODEL)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    set_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


# --- device, precision, seeds --------------------------------------------------------------


def pick_device() -> str:
    """Return the best available device: CUDA, then Apple MPS, else CPU.

    Under torchrun (or accelerate launch) each process gets its own GPU: ``cuda:LOCAL_RANK``.
    """
    if torch.cuda.is_available():
        local_rank = os.environ.get("LOCAL_RANK")
        return f"cuda:{int(local_rank)}" if local_rank else "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def data_parallel_gpus() -> int:
    """Return how many GPUs ``Trainer`` will split each batch across with DataParallel (0: none).

    Trainer does that when one process sees two or more GPUs: a notebook on Kaggle's 2 x T4,
    or ``python -m helpers train`` on a workstation. Under torchrun or accelerate launch
    (LOCAL_RANK set) each process has its own GPU and batch instead.
    """
    if "LOCAL_RANK" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return 0
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return count if count > 1 else 0


def device_type(device: str | torch.device) -> str:
    """Return the kind of a device: ``"cuda"`` for ``"cuda:1"``, ``"cpu"``, ``"mps"``."""
    return torch.device(device).type


def attention_implementation(device: str | torch.device) -> str | None:
    """Return the attention kernel to load a model with on ``device``.

    On a CPU "eager": for this course's short sequences it trained about 15% faster than
    PyTorch's SDPA kernel (and generated as fast). Elsewhere None, the library's default
    (SDPA), which is the fast one on GPUs.
    """
    return "eager" if device_type(device) == "cpu" else None


def _cpuinfo(field: str) -> str:
    """Return a field of the first processor in /proc/cpuinfo ("" where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == field:
            return value.strip()
    return ""


def cpu_flags() -> set[str]:
    """Return the instruction-set flags of this CPU (empty where /proc/cpuinfo has none)."""
    return set(_cpuinfo("flags").split())


def cpu_description() -> str:
    """Describe this CPU for people: model, cores and class, e.g. "AMD EPYC, 2 cores, AVX2"."""
    model = _cpuinfo("model name") or platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} cores, {cpu_class()}"


def cpu_class() -> str:
    """Name this CPU's class for the course's timings: what its fastest kernels can use.

    "AMX-BF16" or "AVX-512 BF16": bf16 in hardware (the fast class); "AVX-512" or "AVX2":
    fp32 only, 4-9x slower than an AMX Xeon for this course; "other" for the rest (Arm,
    no /proc/cpuinfo).
    PyTorch's kernels capped with ``ATEN_CPU_CAPABILITY=avx2`` count as AVX2, so a fast
    machine can run the slow class's code path.
    """
    flags = cpu_flags()
    capped = torch.backends.cpu.get_cpu_capability() in ("AVX2", "DEFAULT", "NO AVX")
    for flag, name in (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX-512 BF16")):
        if flag in flags and not capped:
            return name
    if "avx512f" in flags and not capped:
        return "AVX-512"
    return "AVX2" if "avx2" in flags else "other"


def cpu_has_bf16() -> bool:
    """Tell whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX)."""
    return cpu_class() in ("AMX-BF16", "AVX-512 BF16")


def use_bf16(device: str | None = None, requested: bool | None = None) -> bool:
    """Decide bf16 mixed precision: ``requested`` if given, else where the hardware is fast."""
    kind = device_type(device or pick_device())
    if requested is not None:
        return requested
    if kind == "cuda":  # bf16 in hardware only: emulated bf16 (a T4's) is slower than fp32
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return kind == "cpu" and cpu_has_bf16()


def frozen_weights_dtype(
    method: str, device: str | None = None, bf16: bool | None = None
) -> torch.dtype:
    """Return the dtype to load a model in for ``method`` ("full" or "lora") on ``device``.

    LoRA trains small adapters (kept in fp32 by PEFT) on frozen weights, which are only
    read: where bf16 is fast (:func:`use_bf16`) they are stored in bf16, half the memory
    and no cast at every forward. Full fine-tuning keeps fp32 weights for the optimizer.
    With fp16 mixed precision (a T4) every weight stays fp32: Trainer's gradient scaler
    refuses fp16 trainable weights, and a 135M model needs no halving of its frozen ones.
    """
    if method not in ("full", "lora"):
        raise ValueError(f"method must be 'full' or 'lora', not {method!r}")
    return torch.bfloat16 if method == "lora" and use_bf16(device, bf16) else torch.float32


def mixed_precision(device: str | None = None, bf16: bool | None = None) -> str | None:
    """Return the mixed precision to train and compute in on ``device``: "bf16", "fp16" or None.

    "bf16" where :func:`use_bf16` says so (``bf16`` forces it on or off). A CUDA GPU without
    bf16 in hardware (a T4: Colab's, Kaggle's) gets "fp16", its tensor cores' precision, in
    place of bf16 (so ``bf16=False`` there still means fp16). None (fp32) elsewhere: a CPU
    without bf16 in hardware, MPS.
    """
    device = device or pick_device()
    if use_bf16(device, bf16):
        return "bf16"
    if device_type(device) == "cuda" and not torch.cuda.is_bf16_supported(
        including_emulation=False
    ):
        return "fp16"
    return None


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: str | None = None, bf16: bool | None = None):
    """Return an autocast context in :func:`mixed_precision` for ``device``; a no-op for fp32."""
    device = device or pick_device()
    precision = mixed_precision(device, bf16)
    if precision is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type(device), dtype=AUTOCAST_DTYPES[precision])


def release_memory() -> None:
    """Free unreachable objects and give freed memory back to the operating system.

    On Linux, glibc keeps memory that freed tensors leave in its heap; ``malloc_trim``
    hands it back, so the next big step (a training run) starts from a lower peak.
    """
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    trim_heap()


def trim_heap() -> None:
    """Hand the C heap's free memory back to the operating system (glibc; elsewhere a no-op)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch so that the same inputs give the same outputs."""
    from transformers import set_seed as hf_set_seed

    hf_set_seed(seed)


def count_parameters(model) -> tuple[int, int]:
    """Return ``(trainable, total)`` parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
