"""Headless training from a YAML or JSON config: ``python -m helpers train CONFIG``.

:func:`load_config` checks everything before a model loads and names the file, line
and field of any mistake; :func:`train_from_config` runs :func:`helpers.train.finetune`.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path

from transformers import TrainingArguments

from helpers.measure import TrainResult
from helpers.train import finetune


class ConfigError(ValueError):
    """A training config is wrong; the message names the file, the line and the field."""


# Keys of a headless training config (``python -m helpers train CONFIG``) and their defaults.
CONFIG_DEFAULTS = {
    "model": "smollm2-135m-instruct",
    "train_file": None,
    "validation_file": None,
    "method": "lora",
    "output_dir": "runs/train",
    "max_seq_length": 512,
    "packing": False,
    "early_stopping_patience": 3,
    "lora": {},
    "training": {},
}
CONFIG_TYPES = {
    "model": str,
    "train_file": str,
    "validation_file": str,
    "method": str,
    "output_dir": str,
    "max_seq_length": int,
    "packing": bool,
    "early_stopping_patience": int,
    "lora": dict,
    "training": dict,
}
MAY_BE_EMPTY = ("validation_file", "lora", "training")  # ``key:`` with nothing after it
TYPE_NAMES = {str: "a string", int: "a whole number", bool: "true or false", dict: "a mapping"}
# LoRA fields whose values PEFT takes without a check, to fail (or train nothing) later.
LORA_VALUES = {
    "r": (lambda value: _is_type(value, int) and value >= 1, "a whole number of at least 1"),
    "lora_alpha": (lambda value: _is_number(value) and value > 0, "a number above 0"),
    "lora_dropout": (
        lambda value: _is_number(value) and 0 <= value < 1,
        "a number from 0 up to (not including) 1",
    ),
}
SET_ELSEWHERE = {  # fields the config sets in another place
    ("training", "output_dir"): "set output_dir at the top level of the config",
    ("lora", "task_type"): "the course always trains a causal LM (CAUSAL_LM)",
}


def _parse_yaml(path: Path, text: str):
    """Parse YAML (or JSON); a syntax error names the file, line and column."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        start = getattr(error, "context_mark", None)
        if start is not None and getattr(error, "context", None):
            problem += f" ({error.context} at line {start.line + 1}, column {start.column + 1})"
        raise ConfigError(f"{path}{where}: not valid YAML: {problem}") from None


def _key_lines(text: str) -> dict[tuple, int]:
    """Return the 1-based line of every key of a YAML document's mappings, by key path."""
    import yaml

    lines = {}

    def walk(node, prefix):
        """Record the line of every key under ``node``, whose keys are ``prefix``."""
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                lines[(*prefix, str(key.value))] = key.start_mark.line + 1
                walk(value, (*prefix, str(key.value)))

    walk(yaml.compose(text), ())
    return lines


def _is_type(value, expected: type) -> bool:
    """Tell whether a YAML value has the expected type (true/false is not a number)."""
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def _is_number(value) -> bool:
    """Tell whether a value is an int or a float (not true/false)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _top_level_mistake(config: dict) -> tuple[str, str] | None:
    """Return ``(key, problem)`` for the first mistake in a config's top-level keys, or None."""
    from helpers.paths import display_path, from_root

    unknown = sorted(set(config) - set(CONFIG_DEFAULTS))
    if unknown:
        arguments = [f.name for f in dataclasses.fields(TrainingArguments)]
        hints = [
            f"'{name}' looks like training argument '{close[0]}': put it under 'training:'"
            for name in unknown
            if (close := difflib.get_close_matches(name, arguments, n=1))
        ]
        known = f"unknown keys {unknown}; known keys: {sorted(CONFIG_DEFAULTS)}"
        return unknown[0], "; ".join([known, *hints])
    if not config.get("train_file"):
        return "train_file", "'train_file' is required"
    for key, value in config.items():
        expected = CONFIG_TYPES[key]
        if not _is_type(value, expected) and not (value is None and key in MAY_BE_EMPTY):
            kind = type(value).__name__
            return key, f"{key} must be {TYPE_NAMES[expected]}, not {kind} {value!r}"
    if (length := config.get("max_seq_length", 1)) < 1:  # slicing reads -5 as "all but 5"
        return "max_seq_length", f"max_seq_length must be at least 1, not {length}"
    if config.get("method", CONFIG_DEFAULTS["method"]) not in ("full", "lora"):
        return "method", f"method must be 'full' or 'lora', not {config['method']!r}"
    for key in ("train_file", "validation_file"):
        if config.get(key) and not from_root(config[key]).is_file():
            looked = display_path(from_root(config[key]))
            return key, (
                f"{key} {config[key]!r} does not exist (looked for {looked}; "
                f"relative paths start at the repository root)"
            )
    for key in ("train_file", "validation_file"):
        if config.get(key) and (problem := _data_file_mistake(key, config[key])):
            return key, problem
    return None


def _data_file_mistake(key: str, value: str) -> str | None:
    """Return why a data file has no example to use (empty, every line wrong), or None.

    A file with some valid examples passes: training warns about the rest.
    """
    from helpers.data import validate
    from helpers.paths import display_path, from_root

    path = from_root(value)
    report = validate(path)
    if report.examples:
        return None
    errors = [problem for problem in report.problems if problem.severity == "error"]
    lines = [problem for problem in errors if problem.line]
    if not lines:
        return f"{key} {value!r} has no example: the file is empty"
    shown, more = display_path(path), len(lines) - 1
    rest = f"; and {more} more line{'s' if more > 1 else ''} with errors" if more else ""
    return (
        f"{key} {value!r} has no valid example: line {lines[0].line} of {shown}: "
        f"{lines[0].message}{rest} (python -m helpers validate {shown} lists them all)"
    )


def _section_mistake(section: str, values: dict, cls: type, library: str):
    """Return ``(field, problem)`` for the first field in a section that ``cls`` lacks, or None."""
    fields = {f.name: f.default for f in dataclasses.fields(cls) if f.init}
    for name, value in values.items():
        if (section, name) in SET_ELSEWHERE:
            return name, f"{section}.{name}: {SET_ELSEWHERE[section, name]}"
        if name not in fields:
            close = difflib.get_close_matches(name, sorted(fields), n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            return name, (
                f"{section}.{name} is not a {library} field (valid fields are those of the "
                f"{library} dataclass){hint}"
            )
        if isinstance(value, str) and _is_number(fields[name]):
            mantissa, _, exponent = value.lower().partition("e")
            hint = (
                f" (YAML reads {value} as text: write {mantissa}.0e{exponent})"
                if exponent and mantissa.lstrip("+-").isdigit()
                else ""
            )
            return name, f"{section}.{name} must be a number, not the text {value!r}{hint}"
    return None


def _config_mistake(config: dict) -> tuple[tuple, str] | None:
    """Return ``(key path, problem)`` for the first mistake in a parsed config, or None."""
    from peft import LoraConfig

    if mistake := _top_level_mistake(config):
        return (mistake[0],), mistake[1]
    sections = (
        ("training", TrainingArguments, "transformers.TrainingArguments"),
        ("lora", LoraConfig, "peft.LoraConfig"),
    )
    for section, cls, library in sections:
        if mistake := _section_mistake(section, config.get(section) or {}, cls, library):
            return (section, mistake[0]), mistake[1]
    for name, value in (config.get("lora") or {}).items():
        if name in LORA_VALUES and not LORA_VALUES[name][0](value):
            return ("lora", name), f"lora.{name} must be {LORA_VALUES[name][1]}, not {value!r}"
    return None


def load_config(path: str | Path) -> dict:
    """Read and check a YAML or JSON training config; return it with the defaults filled in.

    Any mistake raises :class:`ConfigError` with one message naming the file, the line
    and the field: YAML syntax, unknown keys, wrong types, missing data files, a method
    other than full/lora, ``training:`` fields that ``TrainingArguments`` does not have,
    ``lora:`` fields that ``LoraConfig`` does not have, LoRA values out of range (``r``,
    ``lora_alpha``, ``lora_dropout``), data files with no valid example (empty, or every
    line wrong: the message shows the first wrong line).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the training config ({error.strerror})") from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: the training config is not UTF-8 text (byte {error.start}: {error.reason})"
        ) from None
    config = _parse_yaml(path, text)
    if config is None:
        config = {}
    if not isinstance(config, dict):
        kind = type(config).__name__
        raise ConfigError(
            f"{path}: a training config must be a mapping of keys to values, not {kind}"
        )
    mistake = _config_mistake(config)
    if mistake:
        keys, problem = mistake
        line = _key_lines(text).get(keys)
        raise ConfigError(f"{path}{f', line {line}' if line else ''}: {problem}")
    config = {**CONFIG_DEFAULTS, **config}
    return {**config, "lora": config["lora"] or {}, "training": config["training"] or {}}


def train_from_config(config: dict) -> TrainResult:
    """Load the model and data a config names and fine-tune; works under torchrun/accelerate.

    The model loads on this process's device (its GPU under torchrun) with the attention
    kernel that suits it (:func:`helpers.models.load_base_model`).
    """
    from helpers.data import load_examples
    from helpers.models import frozen_weights_dtype, load_base_model
    from helpers.paths import from_root, output_dir

    dtype = frozen_weights_dtype(config["method"], bf16=config["training"].get("bf16"))
    model, tokenizer = load_base_model(config["model"], dtype=dtype)
    train = load_examples(from_root(config["train_file"]))
    val = load_examples(from_root(config["validation_file"])) if config["validation_file"] else None
    return finetune(
        model,
        tokenizer,
        train,
        val,
        method=config["method"],
        output_dir=output_dir(config["output_dir"]),
        max_seq_length=config["max_seq_length"],
        packing=config["packing"],
        early_stopping_patience=config["early_stopping_patience"],
        lora=config["lora"],
        **config["training"],
    )
