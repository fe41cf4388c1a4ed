"""WebDataset tar shards: shard lists, per-rank and per-worker splitting, resampling, shuffling and reading.

Shards are read with the standard library's ``tarfile`` through ``webdataset.gopen`` (local paths, ``pipe:``,
URLs), and grouped into samples by key here, so the pipeline does not depend on webdataset's grouping stage
(open_clip's copy of it breaks with webdataset 1.0.x).
"""

from __future__ import annotations

import ast
import itertools
import json
import logging
import math
import os
import random
import re
import tarfile
import zlib
from collections.abc import Iterator
from typing import Any

import braceexpand
from torch.utils.data import IterableDataset, get_worker_info
from webdataset.gopen import gopen

from ..config import DataConfig
from .info import DataInfo, SharedEpoch, SkipCounter, make_loader
from .samples import Sample, SampleDecoder

log = logging.getLogger(__name__)

_META_ENTRY = re.compile(r"__[^/]*__($|/)")  # e.g. __len__, __index__/...: shard metadata, not sample entries
_MAX_SKIPS_IN_A_ROW = 10_000
_READ_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error, ValueError)


# ---------------------------------------------------------------------------------------------- shard lists


def expand_shards(spec: str, *, upsampling_factors: str | None = None) -> tuple[list[str], list[float] | None]:
    """Shard URLs of ``"a/{0..9}.tar::b/{0..3}.tar"`` and, with factors ``"1::2"``, a sampling weight per shard.

    As in open_clip, a source's factor is given to each of its shards, so a source's share of the samples
    is proportional to (factor x number of shards).
    """
    sources = [s for s in spec.split("::") if s.strip()]
    if not sources:
        raise ValueError(f"no shards in {spec!r}; give paths like 'data/shard-{{000000..000009}}.tar'")
    shard_lists = [list(braceexpand.braceexpand(source.strip())) for source in sources]
    shards = [shard for shard_list in shard_lists for shard in shard_list]
    if upsampling_factors is None:
        return shards, None
    factors = _parse_factors(upsampling_factors, num_sources=len(sources))
    weights = [factor for factor, shard_list in zip(factors, shard_lists) for _ in shard_list]
    return shards, weights


def _parse_factors(text: str, *, num_sources: int) -> list[float]:
    """Upsampling factors ``"1::2.5"``: one non-negative number per ``::``-separated source, not all zero."""
    parts = text.split("::")
    try:
        factors = [float(part) for part in parts]
    except ValueError:
        factors = []
    if len(factors) != num_sources or any(f < 0 or not math.isfinite(f) for f in factors) or not any(factors):
        raise ValueError(
            f"train_data_upsampling_factors={text!r} is invalid for {num_sources} source(s); give one "
            f"non-negative number per '::'-separated source, e.g. {'::'.join(['1'] * num_sources)!r}"
        )
    return factors


def dataset_size(shards: list[str]) -> int | None:
    """Sample count of ``shards`` from the ``sizes.json`` (or ``__len__``) beside them, or None if there is none."""
    by_folder: dict[str, list[str]] = {}
    for shard in shards:
        by_folder.setdefault(os.path.dirname(shard), []).append(os.path.basename(shard))
    total = 0
    for folder, names in by_folder.items():
        sizes_path, len_path = os.path.join(folder, "sizes.json"), os.path.join(folder, "__len__")
        if os.path.isfile(sizes_path):
            with open(sizes_path) as f:
                sizes = json.load(f)
            missing = [name for name in names if name not in sizes]
            if missing:
                raise ValueError(f"{sizes_path} has no entry for {missing[0]!r}; add it or give train_num_samples")
            total += sum(int(sizes[name]) for name in names)
        elif os.path.isfile(len_path):
            with open(len_path) as f:
                total += int(ast.literal_eval(f.read().strip()))
        else:
            return None
    return total


# ------------------------------------------------------------------------------------------ reading shards


def _split_name(name: str) -> tuple[str | None, str]:
    """``"dir/0001.seg.jpg"`` -> (``"dir/0001"``, ``"seg.jpg"``): the key ends at the file name's first dot."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not dot or not stem:
        return None, ""
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def read_shard(url: str, *, skipped: SkipCounter, shard: int = 0, read: int = 0) -> Iterator[dict[str, Any]]:
    """Samples of one tar shard, as dicts of extension -> bytes plus ``__key__``, ``__url__``, and ``__shard__``
    (its index in the shard list) and ``__read__`` (this process's read number), under which skips are counted.

    An unreadable shard (missing, corrupt, truncated) is counted and logged; the samples before the damage
    are still given.
    """
    try:
        stream = gopen(url)
    except _READ_ERRORS as err:
        skipped.add("unreadable_shard", detail=f"{url}: {err}", shard=shard)
        return
    try:
        for sample in _grouped_entries(stream, url):
            sample["__shard__"], sample["__read__"] = shard, read
            yield sample
    except _READ_ERRORS as err:
        skipped.add("unreadable_shard", detail=f"{url}: {err}", shard=shard)
    finally:
        stream.close()


def _grouped_entries(stream: Any, url: str) -> Iterator[dict[str, Any]]:
    """Group consecutive tar entries sharing a key into samples; a repeated extension starts a new sample."""
    sample: dict[str, Any] | None = None
    with tarfile.open(fileobj=stream, mode="r|*") as tar:
        for member in tar:
            tar.members = []  # streaming: do not keep every header in memory
            if not member.isreg() or _META_ENTRY.match(member.name):
                continue
            key, ext = _split_name(member.name)
            if key is None:
                continue
            data = tar.extractfile(member).read()
            if sample is None or key != sample["__key__"] or ext in sample:
                if sample is not None:
                    yield sample
                sample = {"__key__": key, "__url__": url}
            sample[ext] = data
    if sample is not None:
        yield sample


def shuffled(samples: Iterator[Any], *, rng: random.Random, bufsize: int) -> Iterator[Any]:
    """Shuffle a stream through a buffer of up to ``bufsize`` items that starts yielding at a fifth of that."""
    buffer: list[Any] = []
    warmup, given = max(1, bufsize // 5), 0
    for sample in samples:
        buffer.append(sample)
        # the buffer grows by one item every two arrivals until it holds bufsize items
        if len(buffer) >= min(bufsize, warmup + given):
            i = rng.randrange(len(buffer))
            buffer[i], buffer[-1] = buffer[-1], buffer[i]
            given += 1
            yield buffer.pop()
    rng.shuffle(buffer)
    yield from buffer


# ----------------------------------------------------------------------------------------------- dataset


def _worker() -> tuple[int, int]:
    """(worker id, number of workers) of the DataLoader worker running this code; (0, 1) in the main process."""
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


class ShardDataset(IterableDataset):
    """Samples from tar shards for one rank; each DataLoader worker reads its own part of the stream.

    Three modes. ``train``: the shard list is shuffled per epoch (same order on every rank), split across
    ranks then workers, and each worker gives exactly ``worker_quota`` samples, starting over on its shards
    if they run short, so every rank gets the same number of full batches. ``resampled``: each worker draws
    shards with replacement (weighted) from an RNG seeded by (seed, epoch, rank, worker), ``worker_quota``
    samples per epoch. ``eval``: shards split across workers only, read once in order.
    """

    def __init__(
        self,
        shards: list[str],
        *,
        decoder: SampleDecoder,
        mode: str,
        shared_epoch: SharedEpoch,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        weights: list[float] | None = None,
        worker_quota: int | None = None,
        rank_samples: int | None = None,
        shuffle_buffer: int = 5000,
    ) -> None:
        assert mode in ("train", "resampled", "eval"), mode
        assert mode == "eval" or worker_quota, "training needs a per-worker quota"
        self.shards, self.weights, self.decoder, self.mode = shards, weights, decoder, mode
        self.shared_epoch, self.seed, self.rank, self.world_size = shared_epoch, seed, rank, world_size
        self.worker_quota, self.rank_samples, self.shuffle_buffer = worker_quota, rank_samples, shuffle_buffer
        self._reads = itertools.count()  # shard reads of this process (each worker process has its own count)

    def __len__(self) -> int:
        # lets len(DataLoader) give the batches per epoch; unknown for eval streams, as for any iterable
        if self.rank_samples is None:
            raise TypeError("the number of samples in these shards is unknown; set val_num_samples")
        return self.rank_samples

    def __iter__(self) -> Iterator[Sample]:
        epoch = self.shared_epoch.value
        worker, num_workers = _worker()
        rng = random.Random(f"samples-{self.seed}-{epoch}-{self.rank}-{worker}")
        if self.mode == "resampled":
            raw = self._shuffled(self._resampled_raw(rng), rng)
        else:
            raw = self._partitioned_raw(epoch, worker, num_workers, rng)
        yield from self._decoded(raw, where=f"rank {self.rank} worker {worker}", draws=(epoch, self.rank, worker))

    def _shuffled(self, raw: Iterator[dict[str, Any]], rng: random.Random) -> Iterator[dict[str, Any]]:
        if self.mode == "eval" or self.shuffle_buffer <= 1:
            return raw
        return shuffled(raw, rng=rng, bufsize=self.shuffle_buffer)

    def _decoded(self, raw: Iterator[dict[str, Any]], *, where: str, draws: tuple[int, ...]) -> Iterator[Sample]:
        """Decode raw samples, skipping bad ones, until the quota (if any) is met. The n-th raw sample of this
        worker's stream is augmented with draws fixed by (seed, *draws, n): the stream itself is seeded alike."""
        given = skipped_in_a_row = 0
        for position, sample in enumerate(raw):
            pair = self.decoder.from_shard(sample, draws=(*draws, position) if self.mode != "eval" else None)
            if pair is None:
                skipped_in_a_row += 1
                if skipped_in_a_row >= _MAX_SKIPS_IN_A_ROW and self.mode != "eval":
                    raise RuntimeError(f"{where}: {skipped_in_a_row} samples in a row were unusable; check the data")
                continue
            skipped_in_a_row = 0
            yield pair
            given += 1
            if self.worker_quota is not None and given >= self.worker_quota:
                return
        if self.worker_quota is not None:
            raise RuntimeError(f"{where}: its shards stopped giving samples after {given} of {self.worker_quota}")

    def _partitioned_raw(
        self, epoch: int, worker: int, num_workers: int, rng: random.Random
    ) -> Iterator[dict[str, Any]]:
        """This worker's shards (this rank's share for training), read in passes until the consumer stops.

        Each pass is shuffled on its own, so a pass gives all its samples before a next one starts.
        """
        shards = list(range(len(self.shards)))
        if self.mode == "train":
            random.Random(f"shards-{self.seed}-{epoch}").shuffle(shards)  # the same order on every rank
            shards = shards[self.rank :: self.world_size]
        mine = shards[worker::num_workers]
        while True:
            read_any = False
            for sample in self._shuffled(self._read_all(mine), rng):
                read_any = True
                yield sample
            if self.mode == "eval" or not read_any:
                return  # eval reads once; a training worker whose shards give nothing stops (its caller raises)

    def _read(self, shard: int) -> Iterator[dict[str, Any]]:
        """One read of shard number ``shard``; every read has its own number, the skips of each are counted apart."""
        yield from read_shard(self.shards[shard], skipped=self.decoder.skipped, shard=shard, read=next(self._reads))

    def _read_all(self, shards: list[int]) -> Iterator[dict[str, Any]]:
        for shard in shards:
            yield from self._read(shard)

    def _resampled_raw(self, rng: random.Random) -> Iterator[dict[str, Any]]:
        """Shards drawn with replacement, forever; stops if a long run of draws gives no sample at all."""
        empty_draws, indices = 0, range(len(self.shards))
        while empty_draws < max(100, 10 * len(self.shards)):
            shard = rng.choices(indices, weights=self.weights)[0]
            empty_draws += 1
            for sample in self._read(shard):
                empty_draws = 0
                yield sample


# ------------------------------------------------------------------------------------------------ builder


def build_wds(
    cfg: DataConfig,
    *,
    is_train: bool,
    decoder: SampleDecoder,
    epoch: int,
    rank: int,
    world_size: int,
) -> DataInfo:
    """A DataInfo over WebDataset shards for training (this rank's share) or validation (all shards)."""
    spec = cfg.train_data if is_train else cfg.val_data
    resampled = is_train and cfg.dataset_resampled
    factors = cfg.train_data_upsampling_factors if is_train else None
    if factors is not None and not resampled:
        raise ValueError("train_data_upsampling_factors needs dataset_resampled=True (--dataset-resampled)")
    shards, weights = expand_shards(spec, upsampling_factors=factors)
    shared_epoch = SharedEpoch(epoch)
    workers = max(1, cfg.workers)
    if is_train:
        num_samples, num_batches, worker_quota = _train_sizes(cfg, shards, world_size=world_size, resampled=resampled)
        if not resampled and len(shards) < workers * world_size:
            raise ValueError(
                f"{len(shards)} shard(s) cannot feed {workers} worker(s) x {world_size} rank(s); use more shards, "
                "fewer workers, or dataset_resampled=True"
            )
        rank_samples = num_batches * cfg.batch_size
    else:
        num_samples = cfg.val_num_samples if cfg.val_num_samples is not None else (dataset_size(shards) or 0)
        num_batches, worker_quota, rank_samples = math.ceil(num_samples / cfg.batch_size), None, None
    dataset = ShardDataset(
        shards,
        decoder=decoder.with_counter(SkipCounter(shards=len(shards))),
        mode=("resampled" if resampled else "train") if is_train else "eval",
        shared_epoch=shared_epoch,
        seed=cfg.seed,
        rank=rank,
        world_size=world_size,
        weights=weights,
        worker_quota=worker_quota,
        rank_samples=rank_samples,
        shuffle_buffer=cfg.shuffle_buffer,
    )
    loader = make_loader(dataset, cfg, drop_last=is_train and cfg.drop_last)
    return DataInfo(loader, num_samples, num_batches, dataset.decoder.skipped, shared_epoch=shared_epoch)


def _train_sizes(cfg: DataConfig, shards: list[str], *, world_size: int, resampled: bool) -> tuple[int, int, int]:
    """(samples per epoch over all ranks, batches per rank, samples per worker), rounded up as open_clip does."""
    requested = cfg.train_num_samples if cfg.train_num_samples is not None else dataset_size(shards)
    if not requested:
        mode = "resampled shards" if resampled else "shards"
        raise ValueError(
            f"the number of training samples in {cfg.train_data!r} is unknown; set train_num_samples "
            f"(--train-num-samples) or put a sizes.json beside the {mode}"
        )
    workers = max(1, cfg.workers)
    global_batch = cfg.batch_size * world_size
    worker_batches = math.ceil(math.ceil(requested / global_batch) / workers)
    num_batches = worker_batches * workers
    return num_batches * global_batch, num_batches, worker_batches * cfg.batch_size
