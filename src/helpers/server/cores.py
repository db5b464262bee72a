"""How training and chat requests share the CPU cores: :class:`CoreShare`."""

from __future__ import annotations

import threading
from contextlib import contextmanager

import torch


class CoreShare:
    """Shares the CPU cores between the training thread and chat requests.

    Each OS thread has its own torch (OpenMP) thread team, sized by its own
    ``torch.set_num_threads``. Training takes every core while no chat runs; while both
    run, each takes half: two full teams on the same cores wait at every barrier for a
    preempted thread (measured on 2 cores: a LoRA step 2.5 s with one thread each, 5 to
    40 s with two each). Other parallel backends share one team: there, half for all.
    The cores are torch's thread count: ``OMP_NUM_THREADS`` where set (a batch of
    notebooks running side by side divides the machine that way), else every core.
    """

    def __init__(self, cores: int | None = None):
        self.cores = cores or torch.get_num_threads() or 1
        self.half = max(1, self.cores // 2)
        self.per_thread = "OpenMP" in torch.__config__.parallel_info()
        self.chats, self.training = 0, False
        self._lock = threading.Lock()
        if not self.per_thread:
            torch.set_num_threads(self.half)

    @contextmanager
    def chat(self):
        """Run one chat's generation in this thread: on every core, or half while training."""
        with self._lock:
            self.chats += 1
            threads = self.half if self.training else self.cores
        if self.per_thread:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            with self._lock:
                self.chats -= 1

    @contextmanager
    def train(self):
        """Mark the calling thread as the training thread while the block runs."""
        with self._lock:
            self.training = True
        try:
            yield
        finally:
            with self._lock:
                self.training = False

    def training_step(self) -> None:
        """Size the training thread's team for its next step (half while chats run)."""
        if self.per_thread:
            with self._lock:
                threads = self.half if self.chats else self.cores
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
