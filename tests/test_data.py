"""The data layer: every validation code, exact line numbers, splits, tokens, cost, noise, CLI."""

import copy
import json
import re
import subprocess
import sys
import warnings

import pytest

from helpers import data
from helpers.chat import tokenize_conversation
from helpers.cli import main
from helpers.evaluate import closes_with_contact_us, greets_hello
from helpers.paths import samples_dir

USER = {"role": "user", "content": "How do I return a product?"}
REPLY = {"role": "assistant", "content": "Hello! Use the prepaid label. Please contact us."}
GOOD = {"messages": [USER, REPLY]}
GOOD_LINE = json.dumps(GOOD)


def line(*messages, **top) -> str:
    """Return one JSONL line with the given messages and top-level keys."""
    return json.dumps({"messages": list(messages), **top})


def check(tmp_path, *lines) -> data.ValidationReport:
    """Write lines (str or bytes) as a JSONL file and validate it."""
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\n".join(x if isinstance(x, bytes) else x.encode() for x in lines) + b"\n")
    return data.validate(path)


def codes(report) -> list[str]:
    return [p.code for p in report.problems]


def many(n: int) -> list[dict]:
    """Return n distinct valid examples."""
    return [
        {"messages": [{"role": "user", "content": f"Q{i}"}, {"role": "assistant", "content": "A"}]}
        for i in range(n)
    ]


# --- every code, with a minimal bad input ---------------------------------------------------

ERRORS = [
    ("invalid_utf8", b'{"messages": "caf\xe9"}'),
    ("invalid_json", '{"messages": [}'),
    ("not_an_object", "[1, 2]"),
    ("not_an_object", "42"),
    ("not_an_object", '"text"'),
    ("not_an_object", "null"),
    ("missing_messages", '{"prompt": "a", "completion": "b"}'),
    ("messages_not_list", '{"messages": "hi"}'),
    ("empty_messages", '{"messages": []}'),
    ("message_not_object", line("hi", REPLY)),
    ("missing_role", line({"content": "hi"}, REPLY)),
    ("unknown_role", line({"role": "bot", "content": "hi"}, REPLY)),
    ("unknown_role", line({"role": "User", "content": "hi"}, REPLY)),
    ("missing_content", line({"role": "user"}, REPLY)),
    ("missing_content", line({"role": "user", "content": None}, REPLY)),
    ("content_not_string", line({"role": "user", "content": 7}, REPLY)),
    (
        "content_not_string",
        line({"role": "user", "content": {"type": "text", "text": "hi"}}, REPLY),
    ),
    ("empty_content", line({"role": "user", "content": " \n\t"}, REPLY)),
    ("empty_content", line({"role": "user", "content": []}, REPLY)),
    (
        "empty_content",
        line(USER, {"role": "assistant", "content": [{"type": "text", "text": " "}]}),
    ),
    ("invalid_content_part", line({"role": "user", "content": [{"type": "text"}]}, REPLY)),
    (
        "invalid_content_part",
        line({"role": "user", "content": [{"type": "text", "text": 1}]}, REPLY),
    ),
    ("invalid_content_part", line({"role": "user", "content": ["hi"]}, REPLY)),
    ("invalid_content_part", line({"role": "user", "content": [{"text": "hi"}]}, REPLY)),
    ("invalid_content_part", line({"role": "user", "content": [{"type": "input_text"}]}, REPLY)),
    ("invalid_content_part", line({"role": "user", "content": [{"type": ["text"]}]}, REPLY)),
    ("unsupported_content_part", line({"role": "user", "content": [{"type": "image_url"}]}, REPLY)),
    (
        "unsupported_content_part",
        line({"role": "user", "content": [{"type": "input_audio"}]}, REPLY),
    ),
    ("unsupported_content_part", line({"role": "user", "content": [{"type": "file"}]}, REPLY)),
    (
        "unsupported_content_part",
        line(USER, {"role": "assistant", "content": [{"type": "refusal"}]}),
    ),
    ("empty_content", line(USER, {"role": "assistant", "content": ""})),
    ("no_assistant_message", line(USER)),
    ("last_not_assistant", line(USER, REPLY, USER)),
    ("invalid_weight", line(USER, {**REPLY, "weight": 2})),
    ("invalid_weight", line(USER, {**REPLY, "weight": True})),
    ("invalid_weight", line(USER, {**REPLY, "weight": "1"})),
    ("invalid_weight", line(USER, {**REPLY, "weight": 0.5})),
    ("weight_not_on_assistant", line({**USER, "weight": 0}, REPLY)),
    ("unknown_key", line(USER, {**REPLY, "name2": "x"})),
    ("invalid_name", line({**USER, "name": 3}, REPLY)),
    ("unsupported_feature", line(USER, REPLY, tools=[])),
    ("unsupported_feature", line(USER, REPLY, functions=[])),
    ("unsupported_feature", line(USER, REPLY, parallel_tool_calls=False)),
    ("unsupported_feature", line(USER, {"role": "assistant", "tool_calls": []}, REPLY)),
    ("unsupported_feature", line(USER, {**REPLY, "function_call": {}})),
    ("unsupported_feature", line(USER, {"role": "tool", "content": "42"}, REPLY)),
    ("unsupported_feature", line(USER, {"role": "function", "content": "42"}, REPLY)),
]


@pytest.mark.parametrize(("code", "bad"), ERRORS)
def test_each_error_code_drops_only_its_example(tmp_path, code, bad):
    report = check(tmp_path, GOOD_LINE, bad, GOOD_LINE.replace("return", "send"))
    assert code in codes(report)
    assert {p.line for p in report.problems} == {2}
    assert all(p.severity == "error" for p in report.problems if p.code == code)
    assert report.lines == [1, 3] and report.invalid == 1 and not report.ok


def test_messages_say_what_and_where(tmp_path):
    report = check(
        tmp_path,
        line(USER, {"role": "tool", "content": "x"}, REPLY),
        line({"role": "user", "content": [{"type": "image_url"}]}, REPLY),
        line(USER, {**REPLY, "weight": True}),
    )
    tool, parts, weight = (p.message for p in report.problems)
    assert "messages[1]" in tool and "not supported" in tool
    assert "messages[0] (user)" in parts and "images are not supported" in parts
    assert "messages[1] (assistant)" in weight and "got true" in weight


def test_every_problem_of_an_example_is_reported(tmp_path):
    bad = line({"role": "bot", "content": "a"}, {"role": "user", "content": ""}, "x", REPLY)
    report = check(tmp_path, bad)
    assert codes(report) == ["unknown_role", "empty_content", "message_not_object"]
    assert [p.message.split(" ")[0] for p in report.problems] == [
        "messages[0]",
        "messages[1]",
        "messages[2]",
    ]


def test_a_tool_call_without_content_is_one_problem_not_two(tmp_path):
    report = check(tmp_path, line(USER, {"role": "assistant", "tool_calls": [{}]}))
    assert codes(report) == ["unsupported_feature"]


def test_no_examples_is_a_whole_file_error(tmp_path):
    for content in (b"", b"\n\n  \n"):
        (tmp_path / "empty.jsonl").write_bytes(content)
        report = data.validate(tmp_path / "empty.jsonl")
        assert codes(report) == ["no_examples"] and report.problems[0].line == 0
        assert report.total == 0 and not report.ok
    assert codes(data.validate([])) == ["no_examples"]


def test_warnings_keep_the_example(tmp_path):
    report = check(tmp_path, line(USER, REPLY, tests=["assert 1"], category="x"), GOOD_LINE)
    assert codes(report) == ["extra_key"] and report.problems[0].severity == "warning"
    assert '"tests", "category"' in report.problems[0].message
    assert "remove before uploading to OpenAI" in report.problems[0].message
    assert report.valid == 2 and report.ok


def test_exact_duplicates_are_warned_with_the_earlier_line(tmp_path):
    reordered = json.dumps({"messages": [USER, {"content": REPLY["content"], "role": "assistant"}]})
    report = check(tmp_path, GOOD_LINE, "", line(USER, {**REPLY, "weight": 1}), reordered)
    assert codes(report) == ["duplicate_example"]
    assert report.problems[0].line == 4 and "line 1" in report.problems[0].message
    assert report.lines == [1, 3, 4] and report.ok


def test_name_and_weight_are_accepted(tmp_path):
    report = check(tmp_path, line({**USER, "name": "ann"}, {**REPLY, "weight": 0}, USER, REPLY))
    assert report.problems == [] and report.valid == 1


def test_too_long_is_a_warning_with_the_count(tokenizer):
    examples = [GOOD, {"messages": [USER, {**REPLY, "content": "word " * 60}]}]
    report = data.validate(examples, tokenizer=tokenizer, max_tokens=60)
    assert codes(report) == ["too_long"] and report.problems[0].line == 2
    assert report.valid == 2 and report.ok
    count = len(tokenize_conversation(tokenizer, examples[1]["messages"], 10**6)["input_ids"])
    assert f"renders to {count} tokens" in report.problems[0].message
    with pytest.raises(ValueError, match="tokenizer"):
        data.validate(examples, max_tokens=60)


# --- lines, encodings and files ---------------------------------------------------------------


def test_valid_lines_of_a_mixed_file_are_all_kept_with_their_line_numbers(tmp_path):
    examples = many(4)
    lines = [
        json.dumps(examples[0]),
        "{oops",
        "",
        json.dumps(examples[1]),
        '{"messages": []}',
        json.dumps(examples[2]),
        "   ",
        json.dumps(examples[3]),
    ]
    report = check(tmp_path, *lines)
    assert report.examples == examples and report.lines == [1, 4, 6, 8]
    assert [(p.line, p.code) for p in report.problems] == [
        (2, "invalid_json"),
        (5, "empty_messages"),
    ]
    assert (report.total, report.valid, report.invalid) == (6, 4, 2)


def test_bom_crlf_and_blank_lines_are_accepted(tmp_path):
    path = tmp_path / "windows.jsonl"
    body = f"{GOOD_LINE}\r\n\r\n   \r\n{line(USER, {**REPLY, 'content': 'Bye'})}\r\n"
    path.write_bytes(b"\xef\xbb\xbf" + body.encode())
    report = data.validate(path)
    assert report.problems == [] and report.lines == [1, 4] and report.total == 2
    assert report.examples[0] == GOOD


def test_a_non_utf8_line_does_not_lose_its_neighbours(tmp_path):
    latin1 = json.dumps({"messages": [USER, {**REPLY, "content": "Café"}]}, ensure_ascii=False)
    latin1 = latin1.encode("latin-1")
    report = check(tmp_path, GOOD_LINE, latin1, b"\xff\xfe\x00binary", line(USER, REPLY, x=1))
    assert [(p.line, p.code) for p in report.problems[:2]] == [
        (2, "invalid_utf8"),
        (3, "invalid_utf8"),
    ]
    assert "byte 0xe9" in report.problems[0].message
    assert report.lines == [1, 4]


def test_json_that_python_accepts_but_json_does_not_is_rejected(tmp_path):
    report = check(
        tmp_path,
        line(USER, {**REPLY, "weight": float("nan")}),
        GOOD_LINE.replace("}]}", '}], "x": 1e999}'),
        "[" * 100_000,
        json.dumps({"messages": [{"role": "user", "content": "\ud83d"}, REPLY]}),
    )
    assert codes(report) == ["invalid_json"] * 3 + ["invalid_utf8"]


def test_unreadable_files_raise_one_clear_error(tmp_path):
    missing = tmp_path / "nope.jsonl"
    for path, words in ((missing, "no such file"), (tmp_path, "is a directory")):
        for reader in (data.validate, data.read_jsonl, data.load_examples):
            with pytest.raises(data.DataFileError, match=words) as caught:
                reader(path)
            assert str(path) in str(caught.value)


def test_a_list_of_dicts_is_validated_by_position():
    report = data.validate([GOOD, "not a dict", {"messages": []}, GOOD])
    assert [(p.line, p.code) for p in report.problems] == [
        (2, "not_an_object"),
        (3, "empty_messages"),
        (4, "duplicate_example"),
    ]
    assert "example 1" in report.problems[2].message
    assert report.lines == [1, 4] and report.examples[0] is GOOD


def test_report_api(tmp_path):
    report = check(tmp_path, GOOD_LINE, "{", line(USER, REPLY, label="x"))
    assert report.summary() == "3 examples: 2 valid, 1 invalid; 1 errors, 1 warnings"
    assert report.counts_by_code() == {"extra_key": 1, "invalid_json": 1}
    as_dict = report.to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert {k: as_dict[k] for k in ("source", "total", "valid", "invalid", "ok")} == {
        "source": report.source,
        "total": 3,
        "valid": 2,
        "invalid": 1,
        "ok": False,
    }
    assert as_dict["problems"][0] == {
        "line": 2,
        "code": "invalid_json",
        "message": report.problems[0].message,
        "severity": "error",
    }
    text = str(report)
    assert report.summary() in text and "line 2: invalid_json: " in text
    assert "line 3: extra_key (warning): " in text
    assert "<table>" in report._repr_html_()


def test_load_examples_warns_only_when_something_was_found(tmp_path):
    good = tmp_path / "good.jsonl"
    data.write_jsonl([GOOD], good)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert data.load_examples(good) == [GOOD]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(f"{GOOD_LINE}\n{{\n")
    with pytest.warns(UserWarning, match="line 2: invalid_json"):
        assert data.load_examples(bad) == [GOOD]


def test_write_jsonl_is_exact_atomic_and_round_trips(tmp_path):
    path = tmp_path / "sub" / "out.jsonl"
    rows = [{"z": 1, "a": "café ⚠️"}, {"messages": []}]
    assert data.write_jsonl(rows, path) == path
    assert path.read_bytes() == '{"z": 1, "a": "café ⚠️"}\n{"messages": []}\n'.encode()
    assert data.read_jsonl(path) == rows
    data.write_jsonl([], path)
    assert path.read_bytes() == b""
    assert [p.name for p in path.parent.iterdir()] == ["out.jsonl"]  # no temp files left
    with pytest.raises(ValueError):
        data.write_jsonl([{"x": float("nan")}], path)
    assert path.read_bytes() == b"" and len(list(path.parent.iterdir())) == 1


def test_read_jsonl_names_the_first_bad_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n\n[1]\n')
    with pytest.raises(ValueError, match="line 3: the line is an array"):
        data.read_jsonl(path)


# --- clean, split ---------------------------------------------------------------------------


def test_clean_normalises_trims_dedupes_and_never_mutates():
    decomposed = {"messages": [{"role": "user", "content": " Cafe\u0301?\n"}, REPLY]}
    examples = [decomposed, GOOD, copy.deepcopy(GOOD), {"messages": [USER, REPLY], "x": 1}]
    before = copy.deepcopy(examples)
    cleaned, changes = data.clean(examples)
    assert examples == before
    assert cleaned[0]["messages"][0]["content"] == "Café?"
    assert len(cleaned) == 3 and cleaned[1:] == [GOOD, examples[3]]
    assert changes == [
        "example 1, messages[0]: Unicode normalised (NFC) and whitespace trimmed",
        "example 3: removed, exact duplicate of example 2",
    ]
    kept, changes = data.clean(examples, normalize=None, dedupe=False)
    assert len(kept) == 4 and kept[0]["messages"][0]["content"] == "Cafe\u0301?"
    assert changes == ["example 1, messages[0]: whitespace trimmed"]
    with pytest.raises(ValueError, match="NFC"):
        data.clean(examples, normalize="nfc")


def test_split_sizes_sum_and_cover_every_split():
    examples = many(180)
    train, validation, test = data.split(examples)
    assert (len(train), len(validation), len(test)) == (144, 18, 18)
    assert sorted(map(json.dumps, train + validation + test)) == sorted(map(json.dumps, examples))
    sizes = {n: tuple(map(len, data.split(many(n)))) for n in (0, 1, 2, 3, 5, 11)}
    assert sizes == {
        0: (0, 0, 0),
        1: (1, 0, 0),
        2: (1, 1, 0),
        3: (1, 1, 1),
        5: (3, 1, 1),
        11: (9, 1, 1),
    }
    assert tuple(map(len, data.split(many(8), (0.5, 0.25, 0.25)))) == (4, 2, 2)
    assert tuple(map(len, data.split(many(10), [0.7, 0.3, 0.0]))) == (7, 3, 0)
    assert tuple(map(len, data.split(many(5), (1, 0, 0)))) == (5, 0, 0)


def test_split_is_seeded():
    examples = many(50)
    assert data.split(examples, seed=1) == data.split(examples, seed=1)
    assert data.split(examples, seed=1)[0] != data.split(examples, seed=2)[0]
    assert examples == many(50)


@pytest.mark.parametrize(
    ("ratios", "words"),
    [
        ((0.8, 0.1), "three numbers"),
        ((0.9, 0.2, -0.1), "non-negative"),
        ((0.5, 0.4, 0.05), "sum to 1"),
        ((float("nan"), 0.5, 0.5), "non-negative numbers"),
    ],
)
def test_bad_ratios_are_rejected(ratios, words):
    with pytest.raises(ValueError, match=words):
        data.split(many(10), ratios)


def test_split_file_is_byte_identical_for_a_seed(tmp_path):
    source = tmp_path / "all.jsonl"
    data.write_jsonl(many(30), source)
    first = data.split_file(source, tmp_path / "a", seed=7)
    again = data.split_file(source, tmp_path / "b", seed=7)
    other = data.split_file(source, tmp_path / "c", seed=8)
    assert list(first) == ["train", "validation", "test"]
    assert [p.name for p in first.values()] == ["train.jsonl", "validation.jsonl", "test.jsonl"]
    for name in first:
        assert first[name].read_bytes() == again[name].read_bytes()
    assert first["train"].read_bytes() != other["train"].read_bytes()
    assert [len(data.read_jsonl(p)) for p in first.values()] == [24, 3, 3]


# --- tokens and cost ------------------------------------------------------------------------


def test_openai_count_matches_the_cookbook_by_hand():
    messages = [
        {"role": "user", "content": "Hello world"},
        {"role": "assistant", "content": "Hi", "name": "bot", "weight": 1},
    ]
    encoding, library = data.openai_encoding("gpt-4o-mini-2024-07-18")
    assert (encoding.name, library) == ("o200k_base", "bpe-openai")
    assert encoding.encode_ordinary("Hello world") == [13225, 2375]  # as tiktoken's o200k_base
    size = [len(encoding.encode_ordinary(t)) for t in ("user", "assistant", "Hi", "bot")]
    assert size == [1, 1, 1, 1]
    # 3 per message + their text (user, Hello world | assistant, Hi, bot) + 1 for the name + 3
    assert data.count_openai_tokens(messages) == (3 + 1 + 2) + (3 + 1 + 1 + 1 + 1) + 3 == 16
    assert data.openai_encoding("gpt-3.5-turbo-0125")[0].name == "cl100k_base"
    assert data.openai_encoding("ft:gpt-4.1-mini-2025-04-14:org::abc")[0].name == "o200k_base"
    with pytest.raises(ValueError, match="o200k_base"):
        data.openai_encoding("llama-3")


def test_token_stats_on_a_tiny_list(tokenizer):
    short = {"messages": [{"role": "user", "content": "Hello world"}, REPLY]}
    long = {"messages": [USER, {**REPLY, "content": "word " * 40}, USER, REPLY]}
    stats = data.token_stats([short, long], tokenizer, limit=30)
    assert (stats["examples"], stats["messages"], stats["assistant_messages"]) == (2, 6, 3)
    openai = stats["openai"]
    counts = [data.count_openai_tokens(e["messages"]) for e in (short, long)]
    assert openai["counts"] == counts and openai["total"] == sum(counts)
    assert (openai["min"], openai["max"], openai["p50"]) == (counts[0], counts[1], sum(counts) / 2)
    assert openai["p90"] == (counts[0] + 9 * counts[1]) / 10  # exact: 90% of the way up
    assert (openai["library"], openai["encoding"], openai["over_limit"]) == (
        "bpe-openai",
        "o200k_base",
        1,
    )
    model = stats["tokenizer"]
    trained = [
        len(tokenize_conversation(tokenizer, e["messages"], 10**6)["input_ids"])
        for e in (short, long)
    ]
    assert model["counts"] == trained and model["name"] == "smollm2-135m-instruct"
    text = data.describe_stats(stats, data.estimate_cost(counts))
    assert "o200k_base via bpe-openai" in text and "as of 2025-06" in text
    assert data.token_stats([])["openai"]["min"] is None


def test_cost_arithmetic():
    cost = data.estimate_cost([1000], model="gpt-3.5-turbo-0125", epochs=3)
    assert cost["cost_usd"] == pytest.approx(0.024)
    assert (cost["tokens_per_epoch"], cost["billed_tokens"], cost["price_per_1k"]) == (
        1000,
        3000,
        0.008,
    )
    assert (cost["epochs_source"], "2025-06" in cost["price_source"]) == ("given", True)
    default = data.estimate_cost([100] * 20)
    assert (default["epochs"], default["epochs_source"]) == (5, "OpenAI default heuristic")
    assert default["cost_usd"] == pytest.approx(2000 * 5 / 1000 * 0.003)
    capped = data.estimate_cost([70_000, 10], epochs=1, max_tokens_per_example=65_536)
    assert capped["tokens_per_epoch"] == 65_546
    given = data.estimate_cost([500, 500], model="my-model", epochs=2, price_per_1k=1.0)
    assert (given["cost_usd"], given["price_source"]) == (2.0, "given")
    seed = data.estimate_cost([1000], model="gpt-3.5-turbo (seed article)", epochs=1)
    assert seed["cost_usd"] == pytest.approx(0.012) and "article" in seed["price_source"]
    assert data.estimate_cost([1000], model="gpt-4o-mini", epochs=1)["price_per_1k"] == 0.003
    assert data.estimate_cost([GOOD], epochs=1)["tokens_per_epoch"] == data.count_openai_tokens(
        GOOD["messages"]
    )
    with pytest.raises(ValueError, match="gpt-4o-mini-2024-07-18"):
        data.estimate_cost([1000], model="gpt-9")
    with pytest.raises(ValueError, match="epochs"):
        data.estimate_cost([1000], epochs=0)


def test_chat_cost_uses_base_and_fine_tuned_list_prices():
    base = data.chat_cost(1000, 100)  # gpt-4o-mini: $0.15 and $0.60 per 1M tokens
    assert base == pytest.approx((1000 * 0.15 + 100 * 0.60) / 1e6)
    tuned = data.chat_cost(1000, 100, fine_tuned=True)  # fine-tuned: twice that
    assert tuned == pytest.approx(2 * base)
    assert data.chat_cost(10, model="gpt-4o-mini") == data.chat_cost(10)  # undated name
    assert data.chat_cost(0, 0, model="gpt-4.1-nano-2025-04-14") == 0
    for prices in data.PRICES_PER_1M_CHAT_TOKENS.values():
        assert all(tuned >= base for base, tuned in zip(*prices.values(), strict=True))
    with pytest.raises(ValueError, match="gpt-4o-mini-2024-07-18"):
        data.chat_cost(10, model="smollm2-135m-instruct")


def test_default_epochs_follows_openais_heuristic():
    assert {n: data.default_epochs(n) for n in (1, 3, 10, 20, 33, 34, 50, 8333, 9000, 20_000)} == {
        1: 25,
        3: 25,
        10: 10,
        20: 5,
        33: 3,
        34: 3,
        50: 3,
        8333: 3,
        9000: 2,
        20_000: 1,
    }
    with pytest.raises(ValueError):
        data.default_epochs(0)


def test_every_priced_model_can_be_counted_and_priced():
    assert re.fullmatch(r"\d{4}-\d{2}", data.PRICES_AS_OF)
    for model, price in data.PRICES_PER_1K_TRAINING_TOKENS.items():
        cost = data.estimate_cost([GOOD], model=model, epochs=1)
        assert cost["price_per_1k"] == price and cost["tokens_per_epoch"] > 0
        dated = model != data.SEED_ARTICLE_PRICE
        assert (data.PRICES_AS_OF in cost["price_source"]) == dated, model


# --- noise ----------------------------------------------------------------------------------


def test_make_noisy_is_seeded_valid_and_leaves_the_input_alone():
    examples = data.validate(samples_dir() / "customer_service.jsonl").examples[:40]
    before = copy.deepcopy(examples)
    noisy, changes = data.make_noisy(examples, fraction=0.5, seed=3)
    assert examples == before
    assert (noisy, changes) == data.make_noisy(examples, fraction=0.5, seed=3)
    assert data.make_noisy(examples, fraction=0.5, seed=4)[1] != changes
    assert len(changes) == 20
    kinds = "|".join(data.NOISE_KINDS)
    touched = set()
    for change in changes:
        match = re.fullmatch(rf"example (\d+): ({kinds}) \(.+\)", change)
        assert match, change
        touched.add(int(match.group(1)) - 1)
    assert len({c.split(": ")[1].split(" (")[0] for c in changes}) == 4  # every kind used
    for index, (old, new) in enumerate(zip(examples, noisy, strict=True)):
        assert (old != new) == (index in touched)
    report = data.validate(noisy)
    assert report.ok and report.valid == 40
    assert data.make_noisy(examples, fraction=0)[1] == []
    with pytest.raises(ValueError, match="fraction"):
        data.make_noisy(examples, fraction=1.5)


def test_make_noisy_never_produces_invalid_data():
    tiny = [
        {"messages": [{"role": "user", "content": "?"}, {"role": "assistant", "content": c}]}
        for c in ("A", "ok", "1. x", "```python\nx = 1\n```", "!!!", "Hello!")
    ]
    for seed in range(30):
        noisy, changes = data.make_noisy(tiny, fraction=1.0, seed=seed)
        assert data.validate(noisy).ok and len(changes) == len(tiny)
        assert all(n != o for n, o in zip(noisy, tiny, strict=True))


# --- the command line -----------------------------------------------------------------------


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "helpers", *map(str, args)], capture_output=True, text=True
    )


def test_cli_validate_exit_codes_and_output(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(f"{GOOD_LINE}\n{{\n{line(USER, REPLY, label='x')}\n")
    result = run_cli("validate", bad)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stdout.splitlines() == [
        str(data.validate(bad).problems[0]),
        str(data.validate(bad).problems[1]),
        "3 examples: 2 valid, 1 invalid; 1 errors, 1 warnings",
    ]
    assert result.stdout.startswith("line 2: invalid_json: the line is not valid JSON")
    assert "line 3: extra_key (warning): " in result.stdout
    missing = run_cli("validate", tmp_path / "missing.jsonl")
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.startswith("error: ") and "missing.jsonl" in missing.stderr


def test_cli_validate_in_process(tmp_path, capsys):
    good = tmp_path / "good.jsonl"
    data.write_jsonl([GOOD, {**GOOD, "label": "x"}], good)
    assert main(["validate", str(good)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("2 examples: 2 valid, 0 invalid")
    assert main(["validate", "--json", str(good)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["valid"], report["invalid"], report["problems"][0]["code"]) == (
        2,
        0,
        "extra_key",
    )


@pytest.mark.parametrize(
    ("content", "status"),
    [
        (bytes(range(256)) * 40, 1),
        (b"", 1),
        (b'1\n-2.5\n"x"\nnull\ntrue\n[]\n', 1),
        (b'{"messages": "' + b"x" * 5_000_000 + b'"}\n', 1),
        (None, 2),  # a directory
    ],
)
def test_cli_never_shows_a_traceback(tmp_path, capsys, content, status):
    path = tmp_path / "nasty.jsonl"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    for command in (["validate"], ["validate", "--json"], ["split", "--out", str(tmp_path)]):
        assert main([*command, str(path)]) == status
        out, err = capsys.readouterr()
        assert err.startswith("error: ") if status == 2 else len(out) < 100_000, err


def test_cli_split_skips_invalid_lines(tmp_path, capsys):
    source = tmp_path / "mixed.jsonl"
    source.write_text("\n".join([*map(json.dumps, many(10)), "{", "[]"]) + "\n")
    assert main(["split", str(source), "--out", str(tmp_path / "out"), "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "skipped 2 invalid lines" in out
    assert re.search(r"train\s+8 ", out) and re.search(r"test\s+1 ", out)
    assert len(data.read_jsonl(tmp_path / "out" / "validation.jsonl")) == 1
    args = ["split", str(source), "--out", str(tmp_path / "x"), "--ratios", "0.5", "0.5", "0.5"]
    assert main(args) == 2
    assert "sum to 1" in capsys.readouterr().err


def test_cli_stats(tmp_path, capsys):
    source = tmp_path / "few.jsonl"
    data.write_jsonl(many(20), source)
    assert main(["stats", str(source), "--model", "gpt-3.5-turbo-0125", "--limit", "5"]) == 0
    out = capsys.readouterr().out
    assert "cl100k_base via bpe-openai" in out and "smollm2-135m-instruct" in out
    assert "x 5 epochs (OpenAI default heuristic)" in out and "as of 2025-06" in out
    assert main(["stats", str(source), "--epochs", "2", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["cost"]["epochs"] == 2 and stats["openai"]["encoding"] == "o200k_base"
    assert main(["stats", str(source), "--model", "claude"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


# --- the sample datasets --------------------------------------------------------------------

SAMPLES = sorted(p.name for p in samples_dir().glob("*.jsonl") if p.name != "broken_example.jsonl")
DATACARD = (samples_dir() / "README.md").read_text(encoding="utf-8")
PLANTED = {
    2: "invalid_json",
    4: "not_an_object",
    5: "missing_messages",
    6: "empty_messages",
    8: "message_not_object",
    9: "unknown_role",
    10: "missing_content",
    11: "empty_content",
    12: "no_assistant_message",
    13: "last_not_assistant",
    14: "invalid_weight",
    15: "weight_not_on_assistant",
    16: "unknown_key",
    17: "duplicate_example",
}


@pytest.mark.parametrize("name", SAMPLES)
def test_sample_files_validate_without_errors(name):
    report = data.validate(samples_dir() / name)
    assert report.ok, str(report)
    assert set(report.counts_by_code()) <= {"extra_key"}
    listed = re.search(rf"\| `{re.escape(name)}` \| (\d+) \|", DATACARD)
    assert listed and report.valid == report.total == int(listed.group(1))


def test_broken_example_reports_each_planted_problem_at_its_line():
    table = DATACARD.split("planted problems", 1)[1].split("\n## ", 1)[0]
    assert sorted(int(n) for n in re.findall(r"^\| (\d+) \|", table, re.M)) == sorted(PLANTED)
    report = data.validate(samples_dir() / "broken_example.jsonl")
    found = {(p.line, p.code) for p in report.problems}
    assert all((number, code) in found for number, code in PLANTED.items()), str(report)
    assert report.lines == [1, 3, 7, 17] and report.total == 17
    errors = {p.line for p in report.problems if p.severity == "error"}
    assert errors == set(PLANTED) - {17}


def test_customer_service_style_contract():
    examples = data.validate(samples_dir() / "customer_service.jsonl").examples
    replies = [m["content"] for e in examples for m in e["messages"] if m["role"] == "assistant"]
    assert len(replies) > len(examples)  # the multi-turn examples are included
    for reply in replies:
        assert greets_hello(reply) and closes_with_contact_us(reply), reply


def test_samples_are_byte_identical_after_a_round_trip(tmp_path):
    for name in SAMPLES:
        source = samples_dir() / name
        copy_path = data.write_jsonl(data.read_jsonl(source), tmp_path / name)
        assert copy_path.read_bytes() == source.read_bytes(), name
