"""Widget progress bars become text when an executed notebook is scrubbed (make notebooks)."""

from __future__ import annotations

import json

import nbformat
import papermill
import pytest
from nbval_kernel import run_again_if_the_kernel_dies

from helpers.batch.progress import WIDGET_STATE, WIDGET_VIEW, widgets_to_text
from helpers.batch.scrub import scrub_notebook

LOOPS = """from tqdm.auto import tqdm
for _ in tqdm(range(3), desc="training", unit="step"):
    pass
for _ in tqdm(range(2), desc="hidden", leave=False):
    pass
print("done")"""


def widget_outputs(notebook) -> list:
    """Return the outputs of a notebook that show a widget."""
    return [
        output
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if WIDGET_VIEW in output.get("data", {})
    ]


def widget_output(model_id: str, fallback: str) -> nbformat.NotebookNode:
    """Return a display_data output showing widget model_id, with a text fallback."""
    data = {WIDGET_VIEW: {"model_id": model_id, "version_major": 2}, "text/plain": fallback}
    return nbformat.v4.new_output("display_data", data=data)


def model(name: str, **state) -> dict:
    """Return a saved widget model."""
    return {"model_name": name, "state": state}


@pytest.mark.slow
def test_a_kernels_tqdm_bars_are_text_after_scrub(tmp_path):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(LOOPS)]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    source, executed = tmp_path / "bars.ipynb", tmp_path / "bars.out.ipynb"
    nbformat.write(notebook, source)
    run_again_if_the_kernel_dies(
        lambda: papermill.execute_notebook(
            str(source), str(executed), kernel_name="python3", progress_bar=False, log_output=False
        )
    )
    before = nbformat.read(executed, as_version=4)
    assert len(widget_outputs(before)) == 2  # the kernel drew widgets: what a static page blanks
    scrub_notebook(executed)
    after = nbformat.read(executed, as_version=4)
    outputs = after.cells[0].outputs
    texts = ["".join(o.get("data", {}).get("text/plain", "")) for o in outputs]
    assert widget_outputs(after) == [] and "widgets" not in after.metadata
    assert len(outputs) == 2  # the leave=False bar, closed in the run, is gone; "done" stays
    assert texts[0].startswith("training: 100%|██████████| 3/3 [")
    assert "step" in texts[0] and "<" in texts[0]  # tqdm's "[00:00<00:00, ...]", unescaped
    assert outputs[1].text == "done\n"


def test_a_stopped_bar_shows_where_it_stopped_and_other_widgets_keep_their_text():
    notebook = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("")
    cell.outputs = [
        widget_output("bar", "0/4"),
        widget_output("closed", "0/9"),  # closed in the run: its model is not saved
        widget_output("slider", "IntSlider(value=3)"),
    ]
    notebook.cells = [cell]
    states = {
        "bar": model("HBoxModel", children=["IPY_MODEL_l", "IPY_MODEL_p", "IPY_MODEL_r"]),
        "l": model("HTMLModel", value="eval:\u200750%"),
        "p": model("FloatProgressModel", value=2.0, max=4.0, bar_style="danger"),
        "r": model("HTMLModel", value="\u20072/4\u2007[00:01&lt;00:01]"),
        "slider": model("IntSliderModel", value=3),
    }
    notebook.metadata["widgets"] = {WIDGET_STATE: {"state": states}}
    assert widgets_to_text(notebook) == 3
    texts = [output.data for output in cell.outputs]
    assert texts == [
        {"text/plain": "eval: 50%|█████     | 2/4 [00:01<00:01]"},
        {"text/plain": "IntSlider(value=3)"},
    ]
    assert "widgets" not in notebook.metadata


def test_without_saved_widget_state_each_widget_keeps_its_text_fallback():
    notebook = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("")
    cell.outputs = [widget_output("gone", "training:   0%|          | 0/38")]
    notebook.cells = [cell, nbformat.v4.new_markdown_cell("no outputs here")]
    assert widgets_to_text(notebook) == 1
    assert json.loads(json.dumps(cell.outputs[0].data)) == {
        "text/plain": "training:   0%|          | 0/38"
    }
    assert "outputs" not in notebook.cells[1]
