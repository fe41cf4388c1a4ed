"""The fast CLIP BPE tokenizer against open_clip 3.3.0 on a large multilingual corpus (identical ids), and its
ftfy shortcut against ftfy itself (the shortcut only skips texts ftfy returns unchanged)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import ftfy
import open_clip
import pytest
import torch

from open_mclip.text_cleaning import _ftfy_leaves_alone
from open_mclip.tokenizer import ClipTokenizer

BENCH = Path(open_clip.__file__).resolve().parent.parent / "clip_benchmark" / "datasets"


@pytest.fixture(scope="module")
def large_corpus() -> list[str]:
    """About 45,000 real texts in 93 languages: every Babel-ImageNet class name, and every NLLB prompt of each
    language filled with one of its names; then the same prompts as mojibake (UTF-8 read as Windows-1252 and as
    Latin-1), which ftfy must repair."""
    babel = json.loads((BENCH / "babel_imagenet.json").read_text(encoding="utf-8"))
    prompts = json.loads((BENCH / "nllb_dist13b_prompts.json").read_text(encoding="utf-8"))
    texts = [name for _, names in babel.values() for name in names]
    filled = []
    for lang, templates in sorted(prompts.items()):
        names = babel.get(lang, [[], ["?"]])[1]
        filled += [t.replace("{}", names[i % len(names)]) for i, t in enumerate(templates)]
    mojibake = []
    for i, text in enumerate(filled[::20]):
        encoding = ("windows-1252", "latin-1")[i % 2]
        mojibake.append(text.encode("utf-8").decode(encoding, errors="replace"))
    return texts + filled + mojibake


@pytest.mark.slow  # 45,000 texts through both tokenizers: 6 s
def test_ids_equal_open_clip_on_a_large_multilingual_corpus(large_corpus):
    ours, ref = ClipTokenizer(), open_clip.tokenizer.SimpleTokenizer()
    assert len(large_corpus) > 40_000
    got, expected = ours(large_corpus), ref(large_corpus)
    assert got.shape == expected.shape == (len(large_corpus), 77)
    different = (got != expected).any(dim=1).nonzero().flatten().tolist()
    assert not different, f"{len(different)} texts differ, e.g. {[large_corpus[i] for i in different[:3]]}"
    assert torch.equal(ours(large_corpus[:50], context_length=16), ref(large_corpus[:50], context_length=16))


def test_the_corpus_takes_both_paths(large_corpus):
    """Most real text skips ftfy; mojibake does not (else the corpus test would not check the ftfy path)."""
    skipped = sum(_ftfy_leaves_alone(text) for text in large_corpus)
    assert skipped > 0.8 * len(large_corpus) and len(large_corpus) - skipped > 200


# characters around every ftfy fixer: Latin-1 and C1, Windows-1252 mojibake pieces, curly quotes, ligatures,
# full-width forms, combining marks (NFC), line breaks, controls, escapes, entities, and the scripts of real text
RISKY = (
    [chr(c) for c in range(0x20, 0x250)]
    + list("\r\n\t\x1b\x00\x0b\x7f\u2028\u2029\u0085\ufeff\u206a\ufff9&;#<>")
    + list("\u02bc\u2018\u2019\u201a\u201b\u201c\u201d\u201e\u201f\u2026\u2013\u2014\u20ac\u2122")
    + list("\ufb00\ufb01\ufb02\u0132\u0133\u0149\u01c4\u01c6\uff21\uff41\uff10\u3000\uff61\uffe0")
    + list("\u0301\u0308\u0327\u030a")
    + list("ÐÑ×ØÞßàáâãäåæçèéêëìíîïðñòóôõö÷øùúûüýþÿ€‚ƒ„†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ")
    + list("фотографияκαλημέραصورةतस्वीर照片写真사진")
)


def test_the_shortcut_only_skips_text_ftfy_leaves_unchanged():
    """50,000 random strings over the characters ftfy acts on: whenever the shortcut skips ftfy, ftfy would
    have returned the text unchanged."""
    rng = random.Random(0)
    skipped = 0
    for _ in range(50_000):
        text = "".join(rng.choice(RISKY) for _ in range(rng.randint(1, 12)))
        if _ftfy_leaves_alone(text):
            skipped += 1
            assert ftfy.fix_text(text) == text, repr(text)
    assert 1000 < skipped < 49_000  # both outcomes drawn often


@pytest.mark.parametrize(
    "text",
    [
        "Ã©tÃ©",
        "cafÃ© au lait",
        "a\u2019s",
        "ﬁne",
        "ＬＯＵＤ",
        "e\u0301",
        "a\r\nb",
        "x\x1b[31my",
        "Tom &amp; Jerry",
        "\x85",
    ],
)
def test_the_shortcut_sends_what_ftfy_changes_to_ftfy(text):
    assert ftfy.fix_text(text) != text
    assert not _ftfy_leaves_alone(text)
