"""The divergence guard on its own: a non-finite step's gradients are zeroed on the device without a host sync,
finite steps are left bitwise alone, N bad steps in a row stop the run naming the steps and the last good checkpoint,
and under a grad scaler only the skips no scale cures count towards the stop (the run tests are in tests/faults/)."""

from __future__ import annotations

import contextlib
import logging
from types import SimpleNamespace

import pytest
import torch

from open_mclip.precision import Precision
from training.devices import get_device
from training.distributed import World
from training.divergence import DIVERGED_EXIT_CODE, DivergenceGuard, TrainingDiverged
from training.params import parse_args
from training.stepper import Stepper


def _stepper(precision: str = "fp32", *, init_scale: float | None = None) -> tuple[torch.nn.Linear, Stepper]:
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=1e-2)
    stepper = Stepper(optimizer, device=get_device("cpu"), precision=Precision.parse(precision), grad_clip_norm=1.0)
    if init_scale is not None:
        stepper.scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    return layer, stepper


def _loss(layer: torch.nn.Linear, x: torch.Tensor, *, poison: float = 1.0) -> torch.Tensor:
    return (layer(x) ** 2).mean() * poison


HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__")


@contextlib.contextmanager
def host_reads_refused(stepper: Stepper):
    """Inside the block, reading a tensor's value on the host (a device sync) raises, except within `stepper.step`
    (AdamW reads its step count there): what the guard adds around the step reads nothing."""
    originals, in_step = {name: getattr(torch.Tensor, name) for name in HOST_READS}, []

    def refusing(name: str):
        def read(self, *args, **kwargs):
            if not in_step:
                raise AssertionError(f"Tensor.{name} outside the optimizer step: a device sync")
            return originals[name](self, *args, **kwargs)

        return read

    real_step = stepper.step

    def step() -> None:
        in_step.append(True)
        try:
            real_step()
        finally:
            in_step.pop()

    with pytest.MonkeyPatch.context() as patch:
        for name in HOST_READS:
            patch.setattr(torch.Tensor, name, refusing(name))
        patch.setattr(stepper, "step", step)
        yield


def test_a_non_finite_step_is_zeroed_on_the_device_and_finite_steps_are_untouched():
    guarded, guarded_stepper = _stepper()
    plain, plain_stepper = _stepper()
    guard = DivergenceGuard(max_in_a_row=3, world=World())
    x = torch.randn(5, 4)
    with host_reads_refused(guarded_stepper):
        for poison in (1.0, float("nan"), 1.0, float("inf")):
            loss = _loss(guarded, x, poison=poison)
            guarded_stepper.backward(loss)
            if poison != 1.0:
                grads_before = [p.grad.clone() for p in guarded.parameters()]
            guard.step(guarded_stepper, loss.detach())
    assert any(not torch.isfinite(g).all() for g in grads_before)  # the poisoned step had non-finite gradients
    assert all(torch.isfinite(p).all() for p in guarded.parameters())
    for poison in (1.0, 1.0):  # the reference: the same finite steps, with a zero gradient for each bad one
        plain_stepper.backward(_loss(plain, x, poison=poison))
        plain_stepper.step()
        for p in plain.parameters():
            p.grad = torch.zeros_like(p)
        plain_stepper.step()
    for ours, reference in zip(guarded.parameters(), plain.parameters()):
        assert torch.equal(ours, reference)
    assert guard.read(step=4) == {"nonfinite_steps": 2, "nonfinite_steps_total": 2}
    assert guard.read(step=5) == {"nonfinite_steps": 0, "nonfinite_steps_total": 2}


def _candidates(*steps: int) -> list[SimpleNamespace]:
    return [SimpleNamespace(path=f"/run/checkpoints/step_{s}.pt", progress=SimpleNamespace(step=s)) for s in steps]


def test_n_bad_steps_in_a_row_stop_naming_the_steps_and_the_last_good_checkpoint(caplog):
    layer, stepper = _stepper()
    guard = DivergenceGuard(max_in_a_row=3, world=World(), checkpoints=lambda: _candidates(4, 2))
    x = torch.randn(5, 4)
    pattern = [1.0, 1.0, float("nan"), 1.0, 1.0, float("nan"), float("nan"), float("nan")]  # steps 1..8
    with caplog.at_level(logging.WARNING, logger="training.divergence"):
        for step, poison in enumerate(pattern, start=1):
            loss = _loss(layer, x, poison=poison)
            stepper.backward(loss)
            guard.step(stepper, loss.detach())
            if step in (3, 5, 7):
                may_save = guard.check(step=step, read=True)
                assert may_save == (step == 5)  # right after a skipped step no checkpoint is written
                guard.read(step=step)
    with pytest.raises(TrainingDiverged) as stop:
        guard.check(step=8, read=True)
    assert stop.value.code == DIVERGED_EXIT_CODE
    message = str(stop.value)
    assert "steps 6 to 8 (3 in a row)" in message and "stopped at step 8" in message
    assert "/run/checkpoints/step_4.pt (step 4)" in message and "--max-nonfinite-steps 3" in message
    assert "no checkpoint after a non-finite step" in caplog.text


def test_the_scaler_backing_off_is_reported_and_only_incurable_skips_stop(caplog):
    layer, stepper = _stepper("amp", init_scale=2.0**120)  # gradients overflow float32 until the scale comes down
    guard = DivergenceGuard(max_in_a_row=3, world=World())
    x = torch.randn(5, 4) * 100
    with caplog.at_level(logging.WARNING, logger="training.divergence"):
        for step in range(1, 13):
            loss = _loss(layer, x)
            stepper.backward(loss)
            guard.step(stepper, loss.detach())
            assert guard.check(step=step, read=True)  # finite losses: backing off never stops the run
            metrics = guard.read(step=step)
    # 3 skips in a row at a finite loss: a rule counting every skip would stop here at the default of 3
    assert guard.totals["scaler_skipped_steps"] == 3 and metrics["scaler_skipped_total"] == 3
    assert metrics["scaler_skipped_steps"] == 0  # the scale came down and the steps went through
    assert "the grad scaler skipped 1 step(s)" in caplog.text
    for _ in range(13, 16):  # steps 13 to 15, a NaN loss: no scale cures it
        loss = _loss(layer, x, poison=float("nan"))
        stepper.backward(loss)
        guard.step(stepper, loss.detach())
    with pytest.raises(TrainingDiverged, match=r"the grad scaler skipped steps 13 to 15 \(3 in a row"):
        guard.check(step=15, read=True)


def test_the_flag_is_checked_when_parsed(capsys):
    assert parse_args(["--max-nonfinite-steps", "1"]).system.max_nonfinite_steps == 1
    assert parse_args([]).system.max_nonfinite_steps == 3
    for bad in ("0", "-2", "1.5"):
        with pytest.raises(SystemExit):
            parse_args(["--max-nonfinite-steps", bad])
        assert "--max-nonfinite-steps" in capsys.readouterr().err
