"""Zero-shot classifier building against open_clip's, with the same weights."""

from __future__ import annotations

import copy

import open_clip
import torch
from open_clip.zero_shot_classifier import build_zero_shot_classifier as oc_build

import open_mclip
from open_mclip.convert import from_open_clip, load_state_dict_strict
from open_mclip.zero_shot import build_zero_shot_classifier

OC_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 16, "width": 64, "layers": 1},
    "text_cfg": {"width": 64, "heads": 2, "layers": 2},
}
CLASSES = ["zero", "one", "two", "three", "four", "five", "six"]
TEMPLATES = ["a photo of the number {}.", "ein Foto der Zahl {}.", "数字{}の写真"]


def test_classifier_matches_open_clip():
    ref = open_clip.model.CLIP(**copy.deepcopy(OC_CFG)).eval()
    ours = open_mclip.CLIP(open_mclip.ModelConfig.from_dict(OC_CFG, source="tiny")).eval()
    load_state_dict_strict(ours, from_open_clip(ref.state_dict()), source="ref")
    tokenizer = open_mclip.get_tokenizer("ViT-B-32")
    expected = oc_build(ref, tokenizer, CLASSES, TEMPLATES, num_classes_per_batch=3, use_tqdm=False)
    got = build_zero_shot_classifier(ours, tokenizer, CLASSES, TEMPLATES, num_classes_per_batch=4)
    assert got.shape == (32, len(CLASSES))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.norm(dim=0), torch.ones(len(CLASSES)))
    # a class's prompts in one language only give a different classifier: the comparison can fail
    other = build_zero_shot_classifier(ours, tokenizer, CLASSES, TEMPLATES[:1])
    assert (other - got).abs().max() > 1e-3
