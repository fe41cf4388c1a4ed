"""Image-caption pairs listed in a CSV/TSV file (read with pandas); image paths relative to the file's folder.

Training reads rows in the order of a seeded DistributedSampler, and a bad row is replaced by the next good one so
that every batch is full (the contrastive loss gathers equal batches from every rank). Validation reads each row
once and leaves a bad row out, so no row is scored twice. Either way a bad row is counted once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from ..config import DataConfig
from .info import DataInfo, SharedEpoch, SkipCounter, map_style_data_info, stream_data_info
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


@dataclass
class CsvTable:
    """The rows of one CSV: image paths, caption cells and language cells (None without that column)."""

    path: str
    images: list[str]
    captions: list[object]
    langs: list[object] | None

    @classmethod
    def read(cls, path: str, *, decoder: SampleDecoder, sep: str, img_key: str, caption_key: str) -> CsvTable:
        images, captions, langs = read_table(
            path, sep=sep, img_key=img_key, caption_key=caption_key, lang_key=decoder.lang_key
        )
        if not images:
            raise ValueError(f"CSV file {path} has no rows")
        if decoder.lang_key is not None and langs is None:
            untagged = "%s has no column %r: its captions are untagged (recall over all pairs only)"
            log.info(untagged, path, decoder.lang_key)
        return cls(path, images, captions, langs)

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, row: int, decoder: SampleDecoder, *, draws: tuple[int, ...] | None = None) -> Sample | None:
        """Row ``row`` as a pair (or tagged pair), or None when it is unusable (counted by the decoder)."""
        lang = self.langs[row] if self.langs is not None else None
        where = f"{self.path} row {row}"
        path, caption = self.images[row], self.captions[row]
        return decoder.from_file(path, caption, where=where, row=row, lang_value=lang, draws=draws)


class CsvDataset(Dataset):
    """Training rows of a CSV as (image, tokens). A bad row is counted and replaced by the next good one (wrapping
    around), so batches keep their size and every rank keeps the same number of batches. Row ``index`` of epoch E
    is augmented with draws fixed by (seed, E, index), whichever worker prepares it."""

    def __init__(self, table: CsvTable, *, decoder: SampleDecoder, shared_epoch: SharedEpoch) -> None:
        self.table, self.decoder, self.shared_epoch = table, decoder, shared_epoch

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> Sample:
        draws = (self.shared_epoch.value, index)
        for offset in range(len(self.table)):
            pair = self.table.sample((index + offset) % len(self.table), self.decoder, draws=draws)
            if pair is not None:
                return pair
        raise RuntimeError(f"no row of {self.table.path} gives a readable image and a caption; check the file")


class CsvRows(IterableDataset):
    """Validation rows of a CSV, each read once (loader worker w of W reads rows w, w + W, ...); a bad row is counted
    and left out."""

    def __init__(self, table: CsvTable, *, decoder: SampleDecoder) -> None:
        self.table, self.decoder = table, decoder

    def __iter__(self) -> Iterator[Sample]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        given = 0
        for row in range(worker, len(self.table), workers):
            pair = self.table.sample(row, self.decoder)
            if pair is not None:
                given += 1
                yield pair
        if not given and worker == 0 and self.decoder.skipped.total >= len(self.table):
            raise RuntimeError(f"no row of {self.table.path} gives a readable image and a caption; check the file")


def build_csv(
    cfg: DataConfig, *, is_train: bool, decoder: SampleDecoder, epoch: int, rank: int, world_size: int
) -> DataInfo:
    """A DataInfo over ``cfg.train_data`` or ``cfg.val_data`` read as a CSV/TSV table."""
    path = cfg.train_data if is_train else cfg.val_data
    table = CsvTable.read(
        path, decoder=decoder, sep=cfg.csv_separator, img_key=cfg.csv_img_key, caption_key=cfg.csv_caption_key
    )
    decoder = decoder.with_counter(SkipCounter(rows=len(table)))
    if not is_train:
        return stream_data_info(CsvRows(table, decoder=decoder), cfg, num_samples=len(table), skipped=decoder.skipped)
    shared_epoch = SharedEpoch(epoch)
    dataset = CsvDataset(table, decoder=decoder, shared_epoch=shared_epoch)
    return map_style_data_info(
        dataset, cfg, epoch=epoch, rank=rank, world_size=world_size, skipped=decoder.skipped, shared_epoch=shared_epoch
    )
