"""The search demo, smaller: a small multilingual CLIP trained here on real MNIST digits captioned with the demo's
caption material (fr, ru, hi, zh), saved as a model folder; the test digits written as PNG files, indexed and
searched in four languages and three scripts with the command line, then in headless Chromium through the page."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from search_support import running_server, write_digits

import open_mclip
from open_mclip.search.cli import main

REPO = Path(__file__).resolve().parents[2]
QUERIES = {"fr": "sept", "ru": "семь", "hi": "सात", "zh": "七"}  # seven, in Latin, Cyrillic, Devanagari and Han
LANGUAGES = tuple(QUERIES)
STEPS, BATCH = 450, 128
MIN_PRECISION = 0.8  # of the top 10; the full demo (docs/search.md) reaches 1.0, chance is 0.1


def _shards_script():
    spec = importlib.util.spec_from_file_location("make_mnist_shards", REPO / "scripts" / "make_mnist_shards.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _captions(shards, images: np.ndarray, labels: np.ndarray, tokenizer, *, epochs: int) -> list[torch.Tensor]:
    """One captioned pass per epoch, each digit in one of LANGUAGES, as the demo's shards caption them."""
    material, _, _ = shards.load_caption_data(LANGUAGES)
    rng, fits = np.random.default_rng(0), shards.token_budget(30)
    passes = []
    for _ in range(epochs):
        samples = shards.captioned_samples(
            images, labels, material, rng=rng, context_prob=0.5, stop_prob=0.3, fits=fits
        )
        passes.append(tokenizer([caption for *_, caption in samples]))
    return passes


def train_digit_clip(mnist: dict, folder: Path, *, samples: int = 10_000) -> str:
    """Train mclip-mnist with the CLIP loss (the demo's settings, fewer steps) and save it; returns its local-dir."""
    torch.manual_seed(0)
    shards = _shards_script()
    images, labels = mnist["train"][0][:samples], mnist["train"][1][:samples]
    model, _, preprocess = open_mclip.create_model_and_transforms("mclip-mnist")
    pixels = torch.stack([preprocess(Image.fromarray(image, mode="L")) for image in images])  # (n, 3, 28, 28)
    epochs = math.ceil(STEPS * BATCH / samples)
    captions = _captions(shards, images, labels, open_mclip.get_tokenizer("mclip-mnist"), epochs=epochs)
    loss_fn = open_mclip.loss.create_loss("clip")
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=2e-3, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.1, fused=True
    )
    warmup = 50
    schedule = lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / STEPS))  # noqa: E731
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model.train()
    order = torch.Generator().manual_seed(0)
    for step in range(STEPS):
        epoch, start = divmod(step * BATCH, samples - samples % BATCH)
        if start == 0:
            perm = torch.randperm(samples, generator=order)
        batch = perm[start : start + BATCH]
        image_features, text_features, scale = model(pixels[batch], captions[epoch][batch])
        loss = loss_fn(image_features, text_features, scale)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    open_mclip.save_pretrained(model.eval(), folder)
    return f"local-dir:{folder}"


def _cli(*args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `python -m open_mclip.search ARGS`, run in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def digit_index(tmp_path_factory, mnist) -> tuple[Path, Path, str]:
    """(digits folder, index folder, model) for 1,000 real MNIST test digits indexed with the command line."""
    root = tmp_path_factory.mktemp("digit-search")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small trains faster on one thread (docs/demo_recipe.md)
    try:
        start = time.perf_counter()
        model = train_digit_clip(mnist, root / "model")
        print(f"trained the digit model in {time.perf_counter() - start:.1f} s")
    finally:
        torch.set_num_threads(threads)
    images, labels = mnist["test"]
    write_digits(root / "digits", images[:1000], labels[:1000])
    code, out, err = _cli("index", str(root / "digits"), "--index", str(root / "idx"), "--model", model, "--json")
    assert code == 0, err[-3000:]
    stats = json.loads(out)
    assert stats["embedded"] == 1000 and stats["total"] == 1000 and stats["skipped"] == []
    assert "indexing: 100%" in err and "img/s" in err  # the progress bar, with its rate
    return root / "digits", root / "idx", model


@pytest.mark.e2e
def test_multilingual_search_finds_the_digit_in_four_scripts(digit_index):
    _, index, _ = digit_index
    for lang, text in QUERIES.items():
        code, out, err = _cli("query", str(index), text, "-k", "10", "--json", "--lang", lang)
        assert code == 0, err[-2000:]
        paths = [r["path"] for r in json.loads(out)["results"]]
        assert _sevens(paths) >= MIN_PRECISION, (text, paths)
    code, out, _ = _cli("query", str(index), "trois", "-k", "10", "-f")  # another digit: not just "always sevens"
    assert sum("/3/" in line for line in out.split()) / 10 >= MIN_PRECISION, out


def _chromium():
    webdriver = pytest.importorskip("selenium.webdriver")
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    return webdriver, binary, driver


@pytest.mark.e2e
def test_search_page_in_headless_chromium(digit_index, tmp_path, free_port):
    webdriver, binary, driver_path = _chromium()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from open_mclip.search import SearchIndex

    _, index_dir, _ = digit_index
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1200,900",
                 f"--user-data-dir={tmp_path / 'chrome'}"):  # fmt: skip
        options.add_argument(flag)
    port = free_port()
    with running_server(SearchIndex(index_dir), port) as url:
        browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
        try:
            _drive_page(browser, url, By, WebDriverWait)
        finally:
            browser.quit()


def _results(browser, By) -> list[str]:  # noqa: N803 (selenium's class names)
    return [hit.get_attribute("data-path") for hit in browser.find_elements(By.CSS_SELECTOR, "#results .hit")]


def _run_search(browser, wait, By, action) -> list[str]:  # noqa: N803
    """Do `action` (a click), wait for the page to show the new results, return their paths."""
    previous = browser.find_element(By.ID, "status").get_attribute("data-done")
    action()
    wait.until(lambda b: b.find_element(By.ID, "status").get_attribute("data-done") != previous)
    wait.until(
        lambda b: all(
            img.get_attribute("naturalWidth") not in (None, "0")
            for img in b.find_elements(By.CSS_SELECTOR, "#results img")
        )
    )  # noqa: E501
    return _results(browser, By)


def _sevens(paths: list[str]) -> float:
    return sum(p.startswith("7/") for p in paths) / len(paths) if paths else 0.0


def _drive_page(browser, url: str, By, WebDriverWait) -> None:  # noqa: N803
    wait = WebDriverWait(browser, 60)
    browser.get(url)
    wait.until(lambda b: "images indexed" in b.find_element(By.ID, "status").text)
    box, k, lang = (browser.find_element(By.ID, name) for name in ("q", "k", "lang"))
    k.clear()
    k.send_keys("10")
    go = browser.find_element(By.ID, "go")
    for code, text in QUERIES.items():
        box.clear()
        box.send_keys(text)
        lang.clear()
        lang.send_keys(code)
        assert box.get_attribute("value") == text  # the box takes every script
        paths = _run_search(browser, wait, By, go.click)
        assert len(paths) == 10 and _sevens(paths) >= MIN_PRECISION, (text, paths)
        scores = [float(s.text) for s in browser.find_elements(By.CSS_SELECTOR, "#results .score")]
        assert scores == sorted(scores, reverse=True)
    first = browser.find_elements(By.CSS_SELECTOR, "#results .hit")[0]
    clicked = first.get_attribute("data-path")
    similar = _run_search(browser, wait, By, first.click)  # more like this
    assert browser.find_element(By.ID, "like-path").text == clicked
    assert clicked not in similar and _sevens(similar) >= MIN_PRECISION, similar
    artifacts = Path(os.environ.get("SEARCH_TEST_ARTIFACTS", REPO / "logs" / "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    box.clear()
    box.send_keys(QUERIES["hi"])
    _run_search(browser, wait, By, go.click)
    assert browser.save_screenshot(str(artifacts / "search_page.png"))
