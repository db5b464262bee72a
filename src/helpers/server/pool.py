"""The chat models the server keeps loaded: :class:`ModelPool` of :class:`LoadedModel`.

Chat models are loaded once, outside any lock shared between models, and kept in a small
LRU pool. Concurrent requests to one model decode together in one batch
(:mod:`helpers.server.batching`), while the training thread works on its own copy.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future
from pathlib import Path

from helpers.models import ensure_chat_template, load_base_model
from helpers.server.batching import MAX_BATCH, Batcher, supports_batching
from helpers.server.cores import CoreShare


class LoadedModel:
    """A model ready for chat, and the batch that its concurrent requests decode in."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self._batcher: Batcher | None = None
        self._lock = threading.Lock()

    def batcher(self, cores: CoreShare) -> Batcher:
        """Return the model's batcher, made on first use."""
        with self._lock:
            if self._batcher is None:
                size = MAX_BATCH if supports_batching(self.model) else 1
                self._batcher = Batcher(self.model, self.tokenizer, cores, size)
            return self._batcher


def load_chat_model(base: str, adapter: Path | None) -> LoadedModel:
    """Load a base model for chat, with a LoRA adapter merged into it when given."""
    model, tokenizer = load_base_model(base)
    if adapter is not None:
        from peft import PeftModel

        # Merged weights generate as fast as the base model.
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.eval()
    ensure_chat_template(tokenizer)
    return LoadedModel(model, tokenizer)


class ModelPool:
    """Chat models loaded once and kept, the least recently used dropped beyond ``size``.

    A model loads outside the pool's lock (the first conversion takes ~25 s), so requests
    for models already loaded go on meanwhile; requests for a model that is loading wait
    for that one load.
    """

    def __init__(self, size: int = 3, loader=load_chat_model):
        self.size, self.loader = size, loader
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._loading: dict[str, Future] = {}
        self._lock = threading.Lock()

    def get(self, base: str, adapter: Path | None) -> LoadedModel:
        """Return the loaded model ``base``, plus a LoRA adapter when given."""
        key = f"{base}|{adapter or ''}"  # aliases of one base model share it
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            loading = self._loading.get(key)
            if loading is None:
                self._loading[key] = Future()
        if loading is not None:
            return loading.result()
        try:
            loaded = self.loader(base, adapter)
        except BaseException as error:
            with self._lock:
                self._loading.pop(key).set_exception(error)
            raise
        with self._lock:
            self._models[key] = loaded
            while len(self._models) > self.size:
                self._models.popitem(last=False)
            self._loading.pop(key).set_result(loaded)
        return loaded

    def forget(self, adapter: Path) -> None:
        """Drop the models that use an adapter (after it was deleted)."""
        with self._lock:
            for key in [key for key in self._models if key.endswith(f"|{adapter}")]:
                del self._models[key]
