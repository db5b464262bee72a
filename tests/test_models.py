"""The embedded model: conversion, loading, determinism, clear errors, device and precision."""

import contextlib
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from helpers import model_cache, models

PROMPT = [{"role": "user", "content": "What is the capital of France?"}]


def _greedy(model, tokenizer, new_tokens=16):
    batch = tokenizer.apply_chat_template(
        PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=new_tokens, do_sample=False)
    return out[0, batch["input_ids"].shape[1] :]


def test_converted_folder_is_a_normal_hugging_face_model():
    folder = model_cache.prepare_embedded_model()
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    assert "quantization_config" not in (folder / "config.json").read_text()


def test_embedded_model_has_the_published_size(embedded):
    model, tokenizer = embedded
    trainable, total = models.count_parameters(model)
    assert total == 134_515_008  # SmolLM2-135M: 30 layers, hidden 576, tied embeddings
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token_id == 2
    assert "<|im_start|>" in tokenizer.chat_template


def test_greedy_generation_is_deterministic_across_two_loads(embedded):
    first = _greedy(*embedded)
    second_model, second_tokenizer = models.load_base_model(device="cpu")
    second = _greedy(second_model, second_tokenizer)
    assert torch.equal(first, second)
    # The conversion kept the model's knowledge: it still answers a basic fact.
    assert "Paris" in embedded[1].decode(first)


@pytest.mark.slow
def test_conversion_matches_the_gguf_model_logits(embedded):
    from transformers import AutoModelForCausalLM

    gguf = model_cache.find_embedded_gguf()
    reference = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32, attn_implementation="eager"
    )
    ids = embedded[1]("Fine-tuning adapts a model", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(reference(ids).logits, embedded[0](ids).logits)


def test_unreachable_hub_id_fails_with_one_clear_message(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(model_cache.ModelLoadError) as caught:
        models.load_base_model("finetune-course/no-such-model")
    message = str(caught.value)
    assert "finetune-course/no-such-model" in message and models.EMBEDDED_MODEL in message
    assert caught.value.__cause__ is None


def test_local_folder_loads_without_the_hub(tmp_path, tiny):
    model, tokenizer = tiny
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, loaded_tokenizer = models.load_base_model(str(tmp_path), device="cpu")
    assert models.count_parameters(loaded) == models.count_parameters(model)
    assert loaded_tokenizer.chat_template == tokenizer.chat_template


def test_a_loaded_model_uses_no_hub_kernels_unless_the_user_opts_in(tmp_path, tiny, monkeypatch):
    # On a GPU a kernelized Llama fetches kernels-community/rotary at its first training
    # step, which fails offline; on a CPU the same switch shows in ``use_kernels``.
    model, tokenizer = tiny
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, _ = models.load_base_model(str(tmp_path), device="cpu")
    assert loaded.use_kernels is False
    monkeypatch.setenv("USE_HUB_KERNELS", "yes")  # the user's choice wins
    assert models.load_base_model(str(tmp_path), device="cpu")[0].use_kernels is True


def test_hub_kernels_default_off_only_where_the_user_did_not_choose():
    from transformers.integrations.hub_kernels import _kernels_enabled

    environ = {}
    assert models.keep_hub_kernels_off(environ) is False and environ == {"USE_HUB_KERNELS": "NO"}
    environ = {"USE_HUB_KERNELS": "1"}
    assert models.keep_hub_kernels_off(environ) is True and environ == {"USE_HUB_KERNELS": "1"}
    # Our reading of the variable is Transformers' own.
    for value in ("NO", "0", "", "off", "YES", "yes", "1", "on", "True", "y"):
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("USE_HUB_KERNELS", value)
            patch.setattr(models.importlib.util, "find_spec", lambda name: object())
            assert models.hub_kernels()[0] is _kernels_enabled(), value


def test_importing_the_helpers_turns_hub_kernels_off_in_a_fresh_process(monkeypatch):
    code = (
        "import os, helpers.models as m; from transformers.integrations import hub_kernels as h;"
        "print(os.environ['USE_HUB_KERNELS'], h._kernels_enabled(), m.hub_kernels()[1])"
    )
    monkeypatch.delenv("USE_HUB_KERNELS", raising=False)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.startswith("NO False") and "the course's default" in run.stdout
    monkeypatch.setenv("USE_HUB_KERNELS", "YES")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.startswith("YES True") and "set by you" in run.stdout


def test_info_says_whether_hub_kernels_are_on(capsys, monkeypatch):
    from helpers.cli import main

    monkeypatch.setattr(models, "HUB_KERNELS_CHOSEN_BY_USER", False)
    monkeypatch.setenv("USE_HUB_KERNELS", "NO")
    assert main(["info"]) == 0
    assert "hub kernels   off: USE_HUB_KERNELS=NO, the course's default" in capsys.readouterr().out
    monkeypatch.setenv("USE_HUB_KERNELS", "YES")
    assert main(["info"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("hub kernels"))
    assert line.startswith("hub kernels   on: USE_HUB_KERNELS=YES, set by you")


def test_tiny_model_shares_the_embedded_tokenizer(tiny, tokenizer):
    model, tiny_tokenizer = tiny
    assert tiny_tokenizer.get_vocab() == tokenizer.get_vocab()
    assert models.count_parameters(model)[1] < 5_000_000


def test_tiny_model_is_reproducible_from_its_seed():
    a, _ = models.tiny_model(seed=3)
    b, _ = models.tiny_model(seed=3)
    c, _ = models.tiny_model(seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)


def test_precision_choice_can_be_forced(monkeypatch):
    assert models.use_bf16("cpu", requested=False) is False
    assert models.use_bf16("cpu", requested=True) is True
    monkeypatch.setattr(models, "cpu_has_bf16", lambda: False)
    assert models.use_bf16("cpu") is False
    assert isinstance(models.autocast("cpu", bf16=False), contextlib.nullcontext)
    with models.autocast("cpu", bf16=True):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16


def test_lora_stores_frozen_weights_in_bf16_only_where_bf16_is_fast(monkeypatch):
    monkeypatch.setattr(models, "cpu_has_bf16", lambda: True)
    assert models.frozen_weights_dtype("lora", "cpu") == torch.bfloat16
    assert models.frozen_weights_dtype("lora", "cpu", bf16=False) == torch.float32
    assert models.frozen_weights_dtype("full", "cpu") == torch.float32  # the optimizer's copy
    monkeypatch.setattr(models, "cpu_has_bf16", lambda: False)
    assert models.frozen_weights_dtype("lora", "cpu") == torch.float32
    with pytest.raises(ValueError, match="'qlora'"):
        models.frozen_weights_dtype("qlora", "cpu")


def test_pick_device_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert models.pick_device() == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert models.pick_device() == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert models.pick_device() == "cpu"


def test_pick_device_gives_each_torchrun_process_its_own_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert models.pick_device() == "cuda:1"
    monkeypatch.delenv("LOCAL_RANK")
    assert models.pick_device() == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setenv("LOCAL_RANK", "1")  # torchrun on CPUs: still the CPU
    assert models.pick_device() == "cpu"


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        ("cpu", "eager"),
        ("cuda", None),
        ("cuda:1", None),
        ("mps", None),
        (torch.device("cpu"), "eager"),
    ],
)
def test_attention_is_eager_on_cpu_and_the_library_default_elsewhere(device, expected):
    assert models.attention_implementation(device) == expected


def test_bf16_choice_knows_a_numbered_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert models.use_bf16("cuda:1") is True and models.use_bf16("cuda") is True
    assert models.use_bf16("mps") is False
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    assert models.use_bf16("cuda:1") is False


def _fake_gpu(monkeypatch, major: int) -> None:
    """Make torch see one CUDA GPU of compute capability ``major``.x that can emulate bf16."""
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    properties = SimpleNamespace(major=major, minor=5, name="fake GPU")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: properties)
    monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: True)


def test_a_gpu_that_only_emulates_bf16_gets_fp16_autocast_on_fp32_weights(monkeypatch):
    _fake_gpu(monkeypatch, major=7)  # a T4 (Colab, Kaggle): capability 7.5
    assert torch.cuda.is_bf16_supported() is True  # torch's default counts emulation
    assert models.use_bf16("cuda") is False
    assert models.mixed_precision("cuda") == "fp16"
    assert models.mixed_precision("cuda:0", bf16=False) == "fp16"  # no bf16: still fp16
    assert models.autocast("cuda").fast_dtype == torch.float16
    # fp32 weights: Trainer's gradient scaler refuses fp16 trainable weights
    assert models.frozen_weights_dtype("lora", "cuda") == torch.float32
    assert models.frozen_weights_dtype("full", "cuda") == torch.float32
    assert models.use_bf16("cuda", requested=True) is True  # asked for, it is still given
    assert models.mixed_precision("cuda", bf16=True) == "bf16"


def test_a_gpu_with_bf16_in_hardware_gets_bf16(monkeypatch):
    _fake_gpu(monkeypatch, major=8)  # Ampere and later: A100, L4, H100, H200
    assert models.use_bf16("cuda:0") is True
    assert models.mixed_precision("cuda:0") == "bf16"
    assert models.mixed_precision("cuda", bf16=False) is None  # turned off: fp32, not fp16
    assert models.frozen_weights_dtype("lora", "cuda") == torch.bfloat16


@pytest.mark.parametrize("has_bf16", [True, False])
def test_a_cpus_mixed_precision_is_bf16_or_nothing(monkeypatch, has_bf16):
    monkeypatch.setattr(models, "cpu_has_bf16", lambda: has_bf16)
    expected = "bf16" if has_bf16 else None
    assert models.mixed_precision("cpu") == expected
    assert models.mixed_precision("cpu", bf16=False) is None
    assert models.mixed_precision("mps") is None
    context = models.autocast("cpu")
    if has_bf16:
        assert context.fast_dtype == torch.bfloat16
    else:
        assert isinstance(context, contextlib.nullcontext)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_this_gpu_gets_bf16_exactly_when_its_hardware_has_it():
    major = torch.cuda.get_device_properties(0).major
    assert models.use_bf16("cuda") is (major >= 8)


class _FakeModel:
    def to(self, device):
        self.device = device
        return self

    def eval(self):
        return self


@pytest.mark.parametrize(
    ("device", "local_rank", "placed", "attention"),
    [("cpu", None, "cpu", "eager"), ("cuda:1", None, "cuda:1", None), (None, "1", "cuda:1", None)],
)
def test_load_base_model_follows_the_device(monkeypatch, device, local_rank, placed, attention):
    calls = []
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr(models, "load_tokenizer", lambda name: "tokenizer")
    monkeypatch.setattr(
        models, "_from_pretrained", lambda loader, name, **kw: calls.append(kw) or _FakeModel()
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    if local_rank:
        monkeypatch.setenv("LOCAL_RANK", local_rank)
    model, _ = models.load_base_model("org/model", device=device)
    assert model.device == placed and calls[0]["attn_implementation"] == attention
    models.load_base_model("org/model", device=device, attn_implementation="sdpa")
    assert calls[1]["attn_implementation"] == "sdpa"  # an explicit choice wins
