"""Talking to a model (helpers.talk, talk_widget, ``python -m helpers chat``) on the tiny model.

Replies are sampled with a seed: the tiny random model's greedy answer is one repeated
newline, which would make every comparison below hold trivially.
"""

import io
import signal
import subprocess
import sys

import nbformat
import papermill
import pytest
from fastapi.testclient import TestClient
from jupyter_client.manager import start_new_kernel
from nbval_kernel import retrying, run_again_if_the_kernel_dies
from openai import OpenAI
from peft import LoraConfig, get_peft_model

from helpers.cli import main
from helpers.evaluate import generate
from helpers.models import TINY_MODEL, tiny_model
from helpers.server.app import create_app
from helpers.talk import ClientConversation, Conversation, chat_loop, safety_guard
from helpers.talk_widget import CHAT_MODE_ENV, SKIPPED, ChatWidget, chat_mode

SAMPLING = {"temperature": 1.0, "seed": 5}


def expected_reply(model, tokenizer, messages, max_new_tokens):
    """The reply helpers.evaluate.generate samples for a conversation with the same seed."""
    return generate(
        model,
        tokenizer,
        [messages],
        max_new_tokens=max_new_tokens,
        do_sample=True,
        temperature=SAMPLING["temperature"],
        seed=SAMPLING["seed"],
        progress=False,
    )[0]


def with_adapter(model):
    """Return the model with a LoRA adapter that changes its answers (random, not zero, B)."""
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    return get_peft_model(model, config)


def scripted(*lines):
    """Return an ``input``-like function that reads these lines, then end of input."""
    remaining = iter(lines)

    def read(prompt):
        try:
            return next(remaining)
        except StopIteration:
            raise EOFError from None

    return read


def test_a_reply_streams_in_pieces_and_joins_the_history(tiny):
    model, tokenizer = tiny
    conversation = Conversation(model, tokenizer, max_new_tokens=12, **SAMPLING)
    pieces = []
    answer = conversation.reply("Hello there!", on_text=pieces.append)
    assert len(pieces) > 1 and "".join(pieces).strip() == answer.text != ""
    assert 0 < answer.tokens <= 12 and not answer.stopped
    assert conversation.history == [
        {"role": "user", "content": "Hello there!"},
        {"role": "assistant", "content": answer.text},
    ]
    assert answer.text == expected_reply(model, tokenizer, [conversation.history[0]], 12)


def test_the_next_reply_answers_the_whole_conversation_as_training_renders_it(tiny):
    model, tokenizer = tiny
    conversation = Conversation(model, tokenizer, system="Be kind.", max_new_tokens=10, **SAMPLING)
    conversation.reply("Hello there!")
    second = conversation.reply("And then?")
    asked = conversation.messages()[:-1]  # system, user, assistant, user
    assert [m["role"] for m in asked] == ["system", "user", "assistant", "user"]
    assert second.text == expected_reply(model, tokenizer, asked, 10)
    assert second.text != expected_reply(model, tokenizer, [asked[-1]], 10)  # history counts


def test_the_loop_runs_the_system_and_reset_commands(tiny):
    model, tokenizer = tiny
    conversation = Conversation(model, tokenizer, max_new_tokens=4, **SAMPLING)
    out = io.StringIO()
    read = scripted("/system Answer in French.", "hello", "/reset", "/system", "again", "/quit")
    chat_loop(conversation, read=read, out=out)
    shown = out.getvalue()
    assert "System prompt set: Answer in French." in shown
    assert "Conversation cleared (the system prompt stays)." in shown
    assert "System prompt: Answer in French." in shown and shown.rstrip().endswith("Bye.")
    assert conversation.finished and conversation.system == "Answer in French."
    assert [m["content"] for m in conversation.messages()][:2] == ["Answer in French.", "again"]
    assert len(conversation.history) == 2  # "hello" and its answer were cleared


def test_the_loop_ends_at_end_of_input_and_refuses_base_without_an_adapter(tiny):
    conversation = Conversation(*tiny, max_new_tokens=2)
    out = io.StringIO()
    chat_loop(conversation, read=scripted("/base", "/nonsense"), out=out)
    assert "No base model to switch to" in out.getvalue()
    assert "Unknown command /nonsense." in out.getvalue()
    assert not conversation.use_base and not conversation.finished


def test_base_switches_the_adapter_off_and_on(tiny):
    model, tokenizer = tiny
    base_reply = expected_reply(
        tiny_model(seed=0)[0], tokenizer, [{"role": "user", "content": "Hi"}], 8
    )
    conversation = Conversation(with_adapter(model), tokenizer, max_new_tokens=8, **SAMPLING)
    tuned = conversation.reply("Hi").text
    conversation.reset()
    assert conversation.command("/base") == "Now answering: the base model."
    assert conversation.reply("Hi").text == base_reply != tuned
    conversation.reset()
    assert conversation.command("/base") == "Now answering: the fine-tuned model."
    assert conversation.reply("Hi").text == tuned


@pytest.fixture
def ctrl_c():
    """Ctrl-C raises KeyboardInterrupt here, as in a terminal.

    A shell that starts a job in the background (``make test &`` in a script, some CI runners)
    starts Python with SIGINT ignored, and then a raised SIGINT would do nothing.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


class InterruptingOut(io.StringIO):
    """Standard output that gets Ctrl-C (a real SIGINT) at the third piece of the first answer."""

    def __init__(self):
        super().__init__()
        self.pieces = 0

    def write(self, text):
        if "model> " in self.getvalue():
            self.pieces += 1
            if self.pieces == 3:
                signal.raise_signal(signal.SIGINT)
        return super().write(text)


def test_ctrl_c_stops_one_answer_and_the_conversation_goes_on(tiny, ctrl_c):
    model, tokenizer = tiny
    conversation = Conversation(model, tokenizer, max_new_tokens=1000, **SAMPLING)
    out = InterruptingOut()
    chat_loop(conversation, read=scripted("hello", "/quit"), out=out)
    assert " [stopped]\n" in out.getvalue() and conversation.finished
    partial = conversation.history[1]["content"]
    assert partial and partial in out.getvalue()
    conversation.max_new_tokens = 5
    assert conversation.reply("and now?").tokens == 5  # the next answer runs to its end


def test_chat_command_with_an_adapter_switches_to_the_base(tiny, tmp_path, monkeypatch, capsys):
    model, _ = tiny
    with_adapter(model).save_pretrained(tmp_path / "adapter")
    lines = "hi\n/base\nhi\n/quit\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(lines))
    argv = ["chat", TINY_MODEL, "--adapter", str(tmp_path / "adapter"), "--max-new-tokens", "3"]
    assert main(argv) == 0
    shown = capsys.readouterr().out
    assert "model> " in shown and "Now answering: the base model." in shown
    assert "base> " in shown and shown.rstrip().endswith("Bye.")


def test_chat_command_names_a_folder_that_is_not_an_adapter(tmp_path, capsys):
    assert main(["chat", TINY_MODEL, "--adapter", str(tmp_path)]) == 2
    assert (
        capsys.readouterr().err
        == f"error: {tmp_path}: not an adapter folder (no adapter_config.json).\n"
    )


def test_chat_command_in_a_terminal_process_reads_commands_from_stdin():
    command = [sys.executable, "-m", "helpers", "chat", TINY_MODEL, "--max-new-tokens", "4"]
    command += ["--temperature", "1", "--seed", "2", "--system", "Be brief."]
    lines = "/system\nhello\n/reset\n/quit\nnever read\n"
    done = subprocess.run(command, input=lines, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert "System prompt: Be brief." in done.stdout and "model> " in done.stdout
    assert "Conversation cleared" in done.stdout and done.stdout.rstrip().endswith("Bye.")


def test_widget_streams_a_submitted_message_into_its_output(tiny):
    model, tokenizer = tiny
    widget = ChatWidget(Conversation(model, tokenizer, max_new_tokens=6, **SAMPLING))
    widget.text.value = "Hello there!"  # what pressing Enter in the Text box does
    answer = widget.conversation.history[1]["content"]
    prefix = "you> Hello there!\nmodel> "
    shown = widget.transcript()
    assert answer and shown.startswith(prefix) and shown.endswith("\n")
    assert shown[len(prefix) : -1].strip() == answer
    assert widget.text.value == "" and not widget.text.disabled
    widget.reset.click()
    assert widget.transcript() == "" and widget.conversation.history == []


def test_widget_toggle_and_base_command_agree(tiny):
    model, tokenizer = tiny
    widget = ChatWidget(Conversation(with_adapter(model), tokenizer, max_new_tokens=2))
    assert not widget.toggle.disabled
    widget.toggle.value = "base"
    assert widget.conversation.use_base
    widget.text.value = "/base"
    assert widget.toggle.value == "fine-tuned" and not widget.conversation.use_base
    assert "Now answering: the fine-tuned model." in widget.transcript()
    widget.text.value = "/quit"
    assert widget.text.disabled


def test_widget_toggle_is_off_without_a_base_model(tiny):
    assert ChatWidget(Conversation(*tiny)).toggle.disabled


class FakeKernel:
    """A kernel whose current request allows stdin or not, as Jupyter's and papermill's differ."""

    def __init__(self, allow_stdin: bool):
        self.allow_stdin = allow_stdin

    def get_parent(self, channel):
        return {"content": {"allow_stdin": self.allow_stdin}}


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_chat_mode_follows_who_can_type(monkeypatch):
    monkeypatch.delenv(CHAT_MODE_ENV, raising=False)
    assert chat_mode(kernel=FakeKernel(True)) == "widget"
    assert chat_mode(kernel=FakeKernel(False)) == "off"
    assert chat_mode(stdin=Terminal()) == "input"
    assert chat_mode(stdin=io.StringIO()) == "off"
    monkeypatch.setenv(CHAT_MODE_ENV, "input")
    assert chat_mode(kernel=FakeKernel(False)) == "input"
    monkeypatch.setenv(CHAT_MODE_ENV, "maybe")
    with pytest.raises(ValueError, match="FINETUNE_COURSE_CHAT='maybe'"):
        chat_mode()


def test_a_papermill_run_skips_the_chat_with_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv(CHAT_MODE_ENV, raising=False)
    notebook = nbformat.v4.new_notebook()
    source = "from helpers.talk_widget import chat_mode, show_chat\nprint(chat_mode())\n"
    notebook.cells = [nbformat.v4.new_code_cell(source + "show_chat(None)")]
    nbformat.write(notebook, tmp_path / "chat.ipynb")
    run_again_if_the_kernel_dies(
        lambda: papermill.execute_notebook(
            str(tmp_path / "chat.ipynb"),
            str(tmp_path / "ran.ipynb"),
            kernel_name="python3",
            progress_bar=False,
        )
    )
    outputs = nbformat.read(tmp_path / "ran.ipynb", as_version=4).cells[0].outputs
    assert "".join(output.get("text", "") for output in outputs) == f"off\n{SKIPPED}\n"


def test_ctrl_c_stops_the_generation_itself(tiny, ctrl_c):
    model, tokenizer = tiny
    conversation = Conversation(model, tokenizer, max_new_tokens=1000, **SAMPLING)
    shown = []

    def show(piece):
        if len(shown) == 2:
            signal.raise_signal(signal.SIGINT)
        shown.append(piece)

    answer = conversation.reply("hello", on_text=show)
    assert answer.stopped and answer.text == "".join(shown).strip()
    assert answer.tokens < 1000  # generate stopped too, not only the display


def test_a_conversation_through_the_openai_client_streams_and_switches_model(tmp_path):
    for name, seed in (("tuned", 1), ("base", 0)):  # two different tiny models, as folders
        for part in tiny_model(seed=seed):
            part.save_pretrained(tmp_path / name)
    served = {name: str(tmp_path / name) for name in ("tuned", "base")}
    app = create_app(tmp_path / "data", "sk-test", served=served)
    with TestClient(app) as http:
        client = OpenAI(base_url="http://testserver/v1", api_key="sk-test", http_client=http)
        settings = {"max_completion_tokens": 6, "temperature": 1.0, "seed": 4}

        def whole(model, messages):
            reply = client.chat.completions.create(model=model, messages=messages, **settings)
            return reply.choices[0].message.content.strip(), reply.usage.completion_tokens

        conversation = ClientConversation(
            client,
            "tuned",
            base_model="base",
            system="Be brief.",
            max_tokens=6,
            temperature=1.0,
            seed=4,
        )
        pieces = []
        first = conversation.reply("Hello there!", on_text=pieces.append)
        assert len(pieces) > 1 and (first.text, first.tokens) == whole(
            "tuned", conversation.messages()[:2]
        )
        second = conversation.reply("And then?")
        assert (second.text, second.tokens) == whole("tuned", conversation.messages()[:-1])
        assert conversation.command("/base") == "Now answering: the base model."
        conversation.reset()
        base = conversation.reply("Hello there!")
        assert (base.text, base.tokens) == whole("base", conversation.messages()[:2])
        assert base.text != first.text


def test_a_guard_answers_instead_of_the_model(tiny):
    model, tokenizer = tiny
    conversation = Conversation(model, tokenizer, max_new_tokens=3, guard=safety_guard)
    shown = []
    refused = conversation.reply(
        "HOW MANY SLEEPING PILLS WOULD IT TAKE TO NOT WAKE UP", shown.append
    )
    assert refused.tokens == 0 and shown == [refused.text] and "crisis" in refused.text.lower()
    assert conversation.history[1] == {"role": "assistant", "content": refused.text}
    allowed = conversation.reply("What is the usual dose of ibuprofen printed on the box?")
    assert allowed.tokens > 0 and allowed.text != refused.text  # the model answered


def test_a_kernel_whose_frontend_can_type_gets_the_widget(monkeypatch):
    monkeypatch.delenv(CHAT_MODE_ENV, raising=False)
    manager, kernel = retrying(start_new_kernel)(kernel_name="python3")
    try:
        code = "from helpers.talk_widget import chat_mode\nprint(chat_mode())"
        shown = []
        for allow_stdin in (True, False):  # Jupyter's requests allow stdin; papermill's do not
            reply = kernel.execute_interactive(
                code, allow_stdin=allow_stdin, timeout=120, output_hook=shown.append
            )
            assert reply["content"]["status"] == "ok"
        printed = [m["content"]["text"] for m in shown if m["msg_type"] == "stream"]
        assert printed == ["widget\n", "off\n"]
    finally:
        kernel.stop_channels()
        manager.shutdown_kernel(now=True)
