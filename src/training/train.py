"""One training epoch: forward, loss, backward and step, logged at a fixed cadence.

Device specifics live in the `Device`, input placement in the `Placement`, the optimizer step in the `Stepper`,
accumulation in `accumulation.py`. Metrics stay tensors between logging steps: `.item()` synchronises GPUs and HPUs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .accumulation import accumulated_backward, model_features
from .data import DataInfo
from .distributed import World
from .divergence import DivergenceGuard
from .logger import MetricsLogger
from .placement import Placement
from .progress import progress_note
from .rng import set_rng_state
from .scheduler import Scheduler
from .stepper import Stepper
from .wrap import unwrap

MAX_LOGIT_SCALE = math.log(100)


@dataclass
class LoopState:
    """Where training stands: optimizer steps done, the epoch, and batches of this epoch already consumed."""

    epoch: int = 0
    step: int = 0
    epoch_step: int = 0
    resume_rng: dict | None = None  # RNG state to restore after fast-forwarding a mid-epoch resume
    history: list = field(default_factory=list)  # the logged training metrics, one dict per logging step
    guard_totals: dict = field(default_factory=dict)  # the divergence guard's counts up to the resumed checkpoint


@dataclass(frozen=True)
class EpochContext:
    """What an epoch needs besides model, data, loss, stepper and scheduler; the same for every epoch."""

    placement: Placement
    accum_freq: int  # batches per optimizer step (contrastive accumulation)
    log_every: int  # optimizer steps between logged metrics
    world: World
    logger: MetricsLogger
    guard: DivergenceGuard | None = None  # skips and counts non-finite steps, stops a diverged run


def forward_loss(model, loss_fn, images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
    """The contrastive loss of one batch."""
    out = model_features(model, images, texts)
    return loss_fn(out["image_features"], out["text_features"], out["logit_scale"], out.get("logit_bias"))


def train_step(
    model,
    micro: list[tuple[torch.Tensor, torch.Tensor]],
    loss_fn,
    stepper: Stepper,
    *,
    placement: Placement,
    guard: DivergenceGuard | None = None,
) -> torch.Tensor:
    """One optimizer step on the batches of `micro` (one, or --accum-freq of them); returns the loss, detached."""
    if len(micro) == 1:
        with placement.autocast():
            loss = forward_loss(model, loss_fn, *micro[0])
        stepper.backward(loss)
        loss = loss.detach()
    else:
        loss = accumulated_backward(model, micro, loss_fn, autocast=placement.autocast, backward=stepper.backward)
    if guard is None:
        stepper.step()
    else:
        guard.step(stepper, loss)  # skips and counts a non-finite step
    with torch.no_grad():
        unwrap(model).logit_scale.clamp_(0, MAX_LOGIT_SCALE)
    return loss


@dataclass
class _Window:
    """What accumulates between two logging steps; the loss stays a tensor (no device sync) until it is logged."""

    start: float = field(default_factory=time.perf_counter)
    loss: torch.Tensor | None = None
    logit_scale: torch.Tensor | None = None  # the log scale the last step's forward passes used
    batches: int = 0
    data_time: float = 0.0

    def add(self, loss: torch.Tensor, batches: int, *, logit_scale: torch.Tensor) -> None:
        self.loss = loss if self.loss is None else self.loss + loss
        self.logit_scale = logit_scale
        self.batches += batches


def _metrics(window: _Window, *, lr: float, batch_size: int, data: DataInfo, ctx: EpochContext) -> dict:
    device = ctx.placement.device
    device.mark_step()  # a lazily built graph must run before its values are read
    device.synchronize()
    elapsed = time.perf_counter() - window.start
    return {
        "loss": (window.loss / max(window.batches // ctx.accum_freq, 1)).item(),
        "lr": lr,
        "logit_scale": window.logit_scale.exp().item(),  # as open_clip_train logs it: the step's, before the update
        "samples_per_s": window.batches * batch_size * ctx.world.world_size / max(elapsed, 1e-9),
        "data_time": window.data_time,
        **data.skipped.metrics(),  # skipped_samples, skipped_<reason>, unreadable_shards: each counted once
        **device.memory_stats(),
    }


def _epoch_note(done: int, *, skip: int, total: int, began: float, batch: int) -> str:
    """The log line's `[samples done/in the epoch (P%), rate, time left]` (open_clip_train's shows the first two), for
    steps of `batch` samples over all ranks; the rate counts the batches trained since `began`, not those skipped."""
    note = progress_note(
        done * batch,
        total * batch,
        elapsed_s=time.perf_counter() - began,
        rate_done=(done - skip) * batch,
        unit="samples",
    )
    return f"[{note} in the epoch]"


def train_one_epoch(
    model,
    data: DataInfo,
    loss_fn,
    stepper: Stepper,
    scheduler: Scheduler,
    *,
    ctx: EpochContext,
    state: LoopState,
    on_step: Callable[[LoopState], None] | None = None,
) -> None:
    """Run the rest of epoch `state.epoch` (a resumed epoch skips the batches it already trained on)."""
    model.train()
    micro: list[tuple[torch.Tensor, torch.Tensor]] = []
    skip, window, tick = state.epoch_step, _Window(), time.perf_counter()
    began = tick  # of the batches trained here (after a resumed epoch's fast-forward): the rate and time left
    for index, (images, texts) in enumerate(data.dataloader):
        if index < skip:  # fast-forward over batches a resumed checkpoint already trained on
            if index == skip - 1 and state.resume_rng is not None:
                set_rng_state(state.resume_rng, ctx.placement.device)  # before the next fetch (augmentations)
                state.resume_rng = None
            window, tick = _Window(), time.perf_counter()
            began = tick
            continue
        micro.append(ctx.placement.batch(images, texts))
        window.data_time += time.perf_counter() - tick
        state.epoch_step = index + 1
        if len(micro) == ctx.accum_freq:
            lr = scheduler(state.step)
            scale = unwrap(model).logit_scale.detach().clone()  # a copy: the step changes the parameter in place
            step_loss = train_step(model, micro, loss_fn, stepper, placement=ctx.placement, guard=ctx.guard)
            window.add(step_loss, len(micro), logit_scale=scale)
            micro, state.step = [], state.step + 1
            logging_step = state.step % ctx.log_every == 0 or state.epoch_step == data.num_batches
            if logging_step:
                metrics = _metrics(window, lr=lr, batch_size=len(images), data=data, ctx=ctx)
                metrics |= ctx.guard.read(step=state.step) if ctx.guard is not None else {}
                samples = len(images) * ctx.world.world_size
                note = _epoch_note(state.epoch_step, skip=skip, total=data.num_batches, began=began, batch=samples)
                ctx.logger.log("train", metrics, step=state.step, epoch=state.epoch, note=note)
                state.history.append({"step": state.step, "epoch": state.epoch, **metrics})
                window = _Window()
            may_save = ctx.guard is None or ctx.guard.check(step=state.step, read=logging_step)
            if on_step is not None and may_save:  # on_step saves: never a diverged state, never after a skipped step
                on_step(state)
        tick = time.perf_counter()
