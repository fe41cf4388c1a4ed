"""What a data pipeline hands the trainer: the loader, its size, the shared epoch and the skipped-sample counter."""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, get_worker_info

from ..config import DataConfig

log = logging.getLogger(__name__)

# Why a sample can be skipped.
SKIP_REASONS = (
    "bad_image",  # the image bytes do not decode (truncated file, not an image at all)
    "missing_image",  # a CSV row or image folder names an image file that does not exist
    "too_many_pixels",  # the image has more pixels than --max-image-pixels (checked before decoding it)
    "extreme_aspect_ratio",  # its long side exceeds --max-image-aspect-ratio times its short side
    "no_image",  # a shard sample has no jpg/jpeg/png/webp entry
    "no_caption",  # a sample has no txt entry (nor a json entry with a "caption")
    "empty_caption",  # the caption is empty or only whitespace
    "bad_caption",  # the caption is not UTF-8 text, or its json does not parse
    "bad_lang",  # validation: a language tag that is not text like "en" or "pt-BR" (or unparsable json)
    "unreadable_shard",  # a shard file could not be opened or read to its end (counts shards, not samples)
)
SAMPLE_REASONS = SKIP_REASONS[:-1]
_SHARD = SKIP_REASONS.index("unreadable_shard")
_LOGGED_PER_REASON = 5
_OPEN_READS = 4096  # shard reads whose skips a process keeps counting (older reads have left the shuffle buffer)


class SkipCounter:
    """Samples skipped, by reason, each counted once however often it is read (passes, epochs, resampling,
    a bad CSV row's neighbours trying it), in shared memory so that DataLoader worker processes add to it.

    Two ledgers, sized before the workers start: ``rows`` (a table: one reason code per row, written by whoever
    reads it) and ``shards`` (per shard and reason, the most skips one complete read of it gave; a shard read again
    gives the same, so a shard counts once; ``unreadable_shard`` counts shards, never samples). Writes are
    idempotent, so no lock is needed with fork, spawn or forkserver workers. The first few skips of each reason
    are logged with ``logging.warning``; later ones are only counted.
    """

    def __init__(self, *, rows: int = 0, shards: int = 0, max_workers: int = 255) -> None:
        self._rows = torch.zeros(rows, dtype=torch.uint8).share_memory_()  # 0: used or unread, else 1 + reason
        self._shards = torch.zeros(shards, len(SKIP_REASONS), dtype=torch.int32).share_memory_()
        self._events = torch.zeros(max_workers + 1, len(SKIP_REASONS), dtype=torch.int64).share_memory_()  # logging
        self._reads: OrderedDict[int, list[int]] = OrderedDict()  # this process's open shard reads: skips so far

    def add(
        self, reason: str, *, detail: str = "", row: int | None = None, shard: int | None = None, read: int = 0
    ) -> None:
        """Count a skip of ``reason`` for table ``row``, or in ``shard`` during this process's read number ``read``
        (``unreadable_shard``: the shard itself); log it if it is among the first few of its reason."""
        if reason not in SKIP_REASONS:
            raise ValueError(f"unknown skip reason {reason!r}; use one of {', '.join(SKIP_REASONS)}")
        if (row is None) == (shard is None):
            raise ValueError("name the skipped sample: give row= (a table row) or shard= (a shard index)")
        column = SKIP_REASONS.index(reason)
        size, index = (len(self._rows), row) if row is not None else (len(self._shards), shard)
        if not 0 <= index < size:
            kind = "rows" if row is not None else "shards"
            raise ValueError(f"{kind[:-1]} {index} is outside this counter's {size} {kind}; size it for the data")
        if row is not None:
            self._rows[row] = column + 1
        elif column == _SHARD:
            self._shards[shard, column] = 1
        else:
            counts = self._reads.setdefault(read, [0] * len(SKIP_REASONS))
            self._reads.move_to_end(read)
            while len(self._reads) > _OPEN_READS:
                self._reads.popitem(last=False)
            counts[column] += 1
            self._shards[shard, column] = max(int(self._shards[shard, column]), counts[column])
        self._log(column, detail)

    def _log(self, column: int, detail: str) -> None:
        info = get_worker_info()
        self._events[0 if info is None else 1 + info.id % (self._events.shape[0] - 1), column] += 1
        count = int(self._events[:, column].sum())
        if count <= _LOGGED_PER_REASON:
            more = " (further skips for this reason are counted, not logged)" if count == _LOGGED_PER_REASON else ""
            log.warning("skipped a sample (%s): %s%s", SKIP_REASONS[column], detail, more)

    def by_reason(self) -> dict[str, int]:
        """Counts of the reasons that occurred (reasons with no skip are left out); unreadable_shard counts shards."""
        counts = self._shards.sum(dim=0, dtype=torch.int64)
        counts[: len(SAMPLE_REASONS)] += torch.bincount(self._rows, minlength=len(SKIP_REASONS) + 1)[1:-1]
        return {reason: n for reason, n in zip(SKIP_REASONS, counts.tolist()) if n}

    @property
    def total(self) -> int:
        """Samples skipped, every reason together (unreadable shards are counted apart, in ``shards``)."""
        return sum(n for reason, n in self.by_reason().items() if reason != "unreadable_shard")

    @property
    def shards(self) -> int:
        """Shards that could not be opened or read to their end."""
        return int(self._shards[:, _SHARD].sum())

    def metrics(self) -> dict[str, int]:
        """``skipped_samples``, then ``skipped_<reason>`` and ``unreadable_shards`` where non-zero: a metrics row."""
        counts = self.by_reason()
        out = {"skipped_samples": self.total}
        out.update({f"skipped_{r}": n for r, n in counts.items() if r != "unreadable_shard"})
        if self.shards:
            out["unreadable_shards"] = self.shards
        return out

    def reset(self) -> None:
        """Set every count back to zero; call it while no worker is loading."""
        self._rows.zero_()
        self._shards.zero_()
        self._events.zero_()
        self._reads.clear()

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


def make_loader(dataset: Dataset, cfg: DataConfig, *, sampler: Any = None, drop_last: bool = False) -> DataLoader:
    """The DataLoader every pipeline uses: ``cfg.batch_size`` and ``cfg.workers`` (kept alive across epochs).

    It has its own generator: starting workers draws their base seed from it, not from torch's global generator,
    which dropout draws from and which a resumed run reaches at another point (workers start once per run)."""
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        sampler=sampler,
        shuffle=False,
        drop_last=drop_last,
        num_workers=cfg.workers,
        persistent_workers=cfg.workers > 0,
        pin_memory=bool(cfg.pin_memory),  # None (the device decides) reaches here only outside the trainer
        generator=torch.Generator().manual_seed(cfg.seed),
    )


def map_style_data_info(
    dataset: Dataset,
    cfg: DataConfig,
    *,
    epoch: int,
    rank: int,
    world_size: int,
    skipped: SkipCounter,
    shared_epoch: SharedEpoch | None = None,
    is_train: bool = True,
) -> DataInfo:
    """A DataInfo over an indexable dataset: for training a seeded DistributedSampler (this rank's share,
    reshuffled by ``set_epoch``, even with one rank; ``shared_epoch`` tells the workers the epoch); for validation
    every sample in order."""
    sampler = None
    if is_train:
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=cfg.seed)
        sampler.set_epoch(epoch)
    loader = make_loader(dataset, cfg, sampler=sampler, drop_last=is_train and cfg.drop_last)
    if len(loader) == 0:
        raise ValueError(
            f"{len(dataset)} sample(s) over {world_size} rank(s) make no full batch of batch_size={cfg.batch_size}; "
            "use a smaller batch_size or more data"
        )
    return DataInfo(loader, len(dataset), len(loader), skipped, sampler=sampler, shared_epoch=shared_epoch)


def stream_data_info(dataset: IterableDataset, cfg: DataConfig, *, num_samples: int, skipped: SkipCounter) -> DataInfo:
    """A DataInfo over a validation stream that leaves bad samples out: ``num_batches`` is at most
    ``ceil(num_samples / batch_size)`` (fewer when samples are left out)."""
    loader = make_loader(dataset, cfg)
    return DataInfo(loader, num_samples, math.ceil(num_samples / cfg.batch_size), skipped)
