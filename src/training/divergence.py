"""The divergence guard: an optimizer step whose loss or gradients are not finite is skipped and counted, and
--max-nonfinite-steps such steps in a row stop the run (exit status 3), all without a device sync of its own.

Each step stays on the device: `isfinite` of the loss and of each gradient's sum (accumulated in float32, so float16
gradients do not overflow; NaN and infinities carry through a sum, which reads each gradient once, cheaper than a
norm) gives a 0-dim flag, all-reduced across ranks so that every rank decides alike; a bad step's gradients are then
zeroed (`masked_fill_`), so no NaN or infinity reaches the weights or AdamW's moments. AdamW still takes its step
with a zero gradient (its moments decay, weight decay and the earlier momentum still apply): an exact skip needs the
host to decide, a sync each step.
Under the grad scaler (`--precision amp`) the scaler skips such steps exactly, with its own per-step check; the guard
counts them (the steps where the scale went down) and reports them, but only the skips no scale cures (a non-finite
loss, or overflow at a scale below 1) count towards the stop: backing off from a too high scale is its normal work.
The counts are read where the loop synchronises anyway: at the logging step and before a step checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from .distributed import World, all_reduce_sum
from .stepper import Stepper

log = logging.getLogger(__name__)

SCALER_TOTAL = "scaler_skipped_steps"
GUARD_TOTALS = "nonfinite_totals"  # the checkpoint key of the counts so far, which a resumed run continues
DIVERGED_EXIT_CODE = 3  # the process's exit status when the guard stops the run (a crash exits with 1)


class TrainingDiverged(SystemExit):
    """The run stopped because its loss or gradients stayed non-finite; the message names the step and the last good
    checkpoint. A SystemExit with status 3: the console shows the logged message, not a traceback."""

    def __init__(self, message: str):
        super().__init__(DIVERGED_EXIT_CODE)
        self.message = message

    def __str__(self) -> str:
        return self.message


class DivergenceGuard:
    """Skips and counts non-finite steps on the device; `read` (at logging) turns the counts into metrics, `check`
    (after each step) stops the run once `max_in_a_row` non-finite steps came in a row.

    `checkpoints()` lists the run's checkpoints newest first, each with `.path` and `.progress.step` (as
    `checkpoint.local_candidates`), to name the last good one; `save_every` is --save-every-n-steps: before such a
    save the counts are read, so a diverged state is never saved."""

    def __init__(
        self,
        *,
        max_in_a_row: int,
        world: World,
        checkpoints: Callable[[], list[Any]] = list,
        save_every: int | None = None,
        totals: dict[str, int] | None = None,
    ) -> None:
        self.max_in_a_row, self.world, self.checkpoints, self.save_every = max_in_a_row, world, checkpoints, save_every
        self.calls = 0  # optimizer steps seen by this process
        self.in_a_row = 0  # non-finite steps in a row, as of the last read
        self.totals = {"nonfinite_steps": 0, SCALER_TOTAL: 0, **(totals or {})}  # a resumed run's carry on
        self._scaled = False  # whether a grad scaler decided the skips (amp)
        self._counts: torch.Tensor | None = None  # (window bad, window scaler skips, current run, call that hit N)

    def _zeros(self, device: torch.device) -> torch.Tensor:
        return torch.tensor([0, 0, 0, -1], dtype=torch.int64, device=device)

    def step(self, stepper: Stepper, loss: torch.Tensor) -> None:
        """`stepper.step()` unless the step is not finite (then the gradients are zeroed first, or, under a grad
        scaler, the scaler skips it); counted on the device."""
        if self._counts is None:
            self._counts = self._zeros(loss.device)
            self._keep_run = torch.tensor([0, 0, 1, 1], dtype=torch.int64, device=loss.device)
        scaler = stepper.scaler
        if scaler is None:
            bad = self._zero_if_not_finite(stepper.optimizer, loss)
            self._count(bad, in_a_row=bad, scaled=False)
            stepper.step()
            return
        self._scaled = True
        before = scaler._scale.clone()  # set by scaler.scale(loss) in backward; update() changes it in place
        stepper.step()
        skipped = (scaler._scale < before).reshape(())
        # backing off from a too high scale is the scaler's normal work (its first steps often do); only skips that
        # no scale cures count towards the stop: a non-finite loss, or overflow with a scale already below 1
        incurable = ~torch.isfinite(loss.detach().float()) | (scaler._scale < 1).reshape(())
        self._count(skipped, in_a_row=skipped & incurable, scaled=True)

    def _zero_if_not_finite(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> torch.Tensor:
        """A 0-dim bool, True when the loss or any gradient is not finite on any rank; then every gradient is 0."""
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        ok = torch.isfinite(loss.detach().float())
        if grads:  # a sum is finite when every element is: NaN and infinities carry through (float32: no fp16 overflow)
            ok = ok & torch.isfinite(torch.stack([g.sum(dtype=torch.float32) for g in grads])).all()
        bad = ~ok
        if self.world.distributed:  # gradients agree after DDP's all-reduce, losses need not: decide together
            bad = all_reduce_sum(bad.to(torch.int64), self.world) > 0
        for grad in grads:
            grad.masked_fill_(bad, 0)
        return bad

    def _count(self, bad: torch.Tensor, *, in_a_row: torch.Tensor, scaled: bool) -> None:
        """Add a step to the device-side counts: `bad` to the window's, `in_a_row` to the run towards the stop."""
        c, bad, in_a_row = self._counts, bad.to(torch.int64), in_a_row.to(torch.int64)
        run = (c[2] + 1) * in_a_row
        stop_at = torch.where((run >= self.max_in_a_row) & (c[3] < 0), self.calls, c[3])
        self._counts = torch.stack([c[0] + bad, c[1] + bad * scaled, run, stop_at])
        self.calls += 1

    def read(self, *, step: int) -> dict[str, int]:
        """The counts since the last read and in total, as metrics, with a warning line when some steps were
        skipped; call it where the device is synchronised anyway (the logging step)."""
        if self._counts is None:
            return {}
        window, scaler_window, run, _ = self._counts.tolist()
        self._counts = self._counts * self._keep_run  # the window starts again; the run and the stop carry on
        self.totals["nonfinite_steps"] += window
        self.totals[SCALER_TOTAL] += scaler_window
        if window:
            what = "the grad scaler skipped" if self._scaled else "skipped (non-finite loss or gradient)"
            log.warning(
                "step %d: %s %d step(s) since the last log line; %d in a row count towards the stop",
                step,
                what,
                window,
                run,
            )
        metrics = {"nonfinite_steps": window, "nonfinite_steps_total": self.totals["nonfinite_steps"]}
        if self._scaled:
            metrics |= {"scaler_skipped_steps": scaler_window, "scaler_skipped_total": self.totals[SCALER_TOTAL]}
        return metrics

    def totals_now(self) -> dict[str, int]:
        """The totals including the steps since the last read, for a checkpoint (reads the device: call it where the
        loop synchronises anyway; the next `read` still reports its window)."""
        if self._counts is None:
            return dict(self.totals)
        window, scaler_window = self._counts[:2].tolist()
        return {"nonfinite_steps": self.totals["nonfinite_steps"] + window,
                SCALER_TOTAL: self.totals[SCALER_TOTAL] + scaler_window}  # fmt: skip

    def check(self, *, step: int, read: bool) -> bool:
        """Stop the run if `max_in_a_row` non-finite steps came in a row; else whether a checkpoint may be written
        now (not right after a non-finite step). Reads the device only at the logging step (`read`: just
        synchronised) or where a step checkpoint is due (the save synchronises anyway)."""
        due = self.save_every is not None and step % self.save_every == 0
        if self._counts is None or not (read or due):
            return True
        self.in_a_row, stop_at = self._counts[2:].tolist()
        if stop_at >= 0:
            stopped = step - (self.calls - 1 - stop_at)  # the step at which the run of bad steps reached the limit
            message = self._message(first=stopped - self.max_in_a_row + 1, stopped=stopped, now=step)
            log.error("%s", message)
            raise TrainingDiverged(message)
        return self.may_save(step=step)

    def may_save(self, *, step: int) -> bool:
        """False (with a warning) right after a non-finite step, as of the last read: its state is not one to resume
        from, and `--resume latest` must find the last good one."""
        if self.in_a_row:
            log.warning("step %d: no checkpoint after a non-finite step (%d in a row)", step, self.in_a_row)
        return not self.in_a_row

    def _message(self, *, first: int, stopped: int, now: int) -> str:
        n = self.max_in_a_row
        if self._scaled:
            what = f"the grad scaler skipped steps {first} to {stopped} ({n} in a row, no scale cured them)"
        else:
            what = f"steps {first} to {stopped} ({n} in a row) had a non-finite loss or gradient and were skipped"
        good = [c for c in self.checkpoints() if 0 <= c.progress.step < first]
        if good:
            advice = f"The last good checkpoint is {good[0].path} (step {good[0].progress.step}): resume from it"
            advice += " (--resume latest picks it)"
        else:
            advice = f"No checkpoint was written before step {first}: start again"
        return (
            f"training diverged: {what}; stopped at step {now} (--max-nonfinite-steps {n}). {advice} with a lower "
            "--lr, a --grad-clip-norm or --precision amp_bf16."
        )
