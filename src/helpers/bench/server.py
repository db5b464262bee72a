"""bench-server: chat throughput at 1, 4 and 16 concurrent requests, idle and while training.

Every figure comes from one run on a fresh server with a temporary data folder, next to
the baseline it is compared with: plain ``model.generate`` as a learner would call it
(fp32, default cache, one prompt), in this process, on the same machine.
"""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from helpers.bench.generate import plain_generate, sample_prompts, timed
from helpers.server import start_server

SERVED_MODEL = "smollm2-135m-instruct"


def generate_baseline(question: list[dict], max_tokens: int) -> float:
    """Tokens/s of plain ``model.generate`` (fp32, greedy, default cache) on one prompt."""
    from helpers.models import EMBEDDED_MODEL, load_base_model

    model, tokenizer = load_base_model(EMBEDDED_MODEL)
    plain_generate(model, tokenizer, question, 4)  # warm up
    ids, seconds = timed(plain_generate, model, tokenizer, question, max_tokens)
    return len(ids) / seconds


def _ask(client, question: list[dict], tokens: int) -> tuple[str, int, float]:
    """Ask one chat question; return the reply, its completion tokens and the seconds taken."""
    start = time.perf_counter()
    reply = client.chat.completions.create(
        model=SERVED_MODEL, messages=question, max_tokens=tokens, temperature=0
    )
    seconds = time.perf_counter() - start
    return reply.choices[0].message.content, reply.usage.completion_tokens, seconds


def _concurrently(client, questions: list[list[dict]], tokens: int) -> tuple[list, float]:
    """Ask every question at once; return the answers (as ``_ask``) and the seconds taken."""
    start = time.perf_counter()
    with ThreadPoolExecutor(len(questions)) as pool:
        answers = list(pool.map(lambda q: _ask(client, q, tokens), questions))
    return answers, time.perf_counter() - start


def _idle_figures(client, questions: list[list[dict]], max_tokens: int) -> dict:
    """Measure an idle server: one question at a time, then 4 and all of them at once."""
    from helpers.data import percentile

    _ask(client, questions[0], 4)  # loads the model
    start = time.perf_counter()
    sequential = [_ask(client, question, max_tokens) for question in questions]
    sequential_seconds = time.perf_counter() - start
    single = sum(tokens for _, tokens, _ in sequential) / sequential_seconds
    figures = {
        "single_tokens_per_s": round(single, 1),
        "chat_p50_idle_s": round(percentile([s for _, _, s in sequential], 50), 2),
    }
    for width in (4, len(questions)):
        answers, seconds = _concurrently(client, questions[:width], max_tokens)
        rate = sum(tokens for _, tokens, _ in answers) / seconds
        key = (
            "concurrent_tokens_per_s"
            if width == len(questions)
            else f"concurrent_{width}_tokens_per_s"
        )
        figures[key] = round(rate, 1)
    figures["concurrent_speedup"] = round(figures["concurrent_tokens_per_s"] / single, 2)
    figures["concurrent_identical_to_sequential"] = [a for a, _, _ in answers] == [
        a for a, _, _ in sequential
    ]
    return figures


def _training_figures(client, questions: list[list[dict]], chats: int) -> dict:
    """Start a fine-tuning job, time ``chats`` short chats while it trains, wait for its end."""
    from helpers.data import percentile
    from helpers.paths import sample_path

    with open(sample_path("customer_service"), "rb") as data:
        training_file = client.files.create(file=data, purpose="fine-tune")
    start = time.perf_counter()
    job = client.fine_tuning.jobs.create(
        model="gpt-4o-mini-2024-07-18",
        training_file=training_file.id,
        hyperparameters={"n_epochs": 1},
    )
    while client.fine_tuning.jobs.retrieve(job.id).status in ("validating_files", "queued"):
        time.sleep(0.5)
    answers, seconds = _concurrently(client, (questions * 2)[:chats], tokens=16)
    figures = {
        f"training_{chats}_chats_16_tokens_s": round(seconds, 1),
        "chat_p50_while_training_s": round(percentile([s for _, _, s in answers], 50), 2),
    }
    while (job := client.fine_tuning.jobs.retrieve(job.id)).status == "running":
        time.sleep(1)
    figures["job_wall_s"] = round(time.perf_counter() - start, 1)
    figures["job_status"] = job.status
    figures["job_trained_tokens"] = job.trained_tokens
    return figures


def bench_server(max_tokens: int = 64, concurrency: int = 16, training_chats: int = 20) -> dict:
    """Measure the server's chat throughput and latency; return the figures by name."""
    from openai import OpenAI

    questions = sample_prompts(concurrency)
    baseline = round(generate_baseline(questions[0], max_tokens), 1)
    figures: dict = {"max_tokens": max_tokens, "generate_baseline_tokens_per_s": baseline}
    with tempfile.TemporaryDirectory() as tmp, start_server(data_dir=tmp) as server:
        client = OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0)
        figures.update(_idle_figures(client, questions, max_tokens))
        figures["server_vs_generate_baseline"] = round(figures["single_tokens_per_s"] / baseline, 2)
        figures.update(_training_figures(client, questions, training_chats))
    return figures
