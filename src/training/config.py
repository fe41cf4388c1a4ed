"""The trainer's configuration: grouped dataclasses, one per component, each component gets only its group.

Every field is a command-line flag (field `foo_bar` is `--foo-bar`, named as in open_clip v3.3): `params.py`
builds the parser from the fields and the help, choices and nargs that `flag()` puts in their metadata, so a
setting is documented once, where it is declared. This module imports nothing of the trainer: it sits below
every component that reads it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from open_mclip.constants import HF_HUB_PREFIX, LOCAL_DIR_PREFIX
from open_mclip.image_ops import INTERPOLATIONS
from open_mclip.loss import SIGLIP_DIST_IMPLS
from open_mclip.precision import PRECISION_CHOICES
from open_mclip.transform import RESIZE_MODES

DATASET_TYPES = ("auto", "webdataset", "csv", "synthetic")
LR_SCHEDULERS = ("cosine", "const", "const-cooldown")
OPTIMIZERS = ("adamw",)


def flag(default: Any = None, help: str = "", *, factory=None, choices=None, nargs: str | None = None):
    """A config field that is also a command-line flag: `help`, `choices` and `nargs` travel in its metadata."""
    if not help:
        raise ValueError("every flag needs a help text")
    metadata = {"help": help, "choices": tuple(choices) if choices is not None else None, "nargs": nargs}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass
class DataConfig:
    """Data: where it is and how it is read."""

    train_data: str | None = flag(
        None,
        "training data: a CSV/TSV file, or WebDataset shards with brace expansion ('a/{000..009}.tar'); "
        "join sources with '::'",
    )
    val_data: str | None = flag(None, "validation data (same formats as --train-data); validation runs on rank 0")
    train_data_upsampling_factors: str | None = flag(
        None, "sampling weight per '::' source of --train-data, e.g. '1::2' (needs --dataset-resampled)"
    )
    train_num_samples: int | None = flag(
        None, "samples per (virtual) epoch over all ranks; required for shards without sizes.json and for resampling"
    )
    val_num_samples: int | None = flag(
        None, "validation samples (shards of unknown size: sizes the batch count; synthetic: how many)"
    )
    dataset_type: str = flag("auto", "auto picks from the extension (.csv/.tsv or .tar)", choices=DATASET_TYPES)
    dataset_resampled: bool = flag(
        False, "draw shards with replacement, reseeded per epoch (virtual epochs of --train-num-samples)"
    )
    csv_separator: str = flag("\t", "column separator of CSV/TSV files")
    csv_img_key: str = flag("filepath", "CSV column with image paths (relative paths start at the CSV's folder)")
    csv_caption_key: str = flag("title", "CSV column with captions")
    val_lang_key: str = flag(
        "lang",
        "CSV column, or field of each shard sample's .json, tagging a validation caption's language "
        "(e.g. 'en'): recall is then also reported per language; untagged captions count in the overall figures only",
    )
    batch_size: int = flag(64, "batch size per process")
    workers: int = flag(4, "data loader worker processes per process (0: load in the main process)")
    seed: int = flag(0, "random seed: weights, shard order, shuffling, resampling, augmentation (with epoch and rank)")
    drop_last: bool = flag(True, "training: drop a last partial batch (static shapes, e.g. for HPU graphs)")
    shuffle_buffer: int = flag(5000, "shards: samples each worker holds for shuffling while training (1: no shuffle)")
    pin_memory: bool = flag(False, "pin batches in page-locked memory (only useful with an accelerator)")
    synthetic_image_size: int = flag(224, "side in pixels of the random images of --dataset-type synthetic")

    def __post_init__(self) -> None:
        if self.dataset_type not in DATASET_TYPES:
            raise ValueError(f"dataset_type={self.dataset_type!r} is unknown; use one of {', '.join(DATASET_TYPES)}")
        for name in ("batch_size", "shuffle_buffer", "synthetic_image_size"):
            check_int(name, getattr(self, name), minimum=1)
        check_int("workers", self.workers, minimum=0)
        check_int("seed", self.seed, minimum=0)
        for name in ("train_num_samples", "val_num_samples"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), minimum=0)
        if not self.csv_separator:
            raise ValueError("csv_separator is empty; use e.g. '\\t' for TSV or ',' for CSV")
        if not isinstance(self.val_lang_key, str) or not self.val_lang_key.strip():
            raise ValueError(f"val_lang_key={self.val_lang_key!r} is invalid; name a column/json field, e.g. 'lang'")


def check_int(name: str, value: object, *, minimum: int) -> None:
    """`value` must be an int (not a bool) of at least `minimum`; the error names the setting."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name}={value!r} is invalid; use an int >= {minimum}")


@dataclass
class ModelConfig:
    """Model: which architecture and weights, and what to override when building it.

    The trainer's model group (flags), not open_mclip's architecture config of the same name.
    """

    model: str = flag(
        "RN50", f"architecture name (see open_mclip.list_models()), {HF_HUB_PREFIX}org/repo or {LOCAL_DIR_PREFIX}PATH"
    )
    pretrained: str = flag("", "pretrained tag (see open_mclip.list_pretrained()) or checkpoint file to start from")
    cache_dir: str | None = flag(None, "where downloaded weights and tokenizers are cached (default: the hub's)")
    force_quick_gelu: bool = flag(False, "use QuickGELU activations (as OpenAI's CLIP weights were trained)")
    force_patch_dropout: float | None = flag(None, "override the model's patch dropout rate (0 disables it)")
    force_image_size: int | tuple[int, int] | None = flag(
        None, "override the image size: one side, or height width (positions are resized)", nargs="+"
    )
    force_context_length: int | None = flag(None, "override the text context length in tokens")
    image_mean: tuple[float, ...] | None = flag(None, "override the normalisation mean per channel", nargs="+")
    image_std: tuple[float, ...] | None = flag(None, "override the normalisation std per channel", nargs="+")
    image_interpolation: str | None = flag(None, "override the resize interpolation", choices=INTERPOLATIONS)
    image_resize_mode: str | None = flag(None, "override the eval resize (and crop) mode", choices=RESIZE_MODES)
    aug_cfg: dict = flag(
        help="train augmentation settings as key=value pairs read as Python literals, e.g. scale='(0.8, 1.0)' "
        "color_jitter_prob=0.5",
        factory=dict,
    )
    grad_checkpointing: bool = flag(False, "recompute activations in the backward pass (less memory, more compute)")
    torchcompile: bool = flag(False, "torch.compile the model for training")


@dataclass
class LockConfig:
    """LiT locking: freeze towers but their top blocks (see open_mclip.towers.base.Tower.lock)."""

    lock_image: bool = flag(False, "freeze the image tower")
    lock_image_unlocked_groups: int = flag(
        0, "keep the top N blocks of a locked image tower and its head trainable (N >= blocks: the embeddings too)"
    )
    lock_image_freeze_bn_stats: bool = flag(False, "keep BatchNorm statistics of frozen image-tower layers fixed")
    lock_text: bool = flag(False, "freeze the text tower")
    lock_text_unlocked_layers: int = flag(
        0, "keep the top N layers of a locked text tower and its head trainable (N >= layers: the embeddings too)"
    )
    lock_text_freeze_layer_norm: bool = flag(
        False, "also freeze the LayerNorms of a locked Hugging Face text tower (LiT proper: only the head trains)"
    )


@dataclass
class LossConfig:
    """Loss: CLIP's softmax or SigLIP's sigmoid, and how it spans the ranks."""

    siglip: bool = flag(False, "the SigLIP sigmoid loss instead of CLIP's softmax loss")
    local_loss: bool = flag(False, "each rank scores its own samples against all (N x N*W logits, not N*W x N*W)")
    gather_with_grad: bool = flag(False, "let gradients flow through the features gathered from other ranks")
    loss_dist_impl: str | None = flag(
        None, "how the SigLIP loss meets other ranks' texts (default bidir)", choices=SIGLIP_DIST_IMPLS
    )


@dataclass
class OptimConfig:
    """Optimizer: AdamW, its learning rates per tower, weight decay, clipping and accumulation."""

    opt: str = flag("adamw", "the optimizer", choices=OPTIMIZERS)
    lr: float | None = flag(None, "peak learning rate (default 5e-4, the CLIP paper's)")
    lr_image: float | None = flag(
        None, "peak learning rate of the image tower (default --lr; LiT: a fresh image tower learns fast)"
    )
    lr_text: float | None = flag(
        None, "peak learning rate of the text tower (default --lr; a pretrained text tower moves slowly)"
    )
    layer_decay_image: float = flag(
        1.0, "layer-wise lr decay in (0, 1] for the image tower: block i from the top gets lr * decay**i"
    )
    layer_decay_text: float = flag(
        1.0, "layer-wise lr decay in (0, 1] for the text tower (embeddings count as the lowest block)"
    )
    beta1: float | None = flag(None, "Adam beta1 (default 0.9)")
    beta2: float | None = flag(None, "Adam beta2 (default 0.98 if the model name has 'vit', as open_clip, else 0.999)")
    eps: float | None = flag(None, "Adam epsilon (default 1e-6 if the model name has 'vit', as open_clip, else 1e-8)")
    wd: float = flag(
        0.2, "weight decay (as open_clip: not on parameters under 2-d, nor on names with bn, ln, bias, logit_scale)"
    )
    no_decay_embeddings: bool = flag(
        False, "no weight decay on embedding tables and positional/class embeddings either (open_clip decays them)"
    )
    grad_clip_norm: float | None = flag(None, "clip the global gradient norm to this value")
    accum_freq: int = flag(
        1, "contrastive gradient accumulation: update every N batches as one batch of N x --batch-size"
    )


@dataclass
class ScheduleConfig:
    """Schedule: epochs, warm-up and the learning-rate curve."""

    epochs: int = flag(32, "epochs to train")
    epochs_cooldown: int | None = flag(None, "const-cooldown: cool down over the last N epochs")
    warmup: int = flag(10000, "linear warm-up steps")
    lr_scheduler: str = flag("cosine", "the learning-rate curve after warm-up", choices=LR_SCHEDULERS)
    lr_cooldown_end: float = flag(0.0, "const-cooldown: the learning rate at the end of the cool-down")
    lr_cooldown_power: float = flag(1.0, "const-cooldown: power of the polynomial cool-down (1: linear)")
    skip_scheduler: bool = flag(False, "keep the learning rate at its peak (no warm-up, no decay)")


@dataclass
class SystemConfig:
    """System: device, precision and the distributed set-up."""

    device: str = flag("auto", "auto (cuda, then hpu, mps, cpu), cpu, cuda, cuda:N, hpu or mps")
    precision: str = flag("amp", "numeric precision of weights, autocast and inputs", choices=PRECISION_CHOICES)
    dist_url: str | None = flag(None, "rendezvous URL of the process group (default env://: torchrun's or SLURM's)")
    dist_backend: str | None = flag(None, "collective backend (default: the device's: gloo, nccl or hccl)")
    ddp_static_graph: bool = flag(False, "tell DDP the graph is the same every step (static_graph=True)")
    no_set_device_rank: bool = flag(
        False, "do not pick the device index from the local rank (when each process sees only its own GPU)"
    )
    use_bn_sync: bool = flag(False, "synchronise BatchNorm statistics across ranks (SyncBatchNorm)")
    seed: int = flag(0, "random seed: weights, shard order, shuffling, resampling, augmentation (with epoch and rank)")


@dataclass
class CheckpointConfig:
    """Checkpoints: when to save and what to resume from."""

    save_frequency: int = flag(1, "save a checkpoint every N epochs (0: never, except --save-most-recent)")
    save_every_n_steps: int | None = flag(None, "also save a checkpoint every N optimizer steps")
    save_most_recent: bool = flag(False, "keep the newest state in epoch_latest.pt after every epoch")
    delete_previous_checkpoint: bool = flag(False, "remove the previous checkpoint after writing a new one")
    resume: str | None = flag(
        None, "checkpoint file to resume from, or 'latest' for the newest complete one of this run"
    )


@dataclass
class EvalConfig:
    """Evaluation: validation loss and recall, zero-shot classification per language."""

    val_frequency: int = flag(1, "validate every N epochs (and after the last)")
    zeroshot_frequency: int = flag(2, "evaluate zero-shot every N epochs (and after the last)")
    zeroshot_data: str | None = flag(None, "ImageFolder-layout directory for zero-shot classification")
    zeroshot_classnames: str | None = flag(
        None, "JSON of class names: a list in folder order, {folder: name}, or either per language"
    )
    zeroshot_templates: str | None = flag(
        None, "JSON of prompt templates with '{}' for the class name: a list or {language: list}"
    )
    zeroshot_languages: str | None = flag(
        None, "comma-separated languages to evaluate (default: all in the files; en for --imagenet-val)"
    )
    imagenet_val: str | None = flag(
        None,
        "ImageNet-1k validation set in ImageFolder layout (1000 wnid folders), zero-shot with the shipped class "
        "names: en, ar, zh, it, ja on all classes, Babel-ImageNet languages on their class subset",
    )


@dataclass
class LoggingConfig:
    """Logging: the run folder and what is written there."""

    logs: str = flag("./logs/", "folder that holds one sub-folder per run")
    name: str | None = flag(None, "name of the run's folder (default: the time, model, lr, batch size and precision)")
    log_every_n_steps: int = flag(100, "log training metrics every N optimizer steps (and at the end of an epoch)")
    report_to: str = flag("", "'tensorboard' to also write TensorBoard scalars")
    debug: bool = flag(False, "log at DEBUG level")
    plot: bool = flag(False, "write a PNG of the loss and accuracy curves to the run folder at the end")


@dataclass
class TrainConfig:
    """Everything the trainer is told, one group per component."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    lock: LockConfig = dataclasses.field(default_factory=LockConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    system: SystemConfig = dataclasses.field(default_factory=SystemConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    logging: LoggingConfig = dataclasses.field(default_factory=LoggingConfig)
