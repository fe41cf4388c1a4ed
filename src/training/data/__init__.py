"""The trainer's data pipelines: WebDataset shards, CSV/TSV tables, synthetic pairs; one ``get_data`` entry point.

Flag meanings follow open_clip v3.3. Training loaders give ``(images (B, 3, H, W) float32, texts (B, L) int64)``
batches; validation loaders add ``langs``, a sequence of B caption language tags ("" where a caption has none).
A sample that cannot be used (bad bytes, no caption, an image beyond --max-image-pixels or
--max-image-aspect-ratio...) is skipped, counted once by reason in ``DataInfo.skipped`` and logged. A training
sample's augmentation depends on (seed, epoch, sample) alone, so a resumed run repeats it whatever the workers.
"""

from __future__ import annotations

from collections.abc import Callable

from open_mclip.image_ops import ImageBounds, with_image_bounds
from open_mclip.transform import ImageTransform

from ..config import DataConfig
from ..flags import check_int
from .csv import build_csv
from .info import SKIP_REASONS, DataInfo, SharedEpoch, SkipCounter
from .samples import SampleDecoder
from .synthetic import build_synthetic
from .wds import build_wds

__all__ = ["SKIP_REASONS", "DataConfig", "DataInfo", "SharedEpoch", "SkipCounter", "bounded", "get_data"]

_BUILDERS = {"webdataset": build_wds, "csv": build_csv, "synthetic": build_synthetic}


def bounded(preprocess: Callable, bounds: ImageBounds) -> Callable:
    """``preprocess`` with its own size check (the first step of the library's transforms) set to ``bounds``, so
    it refuses no image the data flags allow; any other callable is left as it is (the decoder checks first)."""
    return with_image_bounds(preprocess, bounds) if isinstance(preprocess, ImageTransform) else preprocess


def draft_size(preprocess: Callable, *, split: str) -> tuple[int, int]:
    """The size --image-draft decodes JPEGs down to: the longest side ``preprocess`` produces, in both directions
    (so a later resize or crop of any mode still starts from at least its output size)."""
    size = getattr(preprocess, "size", None)
    if size is None:
        raise ValueError(
            f"--image-draft: the {split} transform ({type(preprocess).__name__}) does not say the size it produces; "
            "use open_mclip's image_transform (ImageTransform.size) or leave out --image-draft"
        )
    side = max(size)
    return side, side


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
    check_int("world_size", world_size, minimum=1)
    check_int("epoch", epoch, minimum=0)
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
        decoder = SampleDecoder(
            preprocess=bounded(preprocess, cfg.image_bounds),
            tokenizer=tokenizer,
            lang_key=lang_key,
            bounds=cfg.image_bounds,
            seed=cfg.seed,
            draft=draft_size(preprocess, split=split) if cfg.image_draft else None,
        )
        data[split] = _BUILDERS[kind](
            cfg, is_train=is_train, decoder=decoder, epoch=epoch, rank=rank, world_size=world_size
        )
    return data
