"""The base models the server accepts: :class:`Catalogue`, and the names a client may send.

Base models are the embedded SmolLM2, Hugging Face models already downloaded, and
OpenAI's model names, which :data:`OPENAI_MODEL_NAMES` maps to the embedded model
(``aliases`` adds to or overrides the map), and model folders served by name (``served``,
from ``serve --model NAME=DIR``: a merged model, such as ``helpers export`` writes). Only
an alias or a served folder makes a local folder a model, so clients cannot probe the
server's folders.
"""

from __future__ import annotations

import re
from pathlib import Path

from helpers.models import EMBEDDED_MODEL
from helpers.server.errors import APIError, invalid

# OpenAI's fine-tunable models (and the seed's gpt-3.5-turbo), served by the embedded model.
OPENAI_MODEL_NAMES = (
    "gpt-3.5-turbo",
    "gpt-3.5-turbo-0125",
    "gpt-3.5-turbo-1106",
    "gpt-4o-mini",
    "gpt-4o-mini-2024-07-18",
    "gpt-4o-2024-08-06",
    "gpt-4.1-2025-04-14",
    "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano-2025-04-14",
    "babbage-002",
    "davinci-002",
)
BASE_MODELS_CREATED = 1730419200  # 2024-11-01, SmolLM2's release
MODEL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9._:/~-]{1,256}$")  # any model name we answer
HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class Catalogue:
    """The base model names the server accepts and what each one loads."""

    def __init__(self, aliases: dict[str, str] | None = None, served: dict[str, str] | None = None):
        self.aliases = {name: EMBEDDED_MODEL for name in OPENAI_MODEL_NAMES} | (aliases or {})
        self.served = {name: str(Path(folder).resolve()) for name, folder in (served or {}).items()}

    def resolve(self, name: str) -> str | None:
        """Return what the training core loads for a base model name, or None if unknown.

        A hub id resolves to its folder in the Hugging Face cache (so it loads offline, and
        never as a folder of the same name on this machine); paths never resolve.
        """
        if name in self.served:
            return self.served[name]
        if name in self.aliases:
            return self.aliases[name]
        if name == EMBEDDED_MODEL:
            return name
        if not HUB_ID_PATTERN.match(name) or ".." in name:
            return None
        from huggingface_hub import try_to_load_from_cache

        try:
            cached = try_to_load_from_cache(name, "config.json")
        except ValueError:  # not a valid hub id
            return None
        return str(Path(cached).parent) if isinstance(cached, str) else None

    def listed(self, name: str) -> bool:
        """Tell whether a name is one of the base models that ``GET /models`` lists."""
        return name == EMBEDDED_MODEL or name in self.aliases or name in self.served

    def models(self) -> list[dict]:
        """Return the listed base models as Model objects: the embedded one, folders, aliases."""
        names = dict.fromkeys([EMBEDDED_MODEL, *self.served, *self.aliases])  # once each
        return [self.model(name) for name in names]

    def model(self, name: str) -> dict:
        """Return a base model's Model object; an alias or a folder states what serves it."""
        if name in self.served:
            folder = Path(self.served[name])
            return {
                "id": name,
                "object": "model",
                "created": int(folder.stat().st_mtime),  # when the folder was written
                "owned_by": "finetune-course (local folder)",
                "metadata": {"served_by": str(folder)},
            }
        served_by = self.aliases.get(name, name)
        owner = "finetune-course" if served_by == name else f"finetune-course ({served_by})"
        return {
            "id": name,
            "object": "model",
            "created": BASE_MODELS_CREATED,
            "owned_by": owner,
            "metadata": {"served_by": served_by},
        }

    def unknown(self, name: str) -> APIError:
        """Return the 400 for a base model name that is not available, listing what is."""
        names = ", ".join([EMBEDDED_MODEL, *self.served, *self.aliases])
        return invalid(
            f"Model '{name}' is not available for fine-tuning here. Available: {names}; a "
            "fine-tuned model (ft:...); a Hugging Face model downloaded first with "
            "`python -m helpers prepare-model NAME`; or a local folder that the server was "
            "started with as `--alias NAME=FOLDER`.",
            "model",
            "model_not_available",
        )
