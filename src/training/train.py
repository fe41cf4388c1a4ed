"""One training epoch: forward, loss, backward and step, logged at a fixed cadence.

Device specifics live in the `Device`, the optimizer step in the `Stepper`, accumulation in `accumulation.py`.
Metrics stay tensors between logging steps: `.item()` synchronises GPUs and HPUs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from .accumulation import accumulated_backward
from .checkpoint import set_rng_state, unwrap

MAX_LOGIT_SCALE = math.log(100)


@dataclass
class LoopState:
    """Where training stands: optimizer steps done, the epoch, and batches of this epoch already consumed."""

    epoch: int = 0
    step: int = 0
    epoch_step: int = 0
    resume_rng: dict | None = None  # RNG state to restore after fast-forwarding a mid-epoch resume
    history: list = field(default_factory=list)


def _forward_loss(model, loss_fn, images, texts):
    out = model(images, texts)
    if isinstance(out, dict):
        return loss_fn(out["image_features"], out["text_features"], out["logit_scale"], out.get("logit_bias"))
    return loss_fn(*out)


def train_one_epoch(model, loader, loss_fn, stepper, scheduler, *, ctx, state: LoopState, on_step=None) -> None:
    """Run the rest of epoch `state.epoch`; `ctx` bundles device, precision, accum_freq, logger, log cadence."""
    device, accum = ctx.device, ctx.accum_freq
    model.train()
    micro: list[tuple[torch.Tensor, torch.Tensor]] = []
    skip = state.epoch_step
    tick = window_start = time.perf_counter()
    data_time, running_loss, logged_batches = 0.0, None, 0
    for index, (images, texts) in enumerate(loader):
        if index < skip:  # fast-forward over batches a resumed checkpoint already trained on
            if index == skip - 1 and state.resume_rng is not None:
                set_rng_state(state.resume_rng, device)  # before the next fetch (augmentation randomness)
                state.resume_rng = None
            tick = window_start = time.perf_counter()
            continue
        images = images.to(device.torch_device, dtype=ctx.precision.input_dtype, non_blocking=True)
        texts = texts.to(device.torch_device, non_blocking=True)
        data_time += time.perf_counter() - tick
        micro.append((images, texts))
        state.epoch_step = index + 1
        if len(micro) < accum:
            tick = time.perf_counter()
            continue
        lr = scheduler(state.step)
        if accum == 1:
            with ctx.autocast():
                loss = _forward_loss(model, loss_fn, images, texts)
            stepper.backward(loss)
            loss = loss.detach()
        else:
            loss = accumulated_backward(model, micro, loss_fn, autocast=ctx.autocast, backward=stepper.backward)
        micro = []
        stepper.step()
        with torch.no_grad():
            unwrap(model).logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        state.step += 1
        running_loss = loss if running_loss is None else running_loss + loss
        logged_batches += accum
        if state.step % ctx.log_every == 0 or state.epoch_step == ctx.batches_per_epoch:
            device.mark_step()  # a lazily built graph must run before its values are read
            device.synchronize()
            elapsed = time.perf_counter() - window_start
            metrics = {
                "loss": (running_loss / max(logged_batches // accum, 1)).item(),
                "lr": lr,
                "logit_scale": unwrap(model).logit_scale.exp().item(),
                "samples_per_s": logged_batches * images.shape[0] * ctx.world_size / max(elapsed, 1e-9),
                "data_time": data_time,
                "skipped_samples": ctx.skipped(),
                **device.memory_stats(),
            }
            ctx.logger.log("train", metrics, step=state.step, epoch=state.epoch)
            state.history.append({"step": state.step, "epoch": state.epoch, **metrics})
            running_loss, logged_batches, data_time = None, 0, 0.0
            window_start = time.perf_counter()
        if on_step is not None:
            on_step(state)
        tick = time.perf_counter()
