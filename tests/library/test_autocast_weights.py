"""Inference under autocast casts each weight once and keeps it (layers.autocast_weight): features are exactly those
of autocast casting on every call, the kept copy follows in-place weight updates, and training never uses it."""

from __future__ import annotations

import open_clip
import pytest
import torch

from open_mclip import CLIP, ModelConfig, layers

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 16, "width": 64, "layers": 2, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}


def _features(model: CLIP, images: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        return model.encode_image(images), model.encode_text(text)


def _kept(model: CLIP) -> int:
    return sum(len(m.__dict__.get("_autocast_weights", {})) for m in model.modules())


@pytest.fixture
def model_and_inputs():
    torch.manual_seed(0)
    model = CLIP(ModelConfig.from_dict(TINY, source="test")).eval()
    images = torch.randn(3, 3, 32, 32)
    text = open_clip.tokenize(["a photo of a dog", "ein Foto von einem Hund im Gras", "一只猫在沙发上的照片"])
    return model, images, text


def test_kept_casts_give_autocasts_features_exactly(model_and_inputs, monkeypatch):
    model, images, text = model_and_inputs
    first = _features(model, images, text)
    assert _kept(model) == 2 * 2 * 4 * 2  # towers x blocks x (in_proj, out_proj, c_fc, c_proj) x (weight, bias)
    again = _features(model, images, text)  # from the kept copies
    monkeypatch.setattr(layers, "autocast_weight", lambda module, name, weight: weight)
    cast_every_call = _features(model, images, text)
    for got, kept, expected in zip(first, again, cast_every_call):
        assert got.dtype == torch.bfloat16
        assert torch.equal(got, expected) and torch.equal(kept, expected)


def test_kept_casts_follow_in_place_updates_and_training_keeps_none(model_and_inputs):
    model, images, text = model_and_inputs
    before = _features(model, images, text)
    with torch.no_grad():
        for block in model.text.transformer.resblocks:
            block.mlp.c_fc.weight.mul_(-1.0)  # what an optimizer step or load_state_dict does: in place
    after = _features(model, images, text)
    assert torch.equal(after[0], before[0]) and not torch.allclose(after[1], before[1], atol=1e-2)
    with torch.no_grad():
        for block in model.text.transformer.resblocks:
            block.mlp.c_fc.weight.mul_(-1.0)
    assert torch.equal(_features(model, images, text)[1], before[1])
    assert layers.drop_autocast_weights(model) == 32 and _kept(model) == 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        image_features, text_features = model.train()(images, text)[:2]
        (image_features.sum() + text_features.sum()).backward()  # autograd on: autocast casts per step, keeps none
    assert _kept(model) == 0
    assert model.text.transformer.resblocks[0].mlp.c_fc.weight.grad is not None
