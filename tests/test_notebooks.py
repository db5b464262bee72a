"""The notebooks: parameters cells papermill can read, and a quick papermill run per notebook."""

import ast
import json

import nbformat
import papermill
import pytest
from nbval_kernel import run_again_if_the_kernel_dies
from openai import OpenAI

from helpers import models
from helpers.batch import find_notebooks
from helpers.paths import repo_root
from helpers.server import start_server
from helpers.verdicts import OUTCOMES

NOTEBOOKS = find_notebooks()
NB01 = "01_customer_service_openai"
NB03 = "03_lora_peft"
NB05 = "05_multitask_progressive"
# The claims each notebook records in metrics.json (Metrics.claim), whatever their outcome.
CLAIMS = {
    NB03: {
        "lora_trainable_share",
        "memory_saving_3x",
        "speedup_10x",
        "lora_forgets_less",
        "lora_forgets_less_3_epochs",
    },
    "04_medical_qa": {
        "data_review",
        "disclaimer",
        "safety_filter",
        "continuous_updates",
        "knowledge_update",
        "style_by_fine_tuning",
        "knowledge_by_retrieval",
        "inference_speed",
        "explainability",
        "data_requirement",
        "cost_barrier_stability",
        "forgetting_mitigation",
        "progressive_fine_tuning",
    },
    NB05: {
        "multi_task_abilities",
        "task_domination",
        "progressive_generic_first",
        "cost_llama7b_full_a100",
        "cost_llama7b_lora_3090",
    },
}


def _defaults(path) -> dict:
    """The default value of each parameter of a notebook, as its parameters cell sets it."""
    return {
        name: ast.literal_eval(parameter["default"])
        for name, parameter in papermill.inspect_notebook(str(path)).items()
    }


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Llama saved as a model folder: a notebook's cells without the real cost.

    What these runs test is the notebooks' plumbing (every cell runs, metrics.json, plots,
    adapters); the real model's quick runs are nbval's (make nbtest).
    """
    model, tokenizer = models.tiny_model(seed=0)
    folder = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def _parameters_cell(path):
    notebook = nbformat.read(path, as_version=4)
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: exactly one cell must be tagged 'parameters'"
    return notebook, tagged[0]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_is_typed_and_documented(path):
    _, cell = _parameters_cell(path)
    lines = [line for line in cell.source.splitlines() if line.strip()]
    for line in lines:
        assert ": " in line.split("=")[0] and " # " in line, f"untyped or undocumented: {line}"
    names = {line.split(":")[0] for line in lines}
    assert {"model_name", "seed", "output_dir"} <= names
    inferred = papermill.inspect_notebook(str(path))
    assert set(inferred) == names
    assert all(p["help"] for p in inferred.values())


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_outputs_are_clean(path):
    notebook, _ = _parameters_cell(path)
    text = path.read_text(encoding="utf-8")
    assert path.stat().st_size < 1_000_000
    for machine_path in (str(repo_root()), "/root/", "/home/", "/tmp/"):
        assert machine_path not in text, f"{path.name} shows a path of this machine: {machine_path}"
    assert all(c.get("execution_count") for c in notebook.cells if c.cell_type == "code"), (
        "commit the notebook with the outputs of a full run (make notebooks)"
    )
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors


def _run(path, tmp_path, **parameters):
    """Run a notebook with papermill into tmp_path; return its output folder."""
    out = tmp_path / "run"
    run_again_if_the_kernel_dies(
        lambda: papermill.execute_notebook(
            str(path),
            str(tmp_path / path.name),
            cwd=str(path.parent),
            kernel_name="python3",
            parameters={**parameters, "output_dir": str(out)},
            progress_bar=False,
        )
    )
    return out


def _check_nb01_metrics(metrics, backend):
    defaults = _defaults(_nb01_path())
    assert metrics["backend"] == backend and metrics["job_status"] == "succeeded"
    assert 1 <= metrics["steps"] <= 2 and metrics["trained_tokens"] > 0  # quick: 2 at most
    assert 1 <= metrics["eval_prompts"] < defaults["num_eval_prompts"]
    assert metrics["failure_demo_code"] == "invalid_training_file"
    assert metrics["estimated_cost_usd"] > 0 and metrics["openai_default_epochs"] == 3
    assert metrics["procedure_rule_agreement"] > 0.85
    approaches = ("base", "prompt_engineered", "few_shot", "fine_tuned")
    assert all(0 <= metrics[f"{a}_style_score"] <= 1 for a in approaches)
    assert all(metrics[f"{a}_completion_tokens"] < defaults["max_tokens"] for a in approaches)
    # the prompting baselines send longer prompts than the fine-tuned model
    assert metrics["fine_tuned_prompt_tokens"] < metrics["prompt_engineered_prompt_tokens"]
    assert metrics["prompt_engineered_prompt_tokens"] < metrics["few_shot_prompt_tokens"]
    assert metrics["claim_long_prompts_cost_more_tokens"] == 1
    assert metrics["total_seconds"] > 0


@pytest.mark.slow  # starts a kernel per notebook
@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.stem != NB01], ids=lambda p: p.stem)
def test_quick_run_writes_metrics(path, tmp_path, tiny_model_dir):
    """quick=True shrinks every section below its default; metrics.json and the plots follow.

    The notebooks run on the tiny model: their plumbing is what is tested here, the real
    model's quick runs are nbval's. Notebook 01 runs in the test after this one.
    """
    # The tiny model's logits are small: a high LoRA rate makes notebook 03's check that the
    # adapter changes them (by more than 0.01) hold by a wide margin after two steps.
    # Notebook 03's memory appendix is off by default: the tiny run reads it too. Its optional
    # parts that are on by default (the medical adapter, GGUF files) are off here: nbval's quick
    # copy runs them on the real model, so both sides of each switch run in a test.
    extra = (
        {
            "learning_rate_lora": 0.05,
            "memory_appendix": True,
            "second_adapter": False,
            "gguf_types": [],
        }
        if path.stem == NB03
        else {}
    )
    out = _run(path, tmp_path, quick=True, model_name=tiny_model_dir, **extra)
    metrics = json.loads((out / "metrics.json").read_text())
    defaults = _defaults(path)
    if "max_steps" in defaults:
        assert 0 < metrics["max_steps"] < defaults["max_steps"]
    claims = metrics.pop("claims", {})
    assert all(isinstance(v, (int, float, str)) for v in metrics.values())
    assert all(claim["outcome"] in OUTCOMES and claim["claim"] for claim in claims.values())
    if path.stem in CLAIMS:
        assert CLAIMS[path.stem] <= set(claims), sorted(claims)
    assert list(out.glob("*.png")), "the notebook saves its plots as PNG"
    assert metrics["estimated_seconds"] > 0 and metrics["total_seconds"] > 0
    if path.stem == "02_code_generation_full_finetune":
        assert metrics["reference_pass_rate"] == 1.0  # the sandbox judges reference code right
        assert metrics["steps"] <= metrics["max_steps"]
        assert 1 <= metrics["eval_tasks"] < defaults["num_eval_tasks"]
        assert abs(metrics["optimizer_state_mb"] * 2**20 / metrics["trainable_params"] - 8) < 0.1
    if path.stem == NB03:
        assert round(metrics["llama2_7b_trainable_percent"], 2) == 0.06
        assert metrics["lora_trainable_params"] < metrics["full_trainable_params"] / 100
        assert metrics["merge_max_abs_diff"] < 1e-3
        assert 1 <= metrics["eval_prompts"] < defaults["num_eval_prompts"]
        assert not any(key.startswith(("medical_", "export_")) for key in metrics)  # both off
        assert {"full_forgetting", "LoRA_forgetting"} <= set(metrics)
        assert "memory_ratio_named_parts" in metrics  # the appendix ran
        sections = [key for key in metrics if key.startswith("seconds_")]
        assert len(sections) == 11, sections  # one timing per numbered section and the appendix
    if path.stem == "04_medical_qa":
        assert metrics["safe_generate_disclaimer_rate"] == 1.0
        assert metrics["rag_update_top_source_rate"] == 1.0  # embeddings only: no training noise
        assert metrics["served_questions_refused"] >= 0  # section 7 generated its answers
        assert {"forgetting_v2_vs_v1", "probes_ft_rag_after"} <= set(metrics)
        manifest = json.loads((out / "adapters" / "manifest.json").read_text())
        assert [version["version"] for version in manifest["versions"]] == ["v1", "v2"]
        assert manifest["current"] in ("v1", "v2")
        assert all(
            (out / "adapters" / version / "adapter_config.json").is_file()
            for version in ("v1", "v2")
        )
    if path.stem == NB05:
        tasks = ("customer_service", "code", "medical")
        assert all(
            0 <= metrics[f"{mix}_{t}"] <= 1 for mix in ("balanced", "dominated") for t in tasks
        )
        assert {"medical_alone_medical", "progressive_general_knowledge_loss"} <= set(metrics)
        assert metrics["cost_model_max_error"] < 0.15  # reproduces the committed runs (test_cost)
        for run in ("balanced", "dominated", "medical alone", "progressive"):
            assert (out / run / "adapter" / "adapter_config.json").is_file()


def _nb01_path():
    return repo_root() / "notebooks" / f"{NB01}.ipynb"


@pytest.mark.slow  # starts a kernel and a server standing in for OpenAI
def test_nb01_openai_backend_runs_the_same_cells_against_a_stand_in_api(tmp_path, monkeypatch):
    """backend="openai" uses OpenAI() with the environment's key and base URL, like the article.

    The stand-in serves the tiny model under the notebook's model name: what is tested is the
    client code, the job's life and the metrics (nbval runs notebook 01 on the real model).
    """
    aliases = {"gpt-4o-mini-2024-07-18": models.TINY_MODEL}
    with start_server(data_dir=tmp_path / "api", max_steps=2, aliases=aliases) as api:
        monkeypatch.setenv("OPENAI_API_KEY", api.api_key)  # the kernel inherits the environment
        monkeypatch.setenv("OPENAI_BASE_URL", api.base_url)
        out = _run(_nb01_path(), tmp_path, quick=True, backend="openai", confirm_spend=True)
        client = OpenAI(base_url=api.base_url, api_key=api.api_key)
        jobs = client.fine_tuning.jobs.list().data
        tuned = [job.fine_tuned_model for job in jobs if job.status == "succeeded"]
        assert any(":xyz-support:" in name for name in tuned)  # the notebook's job ran here
        assert client.files.list(purpose="fine-tune").data == []  # the clean-up deleted them
    metrics = json.loads((out / "metrics.json").read_text())
    _check_nb01_metrics(metrics, "openai")
    assert {"loss.png", "style_score.png"} <= {png.name for png in out.glob("*.png")}
    assert not (out / "server").exists(), "backend='openai' must not start a server of its own"


@pytest.mark.slow  # starts a kernel
def test_nb01_openai_backend_without_a_key_stops_with_one_clear_message(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(papermill.PapermillExecutionError) as stopped:
        _run(_nb01_path(), tmp_path, quick=True, backend="openai", confirm_spend=True)
    error = stopped.value
    assert error.ename == "NotebookStopped" and "OPENAI_API_KEY" in error.evalue
    assert "Traceback" not in str(error) and "OPENAI_API_KEY" in str(error)  # one message
    out = tmp_path / "run"
    assert (out / "train.jsonl").is_file()  # the data cells before it ran ...
    assert not (out / "server").exists() and not (out / "metrics.json").exists()  # ... no more
    cells = nbformat.read(tmp_path / f"{NB01}.ipynb", as_version=4).cells
    failed = [
        i for i, c in enumerate(cells) if "error" in {o.output_type for o in c.get("outputs", [])}
    ]
    later = [c for c in cells[failed[0] + 1 :] if c.cell_type == "code"]
    assert len(failed) == 1 and later and not any(c.get("outputs") for c in later)
