"""The CPU device's fused AdamW: the trainer gets torch's fused kernel, and it makes the same update as the
per-parameter loop open_clip_train runs (same hyperparameters, weight decay groups and steps)."""

from __future__ import annotations

import torch

from training.devices import Device, MpsDevice


def _params(seed: int) -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(seed)
    shapes = [(64, 32), (32,), (7, 3, 5), (1,)]
    return [torch.nn.Parameter(torch.randn(*shape, generator=generator)) for shape in shapes]


def _run(optimizer_of, steps: int = 5) -> list[torch.Tensor]:
    params = _params(0)
    groups = [{"params": params[:2], "weight_decay": 0.2}, {"params": params[2:], "weight_decay": 0.0}]
    optimizer = optimizer_of(groups)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=generator)
        optimizer.step()
    return [p.detach().clone() for p in params]


def test_cpu_device_builds_fused_adamw_with_the_loops_update():
    hp = {"lr": 1e-2, "betas": (0.9, 0.98), "eps": 1e-6}
    optimizer = Device().optimizer([torch.nn.Parameter(torch.zeros(2))], **hp)
    assert optimizer.defaults["fused"] is True
    assert MpsDevice.fused_adamw is False and MpsDevice().optimizer([torch.nn.Parameter(torch.zeros(2))], **hp)
    fused = _run(lambda groups: Device().optimizer(groups, **hp))
    loop = _run(lambda groups: torch.optim.AdamW(groups, **hp, foreach=False))  # open_clip_train's AdamW on the CPU
    start = _params(0)
    for got, expected, before in zip(fused, loop, start):
        assert (expected - before).abs().max() > 1e-3  # the steps moved the weights
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)
