"""The tokenizer and chat template as GGUF metadata (``tokenizer.*`` keys).

Two sources, in this order:

- the embedded model's own GGUF, when the model's tokenizer is the same (token for token):
  every ``tokenizer.*`` key is copied from it, so llama.cpp tokenizes exactly as for the
  original SmolLM2 (its ``smollm`` pre-tokenizer included);
- a hub model's ``tokenizer.json`` of Llama's SentencePiece-style kind (BPE with byte
  fallback, as Llama 2, TinyLlama and Mistral), read by ``gguf``'s own vocabulary classes.

Other tokenizers are refused: a byte-level BPE needs a pre-tokenizer name that only
llama.cpp's converter knows (it recognises each by a hash of its output).
"""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path

from helpers.export.errors import ExportError


@functools.lru_cache(maxsize=1)
def embedded_tokenizer_fields() -> tuple:
    """Return the embedded GGUF's ``tokenizer.*`` fields as ``(key, value, types)`` tuples."""
    from gguf import GGUFReader

    from helpers.model_cache import find_embedded_gguf

    reader = GGUFReader(find_embedded_gguf())
    return tuple(
        (key, field.contents(), tuple(field.types))
        for key, field in reader.fields.items()
        if key.startswith("tokenizer.")
    )


def _field(fields: tuple, key: str):
    """Return the value of one field of ``fields`` (None where absent)."""
    return next((value for name, value, _ in fields if name == key), None)


def same_as_embedded(tokenizer) -> bool:
    """Say whether a tokenizer has exactly the embedded GGUF's tokens, in the same order."""
    tokens = _field(embedded_tokenizer_fields(), "tokenizer.ggml.tokens")
    if tokens is None or len(tokenizer) != len(tokens):
        return False
    return tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))) == tokens


def chat_template(tokenizer) -> str | None:
    """Return the tokenizer's chat template text (the one used in training), if it has one."""
    template = getattr(tokenizer, "chat_template", None)
    return template if isinstance(template, str) and template else None


def copy_embedded(writer, tokenizer) -> None:
    """Add the embedded GGUF's tokenizer keys; the chat template is the tokenizer's own."""
    template = chat_template(tokenizer)
    for key, value, types in embedded_tokenizer_fields():
        if key == "tokenizer.chat_template" and template is not None:
            value = template
        sub_type = types[-1] if len(types) > 1 else None
        writer.add_key_value(key, value, types[0], sub_type=sub_type)
    if (
        template is not None
        and _field(embedded_tokenizer_fields(), "tokenizer.chat_template") is None
    ):
        writer.add_chat_template(template)


def is_llama_spm(tokenizer_json: dict) -> bool:
    """Say whether a tokenizer.json is Llama's SentencePiece-style BPE (byte fallback)."""
    model = tokenizer_json.get("model") or {}
    decoder = tokenizer_json.get("decoder") or {}
    return (
        model.get("type") == "BPE"
        and bool(model.get("byte_fallback"))
        and decoder.get("type") == "Sequence"
    )


def merge_scores(tokenizer_json: dict) -> dict[str, float]:
    """Return a score per merged token: minus its merge's rank, so earlier merges win.

    llama.cpp's SentencePiece tokenizer (and Transformers reading a GGUF) merge the adjacent
    pair whose merged token scores highest; a BPE tokenizer.json ranks its merges by order.
    """
    scores = {}
    for rank, merge in enumerate(tokenizer_json["model"].get("merges", [])):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        scores.setdefault(left + right, -float(rank))
    return scores


def llama_spm_writer(tokenizer, folder: Path):
    """Return ``add(writer)`` for a Llama SentencePiece-style ``folder/tokenizer.json``.

    ``gguf``'s vocabulary classes give the tokens and their types (its scores are
    placeholders: the merges' ranks replace them). They read the folder now, so it may be
    gone when ``add`` runs.
    """
    import gguf

    vocab = gguf.LlamaHfVocab(folder)
    ranked = merge_scores(json.loads((folder / "tokenizer.json").read_text(encoding="utf-8")))
    tokens, _, types = zip(*vocab.all_tokens(), strict=True)
    scores = [ranked.get(token.decode("utf-8"), 0.0) for token in tokens]
    special = gguf.SpecialVocab(folder, load_merges=False, n_vocab=len(tokens))
    special.chat_template = chat_template(tokenizer)

    def add(writer) -> None:
        writer.add_tokenizer_model(vocab.tokenizer_model)
        writer.add_tokenizer_pre("default")
        writer.add_token_list(list(tokens))
        writer.add_token_scores(scores)
        writer.add_token_types(list(types))
        special.add_to_gguf(writer, quiet=True)

    return add


def tokenizer_writer(tokenizer, vocab_size: int):
    """Return ``add(writer)`` adding the tokenizer's GGUF keys; raise ExportError if it cannot."""
    if len(tokenizer) != vocab_size:
        raise ExportError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is "
            f"{vocab_size}; GGUF export needs one token per embedding row"
        )
    if same_as_embedded(tokenizer):
        return lambda writer: copy_embedded(writer, tokenizer)
    with tempfile.TemporaryDirectory(prefix="export-tokenizer-") as tmp:
        tokenizer.save_pretrained(tmp)
        tokenizer_file = Path(tmp) / "tokenizer.json"
        if not tokenizer_file.is_file() or not is_llama_spm(json.loads(tokenizer_file.read_text())):
            raise ExportError(
                "the tokenizer is neither the embedded SmolLM2 tokenizer nor a Llama "
                "SentencePiece-style tokenizer.json (BPE with byte_fallback); its GGUF "
                "tokenizer metadata needs llama.cpp's convert_hf_to_gguf.py"
            )
        return llama_spm_writer(tokenizer, Path(tmp))
