"""The data package's layout: its layer, its re-exported names and its single percentile."""

import ast
import json
import random
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import data

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    """Return every module a Python file imports, at any depth."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_data_imports_nothing_above_it():
    allowed = ("helpers.data", "helpers.paths", "helpers.models")
    modules = sorted(Path(data.__file__).parent.glob("*.py"))
    assert data.__file__.endswith("__init__.py") and len(modules) > 1  # a package
    for path in modules:
        ours = {m for m in imported_modules(path) if m.startswith("helpers")}
        assert all(m.startswith(allowed) for m in ours), (path.name, ours)


def test_importing_data_stays_light():
    code = "import sys, helpers.data; print(sorted({'helpers.chat', 'torch'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


def uses_of_data() -> set[str]:
    """Return every name the project takes from helpers.data (src, tests, notebooks)."""
    names = set()
    for path in [
        *ROOT.glob("src/**/*.py"),
        *ROOT.glob("tests/*.py"),
        *ROOT.glob("notebooks/*.ipynb"),
    ]:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".ipynb":
            text = "\n".join("".join(c["source"]) for c in json.loads(text)["cells"])
        for group in re.findall(r"from helpers\.data import (\([^)]*\)|[\w ,]+)", text):
            names |= {n.strip() for n in group.strip("()").split(",") if n.strip()}
        if re.search(r"from helpers import (\w+, )*data\b", text):
            names |= set(re.findall(r"(?<![\w.\"'/])data\.([A-Za-z]\w*)", text))
    return names


def test_every_name_in_use_is_re_exported():
    names = uses_of_data()
    assert {"validate", "load_examples", "split_file", "default_epochs", "DataFileError"} <= names
    assert [name for name in sorted(names) if not hasattr(data, name)] == []
    assert all(hasattr(data, name) for name in data.__all__)


def test_percentile_matches_the_standard_library_bit_for_bit():
    rng = random.Random(0)
    for size in (2, 3, 10, 101):
        values = [rng.uniform(0, 5) for _ in range(size)]
        cuts = statistics.quantiles(values, n=100, method="inclusive")
        assert [data.percentile(values, p) for p in range(1, 100)] == cuts


def test_percentile_exact_cases():
    assert data.percentile([5, 1, 4, 2, 3], 90) == 4.6  # 90% of the way from 1 to 5
    assert data.percentile([1, 2], 95) == 1.95
    assert data.percentile([7], 50) == 7.0
    assert (data.percentile([3, 1, 2], 0), data.percentile([3, 1, 2], 100)) == (1.0, 3.0)
    for values, percent in (([], 50), ([1], 0.5), ([1], 101)):
        with pytest.raises(ValueError):
            data.percentile(values, percent)


def test_there_is_one_percentile_in_the_project():
    sources = [p.read_text(encoding="utf-8") for p in (ROOT / "src").rglob("*.py")]
    assert sum(len(re.findall(r"^def _?percentile\(", s, re.M)) for s in sources) == 1
