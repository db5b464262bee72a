"""The conventions the notebooks share: setup report, section timings, verdicts, sizes."""

import json
import time

import pytest

from helpers import notebook
from helpers.models import pick_device


def test_setup_report_prints_versions_device_and_names_missing_packages(capsys):
    info = notebook.setup_report(("torch", "no-such-package-xyz"))
    printed = capsys.readouterr().out
    assert info["device"] == pick_device() and f"device        {info['device']}" in printed
    assert info["torch"] and f"torch         {info['torch']}" in printed
    assert info["no-such-package-xyz"] is None
    assert "missing: no-such-package-xyz: run `make setup`" in printed


def test_setup_report_is_quiet_about_installs_when_nothing_is_missing(capsys):
    notebook.setup_report(("torch",))
    assert "missing" not in capsys.readouterr().out


def test_section_timer_adds_up_each_section_once(monkeypatch):
    clock = iter([0.0, 10.0, 13.0, 20.0, 21.5])  # created, a, b, a again, table
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock))
    timer = notebook.SectionTimer()
    timer.section("a")
    timer.section("b")
    timer.section("a")
    table = timer.table()
    assert table["seconds"].to_dict() == {"a": 3.0 + 1.5, "b": 7.0}
    assert table["share"].sum() == 1.0


def test_section_timer_tells_the_running_section_and_the_whole_run(monkeypatch):
    clock = iter([100.0, 101.0, 110.0, 112.0])  # created, section a, running, elapsed
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock))
    timer = notebook.SectionTimer()
    assert timer.running() == 0.0  # no section yet: the clock is not read
    timer.section("a")  # at 101
    assert timer.running() == 110.0 - 101.0
    assert timer.elapsed() == 112.0 - 100.0


def test_megabytes_read_well():
    assert notebook.megabytes(2720.4) == "2,720 MB"
    assert notebook.megabytes(1.7734) == "1.77 MB"


def test_notebook_stopped_shows_its_message_instead_of_a_traceback(capsys):
    from IPython.core.interactiveshell import InteractiveShell

    message = "Set OPENAI_API_KEY first."
    assert notebook.NotebookStopped(message)._render_traceback_() == [message]
    shell = InteractiveShell.instance()
    try:
        result = shell.run_cell(
            f"from helpers.notebook import NotebookStopped\nraise NotebookStopped({message!r})"
        )
    finally:
        InteractiveShell.clear_instance()
    assert isinstance(result.error_in_exec, notebook.NotebookStopped)
    printed = capsys.readouterr()
    shown = printed.out + printed.err
    assert message in shown and "Traceback" not in shown and "raise" not in shown


def test_section_key_drops_the_number_and_punctuation():
    assert notebook.section_key("3. Fine-tuning job") == "seconds_fine_tuning_job"
    assert notebook.section_key("10. Results") == "seconds_results"
    assert notebook.section_key("Setup") == "seconds_setup"


def test_metrics_refuse_a_figure_recorded_twice():
    metrics = notebook.Metrics()
    metrics.add(steps=12, loss=0.5)
    try:
        metrics.add(loss=0.4, rate=0.9)
    except KeyError as error:
        assert "loss" in str(error) and "rate" not in str(error)
    else:
        raise AssertionError("a second 'loss' was accepted")
    assert metrics == {"steps": 12, "loss": 0.5}


def test_metrics_save_adds_sections_run_time_and_peak_memory(tmp_path, monkeypatch):
    clock = iter([0.0, 1.0, 4.0, 9.0, 10.0])  # created, data, training, table, elapsed
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock))
    timer = notebook.SectionTimer()
    timer.section("1. Data")
    timer.section("2. Training")
    metrics = notebook.Metrics(steps=12)
    path = metrics.save(tmp_path, timer)
    saved = json.loads(path.read_text())
    assert path == tmp_path / "metrics.json"
    assert saved["seconds_data"] == 3.0 and saved["seconds_training"] == 5.0
    assert saved["total_seconds"] == 10.0 and saved["steps"] == 12
    assert saved["peak_rss_mb"] > 10  # this test process holds more than 10 MB


def test_metric_key_keeps_letters_and_digits_only():
    assert notebook.metric_key("USD per 1k requests") == "usd_per_1k_requests"
    assert notebook.metric_key("few-shot") == "few_shot"
    assert notebook.metric_key("starts Hello!") == "starts_hello"


def test_metrics_add_table_names_each_cell_by_row_and_column():
    import pandas as pd

    table = pd.DataFrame({"style score": [0.9, 0.1]}, index=["fine-tuned", "base"])
    metrics = notebook.Metrics()
    metrics.add_table(table)
    assert metrics == {"fine_tuned_style_score": 0.9, "base_style_score": 0.1}


def test_choose_size_auto_is_small_only_on_a_cpu_without_bf16(monkeypatch, capsys):
    """The "auto" size gives the fp32 CPU the small run and says why; other devices the full one."""
    import helpers.models

    for has_bf16, device, expected in [
        (False, "cpu", "small"),
        (True, "cpu", "full"),
        (False, "cuda", "full"),
        (False, "mps", "full"),
    ]:
        monkeypatch.setattr(helpers.models, "cpu_has_bf16", lambda has=has_bf16: has)
        assert notebook.choose_size("auto", device) == expected
        assert f"auto -> {expected}" in capsys.readouterr().out


def test_choose_size_keeps_an_explicit_size_and_refuses_an_unknown_one(monkeypatch):
    """An explicit size wins on every machine; a typo is an error naming the choices."""
    import helpers.models

    monkeypatch.setattr(helpers.models, "cpu_has_bf16", lambda: False)
    assert notebook.choose_size("full", "cpu") == "full"
    assert notebook.choose_size("small", "cuda") == "small"
    with pytest.raises(ValueError, match="auto, full, small.*'tiny'"):
        notebook.choose_size("tiny", "cpu")
