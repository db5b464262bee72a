"""An Ollama ``Modelfile`` for an exported GGUF: FROM, the chat TEMPLATE, stop tokens, parameters.

The TEMPLATE is Ollama's Go-template spelling of the model's ChatML chat template
(``<|im_start|>role\\ncontent<|im_end|>\\n``). Its end-of-turn marker and the default system
prompt (which SmolLM2's template inserts when a conversation has none) are read from the
model's own template by rendering it, so Ollama prompts the model as training did. The
temperature is 0: greedy answers, the ones the export's round trip checked.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from helpers.export.errors import ExportError

CHATML_START = "<|im_start|>"
MARKER = "\u2063"  # a character no template adds, to find a message in the rendered text

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


def chatml_parts(tokenizer) -> tuple[str | None, str]:
    """Return ``(default system prompt or None, end-of-turn marker)`` of a ChatML chat template.

    The template is rendered for one user message: ChatML writes each turn as
    ``<|im_start|>role\ncontent END\n`` (END is ``<|im_end|>``, or the EOS token in the
    course's template for models without one). Raise ExportError for other templates.
    """
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": MARKER}], tokenize=False, add_generation_prompt=True
    )
    before, user_turn, after = text.partition(f"{CHATML_START}user\n{MARKER}")
    end_marker = after.split("\n", 1)[0]
    if not user_turn or not end_marker or not after.endswith(f"{CHATML_START}assistant\n"):
        raise ExportError(
            "the tokenizer's chat template is not ChatML (<|im_start|>role ... <|im_end|>): "
            "write the Modelfile's TEMPLATE by hand"
        )
    system = re.search(
        re.escape(CHATML_START) + r"system\n(.*?)" + re.escape(end_marker), before, re.S
    )
    return (system.group(1) if system else None), end_marker


def modelfile_text(gguf_name: str, tokenizer, context_tokens: int = CONTEXT_TOKENS) -> str:
    """Return the Modelfile for the GGUF file ``gguf_name`` (beside it) and this tokenizer."""
    system, end_marker = chatml_parts(tokenizer)
    template = OLLAMA_CHATML_TEMPLATE.replace("<|im_end|>", end_marker)
    lines = [f"FROM ./{gguf_name}", "", f'TEMPLATE """{template}"""', ""]
    if system and '"""' not in system:
        lines += [f'SYSTEM """{system}"""', ""]
    stops = dict.fromkeys([CHATML_START, end_marker, tokenizer.eos_token or end_marker])
    lines += [f"PARAMETER stop {json.dumps(stop)}" for stop in stops]
    lines += [f"PARAMETER num_ctx {context_tokens}", "PARAMETER temperature 0", ""]
    return "\n".join(lines)


def write_modelfile(folder: str | Path, gguf_name: str, tokenizer) -> Path:
    """Write ``folder/Modelfile`` for the GGUF file ``gguf_name`` in that folder; return it."""
    path = Path(folder) / "Modelfile"
    path.write_text(modelfile_text(gguf_name, tokenizer))
    return path
