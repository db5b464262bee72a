"""Static checks of a model's reply to a coding request: format, syntax, PEP 8, hints, docstrings.

The format the course's code data teaches (``data/samples/code_generation.jsonl``) is a reply
that is exactly one fenced block tagged ``python``, closed, with nothing around it. How fences
count:

- every fenced block counts in ``n_blocks``, whatever its language tag (```` ```bash ````, a bare
  ```` ``` ````...); a fence left open at the end of the reply (generation cut at
  ``max_new_tokens``) counts too, and runs to the end of the reply;
- the code to test is the first block tagged ``python``/``py``/``python3``, else the first
  untagged block, else none: a shell or text block is never run as Python.

PEP 8 is judged by the real ``pycodestyle`` library with its defaults, including PEP 8's own
maximum line length of 79 characters (every reference solution in the data meets it) and its
default list of ignored, contested checks (W503/W504 line breaks around operators...), plus
E203: PEP 8 itself writes slices as ``ham[lower + offset : upper + offset]``, the style Black
and ruff's formatter produce, and pycodestyle's E203 wrongly flags it.

A leaf module: the standard library and ``pycodestyle`` only.
"""

from __future__ import annotations

import ast
from functools import cache
from typing import NamedTuple

import pycodestyle

PYTHON_TAGS = ("python", "py", "python3")
MAX_LINE_LENGTH = 79  # PEP 8's limit for code
IGNORED = (*pycodestyle.DEFAULT_IGNORE.split(","), "E203")  # see the module docstring
CHECKS = ("one_block", "only_code", "parses", "pep8", "type_hints", "docstrings")


class Block(NamedTuple):
    """One fenced block of a reply: its language tag, its text and whether a fence closed it."""

    tag: str
    code: str
    closed: bool


def fenced_blocks(reply: str) -> list[Block]:
    """Return the fenced blocks of a Markdown reply, in order (an open last one included)."""
    blocks, tag, lines = [], None, []
    for line in reply.splitlines(keepends=True):
        fence = line.strip()
        if tag is None and fence.startswith("```"):
            tag, lines = fence[3:].strip().lower(), []
        elif tag is not None and fence == "```":
            blocks.append(Block(tag, "".join(lines), True))
            tag = None
        elif tag is not None:
            lines.append(line)
    if tag is not None:
        blocks.append(Block(tag, "".join(lines), False))
    return blocks


def extract_code(reply: str) -> tuple[str | None, int]:
    """Return ``(code, n_blocks)``: the Python block to test (or None) and how many blocks exist."""
    blocks = fenced_blocks(reply)
    python = [b for b in blocks if b.tag in PYTHON_TAGS] or [b for b in blocks if not b.tag]
    return (python[0].code if python else None), len(blocks)


def _tree(code: str | None) -> ast.Module | None:
    """Parse code into an AST, or None when it is missing or not valid Python."""
    if code is None:
        return None
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError):  # ValueError: source with null bytes
        return None


def parses(code: str | None) -> bool:
    """Whether the code is valid Python (``ast.parse`` accepts it)."""
    return _tree(code) is not None


class _Collector(pycodestyle.BaseReport):
    """A pycodestyle report that keeps each problem as ``"line:column: CODE message"``."""

    def __init__(self, options):
        super().__init__(options)
        self.problems: list[str] = []

    def error(self, line_number, offset, text, check):
        """Record a problem unless the style guide ignores its code."""
        code = super().error(line_number, offset, text, check)
        if code:
            self.problems.append(f"{line_number}:{offset + 1}: {text}")
        return code


@cache
def _style(max_line_length: int) -> pycodestyle.StyleGuide:
    """A quiet pycodestyle StyleGuide with its default checks (built once: parsing is slow)."""
    return pycodestyle.StyleGuide(quiet=True, max_line_length=max_line_length, ignore=IGNORED)


def pep8_problems(code: str, max_line_length: int = MAX_LINE_LENGTH) -> list[str]:
    """Return pycodestyle's problems with the code, e.g. ``"3:1: E302 expected 2 blank lines"``."""
    options = _style(max_line_length).options
    report = _Collector(options)
    lines = code.splitlines(keepends=True)
    pycodestyle.Checker(lines=lines, options=options, report=report).check_all()
    return report.problems


def function_names(code: str | None) -> list[str]:
    """Return the names of the top-level functions the code defines (none if it does not parse)."""
    tree = _tree(code)
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef)
    return [node.name for node in tree.body if isinstance(node, kinds)] if tree else []


def _functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    """Every function and method defined anywhere in a tree."""
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef)
    return [node for node in ast.walk(tree) if isinstance(node, kinds)]


def _annotated(function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Whether every argument but self/cls, and the return, carries a type hint."""
    args = function.args
    every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
    arguments = [a for a in every if a is not None and a.arg not in ("self", "cls")]
    return function.returns is not None and all(a.annotation is not None for a in arguments)


def has_type_hints(code: str | None) -> bool:
    """Whether the code defines functions and every one annotates its arguments and return."""
    tree = _tree(code)
    functions = _functions(tree) if tree else []
    return bool(functions) and all(_annotated(f) for f in functions)


def _documentable(tree: ast.Module) -> list[ast.AST]:
    """Top-level functions and classes, and the methods of those classes (not nested helpers)."""
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    found = []
    for node in tree.body:
        if isinstance(node, kinds):
            found.append(node)
        if isinstance(node, ast.ClassDef):
            found += [n for n in node.body if isinstance(n, kinds[:2])]
    return found


def has_docstrings(code: str | None) -> bool:
    """Whether the code defines functions or classes and every top-level one has a docstring.

    Top-level functions and classes and their methods count; functions nested inside a function
    (small helpers, closures) do not.
    """
    tree = _tree(code)
    nodes = _documentable(tree) if tree else []
    return bool(nodes) and all(ast.get_docstring(node) for node in nodes)


def check_reply(reply: str, max_line_length: int = MAX_LINE_LENGTH) -> dict[str, bool]:
    """Return the format checks of one reply as booleans, keyed as in ``CHECKS``.

    ``one_block``: exactly one fenced block, tagged python and closed; ``only_code``: that block
    is the whole reply; ``parses``, ``pep8`` (no pycodestyle problem; a syntax error is one),
    ``type_hints`` and ``docstrings`` judge the extracted code, and are False without any.
    """
    blocks = fenced_blocks(reply)
    code, _ = extract_code(reply)
    one_block = len(blocks) == 1 and blocks[0].tag in PYTHON_TAGS and blocks[0].closed
    text = reply.strip()
    return {
        "one_block": one_block,
        "only_code": one_block and text.startswith("```") and text.endswith("```"),
        "parses": parses(code),
        "pep8": parses(code) and not pep8_problems(code, max_line_length),
        "type_hints": has_type_hints(code),
        "docstrings": has_docstrings(code),
    }
