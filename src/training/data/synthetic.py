"""Synthetic image-caption pairs (random pixels, random words) for smoke tests without any data on disk."""

from __future__ import annotations

import string

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from ..config import DataConfig
from .info import DataInfo, SharedEpoch, map_style_data_info
from .samples import Sample, SampleDecoder

_LETTERS = np.array(list(string.ascii_lowercase))


class SyntheticDataset(Dataset):
    """``size`` pairs of a noise image and a caption of random words; sample ``i`` is the same on every call.
    With ``shared_epoch`` (training) sample ``i`` of epoch E is augmented with draws fixed by (seed, E, i)."""

    def __init__(
        self,
        *,
        size: int,
        image_size: int,
        decoder: SampleDecoder,
        seed: int = 0,
        stream: int = 0,
        shared_epoch: SharedEpoch | None = None,
    ) -> None:
        self.size, self.image_size, self.decoder = size, image_size, decoder
        self.seed, self.stream = seed, stream  # stream tells training (0) and validation (1) samples apart
        self.shared_epoch = shared_epoch

    def __len__(self) -> int:
        return self.size

    def raw(self, index: int) -> tuple[Image.Image, str]:
        """The PIL image and caption text of sample ``index`` (before preprocessing and tokenizing)."""
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} is out of range for {self.size} synthetic samples")
        rng = np.random.default_rng([self.seed, self.stream, index])
        pixels = rng.integers(0, 256, size=(self.image_size, self.image_size, 3), dtype=np.uint8)
        words = ["".join(rng.choice(_LETTERS, size=rng.integers(2, 9))) for _ in range(rng.integers(3, 12))]
        return Image.fromarray(pixels, "RGB"), "a photo of " + " ".join(words)

    def __getitem__(self, index: int) -> Sample:
        image, caption = self.raw(index)
        draws = (self.shared_epoch.value, index) if self.shared_epoch is not None else None
        return self.decoder.sample(image, caption, draws=draws)  # validation: untagged


def build_synthetic(
    cfg: DataConfig, *, is_train: bool, decoder: SampleDecoder, epoch: int, rank: int, world_size: int
) -> DataInfo:
    """A DataInfo of ``train_num_samples`` (or ``val_num_samples``) synthetic pairs."""
    size = cfg.train_num_samples if is_train else cfg.val_num_samples
    flag = "train_num_samples" if is_train else "val_num_samples"
    if not size or size < 0:
        raise ValueError(f"{flag}={size!r}: synthetic data needs a positive {flag} (--{flag.replace('_', '-')})")
    shared_epoch = SharedEpoch(epoch) if is_train else None
    dataset = SyntheticDataset(
        size=size,
        image_size=cfg.synthetic_image_size,
        decoder=decoder,
        seed=cfg.seed,
        stream=0 if is_train else 1,
        shared_epoch=shared_epoch,
    )
    return map_style_data_info(
        dataset,
        cfg,
        is_train=is_train,
        epoch=epoch,
        rank=rank,
        world_size=world_size,
        skipped=decoder.skipped,
        shared_epoch=shared_epoch,
    )
