"""The run-time estimate: a probe that leaves the model and the random state as they were,
and a plan whose price follows the work the parameters ask for."""

import pytest
import torch

from helpers import estimate


def test_probe_times_every_kind_of_work_and_leaves_the_model_as_it_was(tiny):
    model, tokenizer = tiny
    model.train()
    model.model.embed_tokens.weight.requires_grad_(False)  # as a frozen part would be
    flags = [p.requires_grad for p in model.parameters()]
    weights = [p.detach().clone() for p in model.parameters()]
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)

    speed = estimate.probe(model, tokenizer, seq_len=16, decode_batch=2, methods=("lora", "full"))

    assert torch.equal(torch.rand(3), expected_next), "the probe must not move the global RNG"
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), weights, strict=True))
    assert model.training
    assert set(speed.train_s) == {"lora", "full"} and speed.decode_batch == 2
    assert min(speed.forward_s, speed.decode_s, speed.optimizer_s, *speed.train_s.values()) > 0
    assert speed.prefill_s >= 0


def test_a_lora_only_probe_skips_the_optimizer(tiny):
    model, tokenizer = tiny
    speed = estimate.probe(model, tokenizer, seq_len=8, decode_batch=1)
    assert set(speed.train_s) == {"lora"} and speed.optimizer_s == 0.0


def test_the_generation_probe_reads_the_prompt_pass_and_one_step_from_one_call(tiny, monkeypatch):
    """A scripted clock: the prompts' pass costs 1 s and each generation step 0.1 s."""
    model, tokenizer = tiny
    now, passes = [0.0], []

    def advance(module, args, kwargs):
        prompt_pass = kwargs["input_ids"].shape[1] > 1
        passes.append(prompt_pass)
        now[0] += 1.0 if prompt_pass else 0.1

    monkeypatch.setattr(estimate.time, "perf_counter", lambda: now[0])
    hook = model.register_forward_pre_hook(advance, with_kwargs=True)
    try:
        prefill_s, step_s = estimate._decode_s(model, tokenizer, 6, batch=3, bf16=False)
    finally:
        hook.remove()
    assert passes == [True] + [False] * 9, "one call: the prompts' pass, then nine steps"
    assert prefill_s == pytest.approx(1.0) and step_s == pytest.approx(0.1)


SPEED = estimate.Speed(
    forward_s=0.001,
    train_s={"lora": 0.002, "full": 0.003},
    decode_s=0.05,
    decode_batch=4,
    optimizer_s=0.5,
    prefill_s=0.2,
)


def test_the_plan_prices_training_by_steps_tokens_method_and_checkpointing():
    plan = estimate.RunPlan(SPEED)
    plan.train("lora", steps=10, tokens_per_step=100)  # 10 x 100 x 0.002
    plan.train("full", steps=10, tokens_per_step=100, method="full")  # + optimizer per step
    plan.train("full, checkpointed", 10, 100, method="full", checkpointing=True)
    assert plan.parts["lora"] == pytest.approx(2.0)
    assert plan.parts["full"] == pytest.approx(10 * (100 * 0.003 + 0.5))
    assert plan.parts["full, checkpointed"] - plan.parts["full"] == pytest.approx(1.0)


def test_the_plan_prices_generation_by_batches_and_scoring_by_tokens():
    plan = estimate.RunPlan(SPEED)
    plan.generate("answers", prompts=8, new_tokens=20, batch=4)  # 2 batches: prompt + 20 steps
    plan.score("validation", tokens=1000)
    plan.score("validation", tokens=1000)  # the same name adds up
    assert plan.parts["answers"] == pytest.approx(2 * (0.2 + 20 * 0.05))
    assert plan.parts["validation"] == pytest.approx(2.0)
    plan.generate("server", prompts=5, new_tokens=20, batch=4, continuous=True)
    assert plan.parts["server"] == pytest.approx(1.25 * (0.2 + 20 * 0.05))  # no 2nd round
    del plan.parts["server"]
    plan.add("so far", 3.0)
    assert plan.total() == pytest.approx(2.4 + 2.0 + 3.0)


def test_long_prompts_price_their_pass_by_tokens():
    """SPEED timed a batch of 4 prompts of 48 tokens in 0.2 s: 1/960 s per prompt token."""
    plan = estimate.RunPlan(SPEED)
    plan.generate("short", prompts=16, new_tokens=10, batch=16, prompt_tokens=48)
    plan.generate("long", prompts=16, new_tokens=10, batch=16, prompt_tokens=192)
    steps = 10 * 0.05 * 2  # batch 16 against the probe's 4: the steps scale by the square root
    assert plan.parts["short"] == pytest.approx(16 * 48 / 960 + steps)
    assert plan.parts["long"] - plan.parts["short"] == pytest.approx(16 * (192 - 48) / 960)


def test_the_report_names_the_largest_parts_and_the_parameters_that_shorten_the_run():
    plan = estimate.RunPlan(SPEED)
    plan.train("training", steps=100, tokens_per_step=300)  # 60 s
    plan.generate("answers", prompts=4, new_tokens=96, batch=4)  # 0.2 + 96 x 0.05 = 5 s
    plan.add("loading", 15)
    text = plan.report(shorten="lower max_steps")
    assert "about 1.3 min (training 60 s, loading 15 s, answers 5 s)" in text
    assert text.endswith("To shorten it: lower max_steps.")


@pytest.mark.parametrize(
    ("max_steps", "epochs", "examples", "batch", "expected"),
    [(12, 3.0, 150, 4, 12), (-1, 1.0, 150, 4, 38), (-1, 2.0, 150, 4, 76), (-1, 0.5, 10, 4, 2)],
)
def test_planned_steps_follow_max_steps_or_epochs(max_steps, epochs, examples, batch, expected):
    assert estimate.planned_steps(max_steps, epochs, examples, batch) == expected
