"""The JSON bodies the API accepts, as pydantic models (FastAPI validates them)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class Hyperparameters(BaseModel):
    """Supervised fine-tuning hyperparameters, each a number or ``"auto"``."""

    model_config = ConfigDict(extra="forbid")
    n_epochs: Literal["auto"] | int | None = None
    batch_size: Literal["auto"] | int | None = None
    learning_rate_multiplier: Literal["auto"] | float | None = None


class Supervised(BaseModel):
    """The ``supervised`` part of a job's ``method``."""

    hyperparameters: Hyperparameters | None = None


class Method(BaseModel):
    """A job's fine-tuning method; only ``supervised`` is available here."""

    type: str
    supervised: Supervised | None = None


class JobRequest(BaseModel):
    """The body of ``POST /fine_tuning/jobs``; other fields are kept for the route to refuse."""

    model_config = ConfigDict(extra="allow")
    model: str
    training_file: str
    validation_file: str | None = None
    hyperparameters: Hyperparameters | None = None
    method: Method | None = None
    suffix: str | None = None
    seed: int | None = None
    metadata: dict[str, str] | None = None


class ChatRequest(BaseModel):
    """The body of ``POST /chat/completions``; other fields are kept for the route to refuse.

    See :mod:`helpers.server.params`: a parameter the server does not honour is a 400.
    """

    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[dict]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool | None = None
    stream_options: dict | None = None
