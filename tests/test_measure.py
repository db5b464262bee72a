"""helpers.measure's one-step memory probe, on the tiny model."""

import torch

from helpers.measure import backward_peak_mb


def test_backward_peak_mb_measures_one_pass_and_leaves_no_gradients(tiny):
    model, _ = tiny
    ids = torch.randint(
        0, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0)
    )
    grown = backward_peak_mb(model, {"input_ids": ids, "labels": ids}, "cpu", bf16=False)
    assert isinstance(grown, float) and grown >= 0
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
