"""Learning-rate schedules against open_clip's own functions."""

from __future__ import annotations

import pytest

from training.config import ScheduleConfig
from training.scheduler import lr_factor


def test_schedules_match_open_clip():
    from open_clip_train.scheduler import const_lr, const_lr_cooldown, cosine_lr

    class _Opt:
        param_groups = [{"lr": 0.0}]

    total, warmup = 100, 10
    for name, ref in (
        ("cosine", cosine_lr(_Opt, 0.1, warmup, total)),
        ("const", const_lr(_Opt, 0.1, warmup, total)),
        ("const-cooldown", const_lr_cooldown(_Opt, 0.1, warmup, total, 30, 1.5, 0.01)),
    ):
        cfg = ScheduleConfig(warmup=warmup, lr_scheduler=name, lr_cooldown_power=1.5, lr_cooldown_end=0.01)
        for step in range(total):
            expected = ref(step)
            ours = lr_factor(step, cfg=cfg, total_steps=total, cooldown_steps=30, base_lr=0.1)
            assert ours == pytest.approx(expected, abs=1e-12), (name, step)
