"""Headless training from a config, on one process and under torchrun with two CPU processes.

The torchrun run is a subprocess, as a user launches it; the one-process run and the
config error call the command line's ``main`` in this process (a ``train`` process spends
most of its seconds importing torch and Transformers).
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.cli import main
from helpers.cli.train_config import load_config


def _config(tmp_path: Path, **extra) -> Path:
    lines = [
        "model: tiny-random-llama",
        "train_file: data/samples/customer_service.jsonl",
        "method: lora",
        f"output_dir: {tmp_path / 'out'}",
        "max_seq_length: 256",
        "training:",
        "  max_steps: 3",
        "  per_device_train_batch_size: 2",
        "  logging_steps: 1",
        "  disable_tqdm: true",
        *[f"{key}: {value}" for key, value in extra.items()],
    ]
    path = tmp_path / "config.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _summary(stdout: str) -> dict:
    return json.loads(stdout[stdout.index("{\n") :])


@pytest.mark.slow  # trains in subprocesses
def test_torchrun_with_two_cpu_processes_trains_one_model(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    result = subprocess.run(
        [torchrun, "--nproc_per_node=2", "-m", "helpers", "train", str(_config(tmp_path))],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = _summary(result.stdout)
    assert summary["world_size"] == 2 and summary["steps"] == 3
    assert (tmp_path / "out" / "final" / "adapter_model.safetensors").is_file()
    assert result.stdout.count('"world_size"') == 1  # only rank 0 reports


@pytest.mark.slow  # trains
def test_single_process_run_reports_the_same_shape(tmp_path, capsys):
    assert main(["train", str(_config(tmp_path))]) == 0
    summary = _summary(capsys.readouterr().out)
    assert summary["world_size"] == 1 and summary["tokens_trained"] > 0


def test_config_errors_are_clear(tmp_path):
    path = _config(tmp_path, learning_rat=0.1)
    with pytest.raises(ValueError, match="unknown keys \\['learning_rat'\\]"):
        load_config(path)


def test_cli_reports_config_errors_without_a_traceback(tmp_path, capsys):
    path = _config(tmp_path, learning_rat=0.1)
    assert main(["train", str(path)]) == 2  # an exception escaping main would be the traceback
    assert "learning_rat" in capsys.readouterr().err
