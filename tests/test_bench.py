"""The benchmarks: bench-train (MFU arithmetic, model-shape FLOPs, the seed's pipeline, the
report), bench-generate and bench-codeexec."""

import json
from collections import Counter

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import GPT2Config, LlamaConfig, LlamaForCausalLM

from helpers.bench import flops, generate, pipelines, train
from helpers.bench.codeexec import bench_codeexec, format_codeexec_line
from helpers.chat import IGNORE_INDEX, make_collator, tokenize_dataset
from helpers.data import load_examples
from helpers.model_cache import ModelLoadError
from helpers.models import tiny_model
from helpers.paths import sample_path

SMOLLM2 = LlamaConfig(
    hidden_size=576,
    intermediate_size=1536,
    num_attention_heads=9,
    num_key_value_heads=3,
    num_hidden_layers=30,
    vocab_size=49152,
    tie_word_embeddings=True,
)


# --- MFU and FLOPs ------------------------------------------------------------------------


def test_flops_per_token_is_six_params_for_full_and_four_for_lora():
    assert flops.flops_per_token(1_000, "full") == 6_000
    assert flops.flops_per_token(1_000, "lora") == 4_000
    with pytest.raises(ValueError, match="'qlora'"):
        flops.flops_per_token(1_000, "qlora")


def test_mfu_is_flops_per_token_times_tokens_per_second_over_peak():
    # 6 x 1e6 FLOPs per token x 1000 tokens/s = 6 GFLOP/s, a quarter of a 24 GFLOP/s peak.
    assert flops.mfu(1_000_000, "full", 1_000, 24e9) == pytest.approx(0.25)
    # LoRA: 4 x 1e6 x 1000 = 4 GFLOP/s, half of 8 GFLOP/s.
    assert flops.mfu(1_000_000, "lora", 1_000, 8e9) == pytest.approx(0.5)


def test_linear_flops_agree_with_torchs_flop_counter():
    x, weight = torch.randn(7, 576), torch.randn(192, 576)
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.linear(x, weight)
    assert flops.linear_flops(7, 576, 192) == counter.get_total_flops()


def test_smollm2_linear_shapes_are_the_layers_the_model_has():
    shapes = flops.model_linear_shapes(SMOLLM2)
    assert shapes == {
        (576, 576): 60,  # q_proj, o_proj
        (576, 192): 60,  # k_proj, v_proj
        (576, 1536): 60,  # gate_proj, up_proj
        (1536, 576): 30,  # down_proj
        (576, 49152): 1,  # lm_head
    }
    with torch.device("meta"):
        model = LlamaForCausalLM(SMOLLM2)
    linears = Counter(
        (m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)
    )
    assert shapes == dict(linears)


def test_shapes_of_a_model_that_is_not_llama_style_are_a_clear_error():
    with pytest.raises(ValueError, match="'gpt2' model's config has no intermediate_size"):
        flops.model_linear_shapes(GPT2Config())


def test_model_shape_peak_weights_each_shape_by_its_use():
    calls = []

    def timer(tokens, d_in, d_out, dtype):
        calls.append((tokens, d_in, d_out, dtype))
        return 1.0 if (d_in, d_out) == (2, 3) else 4.0  # seconds per call, scripted

    shapes = {(2, 3): 10, (4, 5): 1}
    peak = flops.model_shape_peak_flops(shapes, tokens=100, dtype=torch.bfloat16, timer=timer)
    # 10 x 2*100*2*3 + 1 x 2*100*4*5 = 12000 + 4000 FLOPs in 10 x 1 s + 1 x 4 s.
    assert peak == pytest.approx(16_000 / 14)
    assert sorted(calls) == [(100, 2, 3, torch.bfloat16), (100, 4, 5, torch.bfloat16)]


def test_time_linear_times_runs_long_enough_to_see_past_scheduler_noise(monkeypatch):
    runs = []

    def time_calls(x, weight, calls):
        runs.append(calls)
        return calls * 0.01  # scripted: 10 ms a call

    monkeypatch.setattr(flops, "_time_calls", time_calls)
    seconds = flops.time_linear(4, 3, 2, torch.float32, repeats=3, min_seconds=0.05)
    assert seconds == pytest.approx(0.01)
    assert runs == [1, 2, 4, 8, 8, 8, 8]  # doubled until a run takes 50 ms, then 3 timed runs


# --- the seed pipeline --------------------------------------------------------------------


@pytest.fixture(scope="module")
def example():
    return load_examples(sample_path("customer_service"))[0]


def test_seed_collator_masks_every_end_of_turn_because_pad_is_eos(tokenizer, example):
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.pad_token_id == end_of_turn
    row = pipelines.seed_dataset([example], tokenizer)[0]
    batch = pipelines.seed_collator(tokenizer)([row])
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    real = batch["attention_mask"][0].bool()
    assert len(ids) == pipelines.SEED_MAX_LENGTH
    turns = len(example["messages"])
    assert int((ids[real] == end_of_turn).sum()) == turns  # one per turn, the reply's included
    assert (labels[ids == end_of_turn] == IGNORE_INDEX).all()  # ... and none is trained
    trained = labels != IGNORE_INDEX
    assert (labels[trained] == ids[trained]).all()
    assert int(trained.sum()) == int(real.sum()) - turns  # every other real token, prompt too


def test_course_collator_trains_the_replys_end_of_turn(tokenizer, example):
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    dataset, _ = tokenize_dataset([example], tokenizer)
    batch = make_collator(tokenizer)([dataset[0]])
    assert int((batch["labels"][0] == end_of_turn).sum()) == 1


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A tiny model saved in bf16 as a model folder, with the embedded tokenizer."""
    model, tokenizer = tiny_model()
    folder = tmp_path_factory.mktemp("tiny")
    model.to(torch.bfloat16).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_seed_loads_on_library_defaults_in_fp32(tiny_folder):
    model, tokenizer = pipelines.load_pipeline_model("seed", tiny_folder)
    assert model.config._attn_implementation == "sdpa"
    assert model.dtype == torch.float32
    assert tokenizer.pad_token is not None


def test_course_loads_eager_on_cpu_or_the_attention_asked_for(tiny_folder):
    eager, _ = pipelines.load_pipeline_model("course", tiny_folder)
    sdpa, _ = pipelines.load_pipeline_model("course", tiny_folder, "sdpa")
    assert eager.config._attn_implementation == "eager"
    assert sdpa.config._attn_implementation == "sdpa"
    with pytest.raises(ValueError, match="'article'"):
        pipelines.load_pipeline_model("article", tiny_folder)


def test_course_keeps_lora_frozen_weights_in_bf16_and_full_fine_tuning_in_fp32(tiny_folder):
    examples = load_examples(sample_path("customer_service"))[:2]
    calls = []

    def record(pipeline, folder, attention, dtype):
        calls.append((pipeline, dtype))
        raise RuntimeError("stop after loading")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipelines, "load_pipeline_model", record)
        for pipeline, method in (("course", "lora"), ("course", "full"), ("seed", "lora")):
            with pytest.raises(RuntimeError, match="stop after loading"):
                steps, batch_size, packing, bf16 = 1, 2, False, True
                pipelines.train_pipeline(
                    pipeline,
                    None,
                    tiny_folder,
                    examples,
                    method,
                    steps,
                    batch_size,
                    packing,
                    bf16,
                    "",
                )
    assert calls == [
        ("course", torch.bfloat16),
        ("course", torch.float32),
        ("seed", torch.float32),
    ]


# --- bench_train's wiring, with scripted pipeline runs and peaks --------------------------

PEAKS = {torch.float32: (100e9, 200e9), torch.bfloat16: (400e9, 800e9)}  # (shape, square)


def _scripted_run(pipeline, attention, folder, *settings):
    tokens_per_s = {None: 1_000.0, "eager": 3_000.0, "sdpa": 2_500.0}[attention]
    return {
        "attention": attention or "sdpa",
        "params": 1_000_000,
        "tokens_per_s": tokens_per_s,
        "tokens_per_step": 300.0,
        "seconds_per_step": 1_000 / tokens_per_s,
        "peak_rss_mb": {None: 2_000.0, "eager": 1_000.0, "sdpa": 900.0}[attention],
    }


def test_bench_train_prepares_first_and_reports_each_pipeline(tiny_folder, monkeypatch):
    events = []

    def prepare(name):
        events.append(("prepare", name))
        return tiny_folder

    def fresh_process(function, pipeline, attention, folder, *settings):
        events.append((pipeline, attention, folder))
        return _scripted_run(pipeline, attention, folder, *settings)

    def peaks(shapes, tokens_per_step, dtype):
        events.append(("peaks", tokens_per_step, dtype))
        assert shapes[(64, 128)] == 4  # the tiny model's own gate and up projections
        return PEAKS[dtype]

    monkeypatch.setattr(train, "resolve_model_path", prepare)
    monkeypatch.setattr(train, "_in_fresh_process", fresh_process)
    monkeypatch.setattr(train, "peaks", peaks)
    examples = load_examples(sample_path("customer_service"))
    figures = train.bench_train("some-model", examples, steps=2, batch_size=3, bf16=True)

    assert events[:4] == [
        ("prepare", "some-model"),
        ("seed", None, tiny_folder),
        ("course", "eager", tiny_folder),
        ("course", "sdpa", tiny_folder),
    ]
    assert ("peaks", 3 * 512, torch.float32) in events  # the seed's padded batch, in fp32
    assert ("peaks", 300.0, torch.bfloat16) in events  # the course's batch, in bf16
    assert figures["examples"] == 6
    assert figures["speedup"] == pytest.approx(3.0)
    assert figures["sdpa_speedup"] == pytest.approx(2.5)
    # LoRA: 4 x 1e6 FLOPs per token.
    assert figures["baseline_mfu"] == pytest.approx(4e6 * 1_000 / 100e9)
    assert figures["baseline_mfu_square_peak"] == pytest.approx(4e6 * 1_000 / 200e9)
    assert figures["mfu"] == pytest.approx(4e6 * 3_000 / 400e9)
    assert figures["mfu_square_peak"] == pytest.approx(4e6 * 3_000 / 800e9)
    assert figures["sdpa_mfu"] == pytest.approx(4e6 * 2_500 / 400e9)
    line = json.dumps(figures)
    assert "\n" not in line
    assert {"speedup", "mfu", "tokens_per_s", "baseline_tokens_per_s"} <= set(json.loads(line))


def test_bench_train_refuses_an_unknown_model_before_starting_a_pipeline(monkeypatch):
    def fresh_process(*args):
        raise AssertionError("a pipeline started")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(train, "_in_fresh_process", fresh_process)
    with pytest.raises(ModelLoadError, match="no-such/model"):
        train.bench_train("no-such/model", [], steps=1, batch_size=1)


# --- the report ---------------------------------------------------------------------------

FIGURES = {
    "model": "HuggingFaceTB/SmolLM2-135M-Instruct-with-a-rather-long-name-for-a-hub-model-id",
    "method": "lora",
    "examples": 24,
    "steps": 6,
    "batch_size": 4,
    "useful_tokens": 4321,
    "trained_tokens_course": 1234,
    "dtype": "bf16",
    "packing": False,
    "params": 134_515_008,
    "flops_per_token": 538_060_032,
    "baseline_attention": "sdpa",
    "baseline_tokens_per_s": 111.0,
    "baseline_seconds_per_step": 9.87,
    "baseline_peak_rss_mb": 2345.0,
    "baseline_mfu": 0.0123,
    "baseline_mfu_square_peak": 0.0098,
    "baseline_peak_gflops": 87.0,
    "baseline_square_peak_gflops": 99.0,
    "attention": "eager",
    "tokens_per_s": 777.0,
    "seconds_per_step": 1.41,
    "peak_rss_mb": 1200.0,
    "speedup": 7.0,
    "mfu": 0.0456,
    "mfu_square_peak": 0.0321,
    "sdpa_attention": "sdpa",
    "sdpa_tokens_per_s": 666.0,
    "sdpa_seconds_per_step": 1.64,
    "sdpa_peak_rss_mb": 1100.0,
    "sdpa_speedup": 6.0,
    "sdpa_mfu": 0.0391,
    "sdpa_mfu_square_peak": 0.0275,
    "peak_gflops": 432.0,
    "square_peak_gflops": 543.0,
}


def test_table_shows_every_figure_within_100_columns():
    table = train.format_table(FIGURES)
    for text in [
        FIGURES["model"],
        "24 examples",
        "6 steps of 4",
        "4321 useful tokens",
        "538 MFLOP",
        *("111", "9.87", "2345", "1.2%", "1.0%", "87", "99"),  # seed
        *("777", "7.00x", "1.41", "7.00x", "1200", "1.95x", "4.6%", "3.2%", "432", "543"),
        *("666", "6.00x", "1.64", "6.02x", "1100", "2.13x", "3.9%", "2.8%"),  # course, sdpa
        "eager",
        "bf16",
        "to 512",
    ]:
        assert text in table, text
    assert max(len(line) for line in table.splitlines()) <= 100
    slow = train.format_table({**FIGURES, "baseline_tokens_per_s": 1.712, "tokens_per_s": 7.4251})
    assert "1.71" in slow and "7.43" in slow  # a slow machine's rates keep their digits
    lines = table.splitlines()
    assert any(line.startswith("MFU vs model-shape peak") for line in lines)
    assert any(line.startswith("MFU vs square peak") for line in lines)


# --- the generation benchmark -------------------------------------------------------------


def test_bench_generate_compares_both_precisions_with_plain_generate():
    figures = generate.bench_generate(
        "tiny-random-llama", prompts=3, max_new_tokens=4, batch_size=2
    )
    assert figures["prompts"] == 3 and figures["baseline_tokens_per_s"] > 0
    for label in ("fp32", "default"):
        assert 0 <= figures[f"{label}_identical"] <= 3
        assert figures[f"{label}_speedup"] == pytest.approx(
            figures[f"{label}_tokens_per_s"] / figures["baseline_tokens_per_s"]
        )
    table = generate.format_generate_table(figures).splitlines()
    assert table[2].startswith("plain generate") and table[3].startswith("evaluate.generate")
    assert all(len(line) <= 100 for line in table)


def test_bench_generate_takes_the_limit_from_the_memory_the_model_is_in(monkeypatch):
    asked = []

    def fake_bandwidth(device, megabytes=512, repeats=5):
        asked.append(torch.device(device))
        return 4.8e12

    monkeypatch.setattr(generate, "read_bandwidth", fake_bandwidth)
    figures = generate.bench_generate(
        "tiny-random-llama", prompts=1, max_new_tokens=2, batch_size=1
    )
    assert asked == [torch.device("cpu")] and figures["device"] == "cpu"
    assert figures["read_gb_per_s"] == 4800
    model, _ = tiny_model()
    assert figures["batch1_limit_tokens_per_s"] == pytest.approx(
        generate.batch1_limit(model, 4.8e12)
    )
    assert "from cpu memory at 4800.0 GB/s" in generate.format_generate_table(figures)


def test_read_bandwidth_reads_the_devices_memory():
    assert generate.read_bandwidth("cpu", megabytes=8, repeats=2) > 1e8


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpus_memory_reads_faster_than_the_hosts():
    gpu = generate.read_bandwidth("cuda", megabytes=1024)
    assert gpu > generate.read_bandwidth("cpu") and gpu > 2e11  # HBM or GDDR: hundreds of GB/s


def test_reply_tokens_count_each_reply_and_its_end_of_turn(tokenizer):
    hello = len(tokenizer("Hello there", add_special_tokens=False)["input_ids"])
    assert generate.reply_tokens(tokenizer, ["Hello there", ""]) == hello + 1 + 1


# --- gpu-check ----------------------------------------------------------------------------


def test_gpu_check_runs_a_tiny_version_on_a_cpu(capsys, monkeypatch):
    from helpers.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert main(["gpu-check", "--json"]) == 0
    out = capsys.readouterr().out.splitlines()
    figures = json.loads(out[-1])
    assert figures["device"] and figures["device_type"] == "cpu" and figures["peak_tflops"] > 0
    runs = figures["runs"]
    assert [(r["shape"], r["run"]) for r in runs[:2]] == [("tiny", "lora"), ("tiny", "full")]
    fp32 = [(r["batch_size"], r["precision"]) for r in runs[2:] if r["precision"] == "fp32"]
    assert fp32 == [(1, "fp32"), (2, "fp32")]  # bf16 runs beside them only where bf16 is native
    for run in runs:
        assert run["tokens_per_s"] > 0 and 0 < run["mfu"] < 1, run
    for run in runs[:2]:
        assert run["tokens_per_step"] > 0 and run["peak_memory_mb"] > 0
        assert run["seconds_per_step"] == pytest.approx(
            sum(run[f"{part}_ms"] for part in ("data", "forward_backward", "optimizer", "other"))
            / 1e3
        )
    assert sum(run.get("default", False) for run in runs) == 2  # one default per batch size
    table = out[:-1]
    assert table[0].startswith("gpu-check on ") and max(len(line) for line in table) <= 100
    from helpers.bench.gpu import format_gpu_table

    assert [line for line in table if line.strip()] == format_gpu_table(figures).splitlines()
    assert not any(line.startswith("{'train_runtime'") for line in out)  # Trainer's print


def test_gpu_check_shapes_are_the_smollm2_models():
    from helpers.bench import gpu_models

    with torch.device("meta"):  # shapes only: no memory, no time
        small = gpu_models.random_model("135m", "meta")
        large = gpu_models.random_model("1.7b", "meta")
    assert sum(p.numel() for p in small.parameters()) == 134_515_008  # the embedded model's
    assert sum(p.numel() for p in large.parameters()) == 1_711_376_384  # the published 1.7B


def test_step_timer_counts_tokens_and_time_after_the_warm_up():
    from helpers.bench.gpu import StepTimer

    timer = StepTimer("cpu")
    timer.marks = [
        {"data": 1.0, "forward_backward": 5.0, "optimizer": 1.0, "other": 1.0, "tokens_seen": 80},
        {"data": 0.1, "forward_backward": 0.6, "optimizer": 0.2, "other": 0.1, "tokens_seen": 180},
        {"data": 0.1, "forward_backward": 0.6, "optimizer": 0.2, "other": 0.1, "tokens_seen": 280},
    ]
    steady = timer.steady(warmup=1)
    assert steady["tokens_per_step"] == 100 and steady["seconds_per_step"] == pytest.approx(1.0)
    assert steady["tokens_per_s"] == pytest.approx(100) and steady["optimizer_ms"] == 200
    with pytest.raises(ValueError, match="warm-up"):
        timer.steady(warmup=3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_matmul_peak_on_this_gpu_is_in_tera_flops():
    from helpers.bench.gpu import matmul_peak

    assert matmul_peak("cuda", torch.bfloat16, 4096) > 1e13


# --- the sandbox benchmark ----------------------------------------------------------------


def test_bench_codeexec_reports_per_call_figures():
    figures = bench_codeexec(n=1, workers=1)
    assert set(figures) >= {"sequential_ms_per_call", "parallel_ms_per_task", "sandboxed"}
    assert "ms per call sequentially" in format_codeexec_line(figures)
