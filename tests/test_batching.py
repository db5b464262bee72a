"""Continuous batching on the tiny random model: the same tokens as one request alone."""

import threading

import pytest
import torch

from helpers.server.batching import Batcher, left_pad, supports_batching
from helpers.server.cores import CoreShare

PROMPTS = ["Hi", "Where is my order? It has been a week.", "Tell me about returns, please."]


def settings(max_tokens: int, **extra) -> dict:
    return {
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "top_p": 1.0,
        "n": 1,
        "stop": [],
        "seed": None,
    } | extra


def prompt_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def alone(model, tokenizer, ids: list[int], max_tokens: int) -> list[int]:
    """Greedy tokens of plain ``model.generate`` on one prompt: the reference."""
    with torch.no_grad():
        output = model.generate(
            torch.tensor([ids]),
            max_new_tokens=max_tokens,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    return output[0, len(ids) :].tolist()


def collect(request, timeout: float = 60.0) -> tuple[dict, dict]:
    """Read a request's items to the end: (text per choice, finish per choice)."""
    texts, finishes = {}, {}
    while (item := request.out.get(timeout=timeout)) is not None:
        kind, index, payload = item
        if kind == "error":
            raise payload
        if kind == "text":
            texts[index] = texts.get(index, "") + payload
        else:
            finishes[index] = payload
    return texts, finishes


class Recording(Batcher):
    """A batcher that records how many rows each forward pass ran."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batch_sizes: list[int] = []

    def _forward(self, input_ids, mask, cache, positions):
        self.batch_sizes.append(input_ids.shape[0])
        return super()._forward(input_ids, mask, cache, positions)


@pytest.fixture
def model_and_tokenizer(tiny):
    model, tokenizer = tiny
    # At its initial scale the tiny model repeats one token whatever it attends to. Sharp,
    # strong attention makes a wrong position or an unmasked pad change the tokens.
    with torch.no_grad():
        for layer in model.model.layers:
            for projection, scale in (("q_proj", 8), ("k_proj", 8), ("v_proj", 10), ("o_proj", 10)):
                getattr(layer.self_attn, projection).weight.mul_(scale)
    return model.eval(), tokenizer


def test_concurrent_requests_get_the_tokens_they_would_get_alone(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    assert supports_batching(model)
    limits = [5, 12, 9]  # each request keeps its own max_tokens
    ids = [prompt_ids(tokenizer, text) for text in PROMPTS]
    expected = [alone(model, tokenizer, i, n) for i, n in zip(ids, limits, strict=True)]
    batcher = Recording(model, tokenizer, CoreShare())
    gate = threading.Event()
    original = batcher._admit
    batcher._admit = lambda rows: (gate.wait(10), original(rows))  # hold until all are queued
    requests = [batcher.submit(i, settings(n)) for i, n in zip(ids, limits, strict=True)]
    gate.set()
    for request, tokens, limit in zip(requests, expected, limits, strict=True):
        texts, finishes = collect(request)
        assert texts[0] == tokenizer.decode(tokens, skip_special_tokens=True)
        assert finishes[0] == ("length", limit)
    assert 3 in batcher.batch_sizes  # they really ran together


def test_a_request_that_arrives_while_others_decode_joins_their_batch(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    first, second = (prompt_ids(tokenizer, text) for text in PROMPTS[1:])
    expected = [alone(model, tokenizer, first, 20), alone(model, tokenizer, second, 6)]
    batcher = Recording(model, tokenizer, CoreShare())
    stepping, second_queued = threading.Event(), threading.Event()
    original_step = batcher._step

    def step():  # the first decode step waits until the second request is queued
        stepping.set()
        second_queued.wait(10)
        original_step()

    batcher._step = step
    early = batcher.submit(first, settings(20))
    assert stepping.wait(30)  # the first request is decoding
    late = batcher.submit(second, settings(6))
    second_queued.set()
    assert collect(early)[0][0] == tokenizer.decode(expected[0], skip_special_tokens=True)
    assert collect(late)[0][0] == tokenizer.decode(expected[1], skip_special_tokens=True)
    # the first's prefill and first step alone, the late one's prefill, then two rows
    assert batcher.batch_sizes[:4] == [1, 1, 1, 2]


def test_stop_string_and_end_of_turn_finish_with_stop(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    ids = prompt_ids(tokenizer, PROMPTS[2])
    full = tokenizer.decode(alone(model, tokenizer, ids, 12), skip_special_tokens=True)
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    batcher = Batcher(model, tokenizer, CoreShare())
    texts, finishes = collect(batcher.submit(ids, settings(12, stop=[stop])))
    assert texts.get(0, "") == full[: full.index(stop)]
    assert finishes[0][0] == "stop" and finishes[0][1] <= 12

    original = batcher._forward

    def end_of_turn_wins(*args):  # scores whose best token is the end-of-turn token
        scores = original(*args).clone()
        scores[:, tokenizer.eos_token_id] = scores.max() + 1
        return scores

    batcher._forward = end_of_turn_wins
    texts, finishes = collect(batcher.submit(ids, settings(12)))
    assert texts == {} and finishes[0] == ("stop", 1)


def test_seeded_sampling_does_not_depend_on_the_batch(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    ids = prompt_ids(tokenizer, PROMPTS[0])
    sampled = settings(10, temperature=1.0, seed=7, n=2)
    batcher = Batcher(model, tokenizer, CoreShare())
    on_its_own = collect(batcher.submit(ids, sampled))[0]
    gate = threading.Event()
    original = batcher._admit
    batcher._admit = lambda rows: (gate.wait(10), original(rows))
    others = [batcher.submit(prompt_ids(tokenizer, t), settings(10)) for t in PROMPTS[1:]]
    crowded = batcher.submit(ids, sampled)
    gate.set()
    assert collect(crowded)[0] == on_its_own and len(on_its_own) == 2
    for request in others:
        collect(request)


def test_a_cancelled_request_leaves_the_batch_and_an_error_fails_only_its_batch(
    model_and_tokenizer,
):
    model, tokenizer = model_and_tokenizer
    ids = prompt_ids(tokenizer, PROMPTS[1])
    batcher = Batcher(model, tokenizer, CoreShare())
    request = batcher.submit(ids, settings(500))
    request.out.get(timeout=60)  # it is decoding
    request.cancel.set()
    while request.out.get(timeout=60) is not None:
        pass  # the loop closes it within a step
    original = batcher._forward
    batcher._forward = lambda *args: (_ for _ in ()).throw(RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        collect(batcher.submit(ids, settings(4)))
    batcher._forward = original  # the next request is served normally
    texts, finishes = collect(batcher.submit(ids, settings(4)))
    assert finishes[0][1] == 4 and not batcher.rows


def test_left_pad_adds_zeros_before():
    padded = left_pad(torch.ones(2, 3), 5, dim=1)
    assert padded.tolist() == [[0, 0, 1, 1, 1]] * 2
