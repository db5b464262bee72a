"""The local server as a user starts it, a subprocess, driven only through the ``openai`` client.

One server (a subprocess on a free port) serves the module; every client validates
every response strictly against the client's own types. The OpenAI names the tests use
are aliases of the tiny random model (``--alias NAME=tiny-random-llama``): what is
tested is the server, not the model, so jobs train in a second, not minutes. Tests share
only fixtures (the server, the files, the ``trained`` job) and change nothing another
test reads, so any order passes. ``tests/test_server.py`` covers the rest in-process;
the embedded model itself is tested in ``tests/test_models.py``.
"""

import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
from openai import OpenAI

from helpers.models import TINY_MODEL, tiny_model
from helpers.paths import sample_path
from helpers.server import start_server

pytestmark = pytest.mark.slow  # a server subprocess: it imports torch and Transformers

MAX_STEPS = 20  # the server's cap on any job's steps
TERMINAL = ("succeeded", "failed", "cancelled")
FINE_TUNABLE = "gpt-4o-mini-2024-07-18"
CHAT = "gpt-3.5-turbo"
ALIASES = {FINE_TUNABLE: TINY_MODEL, CHAT: TINY_MODEL}  # served by helpers.models.tiny_model()
EXPORTED = "my-exported-model"  # served from a model folder: serve --model NAME=DIR


def _examples() -> list[str]:
    lines = sample_path("customer_service").read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip()]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Small JSONL files cut from the customer-service sample."""
    folder = tmp_path_factory.mktemp("jsonl")
    lines = _examples()
    contents = {"train": lines[:12], "validation": lines[12:16]}
    paths = {}
    for name, rows in contents.items():
        paths[name] = folder / f"{name}.jsonl"
        paths[name].write_text("\n".join(rows) + "\n", encoding="utf-8")
    return paths


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One running server for the module, with a step cap, serving the tiny model.

    It gets one torch thread, as a batch gives each of its runs: on a small shared machine
    (two cores, another job running) a full team of threads waits at every barrier for a
    preempted one, and the trained job took 12 s instead of 3.5 s.
    """
    data_dir = tmp_path_factory.mktemp("server")
    exported = tmp_path_factory.mktemp("exported")  # a merged model folder, as export writes
    for part in tiny_model(seed=0):
        part.save_pretrained(exported)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        running = start_server(
            data_dir=data_dir,
            max_steps=MAX_STEPS,
            aliases=ALIASES,
            served={EXPORTED: str(exported)},
        )
    with running:
        yield running


def make_client(server, api_key=None) -> OpenAI:
    """Return a strict official client for the server."""
    return OpenAI(
        base_url=server.base_url,
        api_key=api_key or server.api_key,
        _strict_response_validation=True,
        max_retries=0,
    )


@pytest.fixture(scope="module")
def client(server) -> OpenAI:
    return make_client(server)


def wait_for(check, timeout: float = 900.0, interval: float = 0.2):
    """Call ``check`` until it returns something truthy; return that, or fail at the timeout."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(interval)
    return result


def finished(client, job_id: str, timeout: float = 900.0):
    """Poll a job until it is finished; return it."""

    def check():
        job = client.fine_tuning.jobs.retrieve(job_id)
        return job if job.status in TERMINAL else None

    return wait_for(check, timeout)


def metrics_steps(client, job_id: str) -> list[int]:
    """Return the steps of a job's training-loss events, oldest first."""
    events = client.fine_tuning.jobs.list_events(job_id, limit=1000).data
    return sorted(
        e.data["step"] for e in events if e.type == "metrics" and "valid_loss" not in e.data
    )


def upload(client, path, purpose="fine-tune"):
    with open(path, "rb") as handle:
        return client.files.create(file=handle, purpose=purpose)


# --- a real fine-tuning job ------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(client, files):
    """A job on 12 examples (batch 6, 2 epochs: 4 steps) with a validation file, finished."""
    training, validation = upload(client, files["train"]), upload(client, files["validation"])
    job = client.fine_tuning.jobs.create(
        model=FINE_TUNABLE,
        training_file=training.id,
        validation_file=validation.id,
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 6}},
        },
        suffix="course",
        seed=7,
        metadata={"notebook": "01"},
    )
    return finished(client, job.id)


def test_job_succeeds_with_numbers_for_auto_and_a_model(client, trained):
    job = trained
    assert job.status == "succeeded", job.error
    assert job.error is None and job.estimated_finish is None
    assert (job.hyperparameters.n_epochs, job.hyperparameters.batch_size) == (2, 6)
    assert job.hyperparameters.learning_rate_multiplier == 1.0  # "auto" resolved
    assert job.method.supervised.hyperparameters.n_epochs == 2
    assert job.seed == 7 and job.metadata == {"notebook": "01"}
    assert job.trained_tokens > 0 and job.finished_at >= job.created_at
    assert re.fullmatch(
        r"ft:gpt-4o-mini-2024-07-18:local:course:[A-Za-z0-9]{8}", job.fine_tuned_model
    )
    listed = [j.id for j in client.fine_tuning.jobs.list(limit=1)]  # pages of one
    assert job.id in listed and len(listed) == len(set(listed))


def test_job_events_are_newest_first_with_metrics(client, trained):
    events = list(client.fine_tuning.jobs.list_events(trained.id, limit=3))  # paged by 3
    assert [e.created_at for e in events] == sorted((e.created_at for e in events), reverse=True)
    assert len({e.id for e in events}) == len(events)
    messages = [e.message for e in reversed(events)]
    assert f"served locally by {TINY_MODEL} instead" in messages[0]  # the first event
    assert any("validated" in m for m in messages) and any("started" in m for m in messages)
    assert any("Checkpoint created" in m for m in messages)
    assert events[0].message == "The job has successfully completed"
    assert metrics_steps(client, trained.id) == [1, 2, 3, 4]
    metrics = [e for e in events if e.type == "metrics"]
    assert all(isinstance(e.data["train_loss"], float) for e in metrics)


def test_checkpoints_and_results_file(client, trained):
    checkpoints = client.fine_tuning.jobs.checkpoints.list(trained.id).data
    assert [c.step_number for c in checkpoints] == [4, 2]  # one per epoch, newest first
    for checkpoint in checkpoints:
        assert checkpoint.fine_tuned_model_checkpoint == (
            f"{trained.fine_tuned_model}:ckpt-step-{checkpoint.step_number}"
        )
        assert checkpoint.metrics.valid_loss > 0 and checkpoint.metrics.train_loss > 0
        assert 0 <= checkpoint.metrics.valid_mean_token_accuracy <= 1

    (result_id,) = trained.result_files
    result = client.files.retrieve(result_id)
    assert result.purpose == "fine-tune-results"
    rows = client.files.content(result_id).text.splitlines()
    assert rows[0] == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"
    assert [row.split(",")[0] for row in rows[1:]] == ["1", "2", "3", "4"]
    assert rows[2].split(",")[3] and not rows[1].split(",")[3]  # validated at each epoch's end
    assert all(0 <= float(row.split(",")[2]) <= 1 for row in rows[1:])  # train_accuracy


# --- chat ----------------------------------------------------------------------------------

QUESTION = [
    {"role": "system", "content": "You are the customer-service assistant for XYZ Corp."},
    {"role": "user", "content": "Do you ship to Canada?"},
]


def test_chat_with_the_fine_tuned_model(client, trained):
    reply = client.chat.completions.create(
        model=trained.fine_tuned_model, messages=QUESTION, max_tokens=12, temperature=0
    )
    (choice,) = reply.choices
    assert reply.object == "chat.completion" and reply.model == trained.fine_tuned_model
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    usage = reply.usage
    assert usage.prompt_tokens > 10 and 0 < usage.completion_tokens <= 12
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    again = client.chat.completions.create(
        model=trained.fine_tuned_model, messages=QUESTION, max_tokens=12, temperature=0
    )
    assert again.choices[0].message.content == choice.message.content  # greedy: the same

    sampled = client.chat.completions.create(
        model=trained.fine_tuned_model, messages=QUESTION, max_tokens=6, n=2, seed=1
    )
    assert [c.index for c in sampled.choices] == [0, 1]
    assert sampled.usage.completion_tokens <= 12


def test_chat_streams_the_same_text_with_usage(client, trained):
    plain = client.chat.completions.create(
        model=trained.fine_tuned_model, messages=QUESTION, max_tokens=12, temperature=0
    )
    stream = client.chat.completions.create(
        model=trained.fine_tuned_model,
        messages=QUESTION,
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == plain.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage


def test_chat_stops_at_stop_strings(client):
    question = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]
    plain = client.chat.completions.create(
        model=CHAT, messages=question, max_tokens=30, temperature=0
    )
    text = plain.choices[0].message.content
    # A stop string from the middle of the model's own greedy answer (the tiny model's is
    # blank lines): the same answer with a stop ends just before that string's first occurrence.
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    assert len(stop) == 2, text
    reply = client.chat.completions.create(
        model=CHAT, messages=question, max_tokens=30, temperature=0, stop=[stop]
    )
    assert stop not in reply.choices[0].message.content
    assert reply.choices[0].message.content == text[: text.index(stop)]
    assert reply.choices[0].finish_reason == "stop"


def test_chat_with_a_checkpoint(client, trained):
    checkpoint = client.fine_tuning.jobs.checkpoints.list(trained.id).data[-1]
    reply = client.chat.completions.create(
        model=checkpoint.fine_tuned_model_checkpoint, messages=QUESTION, max_tokens=4
    )
    assert reply.usage.completion_tokens <= 4


def test_an_exported_model_folder_is_served_by_name(client):
    assert EXPORTED in [model.id for model in client.models.list()]
    reply = client.chat.completions.create(
        model=EXPORTED, messages=[{"role": "user", "content": "Hello"}], max_tokens=3
    )
    assert reply.model == EXPORTED and 1 <= reply.usage.completion_tokens <= 3


def test_twenty_concurrent_chats_all_complete(client):
    def ask(number: int):
        return client.chat.completions.create(
            model=CHAT,
            messages=[{"role": "user", "content": f"Say the number {number}."}],
            max_tokens=6,
            temperature=0,
        )

    with ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(ask, range(20)))
    assert all(r.choices[0].message.content and r.usage.completion_tokens for r in replies)


# --- the server's process ---------------------------------------------------------------


def test_a_server_stops_when_the_process_that_started_it_is_killed(tmp_path):
    """A restarted kernel or an interrupted batch run must not leave its server behind."""
    code = (
        "import sys, time\n"
        "from helpers.server import start_server\n"
        f"server = start_server({str(tmp_path)!r})\n"
        "print(server.process.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    server = psutil.Process(int(parent.stdout.readline()))
    assert server.is_running()
    parent.kill()  # no clean-up runs: as when a kernel is killed
    parent.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _alive(server):
        time.sleep(0.5)
    assert not _alive(server)
    assert "has exited: stopping" in (tmp_path / "server.log").read_text()


def _alive(process: psutil.Process) -> bool:
    """Tell whether a process still runs (a zombie waiting to be reaped does not)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
