"""Talk to a model: one conversation loop, streamed token by token, for the terminal and notebooks.

:class:`Conversation` keeps the history and the system prompt, renders them with the chat
template exactly as training does (:func:`helpers.chat.render_prompt`) and streams the reply
with Transformers' ``TextIteratorStreamer`` while ``generate`` runs in a thread. A PEFT
adapter can be switched off (``disable_adapter()``) to hear the base model on the same
conversation; a fully fine-tuned model compares with a ``base_model`` given beside it.

:class:`ClientConversation` talks the same way to a model behind an OpenAI-compatible API
(the course's local server, or OpenAI), ``/base`` switching to the base model's name.

The same slash commands work in every front end (:meth:`ChatSession.command`): ``/reset``,
``/system TEXT``, ``/base``, ``/quit`` and ``/help``. :func:`chat_loop` is the plain
``input()`` loop of ``python -m helpers chat`` and of notebooks where widgets do not render;
:mod:`helpers.talk_widget` is the notebook widget. Ctrl-C while a reply streams stops that
reply only.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from helpers.chat import render_prompt
from helpers.evaluate import cached_casts, generation_bf16
from helpers.model_cache import ModelLoadError
from helpers.models import autocast, ensure_chat_template, load_base_model, set_seed

COMMANDS_HELP = (
    "/reset clears the conversation (the system prompt stays) · /system TEXT sets the system "
    "prompt (/system alone shows it) · /base switches between the fine-tuned and the base "
    "model · /quit leaves · Ctrl-C stops an answer"
)
PROMPT = "you> "


@dataclass
class Answer:
    """One streamed reply: its text, its length in tokens, whether Ctrl-C stopped it early."""

    text: str
    tokens: int  # new tokens generated
    stopped: bool = False


class StopWhenSet:
    """A stopping criterion for ``generate``: stop every sequence once ``event`` is set."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        """Return one flag per sequence: all True once the event is set."""
        return torch.full(
            (input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device
        )


class ChatSession:
    """What every conversation shares: history, system prompt, commands and streamed replies.

    A subclass says who answers: :meth:`_stream` yields the reply's text pieces for the
    messages, and stops generating when it is closed. ``guard`` sees each user message
    first and may return the answer to give instead of the model's (a refusal, e.g.
    :func:`safety_guard`); it returns None to let the model answer.
    """

    def __init__(self, system: str | None = None, guard: Callable[[str], str | None] | None = None):
        self.system, self.guard = system or None, guard
        self.history: list[dict] = []
        self.use_base = False
        self.finished = False  # set by /quit

    @property
    def has_base(self) -> bool:
        """Tell whether there is a base model to switch to."""
        return False

    @property
    def speaker(self) -> str:
        """Return who answers now: ``"base"`` or ``"model"``."""
        return "base" if self.use_base else "model"

    def reset(self) -> None:
        """Forget the conversation; the system prompt and the chosen model stay."""
        self.history = []

    def messages(self) -> list[dict]:
        """Return the conversation as chat messages, the system prompt first."""
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + self.history

    def _stream(self, outcome: dict):
        """Yield the reply to :meth:`messages` in pieces; set ``outcome["tokens"]``."""
        raise NotImplementedError

    def reply(self, text: str, on_text: Callable[[str], object] | None = None) -> Answer:
        """Answer a user message, passing each piece of text to ``on_text`` as it comes.

        The message and the answer join the history. Ctrl-C (KeyboardInterrupt) while the
        answer streams stops it: the answer so far is kept and returned with ``stopped``.
        A message that does not fit the model's context raises ValueError.
        """
        self.history.append({"role": "user", "content": text})
        refused = self.guard(text) if self.guard is not None else None
        if refused is not None:  # the guard answers; the model is not asked
            if on_text is not None:
                on_text(refused)
            self.history.append({"role": "assistant", "content": refused})
            return Answer(refused, 0)
        outcome, pieces, stopped = {}, [], False
        stream = self._stream(outcome)
        try:
            for piece in stream:
                if on_text is not None and piece:
                    on_text(piece)
                pieces.append(piece)  # after it was shown: a stopped answer keeps what was seen
        except KeyboardInterrupt:
            stopped = True
        except BaseException:
            self.history.pop()  # no answer: the message leaves the history too
            raise
        finally:
            stream.close()  # stops the generation
        answer = Answer("".join(pieces).strip(), outcome.get("tokens", 0), stopped)
        self.history.append({"role": "assistant", "content": answer.text})
        return answer

    def command(self, line: str) -> str:
        """Run a slash command (``/reset``, ``/system TEXT``, ``/base``, ``/quit``, ``/help``).

        Returns the line to show the user; ``/quit`` sets :attr:`finished`.
        """
        name, _, argument = line.strip().partition(" ")
        argument = argument.strip()
        if name == "/reset":
            self.reset()
            return "Conversation cleared" + (" (the system prompt stays)." if self.system else ".")
        if name == "/system":
            if argument:
                self.system = argument
                return f"System prompt set: {argument}"
            return f"System prompt: {self.system}" if self.system else "No system prompt."
        if name == "/base":
            if not self.has_base:
                return "No base model to switch to: no adapter or base model was given."
            self.use_base = not self.use_base
            return (
                "Now answering: the base model."
                if self.use_base
                else "Now answering: the fine-tuned model."
            )
        if name == "/quit":
            self.finished = True
            return "Bye."
        if name == "/help":
            return COMMANDS_HELP
        return f"Unknown command {name}. {COMMANDS_HELP}"


class Conversation(ChatSession):
    """A chat with a Transformers model in this process, streamed while ``generate`` runs.

    ``base_model`` is a separate base model to compare with (same tokenizer); a PEFT model
    needs none, its adapter is switched off instead. Replies are greedy by default
    (``temperature=0``), as the notebooks' evaluations are, so base and fine-tuned answers
    compare; a temperature above 0 samples with ``top_p``, each reply drawn after
    ``set_seed(seed)`` when a seed is given (the same conversation, the same answer).
    """

    def __init__(
        self,
        model,
        tokenizer,
        base_model=None,
        system: str | None = None,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        bf16: bool | None = None,
        seed: int | None = None,
        guard: Callable[[str], str | None] | None = None,
    ):
        super().__init__(system, guard)
        ensure_chat_template(tokenizer)
        self.model, self.tokenizer, self.base_model = model, tokenizer, base_model
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.bf16, self.seed = bf16, seed

    @property
    def has_base(self) -> bool:
        """Tell whether there is a base model to switch to (an adapter, or ``base_model``)."""
        return self.base_model is not None or hasattr(self.model, "disable_adapter")

    def prompt_ids(self) -> list[int]:
        """Return the token ids of the next reply's prompt, oldest turns dropped to fit the context.

        Raises ValueError when the last message alone leaves no room for a reply.
        """
        context = getattr(self.model.config, "max_position_embeddings", 2048)
        room = context - min(self.max_new_tokens, context // 2)
        while True:
            text = render_prompt(self.tokenizer, self.messages())
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) <= room:
                return ids
            if len(self.history) <= 1:
                raise ValueError(
                    f"The message is {len(ids)} tokens with the system prompt; this model's "
                    f"context of {context} tokens leaves room for {room}."
                )
            self.history = self.history[2:]  # drop the oldest exchange

    def _answering_model(self):
        """Return the model that answers now and the context it answers in."""
        if not self.use_base:
            return self.model, nullcontext()
        if self.base_model is not None:
            return self.base_model, nullcontext()
        return self.model, self.model.disable_adapter()

    def _generate(self, ids: list[int], streamer, stop: threading.Event, outcome: dict) -> None:
        """Run ``generate`` into the streamer (in its thread); note its length, or its error."""
        from transformers import StoppingCriteriaList

        model, context = self._answering_model()
        device = next(model.parameters()).device
        sampling = {"do_sample": self.temperature > 0}
        if self.temperature > 0:
            sampling.update(temperature=self.temperature, top_p=self.top_p)
        input_ids = torch.tensor([ids], device=device)
        try:  # autocast and no_grad are per thread: entered here, not by the caller
            precision = autocast(device.type, generation_bf16(device, self.bf16))
            with context, precision, cached_casts(model), torch.no_grad():
                if self.seed is not None and self.temperature > 0:
                    set_seed(self.seed)
                output = model.generate(
                    input_ids=input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    max_new_tokens=self.max_new_tokens,
                    pad_token_id=self.tokenizer.pad_token_id,
                    eos_token_id=self.tokenizer.eos_token_id,
                    streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([StopWhenSet(stop)]),
                    **sampling,
                )
            outcome["tokens"] = output.shape[1] - len(ids)
        except BaseException as error:  # the caller raises it; the stream must still end
            outcome["error"] = error
            streamer.end()

    def _stream(self, outcome: dict):
        """Yield the reply's pieces from ``generate`` running in a thread; stop it when closed."""
        from transformers import TextIteratorStreamer

        ids = self.prompt_ids()
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        stop = threading.Event()
        worker = threading.Thread(
            target=self._generate, args=(ids, streamer, stop, outcome), daemon=True
        )
        worker.start()
        try:
            yield from streamer
        finally:
            stop.set()
            worker.join()
        if "error" in outcome:
            raise outcome["error"]


class ClientConversation(ChatSession):
    """A chat with a model behind an OpenAI-compatible API (the local server, or OpenAI), streamed.

    ``client`` is an ``openai.OpenAI`` client; ``model`` the fine-tuned model's name and
    ``base_model`` the base model's, which ``/base`` switches to. The server renders the
    chat template (the local server as training does).
    """

    def __init__(
        self,
        client,
        model: str,
        base_model: str | None = None,
        system: str | None = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int | None = None,
        guard: Callable[[str], str | None] | None = None,
    ):
        super().__init__(system, guard)
        self.client, self.model, self.base_model = client, model, base_model
        self.max_tokens, self.temperature, self.seed = max_tokens, temperature, seed

    @property
    def has_base(self) -> bool:
        """Tell whether a base model name was given."""
        return self.base_model is not None

    def _stream(self, outcome: dict):
        """Yield the reply's pieces as the API streams them; closing ends the request."""
        import openai

        name = self.base_model if self.use_base else self.model
        options = {"seed": self.seed} if self.seed is not None else {}
        try:
            stream = self.client.chat.completions.create(
                model=name,
                messages=self.messages(),
                max_completion_tokens=self.max_tokens,
                temperature=self.temperature,
                stream=True,
                stream_options={"include_usage": True},
                **options,
            )
        except openai.BadRequestError as error:  # e.g. the conversation is too long
            raise ValueError(f"'{name}' refused the request: {error.message}") from None
        try:
            for chunk in stream:
                if chunk.usage is not None:
                    outcome["tokens"] = chunk.usage.completion_tokens
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content
        finally:
            stream.close()


def chat_loop(conversation: ChatSession, read: Callable[[str], str] = input, out=None) -> None:
    """Talk in a terminal (or a notebook's ``input()``) until ``/quit`` or end of input.

    Lines starting with ``/`` are commands; others are answered, streamed to ``out``
    (default stdout). Ctrl-C stops an answer; at the prompt it only says how to leave.
    """
    out = out or sys.stdout
    out.write(f"Talking to the model. {COMMANDS_HELP}\n")
    while not conversation.finished:
        try:
            line = read(PROMPT).strip()
        except EOFError:
            break
        except KeyboardInterrupt:
            out.write("\n(Ctrl-C stops an answer; /quit or Ctrl-D leaves)\n")
            continue
        if not line:
            continue
        if line.startswith("/"):
            out.write(conversation.command(line) + "\n")
            continue
        out.write(f"{conversation.speaker}> ")
        out.flush()
        try:
            answer = conversation.reply(line, on_text=lambda piece: (out.write(piece), out.flush()))
        except ValueError as error:
            out.write(f"{error}\n")
            continue
        out.write(" [stopped]\n" if answer.stopped else "\n")
        out.flush()


def safety_guard(text: str) -> str | None:
    """Return helpers.safety's refusal for a dangerous request, else None (notebook 04's filter)."""
    from helpers.safety import check_request, refusal

    verdict = check_request(text)
    return refusal(verdict) if verdict.blocked else None


def load_for_chat(name: str, adapter: str | Path | None = None, device: str | None = None):
    """Load ``(model, tokenizer)`` for chat: a model, with a LoRA adapter on top when given.

    The adapter stays separate (not merged), so ``/base`` can switch it off. Raises
    ModelLoadError naming the folder when the adapter cannot be used with this model.
    """
    model, tokenizer = load_base_model(name, device=device)
    if adapter is None:
        return model, tokenizer
    folder = Path(adapter).expanduser()
    if not (folder / "adapter_config.json").is_file():
        raise ModelLoadError(f"{folder}: not an adapter folder (no adapter_config.json).")
    from peft import PeftModel

    try:
        model = PeftModel.from_pretrained(model, folder)
    except (RuntimeError, ValueError, KeyError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelLoadError(f"{folder}: cannot be applied to model '{name}': {first}") from None
    model.eval()
    return model, tokenizer
