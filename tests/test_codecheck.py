"""helpers.codecheck: fences, syntax, PEP 8 by pycodestyle, type hints and docstrings of replies."""

import json

import pytest

from helpers import codecheck
from helpers.paths import sample_path

GOOD_CODE = '''def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: The first.
        b: The second.

    Returns:
        Their sum.
    """
    return a + b
'''
GOOD = f"```python\n{GOOD_CODE}```"


def test_a_clean_reply_passes_every_check():
    assert codecheck.check_reply(GOOD) == dict.fromkeys(codecheck.CHECKS, True)


def test_extract_code_returns_the_block_text_and_the_block_count():
    assert codecheck.extract_code(GOOD) == (GOOD_CODE, 1)


def test_no_fence_means_no_code_and_fails_every_check():
    reply = "def add(a: int, b: int) -> int:\n    return a + b\n"
    assert codecheck.extract_code(reply) == (None, 0)
    assert not any(codecheck.check_reply(reply).values())


def test_text_around_the_block_fails_only_code():
    checks = codecheck.check_reply(f"Here is the function:\n\n{GOOD}\n\nHope it helps!")
    assert checks["one_block"] and not checks["only_code"]
    assert checks["parses"] and checks["pep8"] and checks["type_hints"] and checks["docstrings"]


def test_two_python_blocks_are_counted_and_the_first_is_tested():
    reply = f"{GOOD}\n\nUsage:\n\n```python\nprint(add(1, 2))\n```"
    code, n_blocks = codecheck.extract_code(reply)
    assert (code, n_blocks) == (GOOD_CODE, 2)
    assert not codecheck.check_reply(reply)["one_block"]


def test_other_languages_count_as_blocks_but_are_never_run_as_python():
    reply = "```bash\npip install numpy\n```\n\n```text\nadd(1, 2) -> 3\n```"
    assert codecheck.extract_code(reply) == (None, 2)


def test_python_tag_wins_over_an_earlier_untagged_block():
    reply = f"```\nadd(1, 2)\n```\n{GOOD}"
    assert codecheck.extract_code(reply) == (GOOD_CODE, 2)


def test_an_untagged_block_is_tested_but_is_not_the_format():
    reply = f"```\n{GOOD_CODE}```"
    assert codecheck.extract_code(reply) == (GOOD_CODE, 1)
    checks = codecheck.check_reply(reply)
    assert not checks["one_block"] and not checks["only_code"]
    assert checks["parses"] and checks["type_hints"]


def test_py_and_python3_tags_count_as_python():
    for tag in ("py", "Python3"):
        assert codecheck.check_reply(f"```{tag}\n{GOOD_CODE}```")["one_block"]


def test_a_block_cut_off_by_the_token_limit_counts_but_is_not_closed():
    reply = "```python\ndef add(a: int, b: int) -> int:\n    return a +"
    code, n_blocks = codecheck.extract_code(reply)
    assert n_blocks == 1 and code.startswith("def add")
    checks = codecheck.check_reply(reply)
    assert not checks["one_block"] and not checks["parses"] and not checks["pep8"]


def test_parses_rejects_syntax_errors_null_bytes_and_none():
    assert codecheck.parses("x = 1\n")
    assert not codecheck.parses("def f(:\n    pass\n")
    assert not codecheck.parses("x = 1\0\n")
    assert not codecheck.parses(None)


def test_pep8_problems_come_from_pycodestyle_with_line_and_column():
    problems = codecheck.pep8_problems("import os\ndef f( x ):\n  return x\n")
    codes = [problem.split()[1] for problem in problems]
    assert codes == ["E302", "E201", "E202", "E111"]
    assert problems[0] == "2:1: E302 expected 2 blank lines, found 0"


def test_clean_code_has_no_pep8_problem():
    assert codecheck.pep8_problems(GOOD_CODE) == []


def test_line_length_limit_is_pep8s_79_unless_raised():
    line = f"x = '{'a' * 74}'\n"  # 80 characters
    assert len(line) == 81
    assert [p.split()[1] for p in codecheck.pep8_problems(line)] == ["E501"]
    assert codecheck.pep8_problems(line, max_line_length=100) == []
    assert codecheck.pep8_problems(line[:5] + line[6:]) == []  # 79 characters


def test_slices_spaced_as_pep8_writes_them_are_not_a_problem():
    assert codecheck.pep8_problems("chunk = items[i : i + size]\n") == []


def test_a_missing_final_newline_is_a_problem():
    assert [p.split()[1] for p in codecheck.pep8_problems("x = 1")] == ["W292"]


def test_a_syntax_error_fails_pep8_in_check_reply():
    checks = codecheck.check_reply("```python\ndef f(:\n    pass\n```")
    assert checks["one_block"] and not checks["parses"] and not checks["pep8"]


@pytest.mark.parametrize(
    "code",
    [
        "def f(a: int, b: int) -> int:\n    return a\n",
        "def f(*args: int, key: str = '', **kwargs: float) -> None:\n    pass\n",
        "def f(a: int, /, b: int, *, c: int) -> int:\n    return a\n",
        "class C:\n    def m(self, x: int) -> int:\n        return x\n\n"
        "    @classmethod\n    def make(cls) -> 'C':\n        return cls()\n",
        "async def f(a: int) -> int:\n    return a\n",
    ],
)
def test_type_hints_present(code):
    assert codecheck.has_type_hints(code)


@pytest.mark.parametrize(
    "code",
    [
        "def f(a: int, b) -> int:\n    return a\n",  # one argument without a hint
        "def f(a: int):\n    return a\n",  # no return hint
        "def f(*args) -> None:\n    pass\n",
        "def f(**kwargs) -> None:\n    pass\n",
        "def f(a: int, /, b) -> int:\n    return a\n",
        "def f(*, c) -> int:\n    return c\n",
        "def f(a: int) -> int:\n    def g(x):\n        return x\n\n    return g(a)\n",  # nested
        "x = 1\n",  # no function at all
        "def f(a: int) -> int\n",  # does not parse
        None,
    ],
)
def test_type_hints_missing(code):
    assert not codecheck.has_type_hints(code)


def test_docstrings_present_on_functions_classes_and_methods():
    code = (
        'class C:\n    """A class."""\n\n    def m(self) -> None:\n        """A method."""\n\n\n'
        'def f() -> None:\n    """A function."""\n\n    def helper():\n        pass\n'
    )
    assert codecheck.has_docstrings(code)  # the nested helper needs none


@pytest.mark.parametrize(
    "code",
    [
        "def f() -> None:\n    pass\n",
        "def f() -> None:\n    # A comment is not a docstring.\n    pass\n",
        'class C:\n    def m(self) -> None:\n        """A method."""\n',  # class undocumented
        'class C:\n    """A class."""\n\n    def m(self) -> None:\n        pass\n',  # method
        'def f() -> None:\n    """Documented."""\n\n\ndef g() -> None:\n    pass\n',
        '"""Only a module docstring."""\nx = 1\n',
        None,
    ],
)
def test_docstrings_missing(code):
    assert not codecheck.has_docstrings(code)


def test_function_names_lists_top_level_functions_only():
    code = (
        "import os\n\n\ndef f():\n    def inner():\n        pass\n\n\n"
        "class C:\n    def m(self):\n        pass\n\n\nasync def g():\n    pass\n"
    )
    assert codecheck.function_names(code) == ["f", "g"]
    assert codecheck.function_names("def f(:\n") == []
    assert codecheck.function_names(None) == []


def test_check_reply_judges_each_property_independently():
    code = "def add(a, b):\n    return a + b\n"
    checks = codecheck.check_reply(f"```python\n{code}```")
    assert checks == {
        "one_block": True,
        "only_code": True,
        "parses": True,
        "pep8": True,
        "type_hints": False,
        "docstrings": False,
    }


def test_every_reference_reply_in_the_code_data_passes_every_check():
    lines = sample_path("code_generation.jsonl").read_text(encoding="utf-8").splitlines()
    failing = [
        number
        for number, line in enumerate(lines, start=1)
        if not all(codecheck.check_reply(json.loads(line)["messages"][-1]["content"]).values())
    ]
    assert failing == []
