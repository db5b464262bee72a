"""Parameter grids: read them, check them against a notebook's ``parameters`` cell, expand them.

A grid maps parameter names to a list of values (swept) or a single value (fixed for
every run). A parameter whose own type is a list (``lora_target_modules``) is swept
only by a list of lists. Everything is checked before anything runs.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import yaml

RESERVED = ("output_dir",)  # set by the batch for each run


class GridError(ValueError):
    """A grid that cannot run: unknown parameter, wrong type, unreadable file."""


def load_grid(path: str | Path) -> dict:
    """Read a YAML grid file: a mapping of parameter name to a value or a list of values."""
    path = Path(path)
    try:
        grid = yaml.safe_load(path.read_text("utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}" if mark else str(path)
        raise GridError(f"{where}: not valid YAML ({getattr(error, 'problem', error)})") from None
    if grid is None:
        return {}
    if not isinstance(grid, dict):
        raise GridError(f"{path}: a grid is a mapping of parameter name to values, not a list")
    for name in grid:
        if not isinstance(name, str) or not name.isidentifier():
            raise GridError(f"{path}: {name!r} is not a parameter name")
    return grid


def notebook_parameters(notebook: str | Path) -> dict[str, dict]:
    """Return the notebook's parameters (name -> type name, default, help), read by papermill."""
    from papermill.inspection import inspect_notebook

    parameters = inspect_notebook(str(notebook))
    if not parameters:
        raise GridError(f"{Path(notebook).name}: no cell tagged 'parameters'")
    return parameters


def _type_ok(value, type_name: str) -> bool:
    """Whether ``value`` fits a parameter annotated ``type_name`` (an int fits a float)."""
    expected = {"int": int, "float": (int, float), "str": str, "bool": bool, "list": list}
    expected.update({"dict": dict})
    if type_name not in expected:  # not annotated, or a type papermill cannot name
        return True
    if isinstance(value, bool) and type_name != "bool":
        return False
    return isinstance(value, expected[type_name])


def swept_values(name: str, value, type_name: str) -> list:
    """Return the values a grid entry stands for: a list sweeps, anything else is fixed."""
    if type_name == "list":  # a list-typed parameter is swept by a list of lists only
        sweep = isinstance(value, list) and value and all(isinstance(v, list) for v in value)
        return list(value) if sweep else [value]
    return list(value) if isinstance(value, list) else [value]


def check_grid(grid: dict, notebook: str | Path) -> dict[str, list]:
    """Return ``grid`` as name -> values after checking each name and value against the notebook."""
    known = notebook_parameters(notebook)
    name_of = Path(notebook).name
    checked = {}
    for name, value in grid.items():
        if name in RESERVED:
            raise GridError(f"{name}: set by the batch for each run (use --out)")
        if name not in known:
            listing = ", ".join(known)
            raise GridError(f"{name_of} has no parameter {name!r}; its parameters: {listing}")
        type_name = known[name]["inferred_type_name"]
        values = swept_values(name, value, type_name)
        if not values:
            raise GridError(f"{name}: an empty list sweeps nothing")
        for one in values:
            if not _type_ok(one, type_name):
                raise GridError(
                    f"{name_of}: {name} = {one!r} is a {type(one).__name__}, "
                    f"the notebook expects {type_name} (default {known[name]['default']})"
                )
        checked[name] = values
    return checked


def expand_grid(grid: dict[str, list]) -> list[dict]:
    """Return every combination of a checked grid, ``{"r": [4, 8]} -> [{"r": 4}, {"r": 8}]``."""
    names = list(grid)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*grid.values())]


def swept_names(grid: dict[str, list]) -> list[str]:
    """Return the names of the parameters that take more than one value."""
    return [name for name, values in grid.items() if len(values) > 1]


def _text(value) -> str:
    """Return a value as it appears in a run's name (lists joined with ``+``)."""
    if isinstance(value, list):
        return "+".join(_text(v) for v in value)
    return format(value, "g") if isinstance(value, float) else str(value)


def run_name(notebook: str | Path, parameters: dict, names: list[str]) -> str:
    """Return a run's folder name: the notebook stem plus the values of the swept ``names``."""
    parts = [Path(notebook).stem] + [f"{name}={_text(parameters[name])}" for name in names]
    return re.sub(r"[^\w\-=.+]", "_", "-".join(parts))
