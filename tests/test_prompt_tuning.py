"""Prompt-tuned generation: learned vectors after each row's padding, answers as PEFT's forward."""

import pytest
import torch

from helpers import evaluate, prompt_tuning
from helpers.chat import render_prompt

PROMPTS = ["Hi", "Tell me a much longer story about the shipping policy, please."]
NEW_TOKENS = 8


@pytest.fixture
def prompted(attentive_tiny):
    """The tiny model with sharp attention and 4 random learned vectors, as ``(peft, base, tok)``.

    Sharp attention (conftest's ``attentive_tiny``) makes a pad or a position it
    attends to change its greedy tokens; the random vectors (std 1, the tokens' 0.02) change
    them too. The smallest gap between the two likeliest tokens along these answers (0.003)
    is thousands of times what batching changes in the logits (7e-7).
    """
    from peft import PromptTuningConfig, TaskType, get_peft_model

    model, tokenizer = attentive_tiny
    torch.manual_seed(0)
    config = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=4)
    return get_peft_model(model, config).eval(), model.eval(), tokenizer


def token_ids(tokenizer, prompt: str) -> torch.Tensor:
    """Return the chat-rendered prompt's ids as a batch of one."""
    text = render_prompt(tokenizer, evaluate.as_conversation(prompt))
    return tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids


def greedy_reference(model, ids: torch.Tensor, eos: int) -> list[int]:
    """Greedy new tokens from full forward passes, no cache: the slow, plain definition."""
    new = []
    for _ in range(NEW_TOKENS):
        token = int(model(input_ids=ids).logits[0, -1].argmax())
        new.append(token)
        if token == eos:
            break
        ids = torch.cat([ids, torch.tensor([[token]])], 1)
    return new


def test_the_learned_vectors_come_after_each_rows_padding(prompted):
    model, base, tokenizer = prompted
    ids = torch.tensor([[7, 8, 9], [0, 0, 5]])
    mask = torch.tensor([[1, 1, 1], [0, 0, 1]])
    embeds, layout = prompt_tuning.prompted_inputs(model, ids, mask)
    table, prompt = base.get_input_embeddings().weight, model.get_prompt(1)[0]
    assert layout.tolist() == [[1] * 7, [0, 0, 1, 1, 1, 1, 1]]
    assert torch.equal(embeds[0], torch.cat([prompt, table[[7, 8, 9]]]))
    assert torch.equal(embeds[1], torch.cat([table[[0, 0]], prompt, table[[5]]]))


@torch.no_grad()
def test_prompted_generation_equals_peft_forward_greedy(prompted):
    """The new tokens are PEFT's forward pass's greedy ones, which the learned vectors change."""
    model, base, tokenizer = prompted
    eos = tokenizer.eos_token_id
    for prompt in PROMPTS:
        ids = token_ids(tokenizer, prompt)
        new = prompt_tuning.generate_prompted(
            model,
            ids,
            torch.ones_like(ids),
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=eos,
        )
        expected = greedy_reference(model, ids, eos)
        assert new[0].tolist() == expected
        assert expected != greedy_reference(base, ids, eos)  # the learned vectors are used


def test_prompted_batch_answers_as_each_prompt_alone(prompted):
    """Left padding goes before the learned vectors: a batch answers as each prompt alone."""
    model, base, tokenizer = prompted
    kwargs = {"max_new_tokens": NEW_TOKENS, "bf16": False, "progress": False}
    together = evaluate.generate(model, tokenizer, PROMPTS, batch_size=2, **kwargs)
    alone = [evaluate.generate(model, tokenizer, [p], batch_size=1, **kwargs)[0] for p in PROMPTS]
    assert together == alone and all(together)
    assert together != evaluate.generate(base, tokenizer, PROMPTS, batch_size=2, **kwargs)
    assert tokenizer.padding_side == "right"
