"""`torchrun -m training.main ...`: set up, build, resume, then for each epoch train, save, evaluate.

Without --train-data it evaluates and exits. Each collaborator gets only its part of the configuration; this
module wires them together, and `main()` reads top to bottom as the run goes.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import open_mclip
from open_mclip.loss import create_loss
from open_mclip.precision import Precision

from . import checkpoint
from .config import LossConfig, TrainConfig
from .data import DataInfo, get_data
from .devices import Device, get_device
from .distributed import World, barrier, broadcast_object, init_distributed, shutdown_distributed, world_from_env
from .eval import Evaluator, ZeroShotPlan, zero_shot_plan
from .logger import MetricsLogger, setup_logging, write_params
from .optim import create_optimizer
from .params import parse_args
from .placement import Placement
from .scheduler import Scheduler
from .stepper import Stepper
from .train import EpochContext, train_one_epoch
from .wrap import wrap_for_training

log = logging.getLogger(__name__)

# open_clip_train's --siglip: the SigLIP paper's initial log temperature and bias, over the architecture's own
SIGLIP_INIT = {"init_logit_scale": math.log(10), "init_logit_bias": -10.0}


@dataclass(frozen=True)
class Run:
    """This process's share of the run: its place in the world, its device and precision, the folder, the logs."""

    world: World
    device: Device
    placement: Placement
    folder: Path
    logger: MetricsLogger


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_args(argv)
    plan = zero_shot_plan(cfg.eval)  # bad zero-shot folders, class names or languages fail now, before any output
    run = setup(cfg)
    model, preprocess_train, preprocess_val = build_model(cfg, run.device, run.world)
    tokenizer = open_mclip.get_tokenizer(cfg.model.model, context_length=model.context_length)
    data = build_data(cfg, run, preprocess_train=preprocess_train, preprocess_val=preprocess_val, tokenizer=tokenizer)
    evaluate = build_evaluator(cfg, run, plan=plan, val=data.get("val"), tokenizer=tokenizer, preprocess=preprocess_val)
    if "train" not in data:  # evaluation only
        return finish(evaluate(model, epoch=0, final=True), cfg=cfg, run=run)

    train = data["train"]
    stepper, scheduler = build_optimization(model, cfg, run, steps_per_epoch=train.num_batches // cfg.optim.accum_freq)
    folder = run.folder / "checkpoints"
    state = checkpoint.resume(cfg.checkpoint.resume, folder=folder, world=run.world, model=model, stepper=stepper)
    saver = checkpoint.CheckpointWriter(folder, cfg, model=model, stepper=stepper, world=run.world, device=run.device)
    train_model = wrap_for_training(model, model_cfg=cfg.model, system=cfg.system, world=run.world, device=run.device)
    loss_fn = training_loss(cfg.loss, run.world)
    ctx = EpochContext(run.placement, cfg.optim.accum_freq, cfg.logging.log_every_n_steps, run.world, run.logger)
    results = {}
    while state.epoch < cfg.schedule.epochs:
        # data order, augmentation and dropout depend on (seed, rank, epoch) alone, so a resumed run repeats them
        run.device.seed(cfg.system.seed + run.world.rank + 1000 * state.epoch)
        train.set_epoch(state.epoch)
        train_one_epoch(train_model, train, loss_fn, stepper, scheduler, ctx=ctx, state=state, on_step=saver.after_step)
        state.epoch, state.epoch_step = state.epoch + 1, 0
        last = state.epoch == cfg.schedule.epochs
        saver.after_epoch(state, last=last)
        results = evaluate(model, epoch=state.epoch, final=last)
    results["train"] = state.history[-1] if state.history else {}
    return finish(results, cfg=cfg, run=run, trained=True)


def setup(cfg: TrainConfig) -> Run:
    """The process's place in the world, its device and process group, the run folder and logging."""
    world = world_from_env()
    device = get_device(cfg.system.device)
    device.setup(0 if cfg.system.no_set_device_rank else world.local_rank)
    init_distributed(world, backend=cfg.system.dist_backend or device.dist_backend, dist_url=cfg.system.dist_url)
    folder = _run_dir(cfg, world)
    setup_logging(folder / "out.log" if world.is_master else None, debug=cfg.logging.debug, rank=world.rank)
    log.info("rank %d of %d on %s (%s)", world.rank, world.world_size, device, device.dist_backend)
    if world.is_master:
        write_params(folder / "params.txt", cfg)
    logger = MetricsLogger(folder if world.is_master else None, tensorboard="tensorboard" in cfg.logging.report_to)
    return Run(world, device, Placement(device, Precision.parse(cfg.system.precision)), folder, logger)


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


def build_model(cfg: TrainConfig, device: Device, world: World):
    """(model, preprocess_train, preprocess_val), the model locked and checkpointed as the flags say.

    Every rank initialises the same weights (an evaluation-only run has no DDP broadcast); afterwards each rank
    draws its own random numbers."""
    m, lock = cfg.model, cfg.lock
    device.seed(cfg.system.seed)
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
        **(SIGLIP_INIT if cfg.loss.siglip else {}),
    )
    if lock.lock_image:
        model.visual.lock(lock.lock_image_unlocked_groups, freeze_norm_stats=lock.lock_image_freeze_bn_stats)
    if lock.lock_text:
        model.text.lock(lock.lock_text_unlocked_layers, freeze_norm_stats=lock.lock_text_freeze_layer_norm)
    if m.grad_checkpointing:
        model.set_grad_checkpointing(True)
    device.seed(cfg.system.seed + world.rank)
    return model, preprocess_train, preprocess_val


def build_data(cfg: TrainConfig, run: Run, *, preprocess_train, preprocess_val, tokenizer) -> dict[str, DataInfo]:
    """The loaders of the splits the data flags name: "train" (this rank's share) and/or "val"."""
    return get_data(
        cfg.data,
        preprocess_train=preprocess_train,
        preprocess_val=preprocess_val,
        tokenizer=tokenizer,
        rank=run.world.rank,
        world_size=run.world.world_size,
    )


def build_evaluator(
    cfg: TrainConfig, run: Run, *, plan: ZeroShotPlan, val: DataInfo | None, tokenizer, preprocess
) -> Evaluator:
    return Evaluator(
        cfg.eval,
        plan=plan,
        val=val,
        siglip=cfg.loss.siglip,
        tokenizer=tokenizer,
        preprocess=preprocess,
        placement=run.placement,
        world=run.world,
        logger=run.logger,
        workers=cfg.data.workers,
    )


def build_optimization(model, cfg: TrainConfig, run: Run, *, steps_per_epoch: int) -> tuple[Stepper, Scheduler]:
    """The Stepper (AdamW, grad scaler, clipping) and the learning-rate schedule."""
    optimizer = create_optimizer(model, cfg.optim, device=run.device, model_name=cfg.model.model)
    stepper = Stepper(
        optimizer, device=run.device, precision=run.placement.precision, grad_clip_norm=cfg.optim.grad_clip_norm
    )
    return stepper, Scheduler(optimizer, cfg.schedule, steps_per_epoch=steps_per_epoch)


def training_loss(cfg: LossConfig, world: World):
    """The contrastive loss over all ranks' samples (validation has its own, on rank 0 alone)."""
    return create_loss(
        "siglip" if cfg.siglip else "clip",
        rank=world.rank,
        world_size=world.world_size,
        local_loss=cfg.local_loss,
        gather_with_grad=cfg.gather_with_grad,
        siglip_dist_impl=cfg.loss_dist_impl,
    )


def finish(results: dict, *, cfg: TrainConfig, run: Run, trained: bool = False) -> dict:
    """Write results.json (and the curves of a training run), close the logs and the process group."""
    if run.world.is_master:
        (run.folder / "results.json").write_text(json.dumps(results, indent=2))
        if trained and cfg.logging.plot:
            from .plot import plot_curves

            plot_curves(run.folder / "metrics.jsonl", run.folder / "curves.png")
    run.logger.close()
    shutdown_distributed(run.world)
    return results


if __name__ == "__main__":
    main()
