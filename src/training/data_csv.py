"""Image-caption pairs listed in a CSV/TSV file (read with pandas); image paths relative to the file's folder."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pandas as pd
from torch.utils.data import Dataset

from .data_info import DataInfo, map_style_data_info
from .data_samples import Pair, SampleDecoder, resolve_path

if TYPE_CHECKING:
    from .data import DataConfig


def read_table(path: str, *, sep: str, img_key: str, caption_key: str) -> tuple[list[str], list[object]]:
    """Image paths (resolved) and raw caption cells of a CSV; empty or missing cells come back as ""."""
    if not os.path.isfile(path):
        raise ValueError(f"CSV file {path!r} does not exist; check train_data/val_data")
    # no NA guessing: a caption that reads "NA" or "null" stays text
    table = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    for key, flag in ((img_key, "csv_img_key"), (caption_key, "csv_caption_key")):
        if key not in table.columns:
            raise ValueError(
                f"column {key!r} is not in {path} (columns: {list(table.columns)}); set {flag} "
                f"(and csv_separator={sep!r} if the columns did not split)"
            )
    folder = os.path.dirname(os.path.abspath(path))
    return [resolve_path(p, folder) for p in table[img_key].fillna("")], table[caption_key].tolist()


class CsvDataset(Dataset):
    """Rows of a CSV as (image, tokens). A bad row is counted and replaced by the next good one (wrapping
    around), so batches keep their size and every rank keeps the same number of batches."""

    def __init__(self, path: str, *, decoder: SampleDecoder, sep: str, img_key: str, caption_key: str) -> None:
        self.path, self.decoder = path, decoder
        self.images, self.captions = read_table(path, sep=sep, img_key=img_key, caption_key=caption_key)
        if not self.images:
            raise ValueError(f"CSV file {path} has no rows")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Pair:
        for offset in range(len(self.images)):
            row = (index + offset) % len(self.images)
            pair = self.decoder.from_file(self.images[row], self.captions[row], where=f"{self.path} row {row}")
            if pair is not None:
                return pair
        raise RuntimeError(f"no row of {self.path} gives a readable image and a caption; check the file")


def build_csv(
    cfg: DataConfig, *, is_train: bool, decoder: SampleDecoder, epoch: int, rank: int, world_size: int
) -> DataInfo:
    """A DataInfo over ``cfg.train_data`` or ``cfg.val_data`` read as a CSV/TSV table."""
    path = cfg.train_data if is_train else cfg.val_data
    dataset = CsvDataset(
        path, decoder=decoder, sep=cfg.csv_separator, img_key=cfg.csv_img_key, caption_key=cfg.csv_caption_key
    )
    return map_style_data_info(
        dataset, cfg, is_train=is_train, epoch=epoch, rank=rank, world_size=world_size, skipped=decoder.skipped
    )
