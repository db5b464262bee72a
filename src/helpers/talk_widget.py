"""Talk to a model in a notebook: a small ipywidgets chat over a :mod:`helpers.talk` conversation.

:func:`show_chat` picks the front end for where the cell runs (:func:`chat_mode`):

- a notebook someone is using: the widget (a Text box, an Output area that the reply
  streams into, a fine-tuned/base toggle and a Reset button);
- a Python or IPython terminal: the plain ``input()`` loop of :func:`helpers.talk.chat_loop`;
- a notebook run by papermill, nbval or ``nbconvert --execute``: nothing but one line, so
  batch runs never wait for a user. Those runners execute cells with ``allow_stdin`` false
  in the kernel's request (nobody can type), which is what is detected; a script without a
  terminal is skipped the same way.

``$FINETUNE_COURSE_CHAT`` (``widget``, ``input`` or ``off``) overrides the choice, e.g.
``input`` in a frontend that runs a kernel but does not render widgets (``jupyter console``).
"""

from __future__ import annotations

import os
import sys

CHAT_MODE_ENV = "FINETUNE_COURSE_CHAT"
CHAT_MODES = ("widget", "input", "off")
SKIPPED = (
    "Chat skipped: nobody can type in this run (papermill, nbval or a script without a "
    "terminal). Run the cell in Jupyter to talk to the model."
)


def _kernel():
    """Return the running IPython kernel, or None outside one."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return getattr(get_ipython(), "kernel", None)


def chat_mode(kernel=None, stdin=None) -> str:
    """Return how to chat here: ``"widget"``, ``"input"`` or ``"off"`` (see the module's note).

    ``kernel`` and ``stdin`` default to the running kernel (if any) and ``sys.stdin``.
    """
    chosen = os.environ.get(CHAT_MODE_ENV, "").strip().lower()
    if chosen:
        if chosen not in CHAT_MODES:
            raise ValueError(
                f"${CHAT_MODE_ENV}={chosen!r}: expected one of {', '.join(CHAT_MODES)}"
            )
        return chosen
    kernel = kernel if kernel is not None else _kernel()
    if kernel is not None:
        request = kernel.get_parent("shell") or {}
        return "widget" if request.get("content", {}).get("allow_stdin") else "off"
    stdin = stdin if stdin is not None else sys.stdin
    return "input" if stdin is not None and stdin.isatty() else "off"


class ChatWidget:
    """The widget: type a message and press Enter; the reply streams into the Output area."""

    def __init__(self, conversation):
        import ipywidgets as widgets

        self.conversation = conversation
        self.text = widgets.Text(
            placeholder="Message, then Enter (/system TEXT, /reset, /base, /help)",
            continuous_update=False,
            layout=widgets.Layout(width="100%"),
        )
        self.toggle = widgets.ToggleButtons(
            options=["fine-tuned", "base"],
            value="base" if conversation.use_base else "fine-tuned",
            disabled=not conversation.has_base,
            tooltips=["the model as trained", "the same conversation without the fine-tuning"],
        )
        self.reset = widgets.Button(description="Reset", tooltip="clear the conversation")
        self.output = widgets.Output(
            layout=widgets.Layout(border="1px solid #ccc", max_height="24em", overflow="auto")
        )
        self.text.observe(self._on_submit, names="value")
        self.toggle.observe(self._on_toggle, names="value")
        self.reset.on_click(self._on_reset)
        self.box = widgets.VBox([widgets.HBox([self.toggle, self.reset]), self.output, self.text])

    def transcript(self) -> str:
        """Return the text of the Output area."""
        return "".join(entry.get("text", "") for entry in self.output.outputs)

    def _write(self, text: str, new_entry: bool = False) -> None:
        """Add text to the Output area: to its last entry, or as a new one."""
        entries = list(self.output.outputs)
        if new_entry or not entries:
            entries.append({"output_type": "stream", "name": "stdout", "text": text})
        else:
            entries[-1] = {**entries[-1], "text": entries[-1]["text"] + text}
        self.output.outputs = tuple(entries)

    def submit(self, line: str) -> None:
        """Handle one line typed in the Text box: a command, or a message to answer."""
        line = line.strip()
        if not line:
            return
        if line.startswith("/"):
            self._write(self.conversation.command(line) + "\n", new_entry=True)
            self.toggle.value = "base" if self.conversation.use_base else "fine-tuned"
            self.text.disabled = self.conversation.finished
            return
        self._write(f"you> {line}\n", new_entry=True)
        self._write(f"{self.conversation.speaker}> ", new_entry=True)
        self.text.disabled = True
        try:
            answer = self.conversation.reply(line, on_text=self._write)
            self._write(" [stopped]\n" if answer.stopped else "\n")
        except ValueError as error:  # the message does not fit the context
            self._write(f"{error}\n")
        finally:
            self.text.disabled = self.conversation.finished

    def _on_submit(self, change) -> None:
        """Answer what was typed (the Text's value changes on Enter), then clear the box."""
        if change["new"].strip():
            self.text.value = ""
            self.submit(change["new"])

    def _on_toggle(self, change) -> None:
        """Switch between the fine-tuned and the base model."""
        self.conversation.use_base = change["new"] == "base"

    def _on_reset(self, button=None) -> None:
        """Clear the conversation and the Output area."""
        self.conversation.reset()
        self.output.outputs = ()

    def _repr_mimebundle_(self, **kwargs):
        """Display as the widget; frontends without widgets show how to chat instead."""
        bundle = self.box._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = (
            "A chat widget: this frontend does not render widgets. Set "
            f"{CHAT_MODE_ENV}=input (or call helpers.talk.chat_loop) to chat with input()."
        )
        return bundle


def show_chat(conversation) -> None:
    """Chat where the cell runs: the widget, the ``input()`` loop, or one line when skipped.

    ``conversation`` is a :class:`helpers.talk.Conversation` (a model in this process) or a
    :class:`helpers.talk.ClientConversation` (a model behind an OpenAI-compatible API).
    """
    mode = chat_mode()
    if mode == "off":
        print(SKIPPED)
    elif mode == "widget":
        from IPython.display import display

        display(ChatWidget(conversation))
    else:
        from helpers.talk import chat_loop

        chat_loop(conversation)
