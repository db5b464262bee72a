"""Continuous batching: every concurrent chat request to one model decodes in one batch.

One thread per loaded model runs the loop. Requests that arrive while it decodes join
at the next step: their prompts are pre-filled together (left-padded), their key/value
cache is padded on the left to the batch's length and stacked onto it, and from then
on each step feeds one new token per row. Rows leave as they finish (end-of-turn token,
their own ``max_tokens``, a stop string, or the client going away) and the columns
that only padding still uses are cut off. Each row keeps its request's own settings:
``max_tokens``, ``stop``, ``temperature``/``top_p`` drawn from the request's own
``torch.Generator`` (``seed``), and its own output queue for streaming.

Position ids count each row's real tokens, so a padded row sees exactly the positions
it would see alone, and padding is masked out of attention: under greedy decoding each
request gets the tokens it would get on its own (up to float rounding between batch
shapes, which only matters at exact near-ties).
"""

from __future__ import annotations

import queue
import secrets
import threading
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from helpers.models import trim_heap
from helpers.server.cores import CoreShare

MAX_BATCH = 32  # rows (choices) decoded together; more requests wait for a free row
IDLE_EXIT_S = 30.0  # the loop's thread ends after this long without work (restarts on demand)


class TextAssembler:
    """Turns generated token ids into text pieces, cut at the first stop string.

    Text that may be the start of a stop string, or half of a multi-byte character, is
    held back until the next tokens tell.
    """

    def __init__(self, tokenizer, stop: list[str]):
        self.tokenizer, self.stop = tokenizer, [s for s in stop if s]
        self.ids: list[int] = []
        self.sent = 0
        self.stopped = False

    def add(self, ids: list[int], final: bool = False) -> str:
        """Take new token ids; return the text that can be sent now."""
        self.ids += ids
        if self.stopped:
            return ""
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        hits = [text.find(s) for s in self.stop if s in text]
        if hits:
            self.stopped, end = True, min(hits)
        elif final:
            end = len(text)
        else:
            end = len(text.rstrip("\ufffd"))
            held = [k for s in self.stop for k in range(1, len(s)) if text[:end].endswith(s[:k])]
            end -= max(held, default=0)
        end = max(end, self.sent)
        piece, self.sent = text[self.sent : end], end
        return piece


def request_generator(seed: int | None, device) -> torch.Generator:
    """Return a generator for one request: seeded when asked, else from fresh entropy."""
    generator = torch.Generator(device=device)
    generator.manual_seed(secrets.randbits(63) if seed is None else seed)
    return generator


def sample_token(scores: torch.Tensor, temperature: float, top_p: float, generator) -> int:
    """Draw a token from one row of scores with temperature and top-p, from ``generator``.

    torch's global generator, which training's dropout draws from, is never used.
    """
    probs = torch.softmax(scores.float() / temperature, dim=-1)
    if top_p < 1:
        ordered, order = probs.sort(descending=True)
        ordered[ordered.cumsum(-1) - ordered >= top_p] = 0  # beyond the top-p mass
        probs = torch.zeros_like(probs).scatter(-1, order, ordered)
    return int(torch.multinomial(probs, 1, generator=generator))


@dataclass
class PendingChat:
    """A chat request in a batcher: its prompt, settings, output queue and cancel flag.

    The loop queues ``("text", index, piece)`` and ``("finish", index, (reason, tokens))``
    items, ``("error", -1, exception)`` on failure, and None when every choice is done.
    """

    prompt_ids: list[int]
    settings: dict
    out: queue.Queue = field(default_factory=queue.Queue)
    cancel: threading.Event = field(default_factory=threading.Event)
    generator: torch.Generator | None = None
    open_choices: int = 0


@dataclass
class Row:
    """One choice of one request, decoding in the batch."""

    chat: PendingChat
    index: int
    assembler: TextAssembler
    tokens: list[int] = field(default_factory=list)
    done: bool = False


class Batcher:
    """Decodes every concurrent request to one model in one batch, in a thread of its own."""

    def __init__(self, model, tokenizer, cores: CoreShare, max_batch: int = MAX_BATCH):
        self.model, self.tokenizer, self.cores = model, tokenizer, cores
        self.max_batch = max_batch
        self.waiting: queue.Queue[Row] = queue.Queue()
        self.rows: list[Row] = []
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None  # 1 for real tokens, 0 for left padding
        self.last: torch.Tensor | None = None  # each row's newest token, fed at the next step
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, prompt_ids: list[int], settings: dict) -> PendingChat:
        """Queue a request's choices for the batch; read its items from ``chat.out``."""
        chat = PendingChat(prompt_ids, settings, open_choices=settings["n"])
        if settings["temperature"] > 0:
            chat.generator = request_generator(settings["seed"], self.model.device)
        for index in range(settings["n"]):
            self.waiting.put(Row(chat, index, TextAssembler(self.tokenizer, settings["stop"])))
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, daemon=True)
                self._thread.start()
        return chat

    def _loop(self) -> None:
        """Admit waiting rows and decode one step at a time until idle for a while."""
        while True:
            if not self.rows:
                try:
                    first = self.waiting.get(timeout=IDLE_EXIT_S)
                except queue.Empty:
                    with self._lock:  # a request that came meanwhile restarts us
                        if self.waiting.empty():
                            self._thread = None
                            return
                    continue
                self._run_safely(self._admit, [first])
                continue
            self._run_safely(self._admit, self._take_waiting())
            self._run_safely(self._step)

    def _take_waiting(self) -> list[Row]:
        """Return the waiting rows that fit into the batch now."""
        new: list[Row] = []
        while len(self.rows) + len(new) < self.max_batch:
            try:
                new.append(self.waiting.get_nowait())
            except queue.Empty:
                break
        return new

    def _run_safely(self, work, *args) -> None:
        """Run a batch operation; on an error, fail every request in the batch and reset it."""
        try:
            work(*args)
        except Exception as error:  # handed to the request threads, which answer it
            failed = {id(row.chat): row.chat for row in self.rows + (args[0] if args else [])}
            for chat in failed.values():
                chat.out.put(("error", -1, error))
                chat.out.put(None)
            self.rows, self.cache, self.mask, self.last = [], None, None, None

    def _forward(self, input_ids, mask, cache, positions) -> torch.Tensor:
        """Run the model on new tokens; return the scores for each row's next token."""
        with self.cores.chat(), torch.inference_mode():
            output = self.model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=positions,
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            )
        return output.logits[:, -1, :]

    def _admit(self, new: list[Row]) -> None:
        """Pre-fill new rows' prompts together and stack their cache onto the batch's."""
        new = [row for row in new if not self._dropped(row)]
        if not new:
            return
        width = max(len(row.chat.prompt_ids) for row in new)
        pad = self.tokenizer.pad_token_id or 0
        ids = [[pad] * (width - len(r.chat.prompt_ids)) + r.chat.prompt_ids for r in new]
        mask = [[0] * (width - len(r.chat.prompt_ids)) + [1] * len(r.chat.prompt_ids) for r in new]
        device = self.model.device
        ids, mask = torch.tensor(ids, device=device), torch.tensor(mask, device=device)
        cache = DynamicCache(config=self.model.config)
        scores = self._forward(ids, mask, cache, (mask.cumsum(-1) - 1).clamp(min=0))
        self._stack(new, cache, mask)
        self._advance(new, scores, offset=len(self.rows) - len(new))

    def _stack(self, new: list[Row], cache: DynamicCache, mask: torch.Tensor) -> None:
        """Left-pad the batch's cache or the new one to a common length and stack them."""
        if self.cache is None:
            self.rows, self.cache, self.mask = list(new), cache, mask
            self.last = torch.zeros(len(new), 1, dtype=torch.long, device=mask.device)
            return
        length = max(self.mask.shape[1], mask.shape[1])
        for old_layer, new_layer in zip(self.cache.layers, cache.layers, strict=True):
            for name in ("keys", "values"):
                merged = torch.cat(
                    [
                        left_pad(getattr(old_layer, name), length, dim=2),
                        left_pad(getattr(new_layer, name), length, dim=2),
                    ]
                )
                setattr(old_layer, name, merged)
        self.mask = torch.cat([left_pad(self.mask, length, 1), left_pad(mask, length, 1)])
        self.last = torch.cat([self.last, self.last.new_zeros(len(new), 1)])
        self.rows += new

    def _step(self) -> None:
        """Feed every row its newest token and take the next one."""
        mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        positions = self.mask.sum(dim=1, keepdim=True)  # the real tokens before the new one
        scores = self._forward(self.last, mask, self.cache, positions)
        self.mask = mask
        self._advance(list(self.rows), scores, offset=0)

    def _advance(self, rows: list[Row], scores: torch.Tensor, offset: int) -> None:
        """Pick each row's next token, send its text, and retire the rows that are done."""
        greedy = scores.argmax(dim=-1).tolist()
        for position, row in enumerate(rows):
            settings = row.chat.settings
            token = greedy[position]
            if settings["temperature"] > 0:
                token = sample_token(
                    scores[position],
                    settings["temperature"],
                    settings["top_p"],
                    row.chat.generator,
                )
            self.last[offset + position, 0] = token
            row.tokens.append(token)
            ended = token == self.tokenizer.eos_token_id
            if not ended and (piece := row.assembler.add([token])):
                row.chat.out.put(("text", row.index, piece))
            if ended or row.assembler.stopped:
                self._finish(row, "stop")
            elif len(row.tokens) >= settings["max_tokens"]:
                self._finish(row, "length")
        self._retire()

    def _finish(self, row: Row, reason: str) -> None:
        """Send a finished row's held-back text and its finish item."""
        piece = row.assembler.add([], final=True)
        if piece:
            row.chat.out.put(("text", row.index, piece))
        row.chat.out.put(("finish", row.index, (reason, len(row.tokens))))
        row.done = True
        self._close_choice(row.chat)

    def _dropped(self, row: Row) -> bool:
        """True (and the choice closed) when the row's client has gone away."""
        if row.chat.cancel.is_set():
            self._close_choice(row.chat)
            return True
        return False

    def _close_choice(self, chat: PendingChat) -> None:
        """Count one of a request's choices done; close its queue after the last."""
        chat.open_choices -= 1
        if chat.open_choices == 0:
            chat.out.put(None)

    def _retire(self) -> None:
        """Drop finished and cancelled rows from the batch, and padding no row needs."""
        keep = [i for i, row in enumerate(self.rows) if not row.done and not self._dropped(row)]
        if len(keep) == len(self.rows):
            return
        if not keep:
            self.rows, self.cache, self.mask, self.last = [], None, None, None
            trim_heap()  # the batch's key/value cache goes back to the system
            return
        index = torch.tensor(keep, device=self.mask.device)
        self.rows = [self.rows[i] for i in keep]
        self.mask, self.last = self.mask[index], self.last[index]
        start = int((self.mask.sum(dim=0) == 0).cumprod(0).sum())  # leading all-padding columns
        self.mask = self.mask[:, start:]
        for layer in self.cache.layers:
            layer.keys = layer.keys[index][:, :, start:]
            layer.values = layer.values[index][:, :, start:]


def left_pad(tensor: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """Pad ``tensor`` with zeros on the left of ``dim`` up to ``length``."""
    missing = length - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def supports_batching(model) -> bool:
    """True when the model's cache is plain per-layer key/value tensors (no sliding window)."""
    cache = DynamicCache(config=model.config)
    return all(type(layer) is DynamicLayer for layer in cache.layers)
