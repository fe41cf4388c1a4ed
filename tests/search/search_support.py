"""Fixtures and helpers for the open_mclip.search tests: a small model saved as a local-dir folder, image folders of
real MNIST digits and real photos, and a counter of the images that go through a model."""

from __future__ import annotations

import contextlib
import http.client
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import open_mclip
from open_mclip.search import Encoder, SearchIndex


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """`local-dir:` name of a seeded random mclip-tiny (32 px, 64-d embeddings), saved with save_pretrained."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-model")
    open_mclip.save_pretrained(open_mclip.create_model("mclip-tiny"), folder)
    return f"local-dir:{folder}"


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory) -> str:
    """Another mclip-tiny, with other random weights."""
    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("other-model")
    open_mclip.save_pretrained(open_mclip.create_model("mclip-tiny"), folder)
    return f"local-dir:{folder}"


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def write_digits(folder: Path, images: np.ndarray, labels: np.ndarray, *, start: int = 0) -> list[Path]:
    """MNIST digits as `folder/<label>/<index>.png`; returns the paths."""
    paths = []
    for i, (image, label) in enumerate(zip(images, labels), start=start):
        path = folder / str(int(label)) / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png(image))
        paths.append(path)
    return paths


def write_photos(folder: Path, photos: list[Image.Image]) -> list[Path]:
    """The real photos as JPEGs in two subfolders (sizes differ: 451x300 to 640x427)."""
    paths = []
    for i, photo in enumerate(photos):
        path = folder / ("a" if i % 2 == 0 else "b") / f"photo{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        photo.convert("RGB").save(path, quality=90)
        paths.append(path)
    return paths


class CountingEncoder:
    """Counts the images an Encoder's model embeds, by wrapping the real `encode_image`."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder, self.images, self.calls = encoder, 0, 0
        real = encoder.model.encode_image

        def counted(images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
            self.images += len(images)
            self.calls += 1
            return real(images, normalize=normalize)

        encoder.model.encode_image = counted


@contextlib.contextmanager
def running_server(index: SearchIndex, port: int) -> Iterator[str]:
    """The search web app on 127.0.0.1:port in a thread, for as long as the block runs; yields its base URL."""
    import uvicorn

    from open_mclip.search.server import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(index), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"the search server did not start on port {port}")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def raw_get(port: int, path: str) -> tuple[int, bytes, str]:
    """(status, body, content type) of a GET sent exactly as written: no client-side cleaning of "../" or "%2e"."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest("GET", path, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read(), response.getheader("content-type", "")
    finally:
        connection.close()
