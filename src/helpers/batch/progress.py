"""Turn an executed notebook's widget progress bars into the text bars a static page can show.

In a Jupyter kernel ``tqdm.auto`` draws an ipywidgets bar: the output holds only a reference
to a widget model (blank wherever no widget manager runs: a website, GitHub, nbviewer) and a
``text/plain`` fallback frozen at the bar's first state (``0/38``). The run's final state is
in the notebook's metadata (nbclient stores it). Each widget output becomes ``text/plain``:
a tqdm bar (an ``HBox`` of text, progress, text) is written as tqdm writes it in a terminal,
``training: 100%|██████████| 38/38 [00:48<00:00, ...]``; another widget keeps its fallback;
a widget hidden or closed during the run (tqdm's ``leave=False``), which Jupyter no longer
shows, is dropped.
The widget state then goes from the metadata. Trainer's bar is HTML already and is kept.
"""

from __future__ import annotations

import html

from nbformat import NotebookNode

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
BAR_WIDTH = 10  # tqdm's width when it cannot measure the terminal
TEXT_MODELS = ("HTMLModel", "LabelModel")
PROGRESS_MODELS = ("FloatProgressModel", "IntProgressModel")


def bar(value: float, maximum: float) -> str:
    """Return a text bar of BAR_WIDTH cells, filled in proportion to value / maximum."""
    fraction = min(max(value / maximum, 0.0), 1.0) if maximum > 0 else 0.0
    filled = round(fraction * BAR_WIDTH)
    return "|" + "█" * filled + " " * (BAR_WIDTH - filled) + "|"


def model_state(states: dict, reference: str) -> dict:
    """Return the state of the model an ``IPY_MODEL_<id>`` reference names ({} if none)."""
    return states.get(reference.removeprefix("IPY_MODEL_"), {}).get("state", {})


def shown(states: dict, model_id: str) -> bool:
    """Return whether a saved widget is still on show (not closed, its layout not hidden)."""
    if model_id not in states:
        return False
    layout = model_state(states, states[model_id]["state"].get("layout", ""))
    return layout.get("visibility") != "hidden" and layout.get("display") != "none"


def widget_text(states: dict, model_id: str) -> str | None:
    """Return the text of a box of text and progress widgets, or None for any other widget."""
    model = states[model_id]
    if model.get("model_name") not in ("HBoxModel", "VBoxModel"):
        return None
    parts = []
    for child in model["state"].get("children", []):
        name = states.get(child.removeprefix("IPY_MODEL_"), {}).get("model_name")
        state = model_state(states, child)
        if name in TEXT_MODELS:
            parts.append(html.unescape(state.get("value", "")).replace("\u2007", " "))
        elif name in PROGRESS_MODELS:
            parts.append(bar(state.get("value", 0), state.get("max", 0)))
        else:
            return None
    return "".join(parts)


def text_output(output: NotebookNode, states: dict | None) -> NotebookNode | None:
    """Return a widget output as text, or None where the run hid or closed the widget."""
    model_id = output["data"][WIDGET_VIEW].get("model_id", "")
    text = None
    if states is not None:
        if not shown(states, model_id):
            return None
        text = widget_text(states, model_id)
    if text is None:
        text = "".join(output["data"].get("text/plain", ""))
    output["data"] = {"text/plain": text}
    return output


def widgets_to_text(notebook: NotebookNode) -> int:
    """Replace every widget output of a notebook by text, in place; return how many changed."""
    saved = notebook.metadata.get("widgets", {}).get(WIDGET_STATE, {})
    states = saved.get("state") if saved else None
    changed = 0
    for cell in notebook.cells:
        outputs = []
        for output in cell.get("outputs", []):
            if WIDGET_VIEW in output.get("data", {}):
                changed += 1
                output = text_output(output, states)
            if output is not None:
                outputs.append(output)
        if "outputs" in cell:
            cell["outputs"] = outputs
    notebook.metadata.pop("widgets", None)
    return changed
