"""Batch runs: grids checked before anything runs, parallel runs, failed rows, resume, results."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import psutil
import pytest

from helpers.batch import grid as grids
from helpers.batch import pool
from helpers.batch import run as batch_run
from helpers.batch.results import results_table, short_table
from helpers.batch.run import current_cell, read_metrics, read_run
from helpers.batch.scrub import scrub_notebook
from helpers.paths import repo_root

PARAMETERS = """x: float = 1.0  # the value to score
n: int = 2  # a multiplier
tags: list = ["a"]  # a list-typed parameter
corrupt: bool = False  # write a broken metrics.json
output_dir: str = "runs/tiny"  # where metrics.json goes"""

BODY = """import json, pathlib
if x < 0:
    raise ValueError(f"x must be at least 0, got {x}")
out = pathlib.Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
text = "{not json" if corrupt else json.dumps({"score": x * n, "tags": len(tags)})
(out / "metrics.json").write_text(text)"""


def tiny_notebook(folder: Path, name: str = "07_tiny.ipynb") -> Path:
    """Write a notebook with a parameters cell that scores x * n, or fails for x < 0."""
    notebook = nbformat.v4.new_notebook()
    parameters = nbformat.v4.new_code_cell(PARAMETERS)
    parameters.metadata["tags"] = ["parameters"]
    notebook.cells = [nbformat.v4.new_markdown_cell("# tiny"), parameters]
    notebook.cells.append(nbformat.v4.new_code_cell(BODY))
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    path = folder / name
    nbformat.write(notebook, path)
    return path


# --- grids: checked against the notebook before anything runs ------------------------------


def test_an_unknown_parameter_is_refused_with_the_notebooks_parameter_list(tmp_path):
    notebook = tiny_notebook(tmp_path)
    with pytest.raises(grids.GridError) as error:
        pool.plan_runs([notebook], {"x": [1.0], "lr": [0.1]}, tmp_path / "out")
    assert "has no parameter 'lr'" in str(error.value)
    assert "x, n, tags, corrupt, output_dir" in str(error.value)
    assert not (tmp_path / "out").exists()  # nothing ran, no run folder


def test_a_value_of_the_wrong_type_is_refused_with_the_expected_type(tmp_path):
    notebook = tiny_notebook(tmp_path)
    with pytest.raises(grids.GridError, match=r"n = 'two' is a str, the notebook expects int"):
        grids.check_grid({"n": [1, "two"]}, notebook)
    with pytest.raises(grids.GridError, match="expects int"):
        grids.check_grid({"n": True}, notebook)  # a bool is not a number of runs
    assert grids.check_grid({"x": [1, 2.5]}, notebook) == {"x": [1, 2.5]}  # an int fits a float
    with pytest.raises(grids.GridError, match="set by the batch"):
        grids.check_grid({"output_dir": "elsewhere"}, notebook)


def test_a_list_parameter_is_swept_only_by_a_list_of_lists(tmp_path):
    notebook = tiny_notebook(tmp_path)
    fixed = grids.check_grid({"tags": ["q", "v"]}, notebook)
    assert fixed == {"tags": [["q", "v"]]}
    swept = grids.check_grid({"tags": [["q", "v"], ["q", "k", "v", "o"]]}, notebook)
    assert swept == {"tags": [["q", "v"], ["q", "k", "v", "o"]]}
    runs = pool.plan_runs([notebook], {"tags": swept["tags"], "n": 3}, tmp_path)
    assert [run.folder.name for run in runs] == ["07_tiny-tags=q+v", "07_tiny-tags=q+k+v+o"]
    assert all(run.parameters["n"] == 3 and run.swept == ["tags"] for run in runs)


def test_a_grid_file_reports_its_problems_with_file_and_line(tmp_path):
    bad = tmp_path / "grid.yaml"
    bad.write_text("x: [1, 2\nn: 3\n")
    with pytest.raises(grids.GridError, match=r"grid.yaml, line \d+: not valid YAML"):
        grids.load_grid(bad)
    bad.write_text("- x\n- n\n")
    with pytest.raises(grids.GridError, match="a mapping of parameter name"):
        grids.load_grid(bad)
    good = tmp_path / "good.yaml"
    good.write_text("x: [0.5, 1]\nn: 3\n")
    assert grids.load_grid(good) == {"x": [0.5, 1], "n": 3}


def test_a_grid_expands_to_every_combination_and_names_runs_by_swept_values():
    grid = grids.expand_grid({"lora_r": [4, 8], "seed": [0, 1, 2]})
    assert len(grid) == 6 and {"lora_r": 8, "seed": 2} in grid
    assert grids.expand_grid({}) == [{}]
    name = grids.run_name(Path("03_lora_peft.ipynb"), {"lora_r": 4, "model": "a/b"}, ["lora_r"])
    assert name == "03_lora_peft-lora_r=4"  # fixed values are not in the name
    both = grids.run_name(Path("03.ipynb"), {"x": 1e-3, "model": "a/b c"}, ["x", "model"])
    assert both == "03-x=0.001-model=a_b_c"


def test_default_jobs_follow_cores_and_memory():
    gib = 2**30
    assert pool.default_jobs(available_bytes=24 * gib, cores=2) == 2  # cores bound
    assert pool.default_jobs(available_bytes=6 * gib, cores=8) == 1  # memory bound: 4.5 GiB a run
    assert pool.default_jobs(available_bytes=1 * gib, cores=8) == 1  # never zero
    assert pool.default_jobs(available_bytes=20 * gib, cores=16) == 4


# --- progress, metrics and the results table (no kernel needed) -----------------------------


def test_progress_names_each_running_run_with_its_cell(tmp_path):
    notebook = tiny_notebook(tmp_path)
    runs = pool.plan_runs([notebook], {"x": [1.0, 2.0, 3.0, -1.0]}, tmp_path / "out")
    runs[0].record = {"status": "ok", "seconds": 30.0}
    runs[1].record = {"status": "failed", "seconds": 10.0}
    runs[2].folder.mkdir(parents=True)
    (runs[2].folder / "run.log").write_text("... Executing Cell 1---\n... Executing Cell 3---\n")
    line = pool.Progress(4, jobs=2).line(done=runs[:2], running=runs[2:])
    assert "2/4 done, 1 failed, 2 running" in line
    assert "07_tiny-x=3 cell 3/4" in line and "07_tiny-x=-1 cell 0/4" in line
    assert "about 20s left" in line  # mean 20 s per run x 2 runs left / 2 jobs
    assert current_cell(tmp_path / "nowhere") == 0


def test_a_corrupt_or_missing_metrics_file_is_a_problem_not_a_crash(tmp_path):
    assert read_metrics(tmp_path) == ({}, "the notebook wrote no metrics.json")
    (tmp_path / "metrics.json").write_text("{not json")
    metrics, problem = read_metrics(tmp_path)
    assert metrics == {} and problem.startswith("metrics.json is unreadable")
    (tmp_path / "metrics.json").write_text('{"a": 1, "curve": [1, 2], "ok": true}')
    assert read_metrics(tmp_path) == ({"a": 1, "ok": True}, None)  # lists stay in the file


def test_the_short_table_fits_a_terminal_and_names_each_notebooks_headline(tmp_path):
    notebook = tmp_path / "03_lora_peft.ipynb"
    runs = [pool.Run(notebook, {"lora_r": r}, ["lora_r"], tmp_path / f"r{r}") for r in (4, 8)]
    runs[0].record = {"status": "ok", "seconds": 61.2, "peak_mib": 3600, "metrics": {}}
    runs[0].record["metrics"] = {"LoRA_style_pass_rate": 0.875, **{f"m{i}": i for i in range(40)}}
    runs[1].record = {"status": "failed", "seconds": 3.0, "error": "In [4]: ValueError: x"}
    table = results_table(runs)
    assert len(table) == 2 and "metric.m39" in table.columns  # the CSV keeps every metric
    assert table["headline_value"].iloc[0] == 0.875 and pd.isna(table["headline_value"].iloc[1])
    text = short_table(table, ["lora_r"]).to_string(index=False)
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "LoRA_style_pass_rate" in text and "0.875" in text and "failed" in text
    shown = short_table(table, ["lora_r"], show=("m39", "m1"))
    assert list(shown.columns[-2:]) == ["m39", "m1"] and list(shown["m39"]) == ["39", ""]


def test_scrub_replaces_machine_paths_and_the_host_name_but_not_images(tmp_path):
    host, root = socket.gethostname(), str(repo_root())
    notebook = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print(1)")
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text=f"saved to {root}/runs/x on {host}\n"),
        nbformat.v4.new_output("display_data", data={"image/png": "iVBOR" + host + "w=="}),
        nbformat.v4.new_output("error", ename="E", evalue="v", traceback=[f"File {root}/a.py"]),
    ]
    notebook.cells = [cell]
    notebook.metadata["papermill"] = {"input_path": f"{root}/notebooks/x.ipynb"}
    path = tmp_path / "x.ipynb"
    nbformat.write(notebook, path)
    assert scrub_notebook(path) == 2
    text = path.read_text()
    assert root not in text and "saved to ./runs/x on <host>" in text
    assert "iVBOR" + host + "w==" in text  # base64 image data is not text
    assert nbformat.read(path, as_version=4).metadata["papermill"]["input_path"] == "x.ipynb"


def test_a_run_about_to_start_when_ctrl_c_comes_does_not_start(tmp_path, monkeypatch):
    """Ctrl-C between a run's submission and its process: the run must not start after it."""

    def must_not_start(*args, **kwargs):
        pytest.fail("a run started after stop_all")

    monkeypatch.setattr(subprocess, "Popen", must_not_start)
    notebook = tiny_notebook(tmp_path)
    try:
        batch_run.stop_all()
        record = batch_run.run_one(notebook, tmp_path / "out" / "r", {"x": 1.0})
    finally:
        batch_run.allow_runs()
    assert record["status"] == "failed" and "interrupted" in record["error"]
    assert read_run(tmp_path / "out" / "r")["status"] == "failed"  # a resume runs it again


# --- real runs through papermill (a kernel per run) ------------------------------------------


@pytest.mark.slow
def test_a_2x2_grid_runs_in_parallel_fails_rows_not_the_batch_and_resumes(tmp_path, capsys):
    notebook = tiny_notebook(tmp_path)
    out = tmp_path / "out"
    grid = {"x": [0.5, -1.0], "n": [1, 2]}
    runs, written = pool.run_grid([notebook], grid, out, jobs=2)
    status = {run.folder.name: run.record["status"] for run in runs}
    assert status == {
        "07_tiny-x=0.5-n=1": "ok",
        "07_tiny-x=0.5-n=2": "ok",
        "07_tiny-x=-1-n=1": "failed",
        "07_tiny-x=-1-n=2": "failed",
    }
    assert [run.record["metrics"]["score"] for run in runs[:2]] == [0.5, 1.0]
    failed = runs[2].record
    assert failed["error"] == "In [3]: ValueError: x must be at least 0, got -1.0"
    assert (runs[2].folder / "07_tiny.ipynb").is_file()  # the partial notebook is kept
    assert "x must be at least 0" in (runs[2].folder / "run.log").read_text()
    assert all(run.record["peak_mib"] > 10 for run in runs)  # the kernel's memory, not ours
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 4 and list(table["status"]) == ["ok", "ok", "failed", "failed"]
    assert [path.name for path in written] == ["results.csv", "results.md", "comparison.png"]
    assert "x must be at least 0" in (out / "results.md").read_text()

    finished = {run.folder.name: (run.folder / "run.json").stat().st_mtime_ns for run in runs[:2]}
    capsys.readouterr()
    again, _ = pool.run_grid([notebook], grid, out, jobs=2)
    assert "2 of 4 runs already finished: skipped (resume)" in capsys.readouterr().out
    for run in again[:2]:  # untouched: not run again
        assert (run.folder / "run.json").stat().st_mtime_ns == finished[run.folder.name]
    assert [run.record["status"] for run in again] == ["ok", "ok", "failed", "failed"]


@pytest.mark.slow
def test_a_corrupt_metrics_file_is_a_failed_row_and_changed_parameters_run_again(tmp_path):
    notebook = tiny_notebook(tmp_path)
    out = tmp_path / "out"
    runs, _ = pool.run_grid([notebook], {"corrupt": [True, False]}, out, jobs=1)
    assert runs[0].record["status"] == "failed"
    assert runs[0].record["error"].startswith("metrics.json is unreadable")
    assert runs[1].record["status"] == "ok"
    # Same folder name, a different fixed value: not the finished run, so it runs again.
    again, _ = pool.run_grid([notebook], {"corrupt": [True, False], "n": 5}, out, jobs=1)
    assert again[1].record["metrics"]["score"] == 5.0


@pytest.mark.slow
def test_the_command_line_refuses_an_unknown_name_and_prints_the_table(tmp_path):
    notebook = tiny_notebook(tmp_path)
    command = [sys.executable, "-m", "helpers", "batch", str(notebook), "--out", str(tmp_path)]
    refused = subprocess.run([*command, "-p", "lr=[1,2]"], capture_output=True, text=True)
    assert refused.returncode == 2 and "has no parameter 'lr'" in refused.stderr
    assert "Traceback" not in refused.stderr and not list(tmp_path.glob("07_tiny-*"))
    grid = tmp_path / "grid.yaml"
    grid.write_text("x: [1.0, 2.0]\nn: 7\n")
    done = subprocess.run(
        [*command, "--grid", str(grid), "-p", "n=3", "--jobs", "2"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "07_tiny-x=1" in done.stdout or "ok" in done.stdout
    assert json.loads((tmp_path / "07_tiny-x=2" / "metrics.json").read_text())["score"] == 6.0


@pytest.mark.slow
def test_a_grid_runs_on_a_dask_cluster(tmp_path):
    distributed = pytest.importorskip("distributed")
    notebook = tiny_notebook(tmp_path)
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        runs, _ = pool.run_grid(
            [notebook], {"x": [1.0, 3.0]}, tmp_path / "out", 2, cluster.scheduler_address
        )
    assert [run.record["metrics"]["score"] for run in runs] == [2.0, 6.0]


@pytest.mark.slow
def test_ctrl_c_stops_the_running_runs_and_keeps_the_finished_ones(tmp_path):
    notebook = tiny_notebook(tmp_path)
    grid = tmp_path / "grid.yaml"
    grid.write_text("x: [1.0, 2.0, 3.0]\n")
    nap = nbformat.read(notebook, as_version=4)  # runs with x >= 2 sleep for a minute
    nap.cells.append(nbformat.v4.new_code_cell("import time\nif x >= 2:\n    time.sleep(60)"))
    nbformat.write(nap, notebook)
    command = [sys.executable, "-m", "helpers", "batch", str(notebook), "--grid", str(grid)]
    batch = subprocess.Popen(
        [*command, "--out", str(tmp_path / "out"), "--jobs", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # As in a terminal: a background shell (make &, some CI runners) ignores SIGINT.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    first = tmp_path / "out" / "07_tiny-x=1"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (read_run(first) or {}).get("status") != "ok":
        time.sleep(0.5)
    children = psutil.Process(batch.pid).children(recursive=True)
    assert children, "the second and third runs should be running"
    batch.send_signal(signal.SIGINT)
    output, _ = batch.communicate(timeout=60)
    assert batch.returncode == 130 and "interrupted" in output
    assert read_run(first)["status"] == "ok"  # the finished run is kept
    gone, alive = psutil.wait_procs(children, timeout=20)
    assert not alive, f"left running: {[p.cmdline() for p in alive]}"


@pytest.mark.parametrize("failures, status", [(1, "ok"), (2, "failed")])
def test_a_kernel_that_does_not_start_is_started_once_more(tmp_path, monkeypatch, failures, status):
    """A kernel start that times out (no cell ran) is retried once; a second timeout fails."""
    import papermill

    calls = []

    def execute_notebook(source, target, **arguments):
        calls.append(target)
        if len(calls) <= failures:
            raise RuntimeError("Kernel didn't respond in 60 seconds")

    monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)
    batch_run.write_run(tmp_path, {"notebook": "n.ipynb", "parameters": {}, "status": "running"})
    code = batch_run.execute(tmp_path / "n.ipynb", tmp_path)
    record = read_run(tmp_path)
    assert len(calls) == 2 and record["status"] == status and code == (status != "ok")
    assert status == "ok" or record["error"] == "Kernel didn't respond in 60 seconds"


def test_a_failing_cell_is_not_run_again(tmp_path, monkeypatch):
    """Only a kernel that never started is retried: an error in the notebook is reported once."""
    import papermill

    calls = []

    def execute_notebook(source, target, **arguments):
        calls.append(target)
        raise RuntimeError("something else went wrong")

    monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)
    batch_run.write_run(tmp_path, {"notebook": "n.ipynb", "parameters": {}, "status": "running"})
    assert batch_run.execute(tmp_path / "n.ipynb", tmp_path) == 1
    assert len(calls) == 1 and read_run(tmp_path)["error"] == "something else went wrong"
