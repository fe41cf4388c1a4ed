"""`torchrun -m training.main ...`: set up, train, evaluate, checkpoint. Without --train-data it evaluates and exits.

Each collaborator gets only its part of the configuration; this module wires them together.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

import open_mclip
from open_mclip.loss import create_loss
from open_mclip.precision import Precision

from . import checkpoint as ckpt
from .config import TrainConfig
from .data import get_data
from .devices import Device, get_device
from .distributed import World, barrier, broadcast_object, init_distributed, shutdown_distributed, world_from_env
from .evaluate import retrieval_table, validate
from .logger import MetricsLogger, setup_logging, write_params
from .optim import create_optimizer
from .params import parse_args
from .scheduler import Scheduler
from .stepper import Stepper
from .train import LoopState, train_one_epoch
from .zero_shot_eval import zero_shot, zero_shot_plan

log = logging.getLogger("training")


@dataclass
class LoopContext:
    """What the epoch loop needs besides model, data, loss and stepper."""

    device: Device
    precision: Precision
    accum_freq: int
    log_every: int
    batches_per_epoch: int
    world_size: int
    logger: MetricsLogger
    skipped: Callable[[], int]  # samples skipped so far (bad images, missing captions)
    zero_shot_plan: dict  # {result key: (folder, sets)}, read once at start-up (zero_shot_eval.zero_shot_plan)

    def autocast(self):
        return self.device.autocast(self.precision)


def _run_dir(cfg: TrainConfig, world: World) -> Path:
    name = cfg.logging.name or broadcast_object(
        time.strftime("%Y_%m_%d-%H_%M_%S") + f"-model_{cfg.model.model.replace('/', '-')}-lr_{cfg.optim.lr}"
        f"-b_{cfg.data.batch_size}-p_{cfg.system.precision}",
        world,
    )
    run_dir = Path(cfg.logging.logs) / name
    if world.is_master:
        if (run_dir / "out.log").exists() and cfg.checkpoint.resume is None:
            raise ValueError(f"run {run_dir} already exists: use --resume latest to continue it or a new --name")
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    barrier(world)
    return run_dir


def _build_model(cfg: TrainConfig, device: Device):
    m = cfg.model
    model, preprocess_train, preprocess_val = open_mclip.create_model_and_transforms(
        m.model,
        m.pretrained or None,
        precision=cfg.system.precision,
        device=device.torch_device,
        force_quick_gelu=m.force_quick_gelu,
        force_patch_dropout=m.force_patch_dropout,
        force_image_size=m.force_image_size,
        force_context_length=m.force_context_length,
        image_mean=m.image_mean,
        image_std=m.image_std,
        image_interpolation=m.image_interpolation,
        image_resize_mode=m.image_resize_mode,
        aug_cfg=m.aug_cfg or None,
        cache_dir=m.cache_dir,
    )
    lock = cfg.lock
    if lock.lock_image:
        model.visual.lock(lock.lock_image_unlocked_groups, freeze_norm_stats=lock.lock_image_freeze_bn_stats)
    if lock.lock_text:
        model.text.lock(lock.lock_text_unlocked_layers, freeze_norm_stats=lock.lock_text_freeze_layer_norm)
    if m.grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model, preprocess_train, preprocess_val


def _evaluate(model, cfg: TrainConfig, data, loss_fn, ctx: LoopContext, world: World, *, tokenizer, preprocess,
              epoch: int, final: bool) -> dict:  # fmt: skip
    results = {}
    if "val" in data and (final or epoch % max(cfg.eval.val_frequency, 1) == 0) and world.is_master:
        results["val"] = validate(
            model, data["val"].dataloader, loss_fn_single(cfg), device=ctx.device, autocast=ctx.autocast
        )
    zero_shot_due = final or epoch % max(cfg.eval.zeroshot_frequency, 1) == 0
    if ctx.zero_shot_plan and zero_shot_due:
        results.update(zero_shot(  # "zeroshot" (--zeroshot-data) and "imagenet" (--imagenet-val)
            model, ctx.zero_shot_plan, tokenizer=tokenizer, preprocess=preprocess, device=ctx.device,
            autocast=ctx.autocast, world=world, workers=cfg.data.workers,
        ))  # fmt: skip
    for split, metrics in results.items():
        ctx.logger.log(split, metrics, step=epoch, epoch=epoch)
    for key in ("zeroshot", "imagenet"):
        if key in results and world.is_master:
            log.info("zero-shot accuracy (%s) after epoch %d:\n%s", key, epoch, zero_shot_table(results[key]))
    if any(key.endswith("_num_samples") for key in results.get("val", {})):  # captions tagged with languages
        log.info("retrieval recall per language after epoch %d:\n%s", epoch, retrieval_table(results["val"]))
    return results


def zero_shot_table(metrics: dict) -> str:
    """A plain-text table: one row per language with top-1 and top-5 accuracy in percent and the images scored."""
    languages = [key[: -len("_top1")] for key in metrics if key.endswith("_top1")]
    rows = ["language | top-1 | top-5 | images", "---------|-------|-------|-------"]
    rows += [f"{lang:<8} | {100 * metrics[f'{lang}_top1']:5.1f} | {100 * metrics[f'{lang}_top5']:5.1f} | "
             f"{metrics.get(f'{lang}_num_images', metrics.get('num_images', ''))}" for lang in languages]  # fmt: skip
    return "\n".join(rows)


def loss_fn_single(cfg: TrainConfig):
    """Validation runs on rank 0 alone: a loss that does not gather across ranks."""
    return create_loss("siglip" if cfg.loss.siglip else "clip")


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_args(argv)
    plan = zero_shot_plan(cfg.eval)  # bad zero-shot folders, class names or languages fail now, not after an epoch
    world = world_from_env()
    device = get_device(cfg.system.device)
    device.setup(world.local_rank)
    init_distributed(world, backend=cfg.system.dist_backend or device.dist_backend, dist_url=cfg.system.dist_url)
    run_dir = _run_dir(cfg, world)
    setup_logging(run_dir / "out.log" if world.is_master else None, debug=cfg.logging.debug, rank=world.rank)
    log.info("rank %d of %d on %s (%s)", world.rank, world.world_size, device, device.dist_backend)
    if world.is_master:
        write_params(run_dir / "params.txt", cfg)
    precision = Precision.parse(cfg.system.precision)

    device.seed(cfg.system.seed)  # every rank initialises the same weights (an eval-only run has no DDP broadcast)
    model, preprocess_train, preprocess_val = _build_model(cfg, device)
    device.seed(cfg.system.seed + world.rank)
    tokenizer = open_mclip.get_tokenizer(cfg.model.model, context_length=model.context_length)
    data = get_data(cfg.data, preprocess_train=preprocess_train, preprocess_val=preprocess_val, tokenizer=tokenizer,
                    rank=world.rank, world_size=world.world_size)  # fmt: skip
    logger = MetricsLogger(run_dir if world.is_master else None, tensorboard="tensorboard" in cfg.logging.report_to)
    skipped = data["train"].skipped if "train" in data else None
    ctx = LoopContext(
        device=device, precision=precision, accum_freq=cfg.optim.accum_freq, log_every=cfg.logging.log_every_n_steps,
        batches_per_epoch=data["train"].num_batches if "train" in data else 0, world_size=world.world_size,
        logger=logger, skipped=(lambda: skipped.total) if skipped is not None else (lambda: 0),
        zero_shot_plan=plan,
    )  # fmt: skip
    loss_fn = create_loss(
        "siglip" if cfg.loss.siglip else "clip", rank=world.rank, world_size=world.world_size,
        local_loss=cfg.loss.local_loss, gather_with_grad=cfg.loss.gather_with_grad,
        siglip_dist_impl=cfg.loss.loss_dist_impl,
    )  # fmt: skip

    if "train" not in data:  # evaluation only
        results = _evaluate(model, cfg, data, loss_fn, ctx, world, tokenizer=tokenizer, preprocess=preprocess_val,
                            epoch=0, final=True)  # fmt: skip
        if world.is_master:
            (run_dir / "results.json").write_text(json.dumps(results, indent=2))
        logger.close()
        return results

    train_model = model
    if world.distributed:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, static_graph=cfg.system.ddp_static_graph, **device.ddp_kwargs()
        )
    optimizer = create_optimizer(model, cfg.optim, model_name=cfg.model.model, device=device)
    scaler = device.grad_scaler(precision)
    stepper = Stepper(optimizer, device=device, scaler=scaler, grad_clip_norm=cfg.optim.grad_clip_norm)
    steps_per_epoch = data["train"].num_batches // cfg.optim.accum_freq
    scheduler = Scheduler(optimizer, cfg.schedule, steps_per_epoch=steps_per_epoch)
    state = LoopState()

    resume = cfg.checkpoint.resume
    if resume == "latest":
        resume = broadcast_object(ckpt.latest_checkpoint(run_dir / "checkpoints"), world)
        if resume is None:
            log.info("no checkpoint to resume from in %s: starting fresh", run_dir / "checkpoints")
    if resume:
        saved = ckpt.load(resume)
        model.load_state_dict(saved["state_dict"])
        optimizer.load_state_dict(saved["optimizer"])
        if scaler is not None and saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        state = LoopState(epoch=saved["epoch"], step=saved["step"], epoch_step=saved["epoch_step"],
                          resume_rng=saved["rng"] if saved["epoch_step"] else None)  # fmt: skip
        log.info("resumed from %s: epoch %d, step %d", resume, state.epoch, state.step)
    if cfg.model.torchcompile:
        train_model = torch.compile(train_model, backend=device.compile_backend)

    writer = ckpt.CheckpointWriter(run_dir / "checkpoints", cfg.checkpoint, is_master=world.is_master)

    def make_state():
        return ckpt.build_state(model=model, optimizer=optimizer, scaler=scaler, epoch=state.epoch, step=state.step,
                                epoch_step=state.epoch_step, config=cfg, device=device)  # fmt: skip

    results = {}
    while state.epoch < cfg.schedule.epochs:
        # data order, augmentation and dropout depend on (seed, rank, epoch) alone, so a resumed run repeats them
        device.seed(cfg.system.seed + world.rank + 1000 * state.epoch)
        data["train"].set_epoch(state.epoch)
        train_one_epoch(train_model, data["train"].dataloader, loss_fn, stepper, scheduler, ctx=ctx, state=state,
                        on_step=lambda s: writer.after_step(make_state, step=s.step))  # fmt: skip
        state.epoch, state.epoch_step = state.epoch + 1, 0
        last = state.epoch == cfg.schedule.epochs
        writer.after_epoch(make_state, epoch=state.epoch, last=last)
        results = _evaluate(model, cfg, data, loss_fn, ctx, world, tokenizer=tokenizer, preprocess=preprocess_val,
                            epoch=state.epoch, final=last)  # fmt: skip
    if world.is_master:
        results["train"] = state.history[-1] if state.history else {}
        (run_dir / "results.json").write_text(json.dumps(results, indent=2))
        if cfg.logging.plot:
            from .plot import plot_curves

            plot_curves(run_dir / "metrics.jsonl", run_dir / "curves.png")
    logger.close()
    shutdown_distributed(world)
    return results


if __name__ == "__main__":
    main()
