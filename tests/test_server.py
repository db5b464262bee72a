"""The local OpenAI-compatible server, driven only through the official ``openai`` client.

One server (a subprocess on a free port, with the real embedded model) serves the
whole module; every client validates every response strictly against the client's
own types. Tests run in file order: the chat and model tests use the model that the
fine-tuning test trained, and the restart test comes last.
"""

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from openai import OpenAI

from helpers.paths import sample_path
from helpers.server import start_server

pytestmark = pytest.mark.slow

MAX_STEPS = 20  # the server's cap on any job's steps
TERMINAL = ("succeeded", "failed", "cancelled")


def _examples() -> list[str]:
    lines = sample_path("customer_service").read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip()]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Small JSONL files cut from the customer-service sample, plus a broken one."""
    folder = tmp_path_factory.mktemp("jsonl")
    lines = _examples()
    broken = lines[:12]
    broken[4] = broken[4][: len(broken[4]) // 2]  # line 5: JSON cut in half
    contents = {
        "train": lines[:12],
        "validation": lines[12:16],
        "long": lines[:60],
        "nine": lines[:9],
        "broken": broken,
    }
    paths = {}
    for name, rows in contents.items():
        paths[name] = folder / f"{name}.jsonl"
        paths[name].write_text("\n".join(rows) + "\n", encoding="utf-8")
    return paths


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One running server for the module, with a step cap and a 1 MB upload limit."""
    data_dir = tmp_path_factory.mktemp("server")
    with start_server(data_dir=data_dir, max_steps=MAX_STEPS, max_upload_mb=1) as running:
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


def wait_for(check, timeout: float = 300.0, interval: float = 0.5):
    """Call ``check`` until it returns something truthy; return that, or fail at the timeout."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(interval)
    return result


def finished(client, job_id: str, timeout: float = 300.0):
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


# --- stop strings, without a server ----------------------------------------------------------


def test_text_assembler_holds_back_a_possible_stop_string():
    from helpers.models import load_tokenizer
    from helpers.server.app import TextAssembler

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


def test_files_upload_list_retrieve_content_and_delete(client, files):
    uploaded = [upload(client, files[name]) for name in ("train", "validation", "nine")]
    first = uploaded[0]
    assert re.fullmatch(r"file-[A-Za-z0-9]{24}", first.id)
    assert (first.filename, first.purpose, first.status) == (
        "train.jsonl",
        "fine-tune",
        "processed",
    )
    assert first.bytes == files["train"].stat().st_size
    assert client.files.retrieve(first.id) == first
    assert client.files.content(first.id).content == files["train"].read_bytes()

    # Pages of two, newest first, until has_more is false; oldest first with order="asc".
    page = client.files.list(limit=2)
    assert len(page.data) == 2 and page.has_more
    listed = [f.id for f in client.files.list(limit=2)]
    assert listed[:3] == [f.id for f in reversed(uploaded)]
    ascending = [f.id for f in client.files.list(limit=2, order="asc")]
    assert ascending == listed[::-1]
    assert all(f.purpose == "fine-tune" for f in client.files.list(purpose="fine-tune"))

    other = upload(client, files["nine"], purpose="assistants")
    deleted = client.files.delete(other.id)
    assert deleted.deleted and deleted.id == other.id
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(other.id)


def test_upload_over_the_limit_is_413(client):
    with pytest.raises(openai.APIStatusError) as caught:
        client.files.create(file=("big.jsonl", b"x" * (2 * 2**20)), purpose="fine-tune")
    assert caught.value.status_code == 413
    assert [f for f in client.files.list() if f.filename == "big.jsonl"] == []


def test_file_names_never_touch_paths(client, server):
    stored = client.files.create(file=("../../evil.jsonl", b"{}\n"), purpose="fine-tune")
    assert stored.filename == "evil.jsonl"
    assert not (server.data_dir.parent / "evil.jsonl").exists()
    assert (server.data_dir / "files" / stored.id).is_file()


def test_wrong_key_is_an_authentication_error(server):
    with pytest.raises(openai.AuthenticationError) as caught:
        make_client(server, api_key="sk-wrong").models.list()
    assert caught.value.code == "invalid_api_key"


def test_unknown_ids_are_not_found(client):
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
        client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.code == "model_not_found"


def test_bad_job_requests_are_400(client, files):
    training = upload(client, files["train"])
    wrong_purpose = upload(client, files["train"], purpose="assistants")
    bad = [
        ({"model": "gpt-17"}, "model"),
        ({"training_file": "file-doesnotexist"}, "training_file"),
        ({"training_file": wrong_purpose.id}, "training_file"),
        ({"hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs"),
        ({"hyperparameters": {"n_epochs": 51}}, "hyperparameters.n_epochs"),
        ({"hyperparameters": {"batch_size": 257}}, "hyperparameters.batch_size"),
        ({"hyperparameters": {"learning_rate_multiplier": 0}}, None),
        ({"suffix": "x" * 65}, "suffix"),
    ]
    for change, param in bad:
        request = {"model": "gpt-4o-mini-2024-07-18", "training_file": training.id, **change}
        with pytest.raises(openai.BadRequestError) as caught:
            client.fine_tuning.jobs.create(**request)
        if param:
            assert caught.value.param == param, change
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(model="gpt-17", training_file=training.id)
    assert "smollm2-135m-instruct" in caught.value.message  # lists what is available


# --- jobs that fail validation ------------------------------------------------------------


def test_broken_file_fails_with_invalid_training_file_naming_the_line(client, files):
    training = upload(client, files["broken"])
    job = client.fine_tuning.jobs.create(model="gpt-3.5-turbo", training_file=training.id)
    assert job.status == "validating_files" and job.hyperparameters.n_epochs == "auto"
    job = finished(client, job.id)
    assert job.status == "failed" and job.error.code == "invalid_training_file"
    assert "line 5" in job.error.message and job.error.param == "training_file"
    assert job.fine_tuned_model is None and job.finished_at is not None


def test_nine_examples_fail_with_invalid_n_examples(client, files):
    training = upload(client, files["nine"])
    job = client.fine_tuning.jobs.create(model="gpt-3.5-turbo", training_file=training.id)
    job = finished(client, job.id)
    assert job.status == "failed" and job.error.code == "invalid_n_examples"
    assert "9 example" in job.error.message
    newest = client.fine_tuning.jobs.list_events(job.id).data[0]
    assert newest.level == "error"


# --- a real fine-tuning job ------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(client, files):
    """A job on 12 examples (batch 6, 2 epochs: 4 steps) with a validation file, finished."""
    training, validation = upload(client, files["train"]), upload(client, files["validation"])
    job = client.fine_tuning.jobs.create(
        model="gpt-4o-mini-2024-07-18",
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
    assert "served locally by smollm2-135m-instruct" in messages[0]  # the first event
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
    reply = client.chat.completions.create(
        model="gpt-3.5-turbo",
        messages=[{"role": "user", "content": "Count from 1 to 10, separated by commas."}],
        max_tokens=30,
        temperature=0,
        stop=[","],
    )
    assert "," not in reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"


def test_chat_with_a_checkpoint(client, trained):
    checkpoint = client.fine_tuning.jobs.checkpoints.list(trained.id).data[-1]
    reply = client.chat.completions.create(
        model=checkpoint.fine_tuned_model_checkpoint, messages=QUESTION, max_tokens=4
    )
    assert reply.usage.completion_tokens <= 4


def test_twenty_concurrent_chats_all_complete(client):
    def ask(number: int):
        return client.chat.completions.create(
            model="smollm2-135m-instruct",
            messages=[{"role": "user", "content": f"Say the number {number}."}],
            max_tokens=6,
            temperature=0,
        )

    with ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(ask, range(20)))
    assert all(r.choices[0].message.content and r.usage.completion_tokens for r in replies)


# --- models --------------------------------------------------------------------------------


def test_models_list_retrieve_and_delete(client, trained):
    name = trained.fine_tuned_model
    listed = {m.id: m for m in client.models.list()}
    assert {"smollm2-135m-instruct", "gpt-3.5-turbo", "gpt-4o-mini-2024-07-18", name} <= set(listed)
    assert "smollm2-135m-instruct" in listed["gpt-4o-mini-2024-07-18"].owned_by
    assert client.models.retrieve(name).id == name
    assert client.models.retrieve("gpt-3.5-turbo").id == "gpt-3.5-turbo"
    with pytest.raises(openai.BadRequestError):
        client.models.delete("gpt-3.5-turbo")  # base models stay

    deleted = client.models.delete(name)
    assert deleted.deleted and deleted.id == name
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(name)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=name, messages=QUESTION, max_tokens=2)
    assert name not in {m.id for m in client.models.list()}


# --- cancel, training alongside chat, restart ---------------------------------------------------


@pytest.fixture(scope="module")
def long_file(client, files):
    return upload(client, files["long"])


def running_with_metrics(client, job_id: str):
    """Wait until a job is running and has logged a training step."""
    wait_for(lambda: client.fine_tuning.jobs.retrieve(job_id).status == "running")
    wait_for(lambda: metrics_steps(client, job_id))


def test_chat_answers_while_training_and_cancel_stops_training(client, long_file):
    job = client.fine_tuning.jobs.create(
        model="gpt-3.5-turbo", training_file=long_file.id, hyperparameters={"n_epochs": 3}
    )
    running_with_metrics(client, job.id)
    assert client.fine_tuning.jobs.retrieve(job.id).estimated_finish is not None
    for _ in range(3):
        reply = client.chat.completions.create(
            model="gpt-3.5-turbo", messages=QUESTION, max_tokens=4, temperature=0
        )
        assert reply.choices[0].message.content
    assert client.fine_tuning.jobs.retrieve(job.id).status == "running"  # answered meanwhile

    step_at_cancel = max(metrics_steps(client, job.id))
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None

    def stopped_at():
        events = client.fine_tuning.jobs.list_events(job.id, limit=1000).data
        found = [e.message for e in events if e.message.startswith("Training stopped at step")]
        return found and int(found[0].split()[4])

    assert wait_for(stopped_at, timeout=120) <= step_at_cancel + 2 < MAX_STEPS
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.cancel(job.id)
    assert client.fine_tuning.jobs.checkpoints.list(job.id).data == []


def test_restart_keeps_everything_and_leaves_no_job_running(server, client, long_file):
    job = client.fine_tuning.jobs.create(model="gpt-3.5-turbo", training_file=long_file.id)
    running_with_metrics(client, job.id)
    before = {
        "files": [f.model_dump() for f in client.files.list()],
        "jobs": [j.model_dump() for j in client.fine_tuning.jobs.list() if j.id != job.id],
        "models": [m.model_dump() for m in client.models.list()],
    }
    succeeded = next(j for j in client.fine_tuning.jobs.list() if j.status == "succeeded")
    events = [e.model_dump() for e in client.fine_tuning.jobs.list_events(succeeded.id, limit=100)]
    checkpoints = client.fine_tuning.jobs.checkpoints.list(succeeded.id).data

    server.process.kill()  # a crash in the middle of training
    server.process.wait()
    with start_server(data_dir=server.data_dir, api_key=server.api_key) as again:
        restarted = make_client(again)
        after = {
            "files": [f.model_dump() for f in restarted.files.list()],
            "jobs": [j.model_dump() for j in restarted.fine_tuning.jobs.list() if j.id != job.id],
            "models": [m.model_dump() for m in restarted.models.list()],
        }
        assert json.dumps(after, sort_keys=True) == json.dumps(before, sort_keys=True)
        again_events = restarted.fine_tuning.jobs.list_events(succeeded.id, limit=100)
        assert [e.model_dump() for e in again_events] == events
        assert restarted.fine_tuning.jobs.checkpoints.list(succeeded.id).data == checkpoints

        interrupted = restarted.fine_tuning.jobs.retrieve(job.id)
        assert interrupted.status == "failed" and interrupted.error.code == "job_interrupted"
        assert all(j.status != "running" for j in restarted.fine_tuning.jobs.list())
        checkpoint = checkpoints[0].fine_tuned_model_checkpoint
        reply = restarted.chat.completions.create(model=checkpoint, messages=QUESTION, max_tokens=2)
        assert reply.usage.completion_tokens <= 2
