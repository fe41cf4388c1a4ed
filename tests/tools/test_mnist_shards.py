"""scripts/make_mnist_shards.py: captioned MNIST WebDataset shards and a zero-shot ImageFolder, on real MNIST."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import json
import pickle
import re
import subprocess
import sys
import tarfile
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "make_mnist_shards.py"
SMALL = {"train_samples": 2000, "val_samples": 300, "test_samples": 500, "shard_size": 500}


def _load_script():
    spec = importlib.util.spec_from_file_location("make_mnist_shards", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script runs
    spec.loader.exec_module(module)
    return module


shards = _load_script()


@pytest.fixture(scope="module")
def mnist_path() -> Path:
    try:
        return shards.default_mnist_path()
    except FileNotFoundError as err:
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def source(mnist_path):
    """The raw pickle: {split: (float pixels (N, 784), labels (N,))}."""
    with gzip.open(mnist_path, "rb") as f:
        return dict(zip(("train", "val", "test"), pickle.load(f, encoding="latin1")))


@pytest.fixture(scope="module")
def out(tmp_path_factory, mnist_path) -> Path:
    folder = tmp_path_factory.mktemp("mnist") / "wds"
    shards.make_shards(folder, seed=0, mnist_path=mnist_path, **SMALL)
    return folder


def _read_tar(path: Path) -> dict[str, dict[str, bytes]]:
    """{key: {extension: payload}} of one shard, read with plain tarfile."""
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            key, ext = member.name.split(".", 1)
            samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return samples


def _read_split(folder: Path) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    for shard in sorted(folder.glob("shard-*.tar")):
        samples.update(_read_tar(shard))
    return samples


def _pixel_key(pixels: np.ndarray) -> bytes:
    return hashlib.sha1(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()).digest()


def _labels_by_pixels(pixels: np.ndarray, labels: np.ndarray) -> dict[bytes, set[int]]:
    """Source lookup: the bytes of each MNIST image (as 0..255 values) -> its label(s)."""
    values = np.rint(pixels * 256.0).astype(np.uint8)
    table: dict[bytes, set[int]] = {}
    for row, label in zip(values, labels):
        table.setdefault(_pixel_key(row), set()).add(int(label))
    return table


def _material() -> dict:
    return {m.lang: m for m in shards.load_caption_data(shards.DEFAULT_LANGUAGES)[0]}


def _core_captions(lang, digits=range(10)) -> set[str]:
    """Every caption without context that the templates of `lang` produce for `digits`."""
    return {
        template.format(word=word, numeral=numeral)
        for template in lang.templates
        for digit in digits
        for word in lang.words[digit]
        for numeral in lang.numerals[digit]
    }


def _is_training_caption(text: str, lang, cores: set[str]) -> bool:
    """Whether `text` is a core caption from `cores`, maybe wrapped in one or two of `lang`'s context phrases,
    maybe ended by its full stop."""
    if text.endswith(lang.full_stop) and _is_training_caption(text[: -len(lang.full_stop)], lang, cores):
        return True
    if text in cores:
        return True
    contexts = set(lang.contexts) | {lang.context_join.join((a, b)) for a in lang.contexts for b in lang.contexts}
    for frame in lang.context_frames:
        before, after = frame.split("{caption}")
        for context in contexts:
            head, tail = before.format(context=context), after.format(context=context)
            inner = text[len(head) : len(text) - len(tail)]
            fits = len(head) + len(tail) < len(text) and text.startswith(head) and text.endswith(tail)
            if fits and inner in cores:
                return True
    return False


def test_layout_and_sizes(out):
    for split, count in (("train", 2000), ("val", 300)):
        sizes = json.loads((out / split / "sizes.json").read_text())
        tars = sorted(p.name for p in (out / split).glob("*.tar"))
        assert sorted(sizes) == tars
        assert sum(sizes.values()) == count
        assert all(n <= SMALL["shard_size"] for n in sizes.values())
        assert sum(len(_read_tar(out / split / name)) for name in tars) == count
    assert (out / "classnames.json").is_file() and (out / "templates.json").is_file()


def test_webdataset_reads_the_shards(out):
    wds = pytest.importorskip("webdataset")
    urls = [str(p) for p in sorted((out / "train").glob("*.tar"))]
    dataset = wds.WebDataset(urls, shardshuffle=False).decode("pil").to_tuple("png", "txt", "json")
    seen = 0
    for image, caption, meta in dataset:
        assert image.size == (28, 28)
        assert isinstance(caption, str) and caption.strip()
        assert 0 <= meta["label"] <= 9 and meta["lang"] in shards.DEFAULT_LANGUAGES
        seen += 1
    assert seen == 2000


def test_images_and_labels_match_mnist(out, source):
    for split in ("train", "val"):
        lookup = _labels_by_pixels(*source[split])
        for key, sample in _read_split(out / split).items():
            image = Image.open(io.BytesIO(sample["png"]))
            assert image.mode == "L" and image.size == (28, 28), key
            label = json.loads(sample["json"])["label"]
            assert label in lookup[_pixel_key(np.asarray(image))], f"{split} {key}: pixels or label differ from MNIST"


def test_test_folder_is_the_mnist_test_split_in_order(out, source):
    pixels, labels = source["test"]
    files = sorted(out.glob("test/*/*.png"))
    assert len(files) == SMALL["test_samples"]
    assert sorted({p.parent.name for p in files}) == [str(d) for d in range(10)]
    for path in files:
        index = int(path.stem)
        assert int(path.parent.name) == labels[index], path
        decoded = np.asarray(Image.open(path), dtype=np.float64) / 256.0
        np.testing.assert_array_equal(decoded.reshape(-1), pixels[index].astype(np.float64))


def test_every_language_present_with_labelled_non_empty_captions(out):
    captions_by_lang: dict[str, set[str]] = {}
    for sample in _read_split(out / "train").values():
        meta = json.loads(sample["json"])
        caption = sample["txt"].decode("utf-8")
        assert caption.strip() and caption == caption.strip()
        captions_by_lang.setdefault(meta["lang"], set()).add(caption)
    assert set(captions_by_lang) == set(shards.DEFAULT_LANGUAGES)
    counts = [len(c) for c in captions_by_lang.values()]
    assert min(counts) >= 60, f"too little caption variety per language: {counts}"


def test_captions_name_the_right_digit(out):
    material = _material()
    cores = {(lang, d): _core_captions(m, [d]) for lang, m in material.items() for d in range(10)}
    with_context = with_stop = 0
    for key, sample in _read_split(out / "val").items():
        meta, caption = json.loads(sample["json"]), sample["txt"].decode("utf-8")
        lang = material[meta["lang"]]
        assert _is_training_caption(caption, lang, cores[meta["lang"], meta["label"]]), (
            f"{key}: {caption!r} is not a {meta['lang']} caption of {meta['label']}"
        )
        with_context += caption.removesuffix(lang.full_stop) not in cores[meta["lang"], meta["label"]]
        with_stop += caption.endswith(lang.full_stop)
    assert 0.3 < with_context / 300 < 0.7  # about half the captions carry context phrases (context_prob=0.5)
    assert 0.15 < with_stop / 300 < 0.45  # and about a third end with a full stop (stop_prob=0.3)


def test_context_phrases_name_no_digit():
    for code, lang in _material().items():
        names = {n.lower() for d in range(10) for n in (*lang.words[d], *lang.numerals[d])}
        for phrase in lang.contexts:
            if code in ("zh", "ja"):  # no spaces between words: look for the characters themselves
                assert not any(n in phrase for n in names if len(n) == 1 and not n.isascii()), (code, phrase)
            words = set(re.findall(r"\w+", phrase.lower()))
            assert not words & names, f"{code}: context {phrase!r} contains a number word"


def test_languages_cover_non_latin_scripts():
    scripts = set()
    _, classnames, _ = shards.load_caption_data(shards.DEFAULT_LANGUAGES)
    for names in classnames.values():
        letters = [ch for name in names for ch in name if ch.isalpha()]
        scripts.add(unicodedata.name(letters[0]).split()[0])
    assert len(shards.DEFAULT_LANGUAGES) >= 5
    assert len(scripts - {"LATIN"}) >= 2, scripts


def test_zero_shot_files_and_templates_differ_from_training_captions(out):
    classnames = json.loads((out / "classnames.json").read_text(encoding="utf-8"))
    templates = json.loads((out / "templates.json").read_text(encoding="utf-8"))
    assert list(classnames) == list(templates) == list(shards.DEFAULT_LANGUAGES)
    material = _material()
    for code, names in classnames.items():
        lang = material[code]
        assert len(names) == 10 and len(set(names)) == 10, code
        assert len(templates[code]) >= 3 and all("{c}" in t for t in templates[code]), code
        skeletons = {re.sub(r"\{\w+\}", "{}", t) for t in lang.templates}
        cores = _core_captions(lang)
        for template in templates[code]:
            assert template.replace("{c}", "{}") not in skeletons, f"{code}: {template!r} is a training template"
            for prompt in (template.format(c=c) for c in names):
                assert not _is_training_caption(prompt, lang, cores), f"{code}: {prompt!r} is a training caption"


def test_captions_and_prompts_fit_the_demo_context_length():
    tokenizer = pytest.importorskip("open_mclip").ClipTokenizer()
    config = json.loads((REPO / "model_configs" / "mclip-mnist.json").read_text())
    room = config["text"]["context_length"] - 2  # start and end tokens
    _, classnames, templates = shards.load_caption_data(shards.DEFAULT_LANGUAGES)
    prompts = {t.format(c=c) for lang in templates for t in templates[lang] for c in classnames[lang]}
    cores = set().union(*(_core_captions(m) for m in _material().values()))
    longest = max(cores | prompts, key=lambda text: len(tokenizer.encode(text)))
    assert len(tokenizer.encode(longest)) <= room, f"{longest!r} would be truncated"


def test_captions_with_context_fit_max_tokens(out):
    tokenizer = pytest.importorskip("open_mclip").ClipTokenizer()
    lengths = [len(tokenizer.encode(s["txt"].decode("utf-8"))) for s in _read_split(out / "train").values()]
    assert max(lengths) <= 30  # make_shards' default max_tokens


@pytest.mark.slow  # writes the shards twice more: 6 s
def test_deterministic_for_a_seed(out, tmp_path, mnist_path):
    again, other = tmp_path / "again", tmp_path / "other"
    shards.make_shards(again, seed=0, mnist_path=mnist_path, **SMALL)
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for name in files:
        assert (out / name).read_bytes() == (again / name).read_bytes(), name
    shards.make_shards(other, seed=1, mnist_path=mnist_path, **{**SMALL, "test_samples": 0})
    assert (out / "train" / "shard-000000.tar").read_bytes() != (other / "train" / "shard-000000.tar").read_bytes()


@pytest.mark.slow  # writes the shards through the command line: 6 s
def test_command_line_with_a_language_subset(tmp_path, mnist_path):
    folder = tmp_path / "cli"
    args = ["--out", str(folder), "--train-samples", "200", "--val-samples", "20", "--test-samples", "0"]
    command = [sys.executable, str(SCRIPT), *args, "--languages", "en,ru,ja", "--mnist", str(mnist_path)]
    subprocess.run(command, check=True)
    langs = {json.loads(s["json"])["lang"] for s in _read_split(folder / "train").values()}
    assert langs == {"en", "ru", "ja"}
    assert list(json.loads((folder / "templates.json").read_text())) == ["en", "ru", "ja"]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"languages": ["en", "xx"]}, "xx"),
        ({"train_samples": 0}, "train_samples=0"),
        ({"val_samples": 10_001}, "val_samples=10001"),
        ({"shard_size": 0}, "shard_size=0"),
        ({"languages": ["en", "en"]}, "without repeats"),
    ],
)
def test_bad_arguments_name_the_value(tmp_path, options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        shards.make_shards(tmp_path / "bad", **options)
