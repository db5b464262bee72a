"""Prove a GGUF export: load it back through Transformers and compare with the merged model.

The same prompts, chat template applied, go through both models: the largest absolute
difference of their logits (every position of the prompt and the merged model's greedy
answer, every token) and whether greedy decoding gives the same tokens. Where the merged
model's closest greedy choice (the gap between its top two logits) is more than twice that
difference, the same answers follow from the logits; where it is not (the largest difference
is usually on a token no one would pick), the agreement is measured, not implied.

The tolerances are stated here, relative to the size of the logits: f16 rounds each weight
to 11 significant bits, q8_0 to 8 bits per block of 32 (and its tolerance is looser).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

# Largest |logit difference| accepted, as a fraction of the largest |logit| of the merged model.
TOLERANCE = {"f16": 0.01, "q8_0": 0.1}

DEFAULT_PROMPTS = (
    "Hello! Can you help me with my order?",
    "What is the capital of France?",
    "Write one sentence about the sea.",
)


@dataclass
class RoundTrip:
    """How closely a GGUF file, loaded back, reproduces the merged model."""

    gguf_file: str
    gguf_type: str
    prompts: int
    max_abs_logit_diff: float
    max_abs_logit: float
    tolerance: float
    greedy_agree: int
    greedy_margin: float  # smallest gap between the merged model's top two greedy choices
    same_tokenization: bool
    answers: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when the logits are within tolerance and the greedy answers agree.

        A greedy answer may differ only at a near tie: where the merged model's top two
        choices were closer than twice the largest logit difference measured, a flip is
        the rounding of the weights, not a broken conversion.
        """
        near_tie = self.greedy_margin <= 2 * self.max_abs_logit_diff
        return (
            self.max_abs_logit_diff <= self.tolerance
            and (self.greedy_agree == self.prompts or near_tie)
            and self.same_tokenization
        )

    def summary(self) -> str:
        """One line a notebook or the command line prints."""
        verdict = "passed" if self.passed else "FAILED"
        return (
            f"{Path(self.gguf_file).name}: max |logit difference| {self.max_abs_logit_diff:.4g} "
            f"(tolerance {self.tolerance:.3g}, logits up to {self.max_abs_logit:.3g}); "
            f"greedy answers the same for {self.greedy_agree}/{self.prompts} prompts "
            f"(closest choice {self.greedy_margin:.3g} apart); "
            f"tokenizer from the GGUF {'agrees' if self.same_tokenization else 'DIFFERS'}: "
            f"{verdict}"
        )

    def as_dict(self) -> dict:
        """The figures as plain data (for metrics.json)."""
        return {**asdict(self), "passed": self.passed}


def load_gguf(path: str | Path):
    """Load ``(model, tokenizer)`` from a GGUF file through Transformers, dequantised to fp32."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from helpers.models import quiet_progress_bars

    path = Path(path)
    with quiet_progress_bars():
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, dtype=torch.float32
        )
    return model.eval(), tokenizer


def chat_ids(tokenizer, prompt: str) -> torch.Tensor:
    """Return the token ids of one user prompt with the chat template and generation prompt."""
    messages = [{"role": "user", "content": prompt}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]


@torch.no_grad()
def greedy(model, ids: torch.Tensor, max_new_tokens: int, eos: int | None) -> list[int]:
    """Return the greedy continuation of ``ids`` (new tokens only)."""
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    return out[0, ids.shape[1] :].tolist()


def decision_margin(logits: torch.Tensor) -> float:
    """Return the smallest gap between the top two logits over the given positions."""
    top = logits.topk(2, dim=-1).values
    return (top[..., 0] - top[..., 1]).min().item()


def compare(
    model,
    tokenizer,
    gguf_path: str | Path,
    gguf_type: str,
    prompts=DEFAULT_PROMPTS,
    max_new_tokens: int = 20,
) -> RoundTrip:
    """Compare a GGUF file, loaded back through Transformers, with the merged ``model``.

    The logits are compared over each prompt and the merged model's greedy answer to it.
    """
    gguf_model, gguf_tokenizer = load_gguf(gguf_path)
    model = model.float().eval()
    eos = tokenizer.eos_token_id
    worst = largest = 0.0
    margin = float("inf")
    agree, same_tokens, answers = 0, True, []
    for prompt in prompts:
        ids = chat_ids(tokenizer, prompt)
        same_tokens &= torch.equal(ids, chat_ids(gguf_tokenizer, prompt))
        merged_answer = greedy(model, ids, max_new_tokens, eos)
        gguf_answer = greedy(gguf_model, ids, max_new_tokens, eos)
        agree += merged_answer == gguf_answer
        full = torch.cat([ids, torch.tensor([merged_answer], dtype=ids.dtype)], dim=1)
        with torch.no_grad():
            expected, got = model(full).logits, gguf_model(full).logits
        worst = max(worst, (expected - got).abs().max().item())
        largest = max(largest, expected.abs().max().item())
        margin = min(margin, decision_margin(expected[0, ids.shape[1] - 1 : -1]))
        answers.append(
            {
                "prompt": prompt,
                "merged": tokenizer.decode(merged_answer),
                "gguf": tokenizer.decode(gguf_answer),
            }
        )
    return RoundTrip(
        gguf_file=str(gguf_path),
        gguf_type=gguf_type,
        prompts=len(prompts),
        max_abs_logit_diff=worst,
        max_abs_logit=largest,
        tolerance=TOLERANCE[gguf_type] * largest,
        greedy_agree=agree,
        greedy_margin=margin,
        same_tokenization=bool(same_tokens),
        answers=answers,
    )


LLAMA_CPP_HINT = (
    "llama-cpp-python is not installed; it compiles llama.cpp from source (a few minutes, "
    "needs a C++ compiler and CMake): pip install llama-cpp-python"
)


def llama_cpp_greedy(llm, ids: list[int], max_new_tokens: int, eos: int | None) -> list[int]:
    """Return llama.cpp's greedy continuation of ``ids`` (temperature 0, no penalties)."""
    answer = []
    for token in llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0):
        if token == eos or len(answer) == max_new_tokens:
            break
        answer.append(token)
    return answer


def compare_llama_cpp(
    model, tokenizer, gguf_path: str | Path, prompts=DEFAULT_PROMPTS, max_new_tokens: int = 20
) -> dict:
    """Load a GGUF file with llama-cpp-python; compare its tokens and greedy answers with ``model``.

    Raises ModuleNotFoundError with the install hint where llama-cpp-python is missing.
    """
    try:
        from llama_cpp import Llama
    except ModuleNotFoundError:
        raise ModuleNotFoundError(LLAMA_CPP_HINT) from None
    llm = Llama(model_path=str(gguf_path), n_ctx=512, verbose=False)
    eos = tokenizer.eos_token_id
    agree, same_tokens, answers = 0, True, []
    for prompt in prompts:
        ids = chat_ids(tokenizer, prompt)
        text = tokenizer.decode(ids[0])
        same_tokens &= llm.tokenize(text.encode(), add_bos=False, special=True) == ids[0].tolist()
        expected = greedy(model, ids, max_new_tokens, eos)
        got = llama_cpp_greedy(llm, ids[0].tolist(), max_new_tokens, eos)
        agree += expected == got
        answers.append(
            {
                "prompt": prompt,
                "merged": tokenizer.decode(expected),
                "llama.cpp": tokenizer.decode(got),
            }
        )
    return {
        "prompts": len(prompts),
        "greedy_agree": agree,
        "same_tokenization": same_tokens,
        "answers": answers,
    }
