"""The trainer's configuration: grouped dataclasses, one per component, each component gets only its group.

Every field is a command-line flag (field `foo_bar` is `--foo-bar`, named as in open_clip v3.3): `params.py`
builds the parser from the fields and the help, choices and nargs that `flag()` (flags.py) puts in their metadata, so
a setting is documented once, where it is declared. This module imports nothing of the trainer: it sits below
every component that reads it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from open_mclip.constants import HF_HUB_PREFIX, LOCAL_DIR_PREFIX
from open_mclip.image_ops import INTERPOLATIONS, ImageBounds
from open_mclip.loss import SIGLIP_DIST_IMPLS
from open_mclip.precision import PRECISION_CHOICES
from open_mclip.transform import RESIZE_MODES, image_transform

from .flags import ANY_FINITE, NON_NEGATIVE, POSITIVE, Range, check_ranges, count, flag, option

DATASET_TYPES = ("auto", "webdataset", "csv", "synthetic")
MAX_DECODABLE_PIXELS = 2 * 89_478_485  # Pillow raises DecompressionBombError beyond twice its MAX_IMAGE_PIXELS
LR_SCHEDULERS = ("cosine", "const", "const-cooldown")
OPTIMIZERS = ("adamw",)
TIMM_OPTIMIZERS = (
    "timm's optimizers are not available here: the trainer builds AdamW's parameter groups itself (per-tower "
    "learning rates, layer-wise decay, no decay on gains and embeddings); use --opt adamw"
)
IMAGE_INTERPOLATIONS = (*INTERPOLATIONS, "random")  # open_clip's "random" resizes bicubic without timm, as here
REPORT_SINKS = ("tensorboard", "wandb")  # --report-to: a comma-separated list of these, or "all"
REMOTE_SYNC_PROTOCOLS = ("s3", "fsspec")  # s3: fsspec's s3 filesystem (s3fs) on an s3:// URL


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
        None,
        "samples per (virtual) epoch over all ranks; required for shards without sizes.json and for resampling",
        valid=count(1),
    )
    val_num_samples: int | None = flag(
        None, "validation samples (shards of unknown size: sizes the batch count; synthetic: how many)", valid=count(1)
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
    batch_size: int = flag(64, "batch size per process", valid=count(1))
    workers: int = flag(4, "data loader worker processes per process (0: load in the main process)", valid=count(0))
    seed: int = flag(
        0,
        "random seed: weights, shard order, shuffling, resampling, augmentation (with epoch and rank)",
        valid=count(0),
    )
    drop_last: bool = flag(True, "training: drop a last partial batch (static shapes, e.g. for HPU graphs)")
    shuffle_buffer: int = flag(
        5000, "shards: samples each worker holds for shuffling while training (1: no shuffle)", valid=count(1)
    )
    pin_memory: bool | None = flag(
        None,
        "pin batches in page-locked memory, so their copy to the accelerator can overlap compute (default: where the "
        "device gains from it, CUDA; --no-pin-memory turns it off)",
    )
    image_draft: bool = flag(
        False,
        "decode JPEGs at the smallest 1/2, 1/4 or 1/8 scale that keeps both sides at least the model's image size "
        "(Pillow's draft mode): large photos decode several times faster, but the pixels differ from open_clip's "
        "full decode and resize (docs/performance.md measures both)",
    )
    synthetic_image_size: int = flag(
        224, "side in pixels of the random images of --dataset-type synthetic", valid=count(1)
    )
    max_image_pixels: int = flag(
        ImageBounds.max_pixels,
        "skip (and count) images of more pixels than this, in training, validation and zero-shot, before decoding",
        valid=count(1),
    )
    max_image_aspect_ratio: float = flag(
        ImageBounds.max_aspect_ratio,
        "skip (and count) images whose long side exceeds this many times the short one (resizing the short side "
        "of a 1x4000 image to 224 px costs 800 MB)",
        valid=Range(low=1),
    )

    @property
    def image_bounds(self) -> ImageBounds:
        return ImageBounds(self.max_image_pixels, self.max_image_aspect_ratio)

    def __post_init__(self) -> None:
        if self.dataset_type not in DATASET_TYPES:
            raise ValueError(f"dataset_type={self.dataset_type!r} is unknown; use one of {', '.join(DATASET_TYPES)}")
        check_ranges(self)
        if self.max_image_pixels > MAX_DECODABLE_PIXELS:
            raise ValueError(
                f"--max-image-pixels {self.max_image_pixels} is invalid: Pillow refuses images over "
                f"{MAX_DECODABLE_PIXELS} pixels itself (DecompressionBombError); use at most that"
            )
        if not self.csv_separator:
            raise ValueError("csv_separator is empty; use e.g. '\\t' for TSV or ',' for CSV")
        if not isinstance(self.val_lang_key, str) or not self.val_lang_key.strip():
            raise ValueError(f"val_lang_key={self.val_lang_key!r} is invalid; name a column/json field, e.g. 'lang'")


@dataclass
class ModelConfig:
    """Model: which architecture and weights, and what to override when building it.

    The trainer's model group (flags), not open_mclip's architecture config of the same name.
    """

    model: str = flag(
        "RN50", f"architecture name (see open_mclip.list_models()), {HF_HUB_PREFIX}org/repo or {LOCAL_DIR_PREFIX}PATH"
    )
    pretrained: str = flag("", "pretrained tag (see open_mclip.list_pretrained()) or checkpoint file to start from")
    pretrained_image: bool = flag(
        False, "a timm image tower starts from timm's pretrained (ImageNet) weights, when no --pretrained is given"
    )
    cache_dir: str | None = flag(None, "where downloaded weights and tokenizers are cached (default: the hub's)")
    force_quick_gelu: bool = flag(False, "use QuickGELU activations (as OpenAI's CLIP weights were trained)")
    force_custom_text: bool = flag(
        False, "open_clip's CustomTextCLIP layout: accepted, one model class serves both of open_clip's layouts"
    )
    force_patch_dropout: float | None = flag(
        None, "override the model's patch dropout rate (0 disables it)", valid=Range(0, 1, high_open=True)
    )
    force_image_size: int | tuple[int, int] | None = flag(
        None, "override the image size: one side, or height width (positions are resized)", nargs="+", valid=count(1)
    )
    force_context_length: int | None = flag(None, "override the text context length in tokens", valid=count(1))
    image_mean: tuple[float, ...] | None = flag(
        None, "override the normalisation mean per channel", nargs="+", valid=ANY_FINITE
    )
    image_std: tuple[float, ...] | None = flag(
        None, "override the normalisation std per channel", nargs="+", valid=POSITIVE
    )
    image_interpolation: str | None = flag(
        None,
        "override the resize interpolation ('random': bicubic, as open_clip without timm)",
        choices=IMAGE_INTERPOLATIONS,
    )
    image_resize_mode: str | None = flag(None, "override the eval resize (and crop) mode", choices=RESIZE_MODES)
    aug_cfg: dict = flag(
        help="train augmentation settings as key=value pairs read as Python literals, e.g. scale='(0.8, 1.0)' "
        "color_jitter_prob=0.5",
        factory=dict,
    )
    grad_checkpointing: bool = flag(False, "recompute activations in the backward pass (less memory, more compute)")
    channels_last: bool | None = flag(
        None,
        "keep a ResNet image tower's convolution weights and images channels-last (NHWC; the same features to float "
        "rounding; default: where the device gains from it, CPU and CUDA; --no-channels-last keeps NCHW; refused "
        "for towers without convolution stages)",
    )
    torchcompile: bool = flag(False, "torch.compile the model for training")

    def __post_init__(self) -> None:
        check_ranges(self)
        size = self.force_image_size
        if isinstance(size, (tuple, list)) and len(size) not in (1, 2):
            raise ValueError(f"--force-image-size {' '.join(map(str, size))}: give one side, or height and width")
        for name in ("image_mean", "image_std"):
            values = getattr(self, name)
            if values is not None and len(values) not in (1, 3):
                raise ValueError(f"{option(name)} {' '.join(map(str, values))}: give one value, or one per RGB channel")
        if self.aug_cfg:  # the library's own checks, on a transform built for nothing (no image is read)
            try:
                image_transform(32, is_train=True, aug_cfg=self.aug_cfg)
            except (TypeError, ValueError) as err:
                raise ValueError(f"--aug-cfg {self.aug_cfg}: {err}") from err


@dataclass
class LockConfig:
    """LiT locking: freeze towers but their top groups, as open_clip counts them or by our uniform block rule."""

    lock_image: bool = flag(False, "freeze the image tower")
    lock_image_unlocked_groups: int = flag(
        0,
        "open_clip's LiT groups left trainable at the top of a locked image tower (ViT: the projection is a group "
        "of its own, the last block comes with ln_post; timm: timm's layer groups, the head never frozen; "
        "ModifiedResNet: 0 only)",
        valid=count(0),
    )
    lock_image_unlocked_blocks: int | None = flag(
        None,
        "instead of --lock-image-unlocked-groups: our uniform rule for every tower type, the top N blocks (layers, "
        "ResNet stages, timm groups) and the head (final norm, pooling, projection) trainable; N >= blocks: all",
        valid=count(0),
    )
    lock_image_freeze_bn_stats: bool = flag(False, "keep BatchNorm statistics of frozen image-tower layers fixed")
    lock_text: bool = flag(False, "freeze the text tower")
    lock_text_unlocked_layers: int = flag(
        0,
        "open_clip's LiT groups left trainable at the top of a locked text tower (Transformer: the projection is a "
        "group of its own, the last block comes with ln_final; Hugging Face: the top encoder layers)",
        valid=count(0),
    )
    lock_text_unlocked_blocks: int | None = flag(
        None,
        "instead of --lock-text-unlocked-layers: our uniform rule, the top N layers and the head (final norm, "
        "projection) of a locked text tower trainable; N >= layers: all",
        valid=count(0),
    )
    lock_text_freeze_layer_norm: bool = flag(
        False,
        "also freeze the LayerNorms of a locked Hugging Face text tower (LiT proper: only the projection trains); "
        "open_clip requires it for its own Transformer text towers, whose LayerNorms are locked like other weights",
    )

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass
class LossConfig:
    """Loss: CLIP's softmax or SigLIP's sigmoid, and how it spans the ranks."""

    siglip: bool = flag(
        False,
        "the SigLIP sigmoid loss instead of CLIP's softmax loss (a fresh model starts at logit scale ln 10 and "
        "logit bias -10, as open_clip's trainer builds it)",
    )
    local_loss: bool = flag(False, "each rank scores its own samples against all (N x N*W logits, not N*W x N*W)")
    gather_with_grad: bool = flag(False, "let gradients flow through the features gathered from other ranks")
    loss_dist_impl: str | None = flag(
        None, "how the SigLIP loss meets other ranks' texts (default bidir)", choices=SIGLIP_DIST_IMPLS
    )


@dataclass
class OptimConfig:
    """Optimizer: AdamW, its learning rates per tower, weight decay, clipping and accumulation."""

    opt: str = flag("adamw", f"the optimizer: {', '.join(OPTIMIZERS)}")
    lr: float | None = flag(None, "peak learning rate (default 5e-4, the CLIP paper's)", valid=NON_NEGATIVE)
    lr_image: float | None = flag(
        None,
        "peak learning rate of the image tower (default --lr; LiT: a fresh image tower learns fast)",
        valid=NON_NEGATIVE,
    )
    lr_text: float | None = flag(
        None,
        "peak learning rate of the text tower (default --lr; a pretrained text tower moves slowly)",
        valid=NON_NEGATIVE,
    )
    layer_decay_image: float = flag(
        1.0,
        "layer-wise lr decay in (0, 1] for the image tower: block i from the top gets lr * decay**i",
        valid=Range(0, 1, low_open=True),
    )
    layer_decay_text: float = flag(
        1.0,
        "layer-wise lr decay in (0, 1] for the text tower (embeddings count as the lowest block)",
        valid=Range(0, 1, low_open=True),
    )
    beta1: float | None = flag(None, "Adam beta1 (default 0.9)", valid=Range(0, 1, high_open=True))
    beta2: float | None = flag(
        None,
        "Adam beta2 (default 0.98 if the model name has 'vit', as open_clip, else 0.999)",
        valid=Range(0, 1, high_open=True),
    )
    eps: float | None = flag(
        None, "Adam epsilon (default 1e-6 if the model name has 'vit', as open_clip, else 1e-8)", valid=POSITIVE
    )
    wd: float = flag(
        0.2,
        "weight decay (as open_clip: not on parameters under 2-d, nor on names with bn, ln, bias, logit_scale)",
        valid=NON_NEGATIVE,
    )
    no_decay_embeddings: bool = flag(
        False, "no weight decay on embedding tables and positional/class embeddings either (open_clip decays them)"
    )
    dense_token_tables: bool = flag(
        False,
        "update large text token tables with torch's dense AdamW step (default: an exact row-sparse AdamW step that "
        "updates only rows that had gradients, plus the weight decay of every row; the same numbers, faster)",
    )
    grad_clip_norm: float | None = flag(
        None, "clip the global gradient norm to this value (omit it for no clipping)", valid=POSITIVE
    )
    accum_freq: int = flag(
        1, "contrastive gradient accumulation: update every N batches as one batch of N x --batch-size", valid=count(1)
    )

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.opt not in OPTIMIZERS:
            reason = TIMM_OPTIMIZERS if self.opt.startswith("timm/") else f"use one of {', '.join(OPTIMIZERS)}"
            raise ValueError(f"--opt {self.opt} is not supported: {reason}")


@dataclass
class ScheduleConfig:
    """Schedule: epochs, warm-up and the learning-rate curve."""

    epochs: int = flag(32, "epochs to train", valid=count(1))
    epochs_cooldown: int | None = flag(None, "const-cooldown: cool down over the last N epochs", valid=count(1))
    warmup: int = flag(10000, "linear warm-up steps", valid=count(0))
    lr_scheduler: str = flag("cosine", "the learning-rate curve after warm-up", choices=LR_SCHEDULERS)
    lr_cooldown_end: float = flag(
        0.0, "const-cooldown: the learning rate at the end of the cool-down", valid=NON_NEGATIVE
    )
    lr_cooldown_power: float = flag(
        1.0, "const-cooldown: power of the polynomial cool-down (1: linear)", valid=POSITIVE
    )
    skip_scheduler: bool = flag(False, "keep the learning rate at its peak (no warm-up, no decay)")

    def __post_init__(self) -> None:
        check_ranges(self)


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
    seed: int = flag(
        0,
        "random seed: weights, shard order, shuffling, resampling, augmentation (with epoch and rank)",
        valid=count(0),
    )
    max_nonfinite_steps: int = flag(
        3,
        "stop the run (exit status 3) after N optimizer steps in a row with a non-finite loss or gradient (each "
        "such step is skipped and counted; under --precision amp, steps the grad scaler skips)",
        valid=count(1),
    )

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass
class CheckpointConfig:
    """Checkpoints: when to save and what to resume from."""

    save_frequency: int = flag(
        1, "save a checkpoint every N epochs (0: never, except --save-most-recent)", valid=count(0)
    )
    save_every_n_steps: int | None = flag(None, "also save a checkpoint every N optimizer steps", valid=count(1))
    save_most_recent: bool = flag(False, "keep the newest state in epoch_latest.pt after every epoch")
    delete_previous_checkpoint: bool = flag(False, "remove the previous checkpoint after writing a new one")
    resume: str | None = flag(
        None,
        "checkpoint to resume from: a file (ours or open_clip_train's), an fsspec URL, or 'latest' for the newest "
        "complete one of this run (with --remote-sync: here or at the remote)",
    )
    remote_sync: str | None = flag(
        None, "copy the run folder to URL/NAME in the background (any fsspec URL: s3://, gs://, file://, ...)"
    )
    remote_sync_frequency: int = flag(300, "seconds between two background copies of --remote-sync", valid=count(1))
    remote_sync_protocol: str = flag(
        "s3",
        "how --remote-sync copies: fsspec, or s3 (fsspec's s3 filesystem: needs s3fs)",
        choices=REMOTE_SYNC_PROTOCOLS,
    )

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.remote_sync is None:
            return
        if self.remote_sync_protocol not in REMOTE_SYNC_PROTOCOLS:
            raise ValueError(f"remote_sync_protocol={self.remote_sync_protocol!r} is unknown; use s3 or fsspec")
        if self.remote_sync_protocol == "s3" and not self.remote_sync.startswith("s3://"):
            raise ValueError(
                f"--remote-sync {self.remote_sync} with --remote-sync-protocol s3 needs an s3:// URL; for another "
                "place add --remote-sync-protocol fsspec"
            )


@dataclass
class EvalConfig:
    """Evaluation: validation loss and recall, zero-shot classification per language."""

    val_frequency: int = flag(1, "validate every N epochs and after the last (0: never)", valid=count(0))
    zeroshot_frequency: int = flag(2, "evaluate zero-shot every N epochs and after the last (0: never)", valid=count(0))
    zeroshot_data: str | None = flag(None, "ImageFolder-layout directory for zero-shot classification")
    zeroshot_classnames: str | None = flag(
        None, "JSON of class names: a list in folder order, {folder: name}, or either per language"
    )
    zeroshot_templates: str | None = flag(
        None, "JSON of prompt templates with '{}' for the class name: a list or {language: list}"
    )
    zeroshot_languages: str | None = flag(
        None, "comma-separated languages to evaluate (default: all in the files; en for the ImageNet sets)"
    )
    imagenet_val: str | None = flag(
        None,
        "ImageNet-1k validation set in ImageFolder layout (1000 wnid folders), zero-shot with the shipped class "
        "names: en, ar, zh, it, ja on all classes, Babel-ImageNet languages on their class subset",
    )
    imagenet_v2: str | None = flag(
        None,
        "ImageNet-V2, zero-shot as --imagenet-val: the folder open_clip reads (it holds ImageNetV2-matched-frequency/"
        "), the class-index folders 0..999 themselves, or 1000 wnid folders",
    )

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass
class LoggingConfig:
    """Logging: the run folder and what is written there."""

    logs: str = flag("./logs/", "folder that holds one sub-folder per run")
    name: str | None = flag(None, "name of the run's folder (default: the time, model, lr, batch size and precision)")
    log_every_n_steps: int = flag(
        100, "log training metrics every N optimizer steps (and at the end of an epoch)", valid=count(1)
    )
    log_local: bool = flag(
        False, "write a log file (out-RANK) on the first process of every node, not only out.log on rank 0"
    )
    report_to: str = flag(
        "", "also report to: tensorboard, wandb (Weights & Biases), both comma-separated, or all (open_clip's)"
    )
    wandb_project_name: str = flag("open-clip", "Weights & Biases project (--report-to wandb)")
    wandb_notes: str = flag("", "Weights & Biases notes of the run (--report-to wandb)")
    copy_codebase: bool = flag(
        False, "copy the trainer's and library's code into the run folder (code/), to rerun the run as it was"
    )
    debug: bool = flag(False, "log at DEBUG level")
    plot: bool = flag(False, "write a PNG of the loss and accuracy curves to the run folder at the end")

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.logs.strip().lower() == "none":
            raise ValueError(
                f"--logs {self.logs}: open_clip's 'store no logs' (which still writes out.log and params.txt into "
                "./None/NAME and only skips checkpoints and TensorBoard) is not supported; give a folder, and "
                "--save-frequency 0 to write no epoch checkpoints"
            )
        report_sinks(self.report_to)

    @property
    def sinks(self) -> frozenset[str]:
        """The sinks --report-to names, beyond the console, out.log and metrics.jsonl."""
        return report_sinks(self.report_to)


def report_sinks(value: str) -> frozenset[str]:
    """`--report-to` as open_clip reads it (`wandb`, `tensorboard`, both joined by a comma, or `all`), strictly: an
    unknown name is an error instead of silently reporting nowhere."""
    names = {part.strip() for part in value.split(",")} - {"", "none"}
    unknown = sorted(names - {*REPORT_SINKS, "all"})
    if unknown:
        raise ValueError(
            f"--report-to {value!r}: unknown {', '.join(unknown)}; use tensorboard, wandb, tensorboard,wandb or all"
        )
    return frozenset(REPORT_SINKS) if "all" in names else frozenset(names)


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
