"""``python -m helpers report``: the documents' figures come from the notebooks' runs.

Each test builds a small repository in a temporary folder (notebooks, their committed run
metrics, a README and a guide with generated blocks), so nothing here depends on the figures
of the committed runs, except the last test, which checks the committed tree itself.
"""

import json
import os
import time

import nbformat
import pytest

from helpers.cli import main
from helpers.paths import repo_root
from helpers.report import ReportError
from helpers.report.blocks import read_blocks, replace_blocks
from helpers.report.collect import AVX2_DIR, collect, load_runs, read_run, section_names
from helpers.report.documents import README, check_report, guide_builders, write_report
from helpers.report.notebooks import run_figures
from helpers.report.scorecard import scorecard
from helpers.report.tables import Table, render
from helpers.verdicts import Claim

# --- blocks -----------------------------------------------------------------------------------

DOCUMENT = """# Title

Some words.

<!-- report:figures -->
old figures
<!-- /report:figures -->

More words.
"""


def test_a_block_is_replaced_and_the_text_around_it_kept():
    new = replace_blocks(DOCUMENT, {"figures": "| a |\n|---|\n| 1 |"})
    assert new == DOCUMENT.replace("old figures", "\n| a |\n|---|\n| 1 |\n")
    assert read_blocks(new) == {"figures": "| a |\n|---|\n| 1 |"}
    assert replace_blocks(new, {"figures": "| a |\n|---|\n| 1 |"}) == new  # stable


@pytest.mark.parametrize(
    "text, contents, words",
    [
        ("<!-- report:a -->\n", {"a": ""}, ["line 1", "report:a is never closed"]),
        ("<!-- /report:a -->\n", {"a": ""}, ["line 1", "closes no open"]),
        ("<!-- report:a -->\n<!-- report:b -->\n", {}, ["line 2", "opens inside report:a"]),
        ("<!-- report:a -->\n<!-- /report:a -->\n", {"b": ""}, ["unknown block report:a"]),
        ("no blocks\n", {"b": ""}, ["has no block report:b", "<!-- report:b -->"]),
    ],
)
def test_a_misplaced_marker_is_one_line_naming_it(text, contents, words):
    with pytest.raises(ReportError) as error:
        replace_blocks(text, contents, "README.md")
    message = str(error.value)
    assert "\n" not in message and message.startswith("README.md")
    assert all(word in message for word in words), message


def test_a_table_keeps_the_columns_people_write():
    current = "| key | words | figure |\n|---|---|---|\n| What LoRA does | kept text | 1 |\n"
    table = Table(
        ["key", "words", "figure"],
        [
            {"key": "What LoRA does", "words": "generated", "figure": "2"},
            {"key": "New row", "words": "generated", "figure": "3"},
        ],
        key="key",
        kept=("words",),
    )
    assert render(table, current).splitlines()[2:] == [
        "| What LoRA does | kept text | 2 |",
        "| New row | generated | 3 |",
    ]


# --- the scorecard ----------------------------------------------------------------------------


def run_record(metrics: dict, sections=("1. Data", "2. Training"), seconds=200.0) -> dict:
    """Return a committed run as collect writes it."""
    return {
        "notebook": "x.ipynb",
        "papermill_seconds": seconds,
        "sections": list(sections),
        "metrics": metrics,
    }


CLAIM = Claim(
    claim="LoRA uses 3x less memory",
    outcome="not confirmed",
    figure="2.2x",
    band="95% band 1.9x to 2.5x",
    note="the logits cost both the same",
)


def write_runs(root, runs: dict[str, dict]) -> None:
    """Write notebooks (empty files) and their committed runs into a repository folder."""
    (root / "notebooks" / "metrics").mkdir(parents=True, exist_ok=True)
    for stem, record in runs.items():
        (root / "notebooks" / f"{stem}.ipynb").write_text("{}")
        (root / "notebooks" / "metrics" / f"{stem}.json").write_text(json.dumps(record))


def test_the_scorecard_lists_every_claim_with_its_notebook_verdict_figure_and_band(tmp_path):
    write_runs(
        tmp_path,
        {
            "03_lora_peft": run_record({"claims": {"memory": CLAIM.record()}}),
            "04_medical_qa": run_record({}),
        },
    )
    table = scorecard(load_runs(tmp_path))
    assert table.columns == ["claim", "notebook", "verdict", "figure", "band"]
    assert table.rows == [
        {
            "claim": "LoRA uses 3x less memory",
            "notebook": "[03](notebooks/03_lora_peft.ipynb)",
            "verdict": "**not confirmed**; the logits cost both the same",
            "figure": "2.2x",
            "band": "95% band 1.9x to 2.5x",
        }
    ]
    assert table.notes[0] == "1 claims tested: 1 not confirmed."
    assert "notebook 04" in table.notes[1]


def test_without_claims_the_scorecard_says_so(tmp_path):
    write_runs(tmp_path, {"01_a": run_record({}), "02_b": run_record({})})
    assert scorecard(load_runs(tmp_path)).startswith(
        "No claims recorded in the canonical run of notebooks 01 and 02"
    )


@pytest.mark.parametrize(
    "claims, words",
    [
        ([], "'claims' is not an object"),
        ({"k": "text"}, "claim 'k' is not an object"),
        ({"k": {**CLAIM.record(), "outcome": "maybe"}}, "outcome 'maybe' is not one of"),
        ({"k": {**CLAIM.record(), "figure": ""}}, "claim 'k' has no figure"),
    ],
)
def test_a_bad_claim_is_one_line_naming_the_file_and_the_claim(tmp_path, claims, words):
    write_runs(tmp_path, {"03_lora_peft": run_record({"claims": claims})})
    with pytest.raises(ReportError) as error:
        scorecard(load_runs(tmp_path))
    assert str(error.value).startswith("notebooks/metrics/03_lora_peft.json")
    assert words in str(error.value) and "\n" not in str(error.value)


# --- the committed runs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, words",
    [
        (None, "is missing: run `make notebooks`"),
        ("{not json", "not valid JSON (line 1"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('{"metrics": {}}', "not a collected run ('papermill_seconds' missing"),
        (b"\xff\xfe", "not a text file"),
    ],
)
def test_a_missing_or_bad_metrics_file_is_one_line(tmp_path, content, words):
    path = tmp_path / "01_a.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ReportError) as error:
        read_run(path, "notebooks/metrics/01_a.json")
    message = str(error.value)
    assert message.startswith("notebooks/metrics/01_a.json") and "\n" not in message
    assert words in message, message


def executed_notebook(path, output_dir="runs/01_a", started=None, exception=None) -> None:
    """Write a notebook as papermill leaves it: parameters cell, sections, run metadata."""
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "language": "python",
        "display_name": "Python 3",
    }
    parameters = nbformat.v4.new_code_cell(
        f'quick: bool = False  # a switch\noutput_dir: str = "{output_dir}"  # where it writes\n'
    )
    parameters.metadata["tags"] = ["parameters"]
    notebook.cells = [
        parameters,
        nbformat.v4.new_code_cell('timer.section("1. Data")\nx = 1'),
        nbformat.v4.new_markdown_cell('timer.section("not code")'),
        nbformat.v4.new_code_cell("%%time\ntimer.section('2. What LoRA does')"),
    ]
    started = started or time.time() - 60
    notebook.metadata["papermill"] = {
        "duration": 221.0186,
        "start_time": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(started)),
        "exception": exception,
    }
    nbformat.write(notebook, path)


def test_collect_copies_the_runs_metrics_with_papermills_time_and_the_sections(tmp_path):
    (tmp_path / "notebooks").mkdir()
    notebook = tmp_path / "notebooks" / "01_a.ipynb"
    executed_notebook(notebook)
    run_dir = tmp_path / "runs" / "01_a"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps({"total_seconds": 215.2, "peak_rss_mb": 9}))
    target = collect(notebook, tmp_path)
    assert target == tmp_path / "notebooks" / "metrics" / "01_a.json"
    assert json.loads(target.read_text()) == {
        "notebook": "01_a.ipynb",
        "papermill_seconds": 221.019,
        "sections": ["1. Data", "2. What LoRA does"],
        "metrics": {"total_seconds": 215.2, "peak_rss_mb": 9},
    }
    run = load_runs(tmp_path)["01_a"]
    assert (run.seconds, run.sections, run.metrics["peak_rss_mb"]) == (221.019, run.sections, 9)


def test_collect_refuses_a_run_that_did_not_write_its_metrics(tmp_path):
    (tmp_path / "notebooks").mkdir()
    notebook = tmp_path / "notebooks" / "01_a.ipynb"
    executed_notebook(notebook)
    with pytest.raises(ReportError, match=r"runs/01_a/metrics.json is missing: 01_a.ipynb's run"):
        collect(notebook, tmp_path)
    stale = tmp_path / "runs" / "01_a" / "metrics.json"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))  # before the run started
    with pytest.raises(ReportError, match="is older than 01_a.ipynb's run"):
        collect(notebook, tmp_path)


@pytest.mark.parametrize(
    "change, words",
    [
        ({"exception": True}, "its last papermill run failed"),
        ({"output_dir": "runs/x\" + 'y"}, "output_dir's default is not a string literal"),
    ],
)
def test_collect_refuses_a_failed_run_or_an_output_dir_it_cannot_read(tmp_path, change, words):
    notebook = tmp_path / "01_a.ipynb"
    executed_notebook(notebook, **change)
    with pytest.raises(ReportError, match=words):
        collect(notebook, tmp_path)


def test_a_notebook_not_run_by_papermill_cannot_be_collected(tmp_path):
    notebook = tmp_path / "01_a.ipynb"
    executed_notebook(notebook)
    loaded = nbformat.read(notebook, as_version=4)
    assert section_names(loaded) == ("1. Data", "2. What LoRA does")
    del loaded.metadata["papermill"]
    nbformat.write(loaded, notebook)
    with pytest.raises(ReportError, match="no papermill run in its metadata"):
        collect(notebook, tmp_path)


# --- the documents ------------------------------------------------------------------------------

SAMPLE = {
    "01_customer_service_openai": run_record(
        {
            "fine_tuned_style_score": 0.909,
            "few_shot_style_score": 0.659,
            "estimated_seconds": 246.9,
            "total_seconds": 215.2,
            "seconds_data": 1.4,
            "seconds_training": 59.4,
            "claims": {"style": Claim("stable style", "confirmed", "91 % vs 66 %").record()},
        },
        seconds=221.0,
    ),
    "05_extra": run_record(
        {
            "peak_rss_mb": 2733.4,
            "estimated_seconds": 120,
            "total_seconds": 100,
            "seconds_1_data": 30,
            "seconds_2_training": 70,
        },
        seconds=167.2,
    ),
}


def sample_repository(root) -> None:
    """Write two notebooks' runs, and a README and guide holding every block, empty."""
    write_runs(root, SAMPLE)
    guide_blocks = guide_builders(run_figures(load_runs(root)))
    (root / "docs").mkdir()
    for path, names in ((README, ["notebooks", "scorecard"]), ("docs/instructor.md", guide_blocks)):
        blocks = "".join(f"Text.\n\n<!-- report:{n} -->\n<!-- /report:{n} -->\n\n" for n in names)
        (root / path).write_text(f"# Doc\n\n{blocks}The end.\n")


def test_report_writes_every_block_and_check_then_passes(tmp_path):
    sample_repository(tmp_path)
    changed, missing = write_report(tmp_path)
    assert len(changed) == 2
    assert (
        "notebooks/metrics/01_customer_service_openai.json has no figure 'peak_rss_mb'"
        in (missing[0])
    )
    readme = (tmp_path / "README.md").read_text()
    assert (
        "| `01_customer_service_openai.ipynb` |  | style score 91 % fine-tuned vs 66 % few-shot"
        " | 3 min 41 s, peak n/a |" in readme
    )
    assert "| `05_extra.ipynb` |  |  | 2 min 47 s, peak 2,733 MiB |" in readme
    assert (
        "| stable style | [01](notebooks/01_customer_service_openai.ipynb) | **confirmed** |"
        in readme
    )
    assert "No claims recorded in the canonical run of notebook 05" in readme
    guide = (tmp_path / "docs" / "instructor.md").read_text()
    assert "| 2 | Training | 59 | 98 % |  |" in guide  # 01's sections, keys without numbers
    assert "| 2 | Training | 70 | 70 % |  |" in guide  # 05's, keys with them
    assert "estimates were 4.1 and 2.0 min against 3.6 and 1.7 min measured" in guide
    assert "Together the default runs take 6 min 28 s." in guide
    assert check_report(tmp_path) == []
    assert write_report(tmp_path)[0] == []  # nothing left to change


def test_the_avx2_column_shows_the_fp32_run_where_one_was_collected(tmp_path, capsys):
    """make notebooks-avx2's runs fill the AVX2 column; a notebook without one says so."""
    sample_repository(tmp_path)
    executed = tmp_path / "runs" / "avx2" / "01_customer_service_openai.ipynb"
    executed.parent.mkdir(parents=True)
    executed_notebook(executed, output_dir="runs/01_customer_service")  # the parameter default
    run_dir = executed.parent / "01_customer_service_openai"  # where the target points papermill
    run_dir.mkdir()
    fp32 = {"fine_tuned_style_score": 0.8, "few_shot_style_score": 0.5, "peak_rss_mb": 3000}
    (run_dir / "metrics.json").write_text(json.dumps(fp32))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("helpers.paths.repo_root", lambda: tmp_path)
        assert main(["report", "--collect-avx2", str(executed)]) == 0
    assert (tmp_path / AVX2_DIR / "01_customer_service_openai.json").is_file()
    assert "its fp32 run's metrics -> notebooks/metrics/avx2/" in capsys.readouterr().out
    write_report(tmp_path)
    readme = (tmp_path / "README.md").read_text()
    assert (
        "| 3 min 41 s, peak n/a | 3 min 41 s, peak 3,000 MiB; style score 80 % fine-tuned "
        "vs 50 % few-shot |" in readme
    )
    assert "| 2 min 47 s, peak 2,733 MiB | not measured: `make notebooks-avx2` |" in readme
    assert check_report(tmp_path) == []


def test_check_names_the_block_row_column_and_both_figures_of_a_changed_figure(tmp_path):
    sample_repository(tmp_path)
    write_report(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(readme.read_text().replace("3 min 41 s, peak n/a", "3 min 40 s, peak n/a"))
    guide = tmp_path / "docs" / "instructor.md"
    guide.write_text(
        guide.read_text().replace("against 3.6 and 1.7 min", "against 3.5 and 1.7 min")
    )
    found = check_report(tmp_path)
    assert len(found) == 2
    assert found[0].startswith("README.md:")
    assert (
        "block report:notebooks differs: row '`01_customer_service_openai.ipynb`', column "
        "'default run, 2-core CPU with bf16 (measured)': '3 min 40 s, peak n/a' committed, "
        "'3 min 41 s, peak n/a' from the metrics" in found[0]
    )
    assert "block report:estimates differs:" in found[1]
    assert "'2.0 min against 3.5 and 1.7' committed, '2.0 min against 3.6 and 1.7'" in found[1]
    line = int(found[0].split(":")[1])
    assert "3 min 40 s" in readme.read_text().splitlines()[line - 1]


def test_people_keep_writing_the_words_of_a_generated_table(tmp_path):
    sample_repository(tmp_path)
    write_report(tmp_path)
    guide = tmp_path / "docs" / "instructor.md"
    guide.write_text(
        guide.read_text().replace(
            "| 2 | Training | 59 | 98 % |  |", "| 2 | Training | 59 | 98 % | the job |"
        )
    )
    assert check_report(tmp_path) == []
    write_report(tmp_path)
    assert "| 2 | Training | 59 | 98 % | the job |" in guide.read_text()


def test_the_command_line_checks_writes_and_reports_errors_in_one_line(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("FINETUNE_COURSE_ROOT", str(tmp_path))
    sample_repository(tmp_path)
    assert main(["report", "--check"]) == 1
    err = capsys.readouterr().err
    assert "README.md:" in err and "block report:notebooks differs" in err
    assert "run `python -m helpers report`" in err
    assert main(["report"]) == 0
    out, err = capsys.readouterr()
    assert "README.md: rewritten" in out and "warning: " in err
    assert main(["report", "--check"]) == 0
    assert "every generated block matches" in capsys.readouterr().out
    (tmp_path / "notebooks" / "metrics" / "05_extra.json").unlink()
    assert main(["report", "--check"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors == [
        "error: notebooks/metrics/05_extra.json is missing: run `make notebooks` (or, after a "
        "canonical run, `python -m helpers report --collect notebooks/05_extra.ipynb`)"
    ]


def test_the_committed_readme_and_guide_match_the_committed_runs():
    assert check_report(repo_root()) == []
