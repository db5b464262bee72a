"""Generation for prompt-tuned PEFT models: learned vectors as the base model's input embeddings.

PEFT's own ``generate`` for prompt tuning drops the position ids that Transformers computes
from the attention mask (PEFT 0.21, Transformers 5.25): a padded prompt's positions count its
pads, and even an unpadded prompt's greedy answer parts from PEFT's forward pass's within a few
tokens; it also runs about 8 times slower per token. Here the frozen base model generates
from ``inputs_embeds`` laid out per row as pads, learned vectors, prompt tokens, so the
positions Transformers counts from the attention mask start at the first learned vector, as
in PEFT's forward pass on an unpadded prompt.
"""

from __future__ import annotations

import torch

# The prompt-learning methods whose learned prompt is a block of input embeddings
# (prefix tuning's is a key-value cache instead).
EMBEDDED_PROMPTS = ("PROMPT_TUNING", "P_TUNING")


def prompts_as_embeddings(model) -> bool:
    """Tell whether ``model`` is a PEFT model whose learned prompt is input embeddings."""
    config = getattr(model, "active_peft_config", None)
    return getattr(config, "peft_type", None) in EMBEDDED_PROMPTS


def prompted_inputs(model, input_ids, attention_mask) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(inputs_embeds, attention_mask)`` for left-padded ids: pads, prompt, tokens."""
    base = model.get_base_model()
    embeds = base.get_input_embeddings()(input_ids)
    prompt = model.get_prompt(batch_size=len(input_ids)).to(embeds.dtype)
    embeds = torch.cat([prompt, embeds], 1)
    mask = torch.cat([attention_mask.new_ones(prompt.shape[:2]), attention_mask], 1)
    # A stable sort on the mask moves each row's pads to the front and keeps the rest in order.
    order = torch.argsort(mask, dim=1, stable=True)
    return embeds.gather(1, order[..., None].expand_as(embeds)), mask.gather(1, order)


def generate_prompted(model, input_ids, attention_mask, **kwargs) -> torch.Tensor:
    """Generate with the base model from the prompted embeddings; return only the new tokens."""
    embeds, mask = prompted_inputs(model, input_ids, attention_mask)
    # From inputs_embeds alone, a decoder-only model's generate returns just the new tokens.
    return model.get_base_model().generate(inputs_embeds=embeds, attention_mask=mask, **kwargs)
