"""What a data pipeline hands the trainer: the loader, its size, the shared epoch and the skipped-sample counter."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, get_worker_info

from ..config import DataConfig

log = logging.getLogger(__name__)

# Why a sample can be skipped. One shared slot per reason, so counts from every loader worker add up.
SKIP_REASONS = (
    "bad_image",  # the image bytes do not decode (truncated file, not an image at all)
    "missing_image",  # a CSV row names an image file that does not exist
    "no_image",  # a shard sample has no jpg/jpeg/png/webp entry
    "no_caption",  # a sample has no txt entry (nor a json entry with a "caption")
    "empty_caption",  # the caption is empty or only whitespace
    "bad_caption",  # the caption is not UTF-8 text, or its json does not parse
    "bad_lang",  # validation: a language tag that is not text like "en" or "pt-BR" (or unparsable json)
    "unreadable_shard",  # a shard file could not be opened or read to its end (counts shards, not samples)
)
_LOGGED_PER_REASON = 5


class SkipCounter:
    """Samples skipped, by reason, counted in shared memory so that DataLoader worker processes add to it.

    Each process writes only its own row of a shared tensor (row 0: the main process, row 1 + i: worker i),
    so no lock is needed and it works with fork, spawn and forkserver workers alike. The first few skips of
    each reason (over all processes) are logged with ``logging.warning``; later ones are only counted.
    """

    def __init__(self, *, max_workers: int = 255) -> None:
        self._counts = torch.zeros(max_workers + 1, len(SKIP_REASONS), dtype=torch.int64).share_memory_()

    def add(self, reason: str, *, detail: str = "") -> int:
        """Count one skip of ``reason`` and log it if it is among the first few; returns the count so far."""
        if reason not in SKIP_REASONS:
            raise ValueError(f"unknown skip reason {reason!r}; use one of {', '.join(SKIP_REASONS)}")
        column = SKIP_REASONS.index(reason)
        info = get_worker_info()
        row = 0 if info is None else 1 + info.id % (self._counts.shape[0] - 1)
        self._counts[row, column] += 1
        count = int(self._counts[:, column].sum())
        if count <= _LOGGED_PER_REASON:
            more = " (further skips for this reason are counted, not logged)" if count == _LOGGED_PER_REASON else ""
            log.warning("skipped a sample (%s): %s%s", reason, detail, more)
        return count

    @property
    def total(self) -> int:
        """All skips so far, every reason together."""
        return int(self._counts.sum())

    def by_reason(self) -> dict[str, int]:
        """Counts of the reasons that occurred (reasons with no skip are left out)."""
        counts = self._counts.sum(dim=0).tolist()
        return {reason: n for reason, n in zip(SKIP_REASONS, counts) if n}

    def reset(self) -> None:
        """Set every count back to zero (e.g. to report skips per epoch); call it while no worker is loading."""
        self._counts.zero_()

    def __repr__(self) -> str:
        return f"SkipCounter({self.by_reason()})"


class SharedEpoch:
    """An epoch number in shared memory: ``set_epoch`` in the main process is seen by running loader workers."""

    def __init__(self, epoch: int = 0) -> None:
        self._value = torch.tensor([epoch], dtype=torch.int64).share_memory_()

    @property
    def value(self) -> int:
        return int(self._value[0])

    @value.setter
    def value(self, epoch: int) -> None:
        self._value[0] = epoch


@dataclass
class DataInfo:
    """One split's loader, with the sample and batch counts per epoch for this rank and the skip counter.

    ``num_batches`` is exact for training (every rank runs the same number of full batches); for validation
    from shards of unknown size it is an estimate from ``val_num_samples`` (0 when that is not given).
    """

    dataloader: DataLoader
    num_samples: int
    num_batches: int
    skipped: SkipCounter
    sampler: Any = None
    shared_epoch: SharedEpoch | None = None

    def set_epoch(self, epoch: int) -> None:
        """Reseed the order for ``epoch``: the sampler's shuffle, or the shard streams read by the workers."""
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch={epoch!r} is invalid; use an int >= 0")
        if self.shared_epoch is not None:
            self.shared_epoch.value = epoch
        if isinstance(self.sampler, DistributedSampler):
            self.sampler.set_epoch(epoch)


def map_style_data_info(
    dataset: Dataset, cfg: DataConfig, *, is_train: bool, epoch: int, rank: int, world_size: int, skipped: SkipCounter
) -> DataInfo:
    """A DataInfo over an indexable dataset: for training a seeded DistributedSampler (this rank's share,
    reshuffled by ``set_epoch``, even with one rank); for validation every sample in order, in batches of
    ``cfg.batch_size`` read by ``cfg.workers`` workers."""
    batch_size, workers, seed = cfg.batch_size, cfg.workers, cfg.seed
    sampler = None
    if is_train:
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        drop_last=is_train and cfg.drop_last,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=cfg.pin_memory,
    )
    if len(loader) == 0:
        raise ValueError(
            f"{len(dataset)} sample(s) over {world_size} rank(s) make no full batch of batch_size={batch_size}; "
            "use a smaller batch_size or more data"
        )
    return DataInfo(loader, len(dataset), len(loader), skipped, sampler=sampler)
