"""Write a Llama-family model as a GGUF file for llama.cpp-family runtimes (f16 or q8_0).

What llama.cpp expects, as its own converter writes it:

- tensor names from ``gguf``'s Llama tensor name map (``model.layers.0.self_attn.q_proj``
  becomes ``blk.0.attn_q``);
- the query and key projections' rows permuted: Hugging Face orders each head's rotary
  dimensions as two halves, llama.cpp as interleaved pairs;
- tied embeddings stored once, as ``token_embd``, with no ``output`` tensor (llama.cpp then
  reuses the embedding as the output layer, and Transformers reads ``tie_word_embeddings``);
- 1-D tensors (the RMS norms) in F32; matrices in F16, or Q8_0 where a row splits into
  whole blocks of 32 (else F16, as llama.cpp's converter does).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from helpers.export.errors import ExportError

GGUF_TYPES = ("f16", "q8_0")
SUPPORTED_MODEL_TYPES = ("llama",)


def check_architecture(config) -> None:
    """Raise ExportError unless the config is a plain Llama this writer can convert."""
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ExportError(
            f"architecture {model_type!r} is not supported: GGUF export here covers the Llama "
            "family (model_type 'llama', as SmolLM2, TinyLlama, Llama 2 and 3); convert other "
            "models with llama.cpp's convert_hf_to_gguf.py"
        )
    for field in ("attention_bias", "mlp_bias"):
        if getattr(config, field, False):
            raise ExportError(f"config field {field}=true is not supported by this GGUF writer")
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise ExportError(
            f"rope type {rope_type!r} (config rope_parameters) is not supported by this GGUF "
            "writer; use llama.cpp's convert_hf_to_gguf.py"
        )


def rope_theta(config) -> float:
    """Return the rotary base frequency, wherever this Transformers version keeps it."""
    rope = getattr(config, "rope_parameters", None) or {}
    return float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def head_dim(config) -> int:
    """Return the size of one attention head."""
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def permute_for_llama_cpp(weight: np.ndarray, heads: int) -> np.ndarray:
    """Reorder a Q or K projection's rows from Hugging Face's rotary halves to llama.cpp's pairs.

    Within each head, row ``h * d + i`` (first half, ``i < d/2``) and ``h * d + d/2 + i``
    (second half) form one rotary pair; llama.cpp wants them adjacent: rows ``2i`` and ``2i+1``.
    """
    rows = weight.shape[0]
    pairs = weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:])
    return pairs.swapaxes(1, 2).reshape(weight.shape)


def gguf_tensors(model) -> list[tuple[str, np.ndarray]]:
    """Return the weights as ``(gguf_name, fp32 array)``, permuted and tied as llama.cpp wants."""
    import gguf

    config = model.config
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    state = model.state_dict()
    tied = bool(getattr(config, "tie_word_embeddings", False))
    tensors = []
    for hf_name, tensor in state.items():
        if tied and hf_name == "lm_head.weight":
            continue  # llama.cpp reuses token_embd as the output layer
        name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ExportError(f"tensor {hf_name!r} has no name in gguf's Llama tensor name map")
        array = tensor.detach().to("cpu").float().numpy()
        if hf_name.endswith("self_attn.q_proj.weight"):
            array = permute_for_llama_cpp(array, config.num_attention_heads)
        elif hf_name.endswith("self_attn.k_proj.weight"):
            array = permute_for_llama_cpp(array, config.num_key_value_heads)
        tensors.append((name, array))
    return tensors


def encode(array: np.ndarray, gguf_type: str):
    """Return ``(data, ggml type)`` for one tensor: norms in F32, matrices in F16 or Q8_0."""
    from gguf import GGMLQuantizationType, quants

    if array.ndim == 1:
        return array.astype(np.float32), GGMLQuantizationType.F32
    q8_0 = GGMLQuantizationType.Q8_0
    block = quants.GGML_QUANT_SIZES[q8_0][0]
    if gguf_type == "q8_0" and array.shape[-1] % block == 0:
        return quants.quantize(array, q8_0), q8_0
    return array.astype(np.float16), GGMLQuantizationType.F16


def add_hyperparameters(writer, config, name: str, gguf_type: str) -> None:
    """Write the model's shape and the file's type as the ``llama.*`` and ``general.*`` keys."""
    from gguf import GGML_QUANT_VERSION, LlamaFileType

    writer.add_type("model")
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(head_dim(config))
    writer.add_rope_freq_base(rope_theta(config))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    if head_dim(config) != config.hidden_size // config.num_attention_heads:
        writer.add_key_length(head_dim(config))
        writer.add_value_length(head_dim(config))
    file_type = {"f16": LlamaFileType.MOSTLY_F16, "q8_0": LlamaFileType.MOSTLY_Q8_0}[gguf_type]
    writer.add_file_type(file_type)
    writer.add_quantization_version(GGML_QUANT_VERSION)


def write_gguf(model, add_tokenizer, path: str | Path, gguf_type: str = "f16") -> Path:
    """Write ``model`` to the GGUF file ``path``; ``add_tokenizer(writer)`` adds the tokenizer keys.

    See :func:`helpers.export.vocab.tokenizer_writer` for ``add_tokenizer``.
    """
    import gguf

    if gguf_type not in GGUF_TYPES:
        raise ExportError(f"GGUF type {gguf_type!r} is not one of {', '.join(GGUF_TYPES)}")
    check_architecture(model.config)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    name = Path(str(getattr(model.config, "_name_or_path", "") or "model")).name
    add_hyperparameters(writer, model.config, name, gguf_type)
    add_tokenizer(writer)
    for tensor_name, array in gguf_tensors(model):
        data, ggml_type = encode(array, gguf_type)
        writer.add_tensor(tensor_name, data, raw_dtype=ggml_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(path)
    return path
