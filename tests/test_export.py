"""helpers.export: merged safetensors, GGUF f16/q8_0 and a Modelfile, proven by round trips.

The fast tests export a tiny random Llama with a random LoRA adapter (so the merge changes
the weights) once per module and read the files back: through Transformers' GGUF loader
(logits and greedy answers), through ``gguf``'s reader (names, types, the Q/K
permutation), and as text (the Modelfile). The slow test does the same on the real embedded
model and compares the GGUF with the one llama.cpp's own converter wrote for SmolLM2.
"""

import json

import numpy as np
import pytest
import torch

from helpers import export as ex
from helpers.cli import main
from helpers.export.gguf_file import permute_for_llama_cpp
from helpers.models import tiny_model


def random_adapter(model, folder, seed=0):
    """Wrap ``model`` with a LoRA adapter whose B matrices are random too, save it; return it."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj"], init_lora_weights=False
    )
    adapted = get_peft_model(model, config)
    adapted.save_pretrained(folder)
    return adapted.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny base folder, a random adapter on it, and that adapter exported with both GGUFs."""
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("export")
    base, tokenizer = tiny_model(seed=0)
    base.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    base_model = AutoModelForCausalLM.from_pretrained(root / "base")  # its path: the adapter's base
    # Seed 2: the adapted model's closest greedy choice is far enough apart (0.08 against
    # q8_0's 0.01) that the same greedy answers follow from the logits, not luck (asserted).
    adapted = random_adapter(base_model, root / "adapter", seed=2)
    result = ex.export(root / "adapter", root / "out")
    return {"root": root, "result": result, "adapted": adapted, "tokenizer": tokenizer}


def gguf_fields(path):
    """Return a GGUF file's reader, its tensors by name and its metadata by key."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    tensors = {tensor.name: tensor for tensor in reader.tensors}
    return reader, tensors, {key: field for key, field in reader.fields.items()}


def test_the_export_writes_merged_safetensors_ggufs_a_modelfile_and_its_figures(exported):
    out = exported["root"] / "out"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"):
        assert (out / "merged" / name).is_file(), name
    for name in ("model-f16.gguf", "model-q8_0.gguf", "Modelfile"):
        assert (out / "gguf" / name).is_file(), name
    figures = json.loads((out / "export.json").read_text())
    assert set(figures["sizes"]) == {"safetensors", "f16", "q8_0"}
    assert figures["sizes"]["safetensors"] > figures["sizes"]["f16"] > figures["sizes"]["q8_0"]
    assert {"merge", "save merged", "write f16", "check f16"} <= set(figures["seconds"])
    assert [trip["gguf_type"] for trip in figures["round_trips"]] == ["f16", "q8_0"]


def test_the_merged_model_is_the_adapter_model(exported):
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(exported["root"] / "out" / "merged").eval()
    ids = torch.tensor([[1, 520, 2250, 314, 29, 2]])
    with torch.no_grad():
        with exported["adapted"].disable_adapter():
            base_logits = exported["adapted"](ids).logits
        adapted_logits = exported["adapted"](ids).logits
        merged_logits = merged(ids).logits
    assert (adapted_logits - base_logits).abs().max() > 1e-3  # the adapter changes the model
    torch.testing.assert_close(merged_logits, adapted_logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("index, gguf_type", [(0, "f16"), (1, "q8_0")])
def test_each_gguf_round_trips_through_transformers(exported, index, gguf_type):
    trip = exported["result"].round_trips[index]
    assert trip.gguf_type == gguf_type
    assert trip.tolerance == pytest.approx(ex.roundtrip.TOLERANCE[gguf_type] * trip.max_abs_logit)
    assert trip.max_abs_logit_diff <= trip.tolerance, trip.summary()
    assert trip.greedy_agree == trip.prompts == len(ex.roundtrip.DEFAULT_PROMPTS)
    assert trip.greedy_margin > 2 * trip.max_abs_logit_diff, trip.summary()
    assert trip.same_tokenization and trip.passed


def test_the_gguf_holds_llama_cpp_names_tied_embeddings_f32_norms_and_the_chat_template(exported):
    from gguf import GGMLQuantizationType as T

    tokenizer = exported["tokenizer"]
    out = exported["root"] / "out" / "gguf"
    for gguf_type, matrix_type in (("f16", T.F16), ("q8_0", T.Q8_0)):
        _, tensors, fields = gguf_fields(out / f"model-{gguf_type}.gguf")
        assert "output.weight" not in tensors  # tied: llama.cpp reuses token_embd
        assert {"token_embd.weight", "output_norm.weight", "blk.1.attn_q.weight"} <= set(tensors)
        assert len(tensors) == 1 + 1 + 2 * 9
        for name, tensor in tensors.items():
            is_norm = name.endswith("norm.weight")
            assert tensor.tensor_type == (T.F32 if is_norm else matrix_type), name
        assert fields["tokenizer.chat_template"].contents() == tokenizer.chat_template
        assert fields["tokenizer.ggml.pre"].contents() == "smollm"
        assert len(fields["tokenizer.ggml.tokens"].data) == len(tokenizer)


def test_q_and_k_rows_are_permuted_as_llama_cpp_expects(exported):
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(exported["root"] / "out" / "merged")
    _, tensors, _ = gguf_fields(exported["root"] / "out" / "gguf" / "model-f16.gguf")
    layer = merged.model.layers[0].self_attn
    for name, weight, heads in (
        ("blk.0.attn_q.weight", layer.q_proj.weight, merged.config.num_attention_heads),
        ("blk.0.attn_k.weight", layer.k_proj.weight, merged.config.num_key_value_heads),
    ):
        expected = permute_for_llama_cpp(weight.detach().numpy(), heads).astype(np.float16)
        stored = np.asarray(tensors[name].data).reshape(expected.shape)
        assert np.array_equal(stored, expected), name
        assert not np.array_equal(stored, weight.detach().numpy().astype(np.float16)), name


def test_the_permutation_interleaves_each_heads_two_rotary_halves():
    rows = np.arange(8).reshape(8, 1)  # two heads of four rows: halves (0, 1 | 2, 3)
    assert permute_for_llama_cpp(rows, heads=2).ravel().tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_q8_0_falls_back_to_f16_where_a_row_is_not_whole_blocks_and_norms_stay_f32():
    from gguf import GGMLQuantizationType as T

    from helpers.export.gguf_file import encode

    rows = np.ones((4, 64), dtype=np.float32)
    assert encode(rows, "q8_0")[1] == T.Q8_0
    assert encode(rows, "f16")[1] == T.F16
    assert encode(np.ones((4, 48), dtype=np.float32), "q8_0")[1] == T.F16  # 48 = 1.5 blocks
    assert encode(np.ones(64, dtype=np.float32), "q8_0")[1] == T.F32


def test_the_modelfile_serves_the_q8_0_file_with_the_chatml_template_and_stops(exported):
    text = (exported["root"] / "out" / "gguf" / "Modelfile").read_text()
    assert text.startswith("FROM ./model-q8_0.gguf\n")
    assert "<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n" in text
    assert (
        'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in text
    )
    assert 'PARAMETER stop "<|im_start|>"' in text and 'PARAMETER stop "<|im_end|>"' in text


def test_llama_cpp_gives_the_same_tokens_and_greedy_answers(exported):
    pytest.importorskip("llama_cpp", reason=ex.roundtrip.LLAMA_CPP_HINT)
    for gguf_type in ("f16", "q8_0"):
        path = exported["root"] / "out" / "gguf" / f"model-{gguf_type}.gguf"
        found = ex.roundtrip.compare_llama_cpp(exported["adapted"], exported["tokenizer"], path)
        assert found["same_tokenization"], found
        assert found["greedy_agree"] == found["prompts"], found


def llama_spm_tokenizer():
    """A small Llama-2-style tokenizer.json: BPE with byte fallback, Metaspace, a few merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from helpers.models import ensure_chat_template

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{byte:02X}>": 3 + byte for byte in range(256)})
    for piece in ["\u2581", *"abcdefghijklmnopqrstuvwxyzCH!?<>|_"]:
        vocab.setdefault(piece, len(vocab))
    merges = [("\u2581", "t"), ("h", "e"), ("\u2581t", "he"), ("i", "s"), ("e", "r")]
    vocab.update({left + right: len(vocab) + rank for rank, (left, right) in enumerate(merges)})
    model = models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True)
    backend = Tokenizer(model)
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    backend.decoder = decoders.Sequence(
        [
            decoders.Replace("\u2581", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    ensure_chat_template(tokenizer)  # the course's ChatML, with </s> ending each turn
    return tokenizer


def test_a_llama_sentencepiece_tokenizer_json_becomes_gguf_tokenizer_metadata(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = llama_spm_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    result = ex.export_model(model, tokenizer, tmp_path, gguf_types=("f16",), merged=False)
    trip = result.round_trips[0]
    assert trip.same_tokenization and trip.max_abs_logit_diff <= trip.tolerance, trip.summary()
    _, tensors, fields = gguf_fields(tmp_path / "gguf" / "model-f16.gguf")
    assert "output.weight" in tensors  # not tied: its own output layer
    assert fields["tokenizer.ggml.model"].contents() == "llama"
    tokens, scores = fields["tokenizer.ggml.tokens"].contents(), fields["tokenizer.ggml.scores"]
    ranked = dict(zip(tokens, scores.contents(), strict=True))
    assert ranked["\u2581t"] > ranked["he"] > ranked["\u2581the"]  # earlier merges score higher
    modelfile = (tmp_path / "gguf" / "Modelfile").read_text()
    assert "{{ .Content }}</s>\n" in modelfile and 'PARAMETER stop "</s>"' in modelfile


def test_a_byte_level_tokenizer_other_than_smollm2s_is_refused(tokenizer):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE({"a": 0, "b": 1, "ab": 2}, [("a", "b")]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel()
    other = PreTrainedTokenizerFast(tokenizer_object=backend)
    with pytest.raises(ex.ExportError, match="convert_hf_to_gguf.py"):
        ex.vocab.tokenizer_writer(other, vocab_size=3)
    with pytest.raises(ex.ExportError, match="has 3 tokens but the model's vocab_size is 4"):
        ex.vocab.tokenizer_writer(other, vocab_size=4)


# --- bad input ------------------------------------------------------------------------------


def test_a_missing_folder_a_file_and_a_folder_without_a_model_are_refused(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ex.ExportError, match="no such folder"):
        ex.export(tmp_path / "missing", tmp_path / "out")
    with pytest.raises(ex.ExportError, match="not a folder"):
        ex.export(tmp_path / "file.txt", tmp_path / "out")
    with pytest.raises(ex.ExportError, match="no config.json.*no adapter_config.json"):
        ex.export(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_another_architecture_is_refused_before_anything_is_written(tmp_path, tokenizer):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    Qwen2ForCausalLM(config).save_pretrained(tmp_path / "qwen")
    tokenizer.save_pretrained(tmp_path / "qwen")
    with pytest.raises(ex.ExportError, match="architecture 'qwen2' is not supported"):
        ex.export(tmp_path / "qwen", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_command_line_says_what_is_wrong_in_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'missing'}: no such folder\n"
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    assert main(["export", str(adapter), "--out", str(tmp_path / "out")]) == 2
    assert "base_model_name_or_path is missing" in capsys.readouterr().err


def test_the_command_line_writes_only_what_gguf_and_merge_name(exported, tmp_path, capsys):
    base = exported["root"] / "base"
    assert (
        main(["export", str(base), "--out", str(tmp_path / "a"), "--gguf", "f16", "--no-check"])
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert (
        set(printed["files"]) == {"f16", "Modelfile"} and not (tmp_path / "a" / "merged").exists()
    )
    assert main(["export", str(base), "--out", str(tmp_path / "b"), "--merge"]) == 0
    assert set(json.loads(capsys.readouterr().out)["files"]) == {"safetensors"}
    assert not (tmp_path / "b" / "gguf").exists()


# --- the real model --------------------------------------------------------------------------


@pytest.mark.slow
def test_the_embedded_model_as_gguf_is_llama_cpps_own_file_at_f16(embedded, tmp_path):
    from gguf import dequantize

    from helpers.model_cache import find_embedded_gguf

    model, tokenizer = embedded
    ex.export_model(model, tokenizer, tmp_path, gguf_types=("f16",), merged=False, check=False)
    _, ours, fields = gguf_fields(tmp_path / "gguf" / "model-f16.gguf")
    _, theirs, their_fields = gguf_fields(find_embedded_gguf())
    assert set(ours) == set(theirs)  # no output.weight in either: tied embeddings
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.eos_token_id"):
        assert fields[key].contents() == their_fields[key].contents(), key
    # The converted model's weights are llama.cpp's Q4_1 values; written back with the
    # Q/K permutation they are those values again, to f16's rounding.
    for name, theirs_tensor in theirs.items():
        their_values = dequantize(theirs_tensor.data, theirs_tensor.tensor_type)
        our_values = np.asarray(ours[name].data, dtype=np.float32).reshape(their_values.shape)
        np.testing.assert_allclose(our_values, their_values, rtol=1e-3, atol=1e-7, err_msg=name)


@pytest.mark.slow
def test_the_embedded_model_with_an_adapter_round_trips(embedded, tmp_path):
    """At f16, the tight tolerance; q8_0 of a merged real model is notebook 03's quick copy's."""
    import copy

    model, tokenizer = embedded
    merged = random_adapter(copy.deepcopy(model), tmp_path / "adapter").merge_and_unload()
    result = ex.export_model(merged, tokenizer, tmp_path / "out", gguf_types=("f16",))
    (trip,) = result.round_trips
    assert trip.passed and trip.greedy_agree == trip.prompts, trip.summary()
    assert trip.max_abs_logit_diff <= trip.tolerance, trip.summary()


def test_a_greedy_flip_fails_the_round_trip_unless_it_is_a_near_tie():
    """Rounding may flip a choice whose top two logits were closer than twice the error."""
    from helpers.export.roundtrip import RoundTrip

    def trip(margin, agree=2, diff=0.1):
        return RoundTrip("m.gguf", "q8_0", 3, diff, 40.0, 4.0, agree, margin, True)

    assert trip(margin=1.0, agree=3).passed  # every answer the same
    assert trip(margin=0.15).passed  # a flip at a gap of 0.15 < 2 x 0.1: rounding
    assert not trip(margin=1.0).passed  # a flip where the choice was clear: broken
    assert not trip(margin=0.15, agree=3, diff=5.0).passed  # logits beyond the tolerance
