"""Contrastive gradient accumulation against one big batch."""

from __future__ import annotations

import copy

import pytest
import torch

import open_mclip
from open_mclip.loss import ClipLoss
from training.accumulation import accumulated_backward


def test_accumulation_gives_the_update_of_the_whole_batch():
    """--accum-freq 4 with batch B gives the gradients, and so the update, of one batch of 4B (to 1e-5), but for the
    logit scale: every pass lets its gradient through, as open_clip_train's loop does, so it gets 4 times its own.

    SGD shows the update: Adam's first step is lr * sign(grad), which turns float noise on parameters whose true
    gradient is zero (the key bias of attention) into full-size steps of either sign."""
    torch.manual_seed(0)
    base = open_mclip.CLIP(open_mclip.model_config("mclip-tiny")).train()
    images = torch.randn(16, 3, 32, 32)
    texts = torch.randint(1, 49000, (16, 77))
    texts[:, 9] = 49407
    loss_fn = ClipLoss()

    whole = copy.deepcopy(base)
    opt_whole = torch.optim.SGD(whole.parameters(), lr=0.1)
    loss_whole = loss_fn(*whole(images, texts))
    loss_whole.backward()
    opt_whole.step()

    accum = copy.deepcopy(base)
    opt_accum = torch.optim.SGD(accum.parameters(), lr=0.1)
    micro = [(images[i : i + 4], texts[i : i + 4]) for i in range(0, 16, 4)]
    loss_accum = accumulated_backward(
        accum, micro, loss_fn, autocast=lambda: torch.autocast("cpu", enabled=False), backward=torch.Tensor.backward
    )
    grads = {n: p.grad.clone() for n, p in accum.named_parameters()}
    opt_accum.step()

    assert loss_accum.item() == pytest.approx(loss_whole.item(), abs=1e-5)
    passes = {"logit_scale": len(micro)}  # open_clip_train's accumulation: the scale's gradient once per pass
    for name, param in whole.named_parameters():
        torch.testing.assert_close(grads[name], passes.get(name, 1) * param.grad, atol=1e-5, rtol=1e-4, msg=name)
    for (name, a), b in zip(whole.named_parameters(), accum.parameters()):
        if name not in passes:
            torch.testing.assert_close(b, a, atol=1e-5, rtol=0, msg=name)
