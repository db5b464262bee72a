"""The safety rules' data file: the shipped one loads, and a bad one is named precisely."""

import copy
import textwrap
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml

from helpers.safety import RuleFileError, load_rules, match_request_rules, match_response_rules
from helpers.safety.classify import CLASSIFIER_FILE
from helpers.safety.rulefile import CATEGORIES, RULES_FILE

VALID = {
    "fragments": {"meds": r"(?:pills|meds)"},
    "requests": {
        "rules": [
            {"name": "lethal dose", "category": "overdose", "patterns": [r"\blethal\s+dose\b"]},
            {
                "name": "stop meds",
                "category": "stopping_medication",
                "patterns": [r"\bquit\b", "{meds}"],
            },
        ]
    },
    "responses": {
        "negation": r"\bnot\b",
        "dismissal": r"\bno\s+need\b",
        "supervised": r"\bdoctor\b",
        "rules": [
            {
                "name": "double",
                "category": "overdose",
                "pattern": r"\bdouble\s+(?:\w+\s+){0,2}?dose\b",
            }
        ],
    },
}


def write(tmp_path, data, name="rules.yaml"):
    """Write ``data`` as a YAML rules file and return its path."""
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_the_shipped_rules_load():
    rules = load_rules(RULES_FILE)
    assert len(rules.requests) == 68 and len(rules.responses) == 17
    assert {rule.category for rule in rules.requests + rules.responses} == set(CATEGORIES)


def test_the_data_files_ship_with_the_package():
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    package_data = tomllib.loads(pyproject.read_text("utf-8"))["tool"]["setuptools"]["package-data"]
    patterns = [*package_data.get("*", []), *package_data.get("helpers.safety", [])]
    subfolder = package_data.get("helpers", [])
    for path in (RULES_FILE, CLASSIFIER_FILE):
        name = path.name
        shipped = any(fnmatch(name, p) for p in patterns) or any(
            fnmatch(f"safety/{name}", p) for p in subfolder
        )
        assert shipped, f"pyproject.toml's package-data does not ship helpers/safety/{name}"


def test_a_valid_file_loads_and_its_rules_match(tmp_path):
    rules = load_rules(write(tmp_path, VALID))
    assert [rule.name for rule in rules.requests] == ["lethal dose", "stop meds"]
    assert rules.requests[1].patterns[1].pattern == "(?:pills|meds)"  # {meds} put in
    verdict = match_request_rules("I want to QUIT my pills", rules)
    assert verdict.category == "stopping_medication" and "rule 'stop meds'" in verdict.reason
    assert match_request_rules("What is a normal dose?", rules) is None
    assert match_response_rules("Double your usual dose.", rules).blocked
    assert match_response_rules("Do not double your dose.", rules) is None  # negation before it
    assert match_response_rules("Double your dose if your doctor agrees.", rules) is None
    assert match_response_rules("Double your dose, no need to ask a doctor.", rules).blocked


def test_a_block_pattern_joins_its_lines(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(
        textwrap.dedent("""\
            requests:
              rules:
                - name: lethal dose
                  category: overdose
                  patterns:
                    - |
                      \\blethal\\s+
                      dose\\b
            responses:
              negation: not
              supervised: doctor
              dismissal: no need
              rules:
                - {name: double, category: overdose, pattern: double}
            """),
        encoding="utf-8",
    )
    assert load_rules(path).requests[0].patterns[0].pattern == r"\blethal\s+dose\b"


def _set(path, value):
    """Return a mutation that sets the item at ``path`` (keys and indices) to ``value``."""

    def mutate(data):
        *parents, last = path
        for key in parents:
            data = data[key]
        data[last] = value

    return mutate


def _delete(path):
    """Return a mutation that deletes the item at ``path``."""

    def mutate(data):
        *parents, last = path
        for key in parents:
            data = data[key]
        del data[last]

    return mutate


REQUEST_0 = ("requests", "rules", 0)
RESPONSE_0 = ("responses", "rules", 0)
MISTAKES = {
    "missing field": (
        _delete((*REQUEST_0, "category")),
        "requests.rules[0] ('lethal dose'): missing field 'category'",
    ),
    "unknown field": (
        _set((*REQUEST_0, "note"), "x"),
        "requests.rules[0] ('lethal dose'): unknown field 'note'",
    ),
    "patterns not a list": (
        _set((*REQUEST_0, "patterns"), r"\blethal\b"),
        "requests.rules[0] ('lethal dose'), field 'patterns': expected a list of one or more "
        "patterns, got a string",
    ),
    "pattern not a string": (
        _set(("requests", "rules", 1, "patterns", 1), 42),
        "requests.rules[1] ('stop meds'), field 'patterns'[1]: expected a non-empty string, "
        "got a number",
    ),
    "regex does not compile": (
        _set((*REQUEST_0, "patterns", 0), r"\b(?:lethal"),
        "requests.rules[0] ('lethal dose'), field 'patterns'[0]: regex does not compile: "
        "missing ), unterminated subpattern at position 2",
    ),
    "unknown category": (
        _set((*REQUEST_0, "category"), "overdoes"),
        "requests.rules[0] ('lethal dose'), field 'category': 'overdoes' is not one of",
    ),
    "unknown fragment": (
        _set(("requests", "rules", 1, "patterns", 1), "{medz}"),
        "requests.rules[1] ('stop meds'), field 'patterns'[1]: unknown fragment {medz} "
        "(known: meds)",
    ),
    "duplicate name": (
        _set(("requests", "rules", 1, "name"), "lethal dose"),
        "requests.rules[1] ('lethal dose'), field 'name': already used by requests.rules[0]",
    ),
    "rule without a name": (
        _delete(("requests", "rules", 1, "name")),
        "requests.rules[1]: missing field 'name'",
    ),
    "response regex": (
        _set((*RESPONSE_0, "pattern"), "(?P<x"),
        "responses.rules[0] ('double'), field 'pattern': regex does not compile: "
        "missing >, unterminated name at position 4",
    ),
    "response rule with patterns": (
        _set((*RESPONSE_0, "patterns"), ["x"]),
        "responses.rules[0] ('double'): unknown field 'patterns'",
    ),
    "missing dismissal": (
        _delete(("responses", "dismissal")),
        "responses: missing field 'dismissal'",
    ),
    "dismissal regex": (
        _set(("responses", "dismissal"), "(no need"),
        "responses, field 'dismissal': regex does not compile",
    ),
    "negation regex": (
        _set(("responses", "negation"), "(not"),
        "responses, field 'negation': regex does not compile",
    ),
    "fragment regex": (
        _set(("fragments", "meds"), "[pills"),
        "fragments, field 'meds': regex does not compile: unterminated character set",
    ),
    "fragment using a fragment": (
        _set(("fragments", "pills"), "{meds}"),
        "fragments, field 'pills': a fragment cannot use another fragment",
    ),
    "no rules": (
        _set(("requests", "rules"), []),
        "requests.rules: expected a list of one or more rules, got an empty list",
    ),
    "missing section": (_delete(("responses",)), "top level: missing field 'responses'"),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_each_mistake_names_the_file_the_rule_and_the_field(tmp_path, mistake):
    mutate, expected = MISTAKES[mistake]
    data = copy.deepcopy(VALID)
    mutate(data)
    path = write(tmp_path, data, "my_rules.yaml")
    with pytest.raises(RuleFileError) as error:
        load_rules(path)
    assert str(error.value).startswith(f"{path}: ")
    assert expected in str(error.value)


def test_a_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(
        textwrap.dedent("""\
        requests:
          rules: [unclosed
        responses: {}
        """),
        encoding="utf-8",
    )
    with pytest.raises(RuleFileError, match=r"rules.yaml, line 3, column \d+: not valid YAML"):
        load_rules(path)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(RuleFileError, match=r"nowhere.yaml: cannot read the rules file"):
        load_rules(tmp_path / "nowhere.yaml")
