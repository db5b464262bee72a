"""Export a fine-tuned model for serving: merged safetensors, GGUF (f16, q8_0), Ollama Modelfile.

``export(source, out)`` takes a model folder or a LoRA adapter folder (merged into its base
in fp32) and writes into ``out``: ``merged/``, the merged model as safetensors with its
tokenizer and chat template (a folder Transformers and ``helpers serve`` load); ``gguf/``,
a GGUF file per type for llama.cpp-family runtimes and a ``Modelfile`` for Ollama; and
``export.json``, the figures. The GGUF files get a folder of their own because Transformers,
loading a GGUF, also reads a ``tokenizer_config.json`` beside it (and then loses the GGUF's
chat template). Each GGUF is proven by a round trip (:mod:`helpers.export.roundtrip`): loaded back
through Transformers, its logits and greedy answers are compared with the merged model's.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from helpers.export.errors import ExportError
from helpers.export.gguf_file import GGUF_TYPES, check_architecture, write_gguf
from helpers.export.merge import load_source, save_merged, source_kind
from helpers.export.modelfile import write_modelfile
from helpers.export.roundtrip import RoundTrip, compare
from helpers.export.vocab import tokenizer_writer

__all__ = [
    "GGUF_TYPES",
    "ExportError",
    "ExportResult",
    "RoundTrip",
    "compare",
    "export",
    "export_model",
    "load_source",
    "source_kind",
    "write_gguf",
    "write_modelfile",
]


@dataclass
class ExportResult:
    """What an export wrote, how large each file is, how long each step took, the round trips."""

    source: str
    out: str
    files: dict = field(default_factory=dict)  # what -> path
    sizes: dict = field(default_factory=dict)  # what -> bytes
    seconds: dict = field(default_factory=dict)  # step -> seconds
    round_trips: list = field(default_factory=list)  # RoundTrip per GGUF file

    @property
    def passed(self) -> bool:
        """True when every GGUF file passed its round trip (or none was checked)."""
        return all(check.passed for check in self.round_trips)

    def as_dict(self) -> dict:
        """The figures as plain data (written to ``out/export.json``)."""
        return {
            "source": self.source,
            "out": self.out,
            "files": self.files,
            "sizes": self.sizes,
            "seconds": {step: round(value, 2) for step, value in self.seconds.items()},
            "round_trips": [check.as_dict() for check in self.round_trips],
            "passed": self.passed,
        }


def _timed(result: ExportResult, step: str, action, *args):
    """Run ``action(*args)``, add its duration to ``result.seconds[step]``, return its value."""
    start = time.perf_counter()
    value = action(*args)
    result.seconds[step] = result.seconds.get(step, 0.0) + time.perf_counter() - start
    return value


def export_model(
    model,
    tokenizer,
    out: str | Path,
    gguf_types=GGUF_TYPES,
    merged: bool = True,
    check: bool = True,
    source: str = "model in memory",
) -> ExportResult:
    """Export a loaded (already merged) model into ``out``; see :func:`export`."""
    out = Path(out)
    result = ExportResult(source=source, out=str(out))
    unknown = [kind for kind in gguf_types if kind not in GGUF_TYPES]
    if unknown:
        raise ExportError(f"GGUF type {unknown[0]!r} is not one of {', '.join(GGUF_TYPES)}")
    if gguf_types:
        check_architecture(model.config)  # before anything is written
        add_tokenizer = tokenizer_writer(tokenizer, model.config.vocab_size)
    out.mkdir(parents=True, exist_ok=True)
    if merged:
        _timed(result, "save merged", save_merged, model, tokenizer, out / "merged")
        weights = sorted((out / "merged").glob("*.safetensors"))
        result.files["safetensors"] = [str(path) for path in weights]
        result.sizes["safetensors"] = sum(path.stat().st_size for path in weights)
    for kind in gguf_types:
        path = out / "gguf" / f"model-{kind}.gguf"
        _timed(result, f"write {kind}", write_gguf, model, add_tokenizer, path, kind)
        result.files[kind] = str(path)
        result.sizes[kind] = path.stat().st_size
        if check:
            trip = _timed(result, f"check {kind}", compare, model, tokenizer, path, kind)
            result.round_trips.append(trip)
    if gguf_types:
        served = "q8_0" if "q8_0" in gguf_types else gguf_types[0]
        modelfile = write_modelfile(out / "gguf", f"model-{served}.gguf", tokenizer)
        result.files["Modelfile"] = str(modelfile)
    (out / "export.json").write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    return result


def export(
    source: str | Path,
    out: str | Path,
    gguf_types=GGUF_TYPES,
    merged: bool = True,
    check: bool = True,
    base: str | None = None,
) -> ExportResult:
    """Export a model folder or an adapter folder (merged into its base in fp32) into ``out``.

    Writes ``out/merged/`` (the safetensors, when ``merged``), ``out/gguf/model-<type>.gguf``
    for each of ``gguf_types`` with its round trip (``check``) and ``out/gguf/Modelfile``, and
    ``out/export.json``.
    """
    source, out = Path(source), Path(out)
    kind = source_kind(source)  # raises before anything loads
    if out.resolve() == source.resolve():
        raise ExportError(f"{out}: the output folder is the source folder; choose another --out")
    start = time.perf_counter()
    model, tokenizer, description = load_source(source, base=base)
    loaded = time.perf_counter() - start
    result = export_model(model, tokenizer, out, gguf_types, merged, check, description)
    result.seconds = {("merge" if kind == "adapter" else "load"): loaded, **result.seconds}
    (out / "export.json").write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    return result
