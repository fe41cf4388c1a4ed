"""The trainer's data pipelines: WebDataset shards, CSV/TSV tables, synthetic pairs; one ``get_data`` entry point.

Flag meanings follow open_clip v3.3. Training loaders give ``(images (B, 3, H, W) float32, texts (B, L) int64)``
batches; validation loaders add ``langs``, a sequence of B caption language tags ("" where a caption has none).
A sample that cannot be used is skipped, counted by reason in ``DataInfo.skipped`` and logged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .data_csv import build_csv
from .data_info import SKIP_REASONS, DataInfo, SharedEpoch, SkipCounter
from .data_samples import SampleDecoder
from .data_synthetic import build_synthetic
from .data_wds import build_wds

__all__ = ["SKIP_REASONS", "DataConfig", "DataInfo", "SharedEpoch", "SkipCounter", "get_data"]

DATASET_TYPES = ("auto", "webdataset", "csv", "synthetic")
_BUILDERS = {"webdataset": build_wds, "csv": build_csv, "synthetic": build_synthetic}


@dataclass
class DataConfig:
    """Where the data is and how it is read; field names are open_clip's flag names with underscores."""

    train_data: str | None = None  # shards ("a/{000..009}.tar", sources joined by "::") or a CSV/TSV file
    val_data: str | None = None  # the same, for validation (read whole, on the calling rank)
    train_data_upsampling_factors: str | None = None  # per-source weights "1::2" (needs dataset_resampled)
    train_num_samples: int | None = None  # samples per (virtual) epoch over all ranks; shards: else sizes.json
    val_num_samples: int | None = None  # validation samples (shards: sizes batch count; synthetic: how many)
    dataset_type: str = "auto"  # auto (by extension: .csv/.tsv or .tar) | webdataset | csv | synthetic
    dataset_resampled: bool = False  # draw shards with replacement (reseeded per epoch) instead of splitting them
    csv_separator: str = "\t"  # column separator of CSV/TSV files
    csv_img_key: str = "filepath"  # column with image paths (relative paths start at the CSV's folder)
    csv_caption_key: str = "title"  # column with captions
    val_lang_key: str = "lang"  # validation: CSV column / shard .json field tagging a caption's language, if present
    batch_size: int = 64  # samples per batch on each rank
    workers: int = 4  # DataLoader worker processes per rank (0: load in the main process)
    seed: int = 0  # seeds shard order, shuffling and resampling (with epoch, rank and worker)
    drop_last: bool = True  # training: drop a last partial batch (static shapes, e.g. for HPU graphs)
    shuffle_buffer: int = 5000  # shards: samples held per worker for shuffling while training (1: no shuffle)
    pin_memory: bool = False  # pin batches in page-locked memory (only useful with an accelerator)
    synthetic_image_size: int = 224  # side of the random images of dataset_type="synthetic"

    def __post_init__(self) -> None:
        if self.dataset_type not in DATASET_TYPES:
            raise ValueError(f"dataset_type={self.dataset_type!r} is unknown; use one of {', '.join(DATASET_TYPES)}")
        for name in ("batch_size", "shuffle_buffer", "synthetic_image_size"):
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("workers", self.workers, minimum=0)
        _check_int("seed", self.seed, minimum=0)
        for name in ("train_num_samples", "val_num_samples"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), minimum=0)
        if not self.csv_separator:
            raise ValueError("csv_separator is empty; use e.g. '\\t' for TSV or ',' for CSV")
        if not isinstance(self.val_lang_key, str) or not self.val_lang_key.strip():
            raise ValueError(f"val_lang_key={self.val_lang_key!r} is invalid; name a column/json field, e.g. 'lang'")


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name}={value!r} is invalid; use an int >= {minimum}")


def resolve_dataset_type(path: str | None, dataset_type: str) -> str:
    """The concrete type for ``path``: ``dataset_type`` itself, or for "auto" the type its extension names."""
    if dataset_type != "auto":
        return dataset_type
    if path is None:
        raise ValueError("dataset_type='auto' needs a data path; set train_data/val_data or dataset_type")
    ext = path.split("::")[-1].rsplit(".", 1)[-1].lower()
    if ext in ("csv", "tsv"):
        return "csv"
    if ext == "tar":
        return "webdataset"
    raise ValueError(
        f"cannot tell the dataset type of {path!r} from its extension {ext!r}; name .csv/.tsv or .tar files, "
        "or set dataset_type to webdataset or csv"
    )


def get_data(
    cfg: DataConfig,
    *,
    preprocess_train: Callable,
    preprocess_val: Callable,
    tokenizer: Callable,
    epoch: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, DataInfo]:
    """Loaders for the splits ``cfg`` names: "train" (this rank's share) and/or "val".

    ``preprocess_*`` map a PIL image to a (3, H, W) tensor; ``tokenizer`` maps a list of strings to (N, L) ids.
    ``epoch`` seeds the first epoch's order (pass the resumed epoch); later epochs go through ``set_epoch``.
    """
    if not isinstance(cfg, DataConfig):
        raise TypeError(f"cfg must be a DataConfig, got {type(cfg).__name__}")
    functions = {"preprocess_train": preprocess_train, "preprocess_val": preprocess_val, "tokenizer": tokenizer}
    for name, fn in functions.items():
        if not callable(fn):
            raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
    _check_int("world_size", world_size, minimum=1)
    _check_int("epoch", epoch, minimum=0)
    if not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"rank={rank!r} is invalid for world_size={world_size}; use 0 <= rank < world_size")
    synthetic = cfg.dataset_type == "synthetic"
    if synthetic and cfg.train_num_samples is None and cfg.val_num_samples is None:
        raise ValueError("synthetic data needs --train-num-samples (training) and/or --val-num-samples (validation)")
    splits = {
        "train": (cfg.train_data is not None or (synthetic and cfg.train_num_samples is not None), preprocess_train),
        "val": (cfg.val_num_samples is not None if synthetic else cfg.val_data is not None, preprocess_val),
    }
    data = {}
    for split, (wanted, preprocess) in splits.items():
        if not wanted:
            continue
        is_train = split == "train"
        kind = resolve_dataset_type(cfg.train_data if is_train else cfg.val_data, cfg.dataset_type)
        lang_key = None if is_train else cfg.val_lang_key  # only validation reports metrics per language
        decoder = SampleDecoder(preprocess=preprocess, tokenizer=tokenizer, skipped=SkipCounter(), lang_key=lang_key)
        data[split] = _BUILDERS[kind](
            cfg, is_train=is_train, decoder=decoder, epoch=epoch, rank=rank, world_size=world_size
        )
    return data
