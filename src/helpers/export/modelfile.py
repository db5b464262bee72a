"""An Ollama ``Modelfile`` for an exported GGUF: FROM, the chat TEMPLATE, stop tokens, parameters.

The TEMPLATE is Ollama's Go-template spelling of the model's ChatML chat template
(``<|im_start|>role\\ncontent<|im_end|>\\n``). The default system prompt, which SmolLM2's
template inserts when a conversation has none, is read from the template by rendering it,
and becomes the Modelfile's SYSTEM line, so Ollama prompts the model as training did.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from helpers.export.errors import ExportError

CHATML_START, CHATML_END = "<|im_start|>", "<|im_end|>"

OLLAMA_CHATML_TEMPLATE = """\
{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}
{{- range .Messages }}{{ if ne .Role "system" }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}{{ end }}<|im_start|>assistant
"""

# Context window Ollama allocates (num_ctx): the course trains on short conversations.
CONTEXT_TOKENS = 2048


def default_system_prompt(tokenizer) -> str | None:
    """Return the system prompt the chat template adds to a conversation without one, if any."""
    marker = "\u2063"  # a character no template adds, to find the user's message
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": marker}], tokenize=False, add_generation_prompt=True
    )
    found = re.search(
        re.escape(CHATML_START) + r"system\n(.*?)" + re.escape(CHATML_END),
        text.split(marker)[0],
        re.S,
    )
    return found.group(1) if found else None


def is_chatml(tokenizer) -> bool:
    """Say whether the tokenizer's chat template is ChatML, as this Modelfile's TEMPLATE is."""
    template = getattr(tokenizer, "chat_template", None) or ""
    return isinstance(template, str) and CHATML_START in template and CHATML_END in template


def modelfile_text(gguf_name: str, tokenizer, context_tokens: int = CONTEXT_TOKENS) -> str:
    """Return the Modelfile for the GGUF file ``gguf_name`` (beside it) and this tokenizer."""
    if not is_chatml(tokenizer):
        raise ExportError(
            "the tokenizer's chat template is not ChatML (<|im_start|>...<|im_end|>): "
            "write the Modelfile's TEMPLATE by hand"
        )
    lines = [f"FROM ./{gguf_name}", "", f'TEMPLATE """{OLLAMA_CHATML_TEMPLATE}"""', ""]
    system = default_system_prompt(tokenizer)
    if system and '"""' not in system:
        lines += [f'SYSTEM """{system}"""', ""]
    stops = [CHATML_START, CHATML_END]
    if tokenizer.eos_token and tokenizer.eos_token not in stops:
        stops.append(tokenizer.eos_token)
    lines += [f"PARAMETER stop {json.dumps(stop)}" for stop in stops]
    lines += [f"PARAMETER num_ctx {context_tokens}", "PARAMETER temperature 0", ""]
    return "\n".join(lines)


def write_modelfile(folder: str | Path, gguf_name: str, tokenizer) -> Path:
    """Write ``folder/Modelfile`` for the GGUF file ``gguf_name`` in that folder; return it."""
    path = Path(folder) / "Modelfile"
    path.write_text(modelfile_text(gguf_name, tokenizer))
    return path
