"""The fault suite's data and runs: real captioned MNIST shards from scripts/make_mnist_shards.py, and the command
line of a short mclip-tiny run on them."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TRAIN_SAMPLES, SHARD_SIZE = 64, 16  # 4 shards


@pytest.fixture(scope="session")
def mnist_shards(tmp_path_factory) -> Path:
    """64 real MNIST training digits with English and German captions as 4 shards of 16 under train/, 16 for
    validation under val/, and 20 test digits as an ImageFolder under test/ (make_mnist_shards.py's layout)."""
    spec = importlib.util.spec_from_file_location("make_mnist_shards", REPO / "scripts" / "make_mnist_shards.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    try:
        mnist = module.default_mnist_path()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    out = tmp_path_factory.mktemp("mnist_shards")
    sizes = {"train_samples": TRAIN_SAMPLES, "val_samples": 16, "test_samples": 20, "shard_size": SHARD_SIZE}
    module.make_shards(out, seed=0, mnist_path=mnist, languages=["en", "de"], **sizes)
    return out


@pytest.fixture(scope="session")
def train_flags(mnist_shards) -> Callable[..., list[str]]:
    """`train_flags(logs=..., name=..., extra="")`: training.main flags for mclip-tiny on the 4 training shards,
    batches of 8 (8 steps an epoch, 2 epochs), fp32, no workers, a log line every step; `extra` overrides (argparse
    keeps the last value)."""

    def flags(*, logs: Path, name: str, extra: str = "") -> list[str]:
        line = (
            f"--train-data {mnist_shards}/train/shard-{{000000..000003}}.tar --train-num-samples {TRAIN_SAMPLES} "
            "--model mclip-tiny --batch-size 8 --epochs 2 --warmup 2 --lr 1e-3 --workers 0 --precision fp32 "
            f"--device cpu --seed 0 --log-every-n-steps 1 --logs {logs} --name {name} {extra}"
        )
        return line.split()

    return flags
