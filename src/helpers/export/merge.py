"""Load what is exported, a model folder or a LoRA adapter merged into its base, in fp32."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from helpers.export.errors import ExportError


def source_kind(source: str | Path) -> str:
    """Return ``"adapter"`` or ``"model"`` for a folder, or raise ExportError saying why neither."""
    folder = Path(source)
    if not folder.exists():
        raise ExportError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise ExportError(f"{folder}: not a folder (give a model folder or an adapter folder)")
    if (folder / "adapter_config.json").is_file():
        return "adapter"
    if (folder / "config.json").is_file():
        return "model"
    raise ExportError(
        f"{folder}: not a model folder (no config.json) nor an adapter folder "
        "(no adapter_config.json)"
    )


def adapter_base(folder: Path) -> str:
    """Return the base model an adapter folder names in adapter_config.json."""
    config_file = folder / "adapter_config.json"
    try:
        config = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ExportError(f"{config_file}: cannot be read as JSON ({error})") from None
    base = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    if not base:
        raise ExportError(f"{config_file}: field base_model_name_or_path is missing")
    return base


def load_source(source: str | Path, base: str | None = None):
    """Load ``(model, tokenizer, description)`` in fp32 on the CPU, an adapter merged into its base.

    ``base`` overrides the base model an adapter names (its own folder may have moved).
    """
    from helpers.models import load_base_model, load_tokenizer

    folder = Path(source)
    if source_kind(folder) == "model":
        model, tokenizer = load_base_model(str(folder), device="cpu", dtype=torch.float32)
        return model, tokenizer, f"model {folder}"
    from peft import PeftModel

    base = base or adapter_base(folder)
    base_model, _ = load_base_model(base, device="cpu", dtype=torch.float32)
    tokenizer = _adapter_tokenizer(folder, base, load_tokenizer)
    adapted = PeftModel.from_pretrained(base_model, folder)
    merged = adapted.merge_and_unload()  # W + (alpha / r) B A, in fp32
    merged.eval()
    return merged, tokenizer, f"adapter {folder} merged into {base}"


def _adapter_tokenizer(folder: Path, base: str, load_tokenizer):
    """Return the adapter's own tokenizer where it saved one, else its base model's."""
    has_own = (folder / "tokenizer_config.json").is_file()
    return load_tokenizer(str(folder) if has_own else base)


def save_merged(model, tokenizer, out: Path) -> Path:
    """Save the model as safetensors, with its tokenizer and chat template, into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
