"""The local OpenAI-compatible server in this process, on the tiny random model: fast.

Each test builds its own app over its own data folder (``serving``) and talks to it
through the official ``openai`` client with strict response validation, so no test
depends on another or on their order. ``tests/test_server_slow.py`` drives a server
subprocess, as a user starts it.
"""

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest
import torch
from fastapi.testclient import TestClient
from openai import OpenAI
from safetensors.torch import load_file

from helpers import data as data_module
from helpers.chat import render_prompt
from helpers.cli import build_parser
from helpers.cli.serve import NAME_PATTERN
from helpers.models import TINY_MODEL, tiny_model
from helpers.server import API_KEY_ENV, LocalServer, free_port, start_server
from helpers.server.app import create_app
from helpers.server.catalogue import MODEL_NAME_PATTERN
from helpers.server.cores import CoreShare
from helpers.server.pool import LoadedModel, ModelPool, load_chat_model
from helpers.server.routes.files import FORM_OVERHEAD
from helpers.server.store import Store, now
from helpers.server.worker import Worker

KEY = "sk-test-key"
TINY = "tiny"  # served by helpers.models.tiny_model()
TERMINAL = ("succeeded", "failed", "cancelled")
HELLO = [{"role": "user", "content": "Hello there!"}]


@contextmanager
def serving(data_dir, **options):
    """Yield a strict ``openai`` client for an app over ``data_dir`` (started and stopped)."""
    options.setdefault("aliases", {TINY: TINY_MODEL})
    app = create_app(data_dir, KEY, **options)
    with TestClient(app, raise_server_exceptions=False) as http:
        yield OpenAI(
            base_url="http://testserver/v1",
            api_key=KEY,
            http_client=http,
            max_retries=0,
            _strict_response_validation=True,
        )


def example(user: str, assistant: str) -> dict:
    return {
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    }


def write_jsonl(path, examples: list[dict]):
    path.write_text("".join(json.dumps(e) + "\n" for e in examples), encoding="utf-8")
    return path


def short_examples(count: int = 10) -> list[dict]:
    return [example(f"Question {i}?", f"Answer number {i}.") for i in range(count)]


def upload(client, path, purpose="fine-tune"):
    with open(path, "rb") as handle:
        return client.files.create(file=handle, purpose=purpose)


def finished(client, job_id: str, timeout: float = 300.0):
    """Poll a job until it is finished; return it."""
    deadline = time.monotonic() + timeout
    while (job := client.fine_tuning.jobs.retrieve(job_id)).status not in TERMINAL:
        assert time.monotonic() < deadline, "timed out waiting for the job"
        time.sleep(0.2)
    return job


def tiny_job(client, tmp_path, examples=None, model=TINY, **options):
    """Train a tiny job (10 examples, batch 5, 1 epoch: 2 steps) to the end; return it."""
    path = write_jsonl(
        tmp_path / f"train-{time.monotonic_ns()}.jsonl", examples or short_examples()
    )
    job = client.fine_tuning.jobs.create(
        model=model,
        training_file=upload(client, path).id,
        hyperparameters={"n_epochs": 1, "batch_size": 5},
        seed=3,
        **options,
    )
    return finished(client, job.id)


def messages(client, job_id: str) -> list[str]:
    """Return a job's event messages, oldest first."""
    return [
        e.message for e in reversed(client.fine_tuning.jobs.list_events(job_id, limit=1000).data)
    ]


def wait_for(check, timeout: float = 300.0):
    """Call ``check`` until it returns something truthy; return that, or fail at the timeout."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)
    return result


# ``python -m helpers`` whose training goes at a test's pace: {steps} training steps in all,
# then the next one waits at its start until the process ends (run with ``python -c``).
PACED_SERVER = """
import sys, threading

from helpers.cli import main
from helpers.server.cores import CoreShare

real_step, taken = CoreShare.training_step, []

def training_step(self):
    if len(taken) == {steps}:
        threading.Event().wait()  # held in the middle of training, however fast the machine
    taken.append(self)
    real_step(self)

CoreShare.training_step = training_step
sys.exit(main(sys.argv[1:]))
"""


def paced_server(data_dir, steps: int, log) -> LocalServer:
    """Start a server subprocess serving the tiny model that trains ``steps`` steps, then holds.

    It gets one torch thread: on a small shared machine (two cores, another job running) a
    full team of threads waits at every barrier for a preempted one: a tiny job there took
    12 s with two threads, 3.5 s with one. A batch gives each of its runs one thread the same way.
    """
    port = free_port()
    command = [sys.executable, "-c", PACED_SERVER.format(steps=steps), "serve"]
    command += ["--port", str(port), "--data-dir", str(data_dir), "--alias", f"{TINY}={TINY_MODEL}"]
    env = {**os.environ, API_KEY_ENV: KEY, "OMP_NUM_THREADS": "1"}
    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = LocalServer(f"http://127.0.0.1:{port}/v1", KEY, data_dir, process)
    wait_for(lambda: process.poll() is not None or server.healthy(), timeout=120)
    assert process.poll() is None, Path(log).read_text(errors="replace")[-2000:]
    return server


# --- stop strings ----------------------------------------------------------------------------


def test_text_assembler_holds_back_a_possible_stop_string():
    from helpers.models import load_tokenizer
    from helpers.server.batching import TextAssembler

    tokenizer = load_tokenizer()
    ids = tokenizer("Hello there. Bye now", add_special_tokens=False).input_ids
    assembler = TextAssembler(tokenizer, ["e. B"])
    pieces = [assembler.add([token]) for token in ids]
    assert "".join(pieces) == "Hello ther" and assembler.stopped
    plain = TextAssembler(tokenizer, ["zz"])
    text = "".join(plain.add([token]) for token in ids) + plain.add([], final=True)
    assert text == "Hello there. Bye now" and not plain.stopped
    accents = TextAssembler(tokenizer, [])
    accented = tokenizer("café ☕", add_special_tokens=False).input_ids
    assert all("\ufffd" not in accents.add([token]) for token in accented)
    assert accents.ids == accented


# --- files, keys, ids ---------------------------------------------------------------------


def test_files_upload_list_retrieve_content_and_delete(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", short_examples())
    with serving(tmp_path / "data") as client:
        uploaded = [upload(client, path) for _ in range(3)]
        first = uploaded[0]
        assert (first.filename, first.purpose, first.status) == (
            "train.jsonl",
            "fine-tune",
            "processed",
        )
        assert first.bytes == path.stat().st_size
        assert client.files.retrieve(first.id) == first
        assert client.files.content(first.id).content == path.read_bytes()
        page = client.files.list(limit=2)
        assert len(page.data) == 2 and page.has_more
        assert [f.id for f in client.files.list(limit=2)] == [f.id for f in reversed(uploaded)]
        assert [f.id for f in client.files.list(limit=2, order="asc")] == [f.id for f in uploaded]
        other = upload(client, path, purpose="assistants")
        assert [f.id for f in client.files.list(purpose="assistants")] == [other.id]
        assert client.files.delete(other.id).deleted
        with pytest.raises(openai.NotFoundError):
            client.files.retrieve(other.id)


def test_upload_over_the_limit_is_413(tmp_path):
    with serving(tmp_path / "data", max_upload_bytes=2**20) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            client.files.create(file=("big.jsonl", b"x" * (2 * 2**20)), purpose="fine-tune")
        assert caught.value.status_code == 413
        assert client.files.list().data == []


class CountingSpool:
    """Stands in for the form parser's SpooledTemporaryFile and records the bytes written."""

    largest = 0

    def __init__(self, *args, **kwargs):
        import tempfile

        self.file = tempfile.SpooledTemporaryFile(*args, **kwargs)  # noqa: SIM115 (the parser closes it)
        self.size = 0

    def write(self, chunk):
        self.size += len(chunk)
        CountingSpool.largest = max(CountingSpool.largest, self.size)
        return self.file.write(chunk)

    def __getattr__(self, name):
        return getattr(self.file, name)


@contextmanager
def live_server(app):
    """Serve an app with uvicorn in a thread (real HTTP, chunked bodies); yield its URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def test_chunked_upload_over_the_limit_is_413_before_it_is_stored(tmp_path, monkeypatch):
    monkeypatch.setattr("starlette.formparsers.SpooledTemporaryFile", CountingSpool)
    limit, chunk, chunks = 2**18, 2**16, 64  # 256 KB allowed, 4 MB sent without a length
    boundary = "testboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()

    def body():
        yield head
        for _ in range(chunks):
            yield b"x" * chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    app = create_app(tmp_path / "data", KEY, max_upload_bytes=limit)
    with live_server(app) as url:
        response = httpx.post(
            f"{url}/v1/files",
            content=body(),
            headers={
                "Authorization": f"Bearer {KEY}",
                "Content-Type": f"multipart/form-data; boundary={boundary}",
            },
            timeout=60,
        )
    assert response.status_code == 413, response.text
    assert response.json()["error"]["param"] == "file"
    assert CountingSpool.largest <= limit + FORM_OVERHEAD + chunk  # not the 4 MB sent
    assert list((tmp_path / "data" / "files").iterdir()) == []


def test_file_names_never_touch_paths(tmp_path):
    with serving(tmp_path / "data") as client:
        stored = client.files.create(file=("../../evil.jsonl", b"{}\n"), purpose="fine-tune")
        assert stored.filename == "evil.jsonl"
        assert not (tmp_path / "evil.jsonl").exists()
        assert (tmp_path / "data" / "files" / stored.id).is_file()


def test_wrong_key_is_an_authentication_error(tmp_path):
    with serving(tmp_path / "data") as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            client.with_options(api_key="sk-wrong").models.list()
        assert caught.value.code == "invalid_api_key"


def test_unknown_ids_are_not_found(tmp_path):
    with serving(tmp_path / "data") as client:
        calls = [
            lambda: client.files.retrieve("file-doesnotexist"),
            lambda: client.files.content("file-doesnotexist"),
            lambda: client.files.delete("file-doesnotexist"),
            lambda: client.fine_tuning.jobs.retrieve("ftjob-doesnotexist"),
            lambda: client.fine_tuning.jobs.cancel("ftjob-doesnotexist"),
            lambda: client.fine_tuning.jobs.list_events("ftjob-doesnotexist"),
            lambda: client.fine_tuning.jobs.checkpoints.list("ftjob-doesnotexist"),
            lambda: client.models.retrieve("ft:gpt-4o-mini-2024-07-18:local::nothing"),
            lambda: client.models.delete("ft:gpt-4o-mini-2024-07-18:local::nothing"),
        ]
        for call in calls:
            with pytest.raises(openai.NotFoundError):
                call()
        with pytest.raises(openai.NotFoundError) as caught:
            client.chat.completions.create(model="no-such-model", messages=HELLO)
        assert caught.value.code == "model_not_found"


# --- model names never reach the file system ----------------------------------------------


def test_model_names_cannot_probe_local_folders(tmp_path):
    folder = tmp_path / "secret-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    training = write_jsonl(tmp_path / "train.jsonl", short_examples())
    with serving(tmp_path / "data") as client:
        file_id = upload(client, training).id
        for name in (str(folder), f"{tmp_path}/../{tmp_path.name}/secret-model", "~/x", "a/../b"):
            with pytest.raises(openai.NotFoundError) as caught:  # as for any unknown name
                client.chat.completions.create(model=name, messages=HELLO, max_tokens=1)
            assert caught.value.code == "model_not_found"
            with pytest.raises(openai.BadRequestError) as caught:
                client.fine_tuning.jobs.create(model=name, training_file=file_id)
            assert caught.value.code == "model_not_available"
    with serving(tmp_path / "data", aliases={"mine": str(folder)}) as client:
        with pytest.raises(openai.BadRequestError) as caught:  # registered: it is tried
            client.chat.completions.create(model="mine", messages=HELLO, max_tokens=1)
        assert "could not be loaded" in caught.value.message


# --- errors -------------------------------------------------------------------------------


def test_zero_max_tokens_is_400_naming_the_field(tmp_path):
    with serving(tmp_path / "data") as client:
        for field in ("max_tokens", "max_completion_tokens"):
            with pytest.raises(openai.BadRequestError) as caught:
                client.chat.completions.create(model=TINY, messages=HELLO, **{field: 0})
            assert caught.value.param == field and caught.value.type == "invalid_request_error"


# Parameters the server does not honour, each as the openai client sends it, and its name.
NOT_HONOURED = [
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
    ({"tool_choice": "auto"}, "tool_choice"),
    ({"functions": [{"name": "f", "parameters": {}}]}, "functions"),
    ({"function_call": "auto"}, "function_call"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"extra_body": {"temprature": 0.2}}, "temprature"),  # a typo is an unknown field
    ({"extra_body": {"guided_json": {}}}, "guided_json"),
]


def test_parameters_not_honoured_are_400_naming_them(tmp_path):
    with serving(tmp_path / "data") as client:
        for option, param in NOT_HONOURED:
            with pytest.raises(openai.BadRequestError) as caught:
                client.chat.completions.create(model=TINY, messages=HELLO, **option)
            error = caught.value
            assert error.status_code == 400 and error.type == "invalid_request_error", option
            assert error.param == param and param in error.message, option
            unknown = "extra_body" in option  # not an OpenAI parameter at all
            assert error.code == ("unknown_parameter" if unknown else "unsupported_parameter")
            with pytest.raises(openai.BadRequestError) as caught:  # streamed: refused the same
                client.chat.completions.create(model=TINY, messages=HELLO, stream=True, **option)
            assert caught.value.param == param


def test_values_that_ask_for_plain_chat_are_accepted(tmp_path):
    with serving(tmp_path / "data") as client:
        reply = client.chat.completions.create(
            model=TINY,
            messages=HELLO,
            max_tokens=2,
            logprobs=False,
            response_format={"type": "text"},
            presence_penalty=0,
            tool_choice="none",
            user="learner-1",
            extra_body={"tools": None},
        )
    assert reply.choices[0].message.role == "assistant" and reply.usage.completion_tokens >= 1


def save_tiny_folder(folder):
    """Save the tiny model and its tokenizer as a merged model folder; return them."""
    model, tokenizer = tiny_model(seed=0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer


def test_a_model_folder_is_served_by_name(tmp_path):
    _, tokenizer = save_tiny_folder(tmp_path / "merged")
    with serving(tmp_path / "data", served={"my-model": str(tmp_path / "merged")}) as client:
        listed = {model.id: model for model in client.models.list()}
        assert listed["my-model"].owned_by == "finetune-course (local folder)"
        assert client.models.retrieve("my-model").id == "my-model"
        reply = client.chat.completions.create(model="my-model", messages=HELLO, max_tokens=3)
    prompt = tokenizer(render_prompt(tokenizer, HELLO), add_special_tokens=False)["input_ids"]
    assert reply.model == "my-model" and reply.usage.prompt_tokens == len(prompt)
    assert 1 <= reply.usage.completion_tokens <= 3


def test_serve_model_option_checks_the_folder(tmp_path, capsys):
    save_tiny_folder(tmp_path / "merged")
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    args = build_parser().parse_args(["serve", "--model", f"mine={tmp_path / 'merged'}"])
    assert args.model == [("mine", str(tmp_path / "merged"))]
    refused = [
        (f"mine={tmp_path / 'missing'}", "no such folder"),
        (f"mine={tmp_path / 'adapter'}", "it is a LoRA adapter: merge it first"),
        (f"mine={tmp_path}", "expected a model folder"),
        (f"ft:x={tmp_path / 'merged'}", "a model name takes"),
        ("mine", "expected NAME=DIR"),
    ]
    for value, message in refused:
        with pytest.raises(SystemExit) as stopped:
            build_parser().parse_args(["serve", "--model", value])
        assert stopped.value.code == 2 and message in capsys.readouterr().err, value
    assert NAME_PATTERN.pattern == MODEL_NAME_PATTERN.pattern  # the CLI's copy of the rule


def test_server_errors_say_an_id_not_the_exception(tmp_path, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("secret detail /etc/somewhere")

    monkeypatch.setattr("helpers.server.routes.chat.render_prompt", broken)
    with (
        serving(tmp_path / "data") as client,
        caplog.at_level(logging.ERROR, "helpers.server"),
        pytest.raises(openai.InternalServerError) as caught,
    ):
        client.chat.completions.create(model=TINY, messages=HELLO, max_tokens=1)
    message = caught.value.message
    assert "secret" not in message and "RuntimeError" not in message
    request_id = message.split("(request ")[1].split(")")[0]
    (record,) = [r for r in caplog.records if request_id in r.getMessage()]
    assert "secret detail" in str(record.exc_info[1])


# --- jobs ---------------------------------------------------------------------------------


def test_bad_job_requests_are_400(tmp_path):
    training = write_jsonl(tmp_path / "train.jsonl", short_examples())
    with serving(tmp_path / "data") as client:
        file_id = upload(client, training).id
        wrong_purpose = upload(client, training, purpose="assistants").id
        bad = [
            ({"model": "gpt-17"}, "model"),
            ({"model": "ft:tiny:local::nothing"}, "model"),
            ({"training_file": "file-doesnotexist"}, "training_file"),
            ({"training_file": wrong_purpose}, "training_file"),
            ({"hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs"),
            ({"hyperparameters": {"n_epochs": 51}}, "hyperparameters.n_epochs"),
            ({"hyperparameters": {"batch_size": 257}}, "hyperparameters.batch_size"),
            ({"suffix": "x" * 65}, "suffix"),
        ]
        for change, param in bad:
            with pytest.raises(openai.BadRequestError) as caught:
                client.fine_tuning.jobs.create(
                    **{"model": TINY, "training_file": file_id, **change}
                )
            assert caught.value.param == param, change
        with pytest.raises(openai.BadRequestError) as caught:
            client.fine_tuning.jobs.create(model="gpt-17", training_file=file_id)
        assert "smollm2-135m-instruct" in caught.value.message  # lists what is available


def test_job_parameters_not_honoured_are_400_naming_them(tmp_path):
    training = write_jsonl(tmp_path / "train.jsonl", short_examples())
    wandb = [{"type": "wandb", "wandb": {"project": "course"}}]
    with serving(tmp_path / "data") as client:
        file_id = upload(client, training).id
        for option, param in (
            ({"integrations": wandb}, "integrations"),
            ({"extra_body": {"epochs": 3}}, "epochs"),
        ):
            with pytest.raises(openai.BadRequestError) as caught:
                client.fine_tuning.jobs.create(model=TINY, training_file=file_id, **option)
            assert caught.value.param == param, option
        assert client.fine_tuning.jobs.list().data == []  # nothing was queued


def test_invalid_files_fail_the_job_naming_the_problem(tmp_path):
    lines = [json.dumps(e) for e in short_examples(12)]
    lines[4] = lines[4][: len(lines[4]) // 2]  # line 5: JSON cut in half
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join(lines) + "\n")
    nine = write_jsonl(tmp_path / "nine.jsonl", short_examples(9))
    with serving(tmp_path / "data") as client:
        job = client.fine_tuning.jobs.create(model=TINY, training_file=upload(client, broken).id)
        job = finished(client, job.id)
        assert job.status == "failed" and job.error.code == "invalid_training_file"
        assert "line 5" in job.error.message and job.error.param == "training_file"
        job = client.fine_tuning.jobs.create(model=TINY, training_file=upload(client, nine).id)
        job = finished(client, job.id)
        assert job.status == "failed" and job.error.code == "invalid_n_examples"
        assert client.fine_tuning.jobs.list_events(job.id).data[0].level == "error"


def test_estimated_finish_leaves_out_the_slow_first_step(monkeypatch):
    """A first step of 10 s (warm-up, longest batch) and then 1 s a step: 1 s per step ahead."""
    import types

    from helpers.server import callback as job_callback

    clock = iter([0.0, 10.0, 11.0, 12.0])  # the callback's start, then each step's end
    monkeypatch.setattr(job_callback.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(job_callback, "now", lambda: 1_000)
    finishes = []
    store = types.SimpleNamespace(
        job_base=lambda job_id: TINY,
        update_job=lambda job_id, only_if, estimated_finish: finishes.append(estimated_finish),
    )
    report = job_callback.JobCallback(store, "ftjob-x", "ft:x", None, None, None, lambda: False)
    for step in (1, 2, 3):
        state = types.SimpleNamespace(global_step=step, max_steps=38)
        report.on_step_end(None, state, types.SimpleNamespace())
    # step 1: its own 10 s for each of 37 steps; then (12 - 10) / 2 = 1 s for the 35 left
    assert finishes == [1_000 + 370, 1_000 + 36, 1_000 + 35]


@pytest.mark.slow  # trains (or runs a subprocess) for seconds
def test_job_reports_token_accuracy_in_events_and_results(tmp_path):
    with serving(tmp_path / "data") as client:
        job = tiny_job(client, tmp_path)
        assert job.status == "succeeded", job.error
        rows = client.files.content(job.result_files[0]).text.splitlines()
        assert rows[0] == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"
        accuracies = [row.split(",")[2] for row in rows[1:]]
        assert len(accuracies) == 2 and all(0 <= float(a) <= 1 for a in accuracies)
        events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
        steps = [e.data for e in events if e.type == "metrics"]
        assert all(0 <= d["train_mean_token_accuracy"] <= 1 for d in steps) and len(steps) == 2
        # r 8 on q_proj (64 -> 64) and v_proj (64 -> 32, 2 of 4 heads) in each of 2 layers
        adapter = 2 * 8 * ((64 + 64) + (64 + 32))
        assert any(
            f"LoRA adapter: {adapter:,} trainable parameters" in m for m in messages(client, job.id)
        )


@pytest.mark.slow  # trains (or runs a subprocess) for seconds
def test_truncated_and_dropped_examples_are_reported_as_events(tmp_path, monkeypatch):
    monkeypatch.setattr("helpers.server.worker.MAX_SEQ_LENGTH", 100)
    long_text = "word " * 150  # 150 tokens: more than the 100 trained
    examples = short_examples(10)
    examples[2] = example("Short question?", long_text)  # example 3: truncated
    examples[6] = example(long_text, "A short answer.")  # example 7: nothing left to train on
    with serving(tmp_path / "data") as client:
        job = tiny_job(client, tmp_path, examples)
        assert job.status == "succeeded", job.error
        found = [m for m in messages(client, job.id) if "example(s)" in m]
        assert len(found) == 2
        assert "truncated" in found[0] and found[0].endswith("examples 3 (line 3)")
        assert "dropped" in found[1] and found[1].endswith("examples 7 (line 7)")


@pytest.mark.slow  # trains (or runs a subprocess) for seconds
def test_fine_tuned_model_chats_differs_from_base_and_can_be_deleted(tmp_path):
    with serving(tmp_path / "data") as client:
        job = tiny_job(client, tmp_path, suffix="course")
        name = job.fine_tuned_model
        assert name.startswith("ft:tiny:local:course:")
        reply = client.chat.completions.create(model=name, messages=HELLO, max_tokens=3)
        assert reply.model == name and 0 < reply.usage.completion_tokens <= 3
        assert name in {m.id for m in client.models.list()}

        # The model as the server loads it (base plus merged adapter) is not the base model.
        store = Store(tmp_path / "data")
        base, adapter = store.adapter_for(name)
        store.close()
        ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
        logits = {
            key: load_chat_model(base, a).model(ids).logits
            for key, a in (("base", None), ("again", None), ("tuned", adapter))
        }
        assert torch.equal(logits["base"], logits["again"])  # the base loads the same each time
        assert (logits["tuned"] - logits["base"]).abs().max() > 1e-6

        assert client.models.delete(name).deleted
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model=name, messages=HELLO, max_tokens=2)
        with pytest.raises(openai.BadRequestError):
            client.models.delete(TINY)  # base models stay


@pytest.mark.slow  # trains (or runs a subprocess) for seconds
def test_fine_tuning_a_fine_tuned_model_trains_a_new_adapter(tmp_path):
    with serving(tmp_path / "data") as client:
        first = tiny_job(client, tmp_path)
        second = tiny_job(client, tmp_path, model=first.fine_tuned_model, suffix="more")
        assert second.status == "succeeded", second.error
        assert second.model == first.fine_tuned_model
        assert second.fine_tuned_model.startswith("ft:tiny:local:more:")
        assert second.fine_tuned_model != first.fine_tuned_model
        store = Store(tmp_path / "data")
        (base_1, adapter_1), (base_2, adapter_2) = (
            store.adapter_for(job.fine_tuned_model) for job in (first, second)
        )
        store.close()
        assert base_1 == base_2 == TINY_MODEL
        weights_1 = load_file(adapter_1 / "adapter_model.safetensors")
        weights_2 = load_file(adapter_2 / "adapter_model.safetensors")
        assert weights_1.keys() == weights_2.keys()
        # Continued, not fresh: LoRA's B starts at zero, yet the first step's B already
        # carries the first job's update, so every B differs from zero and from the first.
        assert any(not torch.equal(weights_1[k], weights_2[k]) for k in weights_1)
        reply = client.chat.completions.create(
            model=second.fine_tuned_model, messages=HELLO, max_tokens=2
        )
        assert reply.usage.completion_tokens <= 2
        client.models.delete(first.fine_tuned_model)  # the new one stands alone
        reply = client.chat.completions.create(
            model=second.fine_tuned_model, messages=HELLO, max_tokens=2
        )
        assert reply.choices[0].message.role == "assistant"


@contextmanager
def gated_training(monkeypatch):
    """Hold a job's training thread at the start of each step until the test allows one more.

    Yields a semaphore: ``release()`` lets one more step start. The gate sits inside the
    Trainer's loop (the step's ``CoreShare.training_step``), so a job held there is running
    in the middle of training. On leaving, every held step is let go.
    """
    allowed = threading.Semaphore(0)
    real_step = CoreShare.training_step

    def training_step(self):
        assert allowed.acquire(timeout=120), "the test never let this step start"
        real_step(self)

    monkeypatch.setattr(CoreShare, "training_step", training_step)
    try:
        yield allowed
    finally:
        allowed.release(10_000)


def metrics_steps(client, job_id: str) -> list[int]:
    """Return the steps of a job's training-loss events, oldest first."""
    events = client.fine_tuning.jobs.list_events(job_id, limit=1000).data
    return sorted(
        e.data["step"] for e in events if e.type == "metrics" and "valid_loss" not in e.data
    )


@pytest.mark.slow  # trains (or runs a subprocess) for seconds
def test_chat_answers_while_training_and_cancel_stops_training(tmp_path, monkeypatch):
    max_steps = 20
    path = write_jsonl(tmp_path / "long.jsonl", short_examples(40))  # 3 epochs of 10 steps
    with (
        serving(tmp_path / "data", max_steps=max_steps) as client,
        gated_training(monkeypatch) as steps,
    ):
        job = client.fine_tuning.jobs.create(
            model=TINY, training_file=upload(client, path).id, hyperparameters={"n_epochs": 3}
        )
        steps.release()  # step 1 runs; step 2 waits at its start, in the middle of training
        wait_for(lambda: metrics_steps(client, job.id))
        assert client.fine_tuning.jobs.retrieve(job.id).estimated_finish is not None
        for _ in range(3):
            reply = client.chat.completions.create(
                model=TINY, messages=HELLO, max_tokens=4, temperature=0
            )
            assert reply.choices[0].message.content
        assert client.fine_tuning.jobs.retrieve(job.id).status == "running"  # answered meanwhile

        step_at_cancel = max(metrics_steps(client, job.id))
        cancelled = client.fine_tuning.jobs.cancel(job.id)
        assert cancelled.status == "cancelled" and cancelled.finished_at is not None
        steps.release()  # the step that was waiting runs, and training stops after it

        def stopped_at():
            found = [m for m in messages(client, job.id) if m.startswith("Training stopped at")]
            return found and int(found[0].split()[4])

        assert wait_for(stopped_at) == step_at_cancel + 1 < max_steps
        assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
        with pytest.raises(openai.BadRequestError):
            client.fine_tuning.jobs.cancel(job.id)
        assert client.fine_tuning.jobs.checkpoints.list(job.id).data == []


# --- concurrent chats ------------------------------------------------------------------------


def test_concurrent_chats_answer_like_sequential_ones_streamed_or_not(tmp_path):
    questions = [
        [{"role": "user", "content": f"Question {i}: where is my parcel?"}] for i in range(6)
    ]
    limits = [3, 9, 5, 12, 7, 4]

    def ask(question, limit, stream=False):
        reply = client.chat.completions.create(
            model=TINY, messages=question, max_tokens=limit, temperature=0, stream=stream
        )
        if stream:
            return "".join(chunk.choices[0].delta.content or "" for chunk in reply if chunk.choices)
        assert reply.usage.completion_tokens <= limit
        return reply.choices[0].message.content

    with serving(tmp_path / "data") as client:
        sequential = [ask(q, n) for q, n in zip(questions, limits, strict=True)]
        results: dict = {}
        threads = [
            threading.Thread(
                target=lambda i=i: results.__setitem__(i, ask(questions[i], limits[i], i % 2))
            )
            for i in range(len(questions))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert [results[i] for i in range(len(questions))] == sequential


# --- sampling -------------------------------------------------------------------------------


def test_seeded_chat_repeats_and_leaves_the_global_generator_alone(tmp_path):
    with serving(tmp_path / "data") as client:
        client.chat.completions.create(model=TINY, messages=HELLO, max_tokens=1)  # loads it
        torch.manual_seed(123)
        before = torch.get_rng_state()
        replies = [
            client.chat.completions.create(model=TINY, messages=HELLO, max_tokens=8, n=2, seed=5)
            for _ in range(2)
        ]
        assert torch.equal(torch.get_rng_state(), before)  # training's dropout draws from it
        texts = [[c.message.content for c in r.choices] for r in replies]
        assert texts[0] == texts[1] and texts[0][0]
        client.chat.completions.create(model=TINY, messages=HELLO, max_tokens=4)  # no seed
        assert torch.equal(torch.get_rng_state(), before)


def test_sampling_keeps_only_the_top_p_mass():
    from helpers.server.batching import sample_token

    scores = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    generator = torch.Generator().manual_seed(0)
    drawn = {sample_token(scores, 1.0, 0.7, generator) for _ in range(200)}
    assert drawn == {0, 1}  # 0.5 + 0.3 covers 0.7; tokens 2 and 3 never come


# --- threads and loading ---------------------------------------------------------------------


def in_thread(function):
    """Run ``function`` in a new thread and return its result."""
    result = []
    thread = threading.Thread(target=lambda: result.append(function()))
    thread.start()
    thread.join()
    return result[0]


@pytest.mark.slow  # a fresh interpreter importing torch
def test_core_share_keeps_to_the_threads_a_batch_gives_the_server():
    """Two servers side by side under OMP_NUM_THREADS=1 must not each take every core."""
    code = "from helpers.server.cores import CoreShare; print(CoreShare().cores)"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.stdout.strip() == "1", done.stderr


def test_core_share_gives_training_every_core_unless_a_chat_runs():
    cores = CoreShare(cores=4)
    if not cores.per_thread:
        pytest.skip("torch's parallel backend has no per-thread thread teams")

    def training_threads():
        cores.training_step()
        return torch.get_num_threads()

    def chat_threads():
        with cores.chat():
            return torch.get_num_threads()

    assert in_thread(training_threads) == 4 and in_thread(chat_threads) == 4  # alone: all
    with cores.train():
        assert in_thread(chat_threads) == 2
        with cores.chat():  # a chat in progress
            assert in_thread(training_threads) == 2
        assert in_thread(training_threads) == 4


def test_a_loading_model_does_not_block_chats_with_loaded_ones():
    release, loads = threading.Event(), []

    def loader(base, adapter):
        loads.append(base)
        if base == "slow":
            assert release.wait(30)
        return LoadedModel(base, None)

    pool = ModelPool(loader=loader)
    pool.get("fast", None)
    waiting = [threading.Thread(target=pool.get, args=("slow", None)) for _ in range(2)]
    for thread in waiting:
        thread.start()
    while "slow" not in loads:
        time.sleep(0.01)
    answered = []
    thread = threading.Thread(target=lambda: answered.append(pool.get("fast", None)))
    thread.start()
    thread.join(5)
    assert answered and answered[0].model == "fast"  # while "slow" is still loading
    release.set()
    for thread in waiting:
        thread.join(30)
    assert loads == ["fast", "slow"]  # two requests, one load
    assert pool.get("slow", None).model == "slow"


# --- crashes and restarts ----------------------------------------------------------------------


def test_one_server_per_data_folder(tmp_path):
    with serving(tmp_path / "data"):
        second = serving(tmp_path / "data")
        with pytest.raises(RuntimeError, match="in use by another server.*--data-dir"), second:
            pass
        with pytest.raises(RuntimeError, match=f"{os.getpid()}"):  # said before any subprocess
            start_server(data_dir=tmp_path / "data")
    with serving(tmp_path / "data") as client:  # the first released the folder when it stopped
        assert TINY in {m.id for m in client.models.list()}


@pytest.mark.slow  # trains, and starts a second server process
def test_a_second_server_on_the_same_folder_refuses_and_changes_nothing(tmp_path, monkeypatch):
    """A second ``serve`` on the folder must not repair what the first one is doing."""
    data_dir = tmp_path / "data"
    path = write_jsonl(tmp_path / "long.jsonl", short_examples(40))
    with serving(data_dir, max_steps=20) as client, gated_training(monkeypatch) as steps:
        running, queued = (
            client.fine_tuning.jobs.create(model=TINY, training_file=upload(client, path).id)
            for _ in range(2)
        )
        steps.release()  # step 1 runs; step 2 waits: the first job is in the middle of training
        wait_for(lambda: metrics_steps(client, running.id))
        wait_for(lambda: client.fine_tuning.jobs.retrieve(queued.id).status == "queued")
        uploading = data_dir / "files" / ".partial-an-upload-in-progress"
        uploading.write_bytes(b"half")
        with socket.socket() as busy:  # the second also fails to listen, as on port 8000
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            second = subprocess.run(
                [sys.executable, "-m", "helpers", "serve", "--data-dir", str(data_dir)]
                + ["--port", str(busy.getsockname()[1])],
                capture_output=True,
                text=True,
                timeout=300,
                env={**os.environ, "FINETUNE_COURSE_API_KEY": "sk-second", "OMP_NUM_THREADS": "1"},
            )
        assert client.fine_tuning.jobs.retrieve(running.id).status == "running"
        assert client.fine_tuning.jobs.retrieve(queued.id).status == "queued"
        assert uploading.read_bytes() == b"half"
    output = second.stdout + second.stderr
    assert second.returncode == 2 and "Traceback" not in output, output
    (line,) = [line for line in second.stderr.splitlines() if line.startswith("error: ")]
    assert str(data_dir.resolve()) in line and "--data-dir" in line


def test_start_removes_unrecorded_files_and_forgets_missing_ones(tmp_path):
    store = Store(tmp_path / "data")
    kept = store.write_file(b"kept\n", "kept.jsonl", "fine-tune")
    lost = store.write_file(b"lost\n", "lost.jsonl", "fine-tune")
    store.file_path(lost["id"]).unlink()  # a row whose bytes are gone
    orphan = store.file_path("file-renamedbutneverrecorded")  # killed before its row
    orphan.write_bytes(b"orphan\n")
    partial = store.temp_path()
    partial.write_bytes(b"half")
    store.close()
    with serving(tmp_path / "data") as client:
        assert [f.id for f in client.files.list()] == [kept["id"]]
    assert not orphan.exists() and not partial.exists()
    assert sorted(p.name for p in (tmp_path / "data" / "files").iterdir()) == [kept["id"]]


def test_start_forgets_a_model_whose_job_did_not_succeed(tmp_path):
    store = Store(tmp_path / "data")
    job = {
        "id": "ftjob-crashed",
        "object": "fine_tuning.job",
        "created_at": now(),
        "error": None,
        "fine_tuned_model": None,
        "finished_at": None,
        "hyperparameters": {"n_epochs": 1, "batch_size": 5, "learning_rate_multiplier": 1.0},
        "model": TINY,
        "organization_id": "org-local",
        "result_files": [],
        "seed": 3,
        "status": "running",
        "trained_tokens": None,
        "training_file": "file-gone",
        "validation_file": None,
    }
    store.add_job(job, TINY_MODEL)
    adapter = store.job_dir(job["id"]) / "final"
    adapter.mkdir()
    name = "ft:tiny:local::crashed"  # registered, then killed before "succeeded"
    store.add_model(
        {"id": name, "object": "model", "created": now(), "owned_by": "local"},
        job["id"],
        TINY_MODEL,
        adapter,
    )
    store.close()
    with serving(tmp_path / "data") as client:
        assert client.fine_tuning.jobs.retrieve(job["id"]).status == "failed"
        assert name not in {m.id for m in client.models.list()}
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model=name, messages=HELLO, max_tokens=1)
    assert not adapter.exists()


def test_stop_waits_for_the_worker_threads_before_the_store_closes(tmp_path, monkeypatch):
    started, release = threading.Event(), threading.Event()

    def slow_validate(path, *args, **kwargs):
        started.set()
        assert release.wait(30)
        raise data_module.DataFileError("unreadable on purpose")

    monkeypatch.setattr(data_module, "validate", slow_validate)
    store = Store(tmp_path / "data")
    file = store.write_file(b"{}\n", "train.jsonl", "fine-tune")
    job = {"id": "ftjob-validating", "status": "validating_files", "training_file": file["id"]}
    store.add_job(job, TINY_MODEL)
    worker = Worker(store, "local")
    worker.start()
    assert started.wait(30)
    threading.Timer(0.3, release.set).start()
    worker.stop()  # as the app's shutdown does, then it closes the store
    store.close()
    store = Store(tmp_path / "data")
    failed = store.get_job(job["id"])
    store.close()
    assert failed["status"] == "failed" and "unreadable" in failed["error"]["message"]


@pytest.mark.slow  # kills a server process in the middle of training
def test_restart_after_a_kill_keeps_everything_and_fails_the_running_job(tmp_path):
    data_dir = tmp_path / "data"
    path = write_jsonl(tmp_path / "long.jsonl", short_examples(40))

    def state(client) -> dict:
        return {
            "files": [f.model_dump() for f in client.files.list()],
            "done": client.fine_tuning.jobs.retrieve(done.id).model_dump(),
            "events": [e.model_dump() for e in client.fine_tuning.jobs.list_events(done.id)],
            "models": [m.model_dump() for m in client.models.list()],
        }

    # Two steps for the tiny job, one for the long job, whose second step then waits.
    with paced_server(data_dir, steps=3, log=tmp_path / "server.log") as server:
        client = OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0)
        done = tiny_job(client, tmp_path)
        job = client.fine_tuning.jobs.create(
            model=TINY, training_file=upload(client, path).id, hyperparameters={"n_epochs": 3}
        )
        assert wait_for(lambda: metrics_steps(client, job.id)) == [1]
        assert client.fine_tuning.jobs.retrieve(job.id).status == "running"
        before = state(client)
        server.process.kill()  # a crash in the middle of training
        server.process.wait()
    with serving(data_dir) as client:  # the server started again over the same folder
        assert state(client) == before
        interrupted = client.fine_tuning.jobs.retrieve(job.id)
        assert interrupted.status == "failed" and interrupted.error.code == "job_interrupted"
        assert metrics_steps(client, job.id) == [1]
        reply = client.chat.completions.create(
            model=done.fine_tuned_model, messages=HELLO, max_tokens=2
        )
        assert reply.usage.completion_tokens <= 2


def test_health_reports_the_server_process_peak_memory(tmp_path):
    app = create_app(tmp_path / "data", KEY, aliases={TINY: TINY_MODEL})
    with TestClient(app) as http:
        answer = http.get("/health", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert answer["status"] == "ok"
    assert answer["peak_rss_mb"] > 50  # this process holds torch: far more than 50 MB
