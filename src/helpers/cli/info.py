"""``info`` (versions, device, precision, cache) and ``prepare-model`` (fetch and convert)."""

from __future__ import annotations

import argparse
import platform
import time
from importlib import metadata

from helpers.cli.args import positive_int

PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "datasets",
    "accelerate",
    "openai",
    "papermill",
    "nbval",
    "jupyterlab",
    "fastapi",
)
# What a CPU's class means for the README's notebook times (two columns, one per class).
CPU_CLASS_NOTE = {
    True: "bf16 in hardware: the README's fast-CPU times",
    False: "no bf16 in hardware: the README's AVX2-only times",
}


def cmd_info(args: argparse.Namespace) -> int:
    """Print versions, device, precision and cache; with ``--timing``, time a model reload."""
    from helpers import model_cache, models
    from helpers.paths import cache_dir

    print(f"python        {platform.python_version()} ({platform.machine()})")
    for name in PACKAGES:
        try:
            print(f"{name:<13} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            print(f"{name:<13} not installed")
    device = models.pick_device()
    print(f"device        {device}")
    print(f"cpu           {models.cpu_description()} ({CPU_CLASS_NOTE[models.cpu_has_bf16()]})")
    precision = models.mixed_precision(device)
    print(f"bf16          {'yes' if precision == 'bf16' else 'no'} (mixed precision)")
    if precision == "fp16":  # a GPU without bf16 in hardware (a T4)
        print("fp16          yes (mixed precision: autocast, and fp16=True in training)")
    enabled, why = models.hub_kernels()
    print(f"hub kernels   {'on' if enabled else 'off'}: {why}")
    print(f"cache         {cache_dir()}")
    ready = (model_cache.embedded_model_dir() / "config.json").is_file()
    print(
        f"embedded      {models.EMBEDDED_MODEL}: "
        f"{'ready' if ready else 'not prepared yet (python -m helpers prepare-model)'}"
    )
    if args.timing:
        _time_reload(args.repeats)
    return 0


def _time_reload(repeats: int) -> None:
    """Prepare the embedded model, then print the best and worst of ``repeats`` reloads."""
    from helpers import model_cache, models

    model_cache.prepare_embedded_model()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        models.load_base_model(models.EMBEDDED_MODEL, device="cpu")
        seconds.append(time.perf_counter() - start)
    print(
        f"reload        {min(seconds):.2f} s best, {max(seconds):.2f} s worst of "
        f"{repeats} (model + tokenizer from the converted folder; target < 5 s)"
    )


def cmd_prepare_model(args: argparse.Namespace) -> int:
    """Fetch, convert and cache a model; print where it is and how large."""
    from helpers import model_cache, models

    name = args.name or models.EMBEDDED_MODEL
    if name != models.EMBEDDED_MODEL:
        models.load_base_model(name, device="cpu")
        print(f"{name}: ready (kept in the Hugging Face cache, HF_HOME)")
        return 0
    folder = model_cache.prepare_embedded_model(force=args.force)
    print(f"{name}: {folder} ({model_cache.folder_size(folder) / 1e6:.0f} MB)")
    return 0


def add_commands(commands) -> None:
    """Register ``info`` and ``prepare-model``."""
    info = commands.add_parser("info", help="versions, device, precision and cache")
    info.add_argument("--timing", action="store_true", help="time reloading the embedded model")
    info.add_argument("--repeats", type=positive_int, default=3, help="reloads to time (default 3)")
    info.set_defaults(func=cmd_info)

    prepare = commands.add_parser("prepare-model", help="fetch, convert and cache a model")
    prepare.add_argument("name", nargs="?", help="model name (default: the embedded model)")
    prepare.add_argument("--force", action="store_true", help="convert again even if cached")
    prepare.set_defaults(func=cmd_prepare_model)
