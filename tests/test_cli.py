"""The command line answers bad input with one clear line and exit status 2, never a traceback.

Each case runs ``python -m helpers`` in a subprocess, the way a user does, except the
cases whose command imports torch before it can reject the input (training configs, model
names, the server's folder...): they run ``main`` in this process, since such a process
spends seconds importing torch and Transformers. In this process an exception that
escapes ``main`` is the traceback a user would see, and fails the test the same way.
None of them loads a model or trains: bad input is rejected before anything heavy.
"""

import json
import os
import subprocess
import sys

import pytest

from helpers import data
from helpers.cli import COMMAND_MODULES, build_parser, main
from helpers.models import EMBEDDED_MODEL
from helpers.paths import sample_path

SAMPLE = str(sample_path("customer_service"))


def run_cli(*args, cwd=None) -> subprocess.CompletedProcess:
    """Run ``python -m helpers ARGS`` offline (a missing model fails at once) and capture it."""
    return subprocess.run(
        [sys.executable, "-m", "helpers", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )


def assert_one_error(stderr: str, *words: str) -> None:
    """Check that ``stderr`` has exactly one error line and that it contains ``words``."""
    errors = [line for line in stderr.splitlines() if "error: " in line]
    assert len(errors) == 1, stderr
    for word in words:
        assert word in errors[0], errors[0]


def assert_rejected(result: subprocess.CompletedProcess, *words: str) -> None:
    """Check exit status 2, no traceback and one error line containing ``words``."""
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode == 2, output
    assert_one_error(result.stderr, *words)


@pytest.fixture
def places(tmp_path):
    """A temporary folder holding ``file.txt`` (a file) and ``folder`` (a folder)."""
    (tmp_path / "file.txt").write_text("not a folder\n")
    (tmp_path / "folder").mkdir()
    return tmp_path


# Arguments, and the words the one error line must contain. In the arguments, {tmp} is the
# temporary folder of the `places` fixture.
ARGUMENT_CASES = {
    "no-command": ([], ["required: COMMAND"]),
    "unknown-command": (["fly"], ["invalid choice: 'fly'"]),
    "info-repeats-zero": (["info", "--timing", "--repeats", "0"], ["--repeats", "at least 1"]),
    "info-repeats-not-a-number": (["info", "--repeats", "x"], ["--repeats", "whole number"]),
    "validate-missing-file": (["validate", "{tmp}/missing.jsonl"], ["missing.jsonl"]),
    "validate-directory": (["validate", "{tmp}/folder"], ["folder", "directory"]),
    "split-missing-file": (["split", "{tmp}/missing.jsonl", "--out", "{tmp}/o"], ["missing"]),
    "split-seed-not-int": (["split", SAMPLE, "--out", "{tmp}/o", "--seed", "x"], ["--seed"]),
    "split-ratios-sum": (
        ["split", SAMPLE, "--out", "{tmp}/o", "--ratios", "0.5", "0.5", "0.5"],
        ["ratios", "sum to 1"],
    ),
    "split-ratio-negative": (
        ["split", SAMPLE, "--out", "{tmp}/o", "--ratios", "-0.1", "0.6", "0.5"],
        ["--ratios", "between 0 and 1"],
    ),
    "split-out-is-a-file": (
        ["split", SAMPLE, "--out", "{tmp}/file.txt"],
        ["file.txt", "not a folder"],
    ),
    "stats-missing-file": (["stats", "{tmp}/missing.jsonl"], ["missing.jsonl"]),
    "stats-epochs-zero": (["stats", SAMPLE, "--epochs", "0"], ["--epochs", "at least 1"]),
    "stats-limit-negative": (["stats", SAMPLE, "--limit", "-3"], ["--limit", "at least 1"]),
    "stats-unknown-openai-model": (["stats", SAMPLE, "--model", "claude"], ["'claude'"]),
    "bench-train-steps-zero": (["bench-train", "--steps", "0"], ["--steps", "at least 1"]),
    "bench-train-batch-size": (["bench-train", "--batch-size", "x"], ["--batch-size"]),
    "serve-port-too-large": (["serve", "--port", "99999"], ["--port", "1 and 65535"]),
    "serve-port-zero": (["serve", "--port", "0"], ["--port", "1 and 65535"]),
    "serve-port-not-a-number": (["serve", "--port", "http"], ["--port", "whole number"]),
    "serve-max-steps-negative": (["serve", "--max-steps", "-1"], ["--max-steps"]),
    "serve-upload-zero": (["serve", "--max-upload-mb", "0"], ["--max-upload-mb"]),
    "serve-upload-infinite": (["serve", "--max-upload-mb", "inf"], ["--max-upload-mb"]),
    "serve-alias": (["serve", "--alias", "gpt-4o-mini"], ["--alias", "NAME=MODEL"]),
    "bench-server-concurrency": (["bench-server", "--concurrency", "0"], ["--concurrency"]),
    "bench-server-max-tokens": (["bench-server", "--max-tokens", "-5"], ["--max-tokens"]),
    "bench-codeexec-tasks": (["bench-codeexec", "--tasks", "0"], ["--tasks", "at least 1"]),
    "batch-missing-notebook": (["batch", "{tmp}/missing.ipynb"], ["missing.ipynb"]),
    "batch-param-without-value": (["batch", "-p", "lora_r"], ["--param", "NAME=VALUE"]),
    "batch-param-bad-yaml": (["batch", "-p", "lora_r=[4,"], ["--param", "YAML"]),
    "batch-out-is-a-file": (
        ["batch", "{tmp}/file.txt", "--out", "{tmp}/file.txt"],
        ["file.txt", "not a folder"],
    ),
}


@pytest.mark.slow  # one `python -m helpers` subprocess per case (none imports torch)
@pytest.mark.parametrize("case", ARGUMENT_CASES, ids=list(ARGUMENT_CASES))
def test_bad_arguments_get_one_error_line(places, case):
    args, words = ARGUMENT_CASES[case]
    result = run_cli(*(arg.format(tmp=places) for arg in args), cwd=places)
    assert_rejected(result, *words)


# The same for commands that import torch before they can reject the input: run in this
# process (as run_cli would, offline and in the `places` folder).
IMPORTING_TORCH_CASES = {
    "prepare-model-unknown": (
        ["prepare-model", "no-such/model"],
        ["no-such/model", EMBEDDED_MODEL],
    ),
    "stats-unknown-hf-model": (["stats", SAMPLE, "--hf-model", "no-such/model"], ["no-such"]),
    "train-missing-config": (["train", "{tmp}/missing.yaml"], ["missing.yaml"]),
    "bench-train-unknown-model": (["bench-train", "--model", "no-such/model"], ["no-such"]),
    "serve-data-dir-is-a-file": (["serve", "--data-dir", "{tmp}/file.txt"], ["file.txt"]),
    "workshop-out-is-a-file": (["workshop", "--out", "{tmp}/file.txt"], ["file.txt"]),
}


@pytest.fixture
def nothing_heavy(monkeypatch):
    """Fail the test if a command gets past its checks to training, serving or running notebooks."""

    def must_not_run(*args, **kwargs):
        pytest.fail("bad input got past the command's checks")

    monkeypatch.setattr("helpers.cli.train_config.train_from_config", must_not_run)
    monkeypatch.setattr("helpers.bench.train.bench_train", must_not_run)
    monkeypatch.setattr("helpers.batch.pool.run_grid", must_not_run)
    monkeypatch.setattr("uvicorn.run", must_not_run)


def run_main(args: list[str], capsys) -> subprocess.CompletedProcess:
    """Run ``main(ARGS)`` in this process; return its exit status and output as run_cli does."""
    try:
        status = main(args)
    except SystemExit as exit:  # argparse's errors
        status = exit.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["helpers", *args], status, out, err)


@pytest.mark.parametrize("case", IMPORTING_TORCH_CASES, ids=list(IMPORTING_TORCH_CASES))
def test_bad_arguments_get_one_error_line_here(places, monkeypatch, capsys, nothing_heavy, case):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a missing model fails at once
    monkeypatch.chdir(places)
    args, words = IMPORTING_TORCH_CASES[case]
    result = run_main([arg.format(tmp=places) for arg in args], capsys)
    assert_rejected(result, *words)


# A training config's text, and the words the one error line must contain besides its name.
CONFIG_CASES = {
    "yaml-syntax": ("train_file: [a\n  b: :\n", ["line 2"]),
    "no-train-file": ("method: lora\n", ["train_file"]),
    "train-file-missing": ("train_file: no_such_file.jsonl\n", ["no_such_file.jsonl"]),
    "unknown-method": (f"train_file: {json.dumps(SAMPLE)}\nmethod: qlora\n", ["method", "qlora"]),
    "unknown-key": (f"train_file: {json.dumps(SAMPLE)}\nepochs: 3\n", ["epochs"]),
    "unknown-training-field": (
        f"train_file: {json.dumps(SAMPLE)}\ntraining:\n  no_such_field: 1\n",
        ["no_such_field"],
    ),
    "unknown-lora-key": (f"train_file: {json.dumps(SAMPLE)}\nlora:\n  rank: 4\n", ["rank"]),
    "max-seq-length-negative": (
        f"train_file: {json.dumps(SAMPLE)}\nmax_seq_length: -5\n",
        ["line 2", "max_seq_length", "at least 1"],
    ),
    "lora-rank-negative": (
        f"train_file: {json.dumps(SAMPLE)}\nlora:\n  r: -1\n",
        ["line 3", "lora.r", "at least 1", "-1"],
    ),
    "lora-dropout-above-one": (
        f"train_file: {json.dumps(SAMPLE)}\nlora:\n  r: 4\n  lora_dropout: 1.5\n",
        ["line 4", "lora.lora_dropout", "1.5"],
    ),
    "not-a-mapping": ("- a\n- b\n", ["mapping"]),
}


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if ``train`` gets as far as loading the model and training."""

    def must_not_run(values):
        pytest.fail("a bad config reached train_from_config")

    monkeypatch.setattr("helpers.cli.train_config.train_from_config", must_not_run)


def train_rejects(config, capsys, *words: str) -> None:
    """Run ``main(["train", config])`` here: exit status 2 and one error line with ``words``."""
    assert main(["train", str(config)]) == 2
    assert_one_error(capsys.readouterr().err, *words)


@pytest.mark.parametrize("case", CONFIG_CASES, ids=list(CONFIG_CASES))
def test_bad_training_config_is_rejected_before_the_model_loads(
    tmp_path, capsys, no_training, case
):
    text, words = CONFIG_CASES[case]
    config = tmp_path / "config.yaml"
    config.write_text(text)
    train_rejects(config, capsys, "config.yaml", *words)


# A data file's text, and the words the one error line must contain besides the names of
# the config and the data file.
DATA_FILE_CASES = {
    "empty": ("", ["line 1", "train_file", "no example", "empty"]),
    "blank-lines-only": ("\n  \n\n", ["train_file", "no example", "empty"]),
    "every-line-broken": (
        'not json\n{"messages": [\n{"messages": []}\n',
        ["line 1", "train_file", "no valid example", "line 1 of", "not valid JSON", "2 more"],
    ),
}


@pytest.mark.parametrize("case", DATA_FILE_CASES, ids=list(DATA_FILE_CASES))
def test_training_file_without_a_valid_example_is_rejected_before_the_model_loads(
    tmp_path, capsys, no_training, case
):
    text, words = DATA_FILE_CASES[case]
    (tmp_path / "data.jsonl").write_text(text)
    config = tmp_path / "config.yaml"
    config.write_text(f"train_file: {json.dumps(str(tmp_path / 'data.jsonl'))}\n")
    train_rejects(config, capsys, "config.yaml", "data.jsonl", *words)


def test_validation_file_without_a_valid_example_is_rejected(tmp_path, capsys, no_training):
    (tmp_path / "data.jsonl").write_text("[1, 2]\n")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"train_file: {json.dumps(SAMPLE)}\n"
        f"validation_file: {json.dumps(str(tmp_path / 'data.jsonl'))}\n"
    )
    train_rejects(config, capsys, "config.yaml", "line 2", "validation_file", "data.jsonl")


def test_training_config_that_is_not_text(tmp_path, capsys, no_training):
    config = tmp_path / "config.yaml"
    config.write_bytes(b"\xff\xfe train_file: x\n")
    train_rejects(config, capsys, "config.yaml")


def test_training_config_that_is_a_folder(tmp_path, capsys, no_training):
    (tmp_path / "config.yaml").mkdir()
    train_rejects(tmp_path / "config.yaml", capsys, "config.yaml")


def _unreadable(path):
    """Make ``path`` unreadable, or skip when this user reads it anyway (root)."""
    path.chmod(0)
    if os.access(path, os.R_OK):
        pytest.skip("chmod 000 does not stop this user (root) from reading; see *-directory cases")


@pytest.mark.parametrize("command", ["validate", "stats", "train"])
def test_unreadable_file(tmp_path, monkeypatch, capsys, nothing_heavy, command):
    path = tmp_path / "secret.jsonl"
    path.write_text("{}\n")
    _unreadable(path)
    if command == "train":  # it imports torch first: in this process, as above
        monkeypatch.chdir(tmp_path)
        result = run_main([command, str(path)], capsys)
    else:
        result = run_cli(command, path, cwd=tmp_path)
    assert_rejected(result, "secret.jsonl")


# --- in the process: what main does with errors that are not the user's ------------------


def test_an_unexpected_error_keeps_its_traceback(monkeypatch, tmp_path):
    def broken(args):
        raise KeyError("a bug")

    monkeypatch.setattr("helpers.cli.data.cmd_validate", broken)
    with pytest.raises(KeyError, match="a bug"):
        main(["validate", str(tmp_path / "x.jsonl")])


def test_a_file_error_without_a_file_name_keeps_its_traceback(monkeypatch):
    def broken(args):
        raise FileNotFoundError("an internal file is missing")

    monkeypatch.setattr("helpers.cli.data.cmd_validate", broken)
    with pytest.raises(FileNotFoundError):
        main(["validate", "x.jsonl"])


def test_split_writes_what_data_split_file_writes(tmp_path, capsys):
    assert main(["split", SAMPLE, "--out", str(tmp_path / "cli"), "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    library = data.split_file(SAMPLE, tmp_path / "lib", seed=3)
    for name, path in library.items():
        written = (tmp_path / "cli" / path.name).read_bytes()
        assert written == path.read_bytes()
        lines = written.count(b"\n")
        assert f"{name:<11}{lines:>6}  " in printed


def test_train_prints_truncated_and_dropped_examples(tmp_path, monkeypatch, capsys):
    from helpers.cli import train_config
    from helpers.measure import TrainResult

    config = tmp_path / "config.yaml"
    config.write_text(f"train_file: {json.dumps(SAMPLE)}\nmax_seq_length: 64\n")
    results = iter(
        [
            TrainResult(method="lora", truncated_examples=[2, 5], dropped_examples=[7]),
            TrainResult(method="lora"),
        ]
    )
    monkeypatch.setattr(train_config, "train_from_config", lambda values: next(results))
    assert main(["train", str(config)]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["method"] == "lora"
    assert err.splitlines() == [
        "truncated to max_seq_length=64 tokens: train examples 2, 5",
        "dropped, nothing left to train on: train examples 7",
    ]
    assert main(["train", str(config)]) == 0
    assert capsys.readouterr().err == ""


def test_train_with_nothing_left_to_train_on_is_one_error_line(tmp_path, monkeypatch, capsys):
    from helpers.chat import NothingToTrainError
    from helpers.cli import train_config

    config = tmp_path / "config.yaml"
    config.write_text(f"train_file: {json.dumps(SAMPLE)}\nmax_seq_length: 4\n")

    def cut_everything(values):
        raise NothingToTrainError(
            "None of the 3 examples has anything to train on: max_seq_length=4"
        )

    monkeypatch.setattr(train_config, "train_from_config", cut_everything)
    assert main(["train", str(config)]) == 2
    assert_one_error(capsys.readouterr().err, "max_seq_length=4")


# --- the parser: one module per command group ---------------------------------------------

COMMANDS = {
    "info": ["info", "prepare-model"],
    "data": ["validate", "split", "stats"],
    "train": ["train"],
    "serve": ["serve"],
    "bench": ["bench-train", "bench-server", "bench-generate", "bench-codeexec", "gpu-check"],
    "bundle": ["bundle"],
    "batch": ["batch", "workshop", "scrub"],
    "safety": ["safety"],
    "report": ["report"],
    "chat": ["chat"],
    "export": ["export"],
    "hosted": ["hosted"],
}


def test_every_command_group_lists_its_commands_in_the_help(capsys):
    assert set(COMMAND_MODULES) == set(COMMANDS)
    build_parser().print_help()
    listed = capsys.readouterr().out
    for name in (name for names in COMMANDS.values() for name in names):
        assert f"\n    {name} " in listed or f"\n    {name}\n" in listed, name


@pytest.mark.parametrize("name", [name for names in COMMANDS.values() for name in names])
def test_every_command_answers_help(capsys, name):
    with pytest.raises(SystemExit) as exit:
        main([name, "--help"])
    assert exit.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: python -m helpers {name} ")


def test_the_command_line_starts_without_torch():
    code = "import sys, helpers.cli; helpers.cli.build_parser(); print(list(sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    for heavy in ("torch", "transformers", "numpy", "pandas", "fastapi"):
        assert f"'{heavy}'" not in loaded, heavy


def test_a_broken_rules_file_is_one_error_line_naming_the_file(tmp_path, monkeypatch, capsys):
    from helpers.safety import evaluation, load_rules

    broken = tmp_path / "rules.yaml"
    broken.write_text("requests:\n  rules:\n    - name: x\n      category: overdose\n")
    monkeypatch.setattr(evaluation, "benchmark", lambda: load_rules(broken))
    assert main(["safety", "benchmark"]) == 2
    assert_one_error(capsys.readouterr().err, str(broken), "missing field 'responses'")
