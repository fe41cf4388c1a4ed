"""`torchrun -m training.main ...`: set up, build, resume, then for each epoch train, save, evaluate.

Without --train-data it evaluates and exits. Each collaborator gets only its part of the configuration; this
module wires them together, and `main()` reads top to bottom as the run goes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import open_mclip
from open_mclip.loss import create_loss
from open_mclip.precision import Precision

from . import checkpoint, resume
from .codebase import copy_codebase
from .config import LockConfig, LossConfig, TrainConfig
from .data import DataInfo, bounded, get_data
from .devices import Device, get_device
from .distributed import World, barrier, broadcast_object, init_distributed, shutdown_distributed, world_from_env
from .divergence import DivergenceGuard
from .eval import Evaluator, ZeroShotPlan, zero_shot_plan
from .logger import MetricsLogger, WandbSink, log_file, setup_logging, write_params
from .optim import adam_defaults, create_optimizer
from .params import parse_args
from .placement import Placement
from .remote import RemoteSync
from .scheduler import Scheduler
from .startup import check_startup
from .stepper import Stepper
from .train import EpochContext, train_one_epoch
from .wrap import wrap_for_training

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Run:
    """This process's share of the run: its place in the world, its device and precision, the folder, the logs."""

    world: World
    device: Device
    placement: Placement
    folder: Path
    logger: MetricsLogger
    remote: RemoteSync | None = None  # --remote-sync, on rank 0


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_args(argv)
    plan = zero_shot_plan(cfg.eval)  # bad zero-shot folders, class names or languages fail now, before any output
    run = setup(cfg)
    model, preprocess_train, preprocess_val = build_model(cfg, run.device, run.world)
    tokenizer = open_mclip.get_tokenizer(  # as open_clip_train: the config's length unless forced
        cfg.model.model, context_length=cfg.model.force_context_length, cache_dir=cfg.model.cache_dir
    )
    data = build_data(cfg, run, preprocess_train=preprocess_train, preprocess_val=preprocess_val, tokenizer=tokenizer)
    evaluate = build_evaluator(cfg, run, plan=plan, val=data.get("val"), tokenizer=tokenizer, preprocess=preprocess_val)
    if "train" not in data:  # evaluation only
        return finish(evaluate(model, epoch=0, final=True), cfg=cfg, run=run)

    train, steps_per_epoch = data["train"], data["train"].num_batches // cfg.optim.accum_freq
    stepper, scheduler = build_optimization(
        model, cfg, run, steps_per_epoch=steps_per_epoch, context=tokenizer.context_length
    )
    folder = run.folder / "checkpoints"
    state = resume.resume(
        cfg.checkpoint.resume,
        folder=folder,
        world=run.world,
        model=model,
        stepper=stepper,
        steps_per_epoch=steps_per_epoch,
        remote=run.remote,
    )
    guard = DivergenceGuard(
        max_in_a_row=cfg.system.max_nonfinite_steps,
        world=run.world,
        checkpoints=lambda: checkpoint.local_candidates(folder),
        save_every=cfg.checkpoint.save_every_n_steps,
        totals=state.guard_totals,
    )
    saver = checkpoint.CheckpointWriter(
        folder, cfg, model=model, stepper=stepper, world=run.world, device=run.device, guard=guard
    )
    train_model = wrap_for_training(model, model_cfg=cfg.model, system=cfg.system, world=run.world, device=run.device)
    loss_fn = training_loss(cfg.loss, run.world)
    ctx = EpochContext(run.placement, cfg.optim.accum_freq, cfg.logging.log_every_n_steps, run.world, run.logger, guard)
    results = {}
    while state.epoch < cfg.schedule.epochs:
        # data order, augmentation and dropout depend on (seed, rank, epoch) alone, so a resumed run repeats them
        run.device.seed(cfg.system.seed + run.world.rank + 1000 * state.epoch)
        train.set_epoch(state.epoch)
        train_one_epoch(train_model, train, loss_fn, stepper, scheduler, ctx=ctx, state=state, on_step=saver.after_step)
        state.epoch, state.epoch_step = state.epoch + 1, 0
        last = state.epoch == cfg.schedule.epochs
        if guard.may_save(step=state.step):
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
    remote = _remote(cfg, folder) if world.is_master else None  # before logging: a resumed run continues its logs
    own_log = log_file(folder, rank=world.rank, local_rank=world.local_rank, local=cfg.logging.log_local)
    setup_logging(own_log, debug=cfg.logging.debug, rank=world.rank)
    log.info("rank %d of %d on %s (%s)", world.rank, world.world_size, device, device.dist_backend)
    check_startup(cfg, folder=folder, world=world)
    if world.is_master:
        write_params(folder / "params.txt", cfg)
        if cfg.logging.copy_codebase:
            copy_codebase(folder / "code")
    if remote is not None:
        if remote.restored:
            log.info("restored %s of this run from %s", ", ".join(remote.restored), remote.url)
        remote.sync()  # a remote that cannot be written fails the run now
        remote.start()
    logger = _metrics_logger(cfg, folder, world)
    return Run(world, device, Placement(device, Precision.parse(cfg.system.precision)), folder, logger, remote)


def _remote(cfg: TrainConfig, folder: Path) -> RemoteSync | None:
    """--remote-sync: the run folder's copy at URL/NAME; an existing remote run is only continued with --resume."""
    c = cfg.checkpoint
    if c.remote_sync is None:
        return None
    remote = RemoteSync(
        folder,
        f"{c.remote_sync.rstrip('/')}/{folder.name}",
        every_s=c.remote_sync_frequency,
        protocol=c.remote_sync_protocol,
    )
    if c.resume is None and remote.files():
        raise ValueError(f"{remote.url} already holds a run: use --resume latest to continue it or a new --name")
    if c.resume is not None:
        remote.restore()
    return remote


def _metrics_logger(cfg: TrainConfig, folder: Path, world: World) -> MetricsLogger:
    if not world.is_master:
        return MetricsLogger(None, tensorboard=False)
    sinks, log_cfg = cfg.logging.sinks, cfg.logging
    wandb = None
    if "wandb" in sinks:
        wandb = WandbSink(
            name=folder.name,
            project=log_cfg.wandb_project_name,
            notes=log_cfg.wandb_notes,
            config=dataclasses.asdict(cfg),
            resume=cfg.checkpoint.resume is not None,
            folder=folder,
        )
    return MetricsLogger(folder, tensorboard="tensorboard" in sinks, wandb=wandb)


def _run_dir(cfg: TrainConfig, world: World) -> Path:
    lr = cfg.optim.lr if cfg.optim.lr is not None else adam_defaults(vit=False)["lr"]  # open_clip names the used lr
    name = cfg.logging.name or broadcast_object(
        time.strftime("%Y_%m_%d-%H_%M_%S") + f"-model_{cfg.model.model.replace('/', '-')}-lr_{lr}"
        f"-b_{cfg.data.batch_size}-j_{cfg.data.workers}-p_{cfg.system.precision}",
        world,
    )
    run_dir = Path(cfg.logging.logs) / name
    if world.is_master:
        if log_file(run_dir, rank=0, local_rank=0, local=cfg.logging.log_local).exists() and not cfg.checkpoint.resume:
            raise ValueError(f"run {run_dir} already exists: use --resume latest to continue it or a new --name")
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    elif cfg.logging.log_local and world.local_rank == 0:  # another node's log file, where file systems are not shared
        run_dir.mkdir(parents=True, exist_ok=True)
    barrier(world)
    return run_dir


def build_model(cfg: TrainConfig, device: Device, world: World):
    """(model, preprocess_train, preprocess_val), the model locked and checkpointed as the flags say.

    Every rank initialises the same weights (an evaluation-only run has no DDP broadcast); afterwards each rank
    draws its own random numbers."""
    m = cfg.model
    # open_clip's trainer starts a SigLIP model at logit scale ln 10 and bias -10 (the SigLIP paper's), whatever
    # the architecture's config says; pretrained weights then replace both
    siglip_init = {"init_logit_scale": math.log(10), "init_logit_bias": -10.0} if cfg.loss.siglip else {}
    device.seed(cfg.system.seed)
    model, preprocess_train, preprocess_val = open_mclip.create_model_and_transforms(
        m.model,
        m.pretrained or None,
        precision=cfg.system.precision,
        device=device.torch_device,
        force_quick_gelu=m.force_quick_gelu,
        force_custom_text=m.force_custom_text,
        force_patch_dropout=m.force_patch_dropout,
        force_image_size=m.force_image_size,
        force_context_length=m.force_context_length,
        image_mean=m.image_mean,
        image_std=m.image_std,
        image_interpolation=m.image_interpolation,
        image_resize_mode=m.image_resize_mode,
        aug_cfg=m.aug_cfg or None,
        pretrained_image=m.pretrained_image,
        cache_dir=m.cache_dir,
        **siglip_init,
    )
    if device.text_padding is not None and hasattr(model.text, "set_padding_free"):
        model.text.set_padding_free(True, **device.text_padding)  # the device bounds the text shapes it compiles
    lock_towers(model, cfg.lock)
    tower = type(model.visual).__name__
    if m.channels_last and not model.visual.channels_last_capable:
        raise ValueError(f"--channels-last: the {tower} image tower has no convolution stages to lay out channels-last "
                         "(ModifiedResNet towers have); drop the flag")  # fmt: skip
    if m.channels_last or (m.channels_last is None and device.channels_last and model.visual.channels_last_capable):
        model.visual.set_channels_last(True)
        log.info("%s image tower in channels-last layout", tower)
    if m.grad_checkpointing:
        model.set_grad_checkpointing(True)
    device.seed(cfg.system.seed + world.rank)
    # the transforms' own size check (their first step) follows --max-image-pixels/--max-image-aspect-ratio
    return model, bounded(preprocess_train, cfg.data.image_bounds), bounded(preprocess_val, cfg.data.image_bounds)


def lock_towers(model, lock: LockConfig) -> None:
    """LiT: open_clip's groups per tower type (`model.lock_image_tower`, `model.lock_text_tower`) or, with
    --lock-*-unlocked-blocks, our uniform block rule (`Tower.lock`)."""
    if lock.lock_image and lock.lock_image_unlocked_blocks is None:
        model.lock_image_tower(lock.lock_image_unlocked_groups, freeze_bn_stats=lock.lock_image_freeze_bn_stats)
    elif lock.lock_image:
        model.visual.lock(lock.lock_image_unlocked_blocks, freeze_norm_stats=lock.lock_image_freeze_bn_stats)
    if lock.lock_text and lock.lock_text_unlocked_blocks is None:
        model.lock_text_tower(lock.lock_text_unlocked_layers, freeze_layer_norm=lock.lock_text_freeze_layer_norm)
    elif lock.lock_text:
        model.text.lock(lock.lock_text_unlocked_blocks, freeze_norm_stats=lock.lock_text_freeze_layer_norm)


def build_data(cfg: TrainConfig, run: Run, *, preprocess_train, preprocess_val, tokenizer) -> dict[str, DataInfo]:
    """The loaders of the splits the data flags name: "train" (this rank's share) and/or "val"; batches pinned
    where the device gains from it, unless --pin-memory/--no-pin-memory says otherwise."""
    pin = run.device.pins_memory if cfg.data.pin_memory is None else cfg.data.pin_memory
    return get_data(
        dataclasses.replace(cfg.data, pin_memory=pin),
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


def build_optimization(
    model, cfg: TrainConfig, run: Run, *, steps_per_epoch: int, context: int | None
) -> tuple[Stepper, Scheduler]:
    """The Stepper (AdamW, grad scaler, clipping) and the learning-rate schedule; `context` is the tokenizer's
    length (tokens per caption; None: unknown, and no token table can be judged large)."""
    tokens = None if context is None else cfg.data.batch_size * cfg.optim.accum_freq * run.world.world_size * context
    optimizer = create_optimizer(
        model, cfg.optim, device=run.device, model_name=cfg.model.model, tokens_per_step=tokens
    )
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
    if run.remote is not None:
        run.remote.close()  # the final copy, after the last log line and results.json
    shutdown_distributed(run.world)
    return results


if __name__ == "__main__":
    main()
