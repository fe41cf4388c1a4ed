"""Image-caption pairs listed in a CSV/TSV file (read with pandas); image paths relative to the file's folder."""

from __future__ import annotations

import logging
import os

import pandas as pd
from torch.utils.data import Dataset

from ..config import DataConfig
from .info import DataInfo, map_style_data_info
from .samples import Sample, SampleDecoder, resolve_path

log = logging.getLogger(__name__)


def read_table(
    path: str, *, sep: str, img_key: str, caption_key: str, lang_key: str | None = None
) -> tuple[list[str], list[object], list[object] | None]:
    """Image paths (resolved), raw caption cells and raw ``lang_key`` cells (None without that column) of a CSV;
    empty or missing cells come back as ""."""
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
    langs = table[lang_key].tolist() if lang_key is not None and lang_key in table.columns else None
    return [resolve_path(p, folder) for p in table[img_key].fillna("")], table[caption_key].tolist(), langs


class CsvDataset(Dataset):
    """Rows of a CSV as (image, tokens), or (image, tokens, lang) with a decoder that reads languages. A bad
    row is counted and replaced by the next good one (wrapping around), so batches keep their size and every
    rank keeps the same number of batches."""

    def __init__(self, path: str, *, decoder: SampleDecoder, sep: str, img_key: str, caption_key: str) -> None:
        self.path, self.decoder = path, decoder
        self.images, self.captions, self.langs = read_table(
            path, sep=sep, img_key=img_key, caption_key=caption_key, lang_key=decoder.lang_key
        )
        if not self.images:
            raise ValueError(f"CSV file {path} has no rows")
        if decoder.lang_key is not None and self.langs is None:
            log.info(
                "%s has no column %r: its captions are untagged (recall over all pairs only)", path, decoder.lang_key
            )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Sample:
        for offset in range(len(self.images)):
            row = (index + offset) % len(self.images)
            lang = self.langs[row] if self.langs is not None else None
            pair = self.decoder.from_file(
                self.images[row], self.captions[row], where=f"{self.path} row {row}", lang_value=lang
            )
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
