"""The trainer's configuration: grouped dataclasses, each component gets only its group."""

from __future__ import annotations

from dataclasses import dataclass, field

from .data import DataConfig


@dataclass
class ModelArgs:
    model: str = "RN50"
    pretrained: str = ""
    cache_dir: str | None = None
    force_quick_gelu: bool = False
    force_patch_dropout: float | None = None
    force_image_size: int | tuple[int, int] | None = None
    force_context_length: int | None = None
    image_mean: tuple[float, ...] | None = None
    image_std: tuple[float, ...] | None = None
    image_interpolation: str | None = None
    image_resize_mode: str | None = None
    aug_cfg: dict = field(default_factory=dict)
    grad_checkpointing: bool = False
    torchcompile: bool = False


@dataclass
class LockArgs:
    """LiT locking (see open_mclip.towers.base.Tower.lock for the uniform meaning of unlocked layers)."""

    lock_image: bool = False
    lock_image_unlocked_groups: int = 0
    lock_image_freeze_bn_stats: bool = False
    lock_text: bool = False
    lock_text_unlocked_layers: int = 0
    lock_text_freeze_layer_norm: bool = False


@dataclass
class LossArgs:
    siglip: bool = False
    local_loss: bool = False
    gather_with_grad: bool = False
    loss_dist_impl: str | None = None


@dataclass
class OptimArgs:
    opt: str = "adamw"
    lr: float | None = None  # default: 5e-4 (CLIP paper)
    lr_image: float | None = None  # peak lr of the image tower (default --lr); LiT: a fresh image tower learns fast
    lr_text: float | None = None  # peak lr of the text tower (default --lr); a pretrained text tower moves slowly
    layer_decay_image: float = 1.0  # layer-wise lr decay: the block i from the top gets lr * decay**i
    layer_decay_text: float = 1.0
    beta1: float | None = None  # default: 0.9
    beta2: float | None = None  # default: 0.98 for ViT towers, 0.999 otherwise
    eps: float | None = None  # default: 1e-6 for ViT towers, 1e-8 otherwise
    wd: float = 0.2
    grad_clip_norm: float | None = None
    accum_freq: int = 1


@dataclass
class ScheduleArgs:
    epochs: int = 32
    epochs_cooldown: int | None = None
    warmup: int = 10000
    lr_scheduler: str = "cosine"
    lr_cooldown_end: float = 0.0
    lr_cooldown_power: float = 1.0
    skip_scheduler: bool = False


@dataclass
class SystemArgs:
    """Device, precision and distribution."""

    device: str = "auto"
    precision: str = "amp"
    dist_url: str | None = None
    dist_backend: str | None = None
    ddp_static_graph: bool = False
    no_set_device_rank: bool = False
    use_bn_sync: bool = False
    seed: int = 0


@dataclass
class CheckpointArgs:
    save_frequency: int = 1
    save_every_n_steps: int | None = None
    save_most_recent: bool = False
    delete_previous_checkpoint: bool = False
    resume: str | None = None


@dataclass
class EvalArgs:
    val_frequency: int = 1
    zeroshot_frequency: int = 2
    zeroshot_data: str | None = None
    zeroshot_classnames: str | None = None
    zeroshot_templates: str | None = None
    zeroshot_languages: str | None = None
    imagenet_val: str | None = None


@dataclass
class LogArgs:
    logs: str = "./logs/"
    name: str | None = None
    log_every_n_steps: int = 100
    report_to: str = ""
    debug: bool = False
    plot: bool = False


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelArgs = field(default_factory=ModelArgs)
    lock: LockArgs = field(default_factory=LockArgs)
    loss: LossArgs = field(default_factory=LossArgs)
    optim: OptimArgs = field(default_factory=OptimArgs)
    schedule: ScheduleArgs = field(default_factory=ScheduleArgs)
    system: SystemArgs = field(default_factory=SystemArgs)
    checkpoint: CheckpointArgs = field(default_factory=CheckpointArgs)
    eval: EvalArgs = field(default_factory=EvalArgs)
    logging: LogArgs = field(default_factory=LogArgs)
