"""What each notebook's run says in figures: its headline, its training speed, its results.

One :class:`Notebook` per course notebook names the metrics.json keys the documents show
(each key as the notebook records it); the instructor's guide prints :func:`Notebook.results`
under "What learners will see", and the notebook tables print the headline. A notebook
without an entry here still gets its run time, peak memory, sections and claims.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from helpers.report.tables import Table, paragraph, render
from helpers.report.values import MISSING, Figures


@dataclass(frozen=True)
class Notebook:
    """The figures of one notebook, as functions of its run's :class:`Figures`."""

    headline: Callable[[Figures], str]
    training: Callable[[Figures], str]  # seconds per training step, in words
    results: Callable[[Figures], str]  # Markdown: tables and a few lines of figures


Cell = Callable[[Figures, str], str]  # (figures, row prefix) -> the cell's text


def grid(f: Figures, first: str, rows: dict[str, str], columns: dict[str, Cell]) -> Table:
    """Return a table of ``<row prefix>_<name>`` metrics: one row per prefix, titled by label."""
    return Table(
        [first, *columns],
        [
            {first: label, **{t: cell(f, prefix) for t, cell in columns.items()}}
            for prefix, label in rows.items()
        ],
        key=first,
    )


def pct(name: str) -> Cell:
    """A column of rates, ``<prefix>_<name>``, in percent."""
    return lambda f, prefix: f.pct(f"{prefix}_{name}")


def num(name: str, spec: str = ",.0f", unit: str = "", before: str = "") -> Cell:
    """A column of numbers, ``<prefix>_<name>``, in a format spec, with a unit."""

    def cell(f: Figures, prefix: str) -> str:
        text = f.num(f"{prefix}_{name}", spec)
        return before + text + unit if text != MISSING else text

    return cell


# --- 01: customer-service style through the OpenAI fine-tuning API -------------------------


def results_01(f: Figures) -> str:
    rows = {
        "base": "base model",
        "prompt_engineered": "spelled-out prompt",
        "few_shot": "few-shot prompt",
        "fine_tuned": "fine-tuned",
    }
    columns = {
        "style score": pct("style_score"),
        "entirely in style": pct("all_checks"),
        "numbered steps": pct("numbered_steps"),
        "unsupported claims": pct("unsupported_claims"),
        "prompt tokens": num("prompt_tokens"),
        "reply tokens": num("completion_tokens"),
        "per 1,000 requests": num("usd_per_1k_requests", ".3f", before="$"),
        "mean latency": num("latency_s", ".1f", " s"),
    }
    notes = (
        f"{f.num('eval_prompts')} held-out questions, of which {f.num('procedure_questions')} "
        f"ask for a procedure (the *numbered steps* rate rests on them). The job trained "
        f"{f.num('steps')} steps ({f.num('n_epochs')} epoch, {f.num('train_examples')} "
        f"examples) and was polled for {f.secs('job_seconds')}; on OpenAI it would cost about "
        f"${f.num('estimated_cost_usd', '.2f')}."
    )
    return render(grid(f, "approach", rows, columns)) + "\n\n" + paragraph(notes)


# --- 02: code generation, full fine-tuning ---------------------------------------------------

FORMAT_CHECKS = ("only_code", "one_block", "parses", "pep8", "docstrings", "type_hints")


def format_mean(f: Figures, model: str) -> str:
    return f.mean_pct([f"{model}_{check}" for check in FORMAT_CHECKS])


def results_02(f: Figures) -> str:
    columns = {
        "format checks (mean)": format_mean,
        "only code": pct("only_code"),
        "one block": pct("one_block"),
        "parses": pct("parses"),
        "PEP 8": pct("pep8"),
        "docstrings": pct("docstrings"),
        "type hints": pct("type_hints"),
        "pass@1": pct("pass_at_1"),
    }
    table = grid(f, "model", {"base": "base", "fine-tuned": "fine-tuned"}, columns)
    tasks = f.get("eval_tasks")
    one_task = f" (one task is {100 / tasks:.0f} points)" if tasks else ""
    notes = (
        f"{f.num('eval_tasks')} held-out tasks{one_task}. Training: {f.num('steps')} steps "
        f"({f.num('epochs', '.2f')} epochs) at {f.num('seconds_per_step', '.2f')} s/step, "
        f"{f.num('tokens_per_second')} tokens/s; AdamW state {f.num('optimizer_state_mb')} MB, "
        f"checkpoint {f.num('checkpoint_mb')} MB; validation loss {f.num('base_val_loss', '.3f')}"
        f" (base) → {f.num('best_eval_loss', '.3f')} (best); early stopping "
        f"{f.yes_no('stopped_early', 'fired', 'did not fire')}."
    )
    return render(table) + "\n\n" + paragraph(notes)


# --- 03: LoRA vs full fine-tuning --------------------------------------------------------------


def results_03(f: Figures) -> str:
    quality = grid(
        f,
        "model",
        {"base": "base", "full": "full fine-tuning", "LoRA": "LoRA"},
        {
            "style pass rate": pct("style_pass_rate"),
            "unsupported claims": pct("unsupported_claims_rate"),
            "validation loss": num("val_loss", ".3f"),
            "general-knowledge loss": num("generic_loss", ".3f"),
        },
    )
    for row, prefix in zip(quality.rows, ("base", "full", "LoRA"), strict=True):
        row["forgetting"] = "" if prefix == "base" else f.text(f"{prefix}_forgetting")
    quality.columns.append("forgetting")
    cost = grid(
        f,
        "run",
        {"full": "full fine-tuning", "lora": "LoRA"},
        {
            "s/step": num("seconds_per_step", ".2f"),
            "tokens/s": num("tokens_per_second"),
            "trainable parameters": num("trainable_params"),
            "optimizer state": num("optimizer_state_mb", ",.1f", " MB"),
        },
    )
    cost.columns.append("checkpoint")
    cost.rows[0]["checkpoint"] = f.num("full_checkpoint_mb", ",.0f") + " MB"
    cost.rows[1]["checkpoint"] = f.num("lora_adapter_mb", ".2f") + " MB"
    for row in cost.rows:
        row["checkpoint"] = row["checkpoint"].replace(f"{MISSING} MB", MISSING)
    notes = (
        f"{f.num('eval_prompts')} held-out prompts; {f.num('full_steps')} steps each "
        f"({f.num('full_epochs', '.2f')} epochs). LoRA's step: {f.times('speedup_per_step')} "
        f"faster; memory, full over LoRA: {f.times('memory_ratio')}. Llama-2-7B with the same "
        f"LoRA: {f.num('llama2_7b_trainable_percent', '.4f')} % trainable. The medical adapter "
        f"wrote the disclaimer on {f.pct('medical_adapter_disclaimer_rate')} of medical answers, "
        f"the customer-service adapter on {f.pct('customer_service_adapter_disclaimer_rate')}."
    )
    return render(quality) + "\n\n" + render(cost) + "\n\n" + paragraph(notes)


# --- 04: medical QA, retrieval, updates, safety --------------------------------------------------


def results_04(f: Figures) -> str:
    rows = {
        "base": "base",
        "base_rag": "base + RAG",
        "fine_tuned": "fine-tuned",
        "fine_tuned_rag": "fine-tuned + RAG",
    }
    columns = {
        "disclaimer rate": pct("disclaimer_rate"),
        "similarity": num("similarity", ".3f"),
        "ROUGE-L": num("rouge_l", ".3f"),
        "prompt tokens": num("prompt_tokens"),
        "words": num("words"),
        "s per answer": num("seconds_per_answer", ".2f"),
    }
    lines = [
        f"- Training: {f.num('steps')} steps at {f.num('seconds_per_step', '.2f')} s/step.",
        f"- Knowledge update (RSV probes passed, before → after): retrieval "
        f"{f.pct('probes_rag_before')} → {f.pct('probes_rag_after')} (index updated in "
        f"{f.num('rag_update_seconds', '.2f')} s), fine-tuning {f.pct('probes_ft_before')} → "
        f"{f.pct('probes_ft_after')} (a {f.secs('ft_update_seconds')} update run).",
        f"- Update v1 → v2: similarity on the old questions fell by "
        f"{f.num('regression_similarity_drop', '.3f')} (regression check "
        f"{f.yes_no('regression_passed', 'passed', 'failed')}); general-knowledge loss base "
        f"{f.num('generic_loss_base', '.3f')}, v1 {f.num('generic_loss_v1', '.3f')}, v2 "
        f"{f.num('generic_loss_v2', '.3f')} (v2 {f.change('generic_loss_v2', 'generic_loss_v1')}"
        f" against v1, {f.change('generic_loss_v2', 'generic_loss_base')} against the base).",
        f"- Safety filter, on the locked test part: recall {f.num('safety_recall', '.3f')}, "
        f"false-positive rate {f.num('safety_fpr', '.3f')}; target (recall 0.95 at 5 %) "
        f"{f.yes_no('safety_target_met', 'met', 'not met')}. `safe_generate` answers with the "
        f"disclaimer: {f.pct('safe_generate_disclaimer_rate')}.",
    ]
    bullets = "\n".join(paragraph(line, indent="  ") for line in lines)
    return render(grid(f, "variant", rows, columns)) + "\n\n" + bullets


# --- 05: several tasks, progressive fine-tuning, cost at scale ------------------------------------


def results_05(f: Figures) -> str:
    rows = {"base": "base", "balanced": "balanced mix", "dominated": "dominated mix"}
    columns = {
        "customer-service style": pct("customer_service"),
        "code format": pct("code"),
        "code tests passed": pct("code_tests_passed"),
        "medical disclaimer": pct("medical"),
    }
    lines = [
        f"- Progressive (generic, then medical) against medical alone, same budget: disclaimer "
        f"{f.pct('progressive_disclaimer_rate')} vs {f.pct('medical_alone_disclaimer_rate')}, "
        f"held-out medical loss {f.num('progressive_medical_loss_held_out', '.3f')} vs "
        f"{f.num('medical_alone_medical_loss_held_out', '.3f')}, general-knowledge loss "
        f"{f.num('progressive_general_knowledge_loss', '.3f')} vs "
        f"{f.num('medical_alone_general_knowledge_loss', '.3f')} (base "
        f"{f.num('base_general_knowledge_loss', '.3f')}).",
        f"- Cost model: reproduces the course's committed runs within "
        f"{f.pct('cost_model_max_error')} ({f.num('cpu_achieved_gflops')} GFLOP/s achieved on "
        f"the course's CPU).",
    ]
    bullets = "\n".join(paragraph(line, indent="  ") for line in lines)
    return render(grid(f, "adapter", rows, columns)) + "\n\n" + bullets


def headline_01(f: Figures) -> str:
    return (
        f"style score {f.pct('fine_tuned_style_score')} fine-tuned vs "
        f"{f.pct('few_shot_style_score')} few-shot"
    )


def headline_02(f: Figures) -> str:
    return (
        f"format checks {format_mean(f, 'base')} → {format_mean(f, 'fine-tuned')}, "
        f"pass@1 {f.pct('base_pass_at_1')} → {f.pct('fine-tuned_pass_at_1')}"
    )


def headline_03(f: Figures) -> str:
    return (
        f"style pass rate {f.pct('full_style_pass_rate')} full, "
        f"{f.pct('LoRA_style_pass_rate')} LoRA, {f.pct('prompt_style_pass_rate')} prompt tuning; "
        f"LoRA's step {f.times('speedup_per_step')} faster"
    )


def headline_04(f: Figures) -> str:
    return (
        f"disclaimer rate {f.pct('base_disclaimer_rate')} → "
        f"{f.pct('fine_tuned_disclaimer_rate')}, similarity "
        f"{f.num('base_similarity', '.3f')} → {f.num('fine_tuned_similarity', '.3f')}; "
        f"safety target {f.yes_no('safety_target_met', 'met', 'not met')}"
    )


def headline_05(f: Figures) -> str:
    return (
        f"code format {f.pct('balanced_code')} balanced vs {f.pct('dominated_code')} dominated; "
        f"cost model within {f.pct('cost_model_max_error')} of the measured runs"
    )


METHODS = {"lora": "LoRA", "full": "full"}  # notebook 04's method parameter, in words

NOTEBOOKS = {
    "01_customer_service_openai": Notebook(
        headline_01,
        lambda f: f"the server's job: {f.num('steps')} steps in {f.secs('job_seconds')}",
        results_01,
    ),
    "02_code_generation_full_finetune": Notebook(
        headline_02, lambda f: f"full {f.num('seconds_per_step', '.2f')}", results_02
    ),
    "03_lora_peft": Notebook(
        headline_03,
        lambda f: (
            f"full {f.num('full_seconds_per_step', '.2f')}, "
            f"LoRA {f.num('lora_seconds_per_step', '.2f')}"
        ),
        results_03,
    ),
    "04_medical_qa": Notebook(
        headline_04,
        lambda f: (
            f"{METHODS.get(f.text('method'), f.text('method'))} {f.num('seconds_per_step', '.2f')}"
        ),
        results_04,
    ),
    "05_multitask_progressive": Notebook(
        headline_05, lambda f: f"LoRA {f.num('lora_seconds_per_step', '.2f')}", results_05
    ),
}
