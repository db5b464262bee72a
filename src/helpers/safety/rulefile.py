"""Read the safety rules from their data file, checking every field on the way in.

The file (``rules.yaml`` next to this module) holds named regex ``fragments``, the request
rules and the answer rules; its header comment explains how to write them. Anything wrong
raises :class:`RuleFileError` with the file, the rule (section, index and name) and the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

RULES_FILE = Path(__file__).with_name("rules.yaml")
CATEGORIES = (
    "self_harm",
    "overdose",
    "stopping_medication",
    "illegal_drugs",
    "dangerous_remedy",
    "dangerous_procedure",
    "dangerous_mixing",
    "unsafe_dosing",
    "eating_disorder",
    "prescription_misuse",
    "harming_others",
)
FRAGMENT = re.compile(r"\{([a-z_][a-z0-9_]*)\}")  # {name} in a pattern; {0,2} is left alone


class RuleFileError(ValueError):
    """A rules file that cannot be used; the message names the file, the rule and the field."""


class _Invalid(Exception):
    """A problem found while checking, before the file's name is added to it."""


@dataclass(frozen=True)
class Rule:
    """A named rule: it fires when every one of its compiled ``patterns`` matches."""

    name: str
    category: str
    patterns: tuple[re.Pattern, ...]


@dataclass(frozen=True)
class RuleSet:
    """The request rules, the answer rules, and the answer rules' two exceptions."""

    requests: tuple[Rule, ...]
    responses: tuple[Rule, ...]
    negation: re.Pattern  # a few words before a match (same clause), it cancels an answer rule
    supervised: re.Pattern  # deferring to a doctor: in the sentence, it cancels an answer rule
    dismissal: re.Pattern  # just before a deferral ("no need to ask your doctor"): it does not


def load_rules(path: str | Path = RULES_FILE) -> RuleSet:
    """Read and check a rules file; raise :class:`RuleFileError` naming what is wrong."""
    path = Path(path)
    data = _read_yaml(path)
    try:
        _fields(data, "top level", required=("requests", "responses"), optional=("fragments",))
        fragments = _fragments(data.get("fragments") or {})
        requests = _fields(data["requests"], "requests", required=("rules",))
        responses = _fields(
            data["responses"],
            "responses",
            required=("negation", "supervised", "dismissal", "rules"),
        )
        return RuleSet(
            requests=_rules(requests["rules"], "requests.rules", "patterns", fragments),
            responses=_rules(responses["rules"], "responses.rules", "pattern", fragments),
            negation=_compile(responses["negation"], "responses, field 'negation'", fragments),
            supervised=_compile(
                responses["supervised"], "responses, field 'supervised'", fragments
            ),
            dismissal=_compile(responses["dismissal"], "responses, field 'dismissal'", fragments),
        )
    except _Invalid as problem:
        raise RuleFileError(f"{path}: {problem}") from None


def _read_yaml(path: Path):
    """Parse the file as YAML; an unreadable file or a syntax error names the file."""
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise RuleFileError(f"{path}: cannot read the rules file: {error.strerror}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise RuleFileError(f"{path}{where}: not valid YAML: {problem}") from None


def _kind(value) -> str:
    """Name a YAML value's type the way the file's author wrote it."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true/false"
    if value == []:
        return "an empty list"
    names = {dict: "a mapping", list: "a list", str: "a string", int: "a number"}
    return names.get(type(value), f"a {type(value).__name__}")


def _fields(value, where: str, required=(), optional=()) -> dict:
    """Return ``value`` if it is a mapping with every required field and no unknown one."""
    if not isinstance(value, dict):
        raise _Invalid(f"{where}: expected a mapping, got {_kind(value)}")
    for name in required:
        if name not in value:
            raise _Invalid(f"{where}: missing field '{name}'")
    unknown = [str(name) for name in value if name not in (*required, *optional)]
    if unknown:
        expected = ", ".join(f"'{name}'" for name in (*required, *optional))
        raise _Invalid(f"{where}: unknown field '{unknown[0]}' (expected {expected})")
    return value


def _text(value, where: str) -> str:
    """Return a pattern's text, its lines joined with their surrounding spaces dropped."""
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(f"{where}: expected a non-empty string, got {_kind(value)}")
    return "".join(line.strip() for line in value.splitlines())


def _fragments(raw) -> dict[str, str]:
    """Check the named fragments: each one compiles alone and uses no other fragment."""
    if not isinstance(raw, dict):
        raise _Invalid(f"fragments: expected a mapping, got {_kind(raw)}")
    fragments = {}
    for name, value in raw.items():
        where = f"fragments, field '{name}'"
        if not isinstance(name, str) or not FRAGMENT.fullmatch(f"{{{name}}}"):
            raise _Invalid(f"{where}: a fragment's name is lower-case letters, digits and _")
        text = _text(value, where)
        if FRAGMENT.search(text):
            raise _Invalid(f"{where}: a fragment cannot use another fragment")
        _compile(text, where, {})
        fragments[name] = text
    return fragments


def _compile(value, where: str, fragments: dict[str, str]) -> re.Pattern:
    """Put the fragments into a pattern and compile it, case-insensitive."""

    def fragment(match: re.Match) -> str:
        if match.group(1) not in fragments:
            known = ", ".join(fragments) or "none"
            raise _Invalid(f"{where}: unknown fragment {match.group(0)} (known: {known})")
        return fragments[match.group(1)]

    pattern = FRAGMENT.sub(fragment, _text(value, where))
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as error:
        raise _Invalid(f"{where}: regex does not compile: {error}") from None


def _rules(raw, where: str, pattern_field: str, fragments: dict[str, str]) -> tuple[Rule, ...]:
    """Check a list of rules; names are unique within the list."""
    if not isinstance(raw, list) or not raw:
        raise _Invalid(f"{where}: expected a list of one or more rules, got {_kind(raw)}")
    rules, seen = [], {}
    for index, item in enumerate(raw):
        label = f"{where}[{index}]"
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            label += f" ('{item['name']}')"
        rule = _rule(item, label, pattern_field, fragments)
        if rule.name in seen:
            raise _Invalid(f"{label}, field 'name': already used by {where}[{seen[rule.name]}]")
        seen[rule.name] = index
        rules.append(rule)
    return tuple(rules)


def _rule(raw, label: str, pattern_field: str, fragments: dict[str, str]) -> Rule:
    """Check one rule: a name, a known category, and one pattern or a list of them."""
    _fields(raw, label, required=("name", "category", pattern_field))
    name = _text(raw["name"], f"{label}, field 'name'")
    category = raw["category"]
    if category not in CATEGORIES:
        raise _Invalid(
            f"{label}, field 'category': {category!r} is not one of {', '.join(CATEGORIES)}"
        )
    field = f"{label}, field '{pattern_field}'"
    if pattern_field == "pattern":
        return Rule(name, category, (_compile(raw["pattern"], field, fragments),))
    texts = raw["patterns"]
    if not isinstance(texts, list) or not texts:
        raise _Invalid(f"{field}: expected a list of one or more patterns, got {_kind(texts)}")
    patterns = tuple(_compile(t, f"{field}[{i}]", fragments) for i, t in enumerate(texts))
    return Rule(name, category, patterns)
