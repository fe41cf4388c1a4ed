"""The text cases of bench/: real multilingual captions, and text encoding that agrees with open_clip with
padding-free text on and off. No timing is asserted here."""

from __future__ import annotations

import open_clip
import torch
from bench import cases
from bench.harness import OURS, REFERENCE, SIDES

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def test_real_captions_span_the_languages_and_lengths():
    captions = cases.real_captions(32)
    assert len(set(captions)) == 32
    assert any("\u0400" <= ch <= "\u04ff" for ch in "".join(captions))  # Cyrillic
    assert any("\u4e00" <= ch <= "\u9fff" for ch in "".join(captions))  # Han
    lengths = open_clip.tokenize(captions).argmax(dim=-1) + 1
    assert lengths.min() < 16 < 32 < lengths.max() < 77  # short and long: padding-free text has groups to form


def test_encode_texts_sides_agree_with_padding_free_on_and_off():
    fingerprints = {}
    for padding_free in (True, False):
        calls = cases.encode_texts(sides=SIDES, config=TINY, batch_size=32, padding_free=padding_free)
        reference, ours = calls[REFERENCE](), calls[OURS]()
        cases.close_fp32(reference, ours)
        fingerprints[padding_free] = ours
    torch.testing.assert_close(fingerprints[True], fingerprints[False], atol=1e-6, rtol=0)
