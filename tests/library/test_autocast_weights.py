"""Inference under autocast casts each weight once and keeps it (layers.autocast_weight), and on an AMX CPU calls
oneDNN's bf16 linear directly (layers.linear): features are exactly those of autocast casting on every call through
F.linear, and open_clip's; the kept copy follows in-place weight updates, training never uses it, and copies or saves
of the model do not carry it."""

from __future__ import annotations

import copy
import io

import open_clip
import pytest
import torch

from open_mclip import CLIP, ModelConfig, from_open_clip, layers

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 16, "width": 64, "layers": 2, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}


def _features(model: CLIP, images: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        return model.encode_image(images), model.encode_text(text)


def _kept(model: CLIP) -> int:
    return layers.kept_weights(model)


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
    monkeypatch.setattr(layers, "_onednn_bf16", lambda x, weight: False)  # plain autocast: F.linear, cast per call
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


def test_onednn_linear_is_taken_on_amx_cpus_only_and_keeps_open_clips_bf16_features(monkeypatch):
    """On a CPU with AMX, bf16 inference runs each projection through oneDNN's linear (faster than F.linear's addmm,
    docs/performance.md section 9) and the features stay open_clip's bit for bit; elsewhere F.linear runs."""
    torch.manual_seed(0)
    reference = open_clip.model.CLIP(**TINY).eval()
    model = CLIP(ModelConfig.from_dict(TINY, source="test")).eval()
    model.load_state_dict(from_open_clip(reference.state_dict()))
    model.text.set_padding_free(False)  # open_clip's 77 positions: trimmed rows run other matrix shapes
    taken = []
    decide = layers._onednn_bf16
    monkeypatch.setattr(layers, "_onednn_bf16", lambda x, weight: taken.append(decide(x, weight)) or taken[-1])
    images, text = torch.randn(4, 3, 32, 32), open_clip.tokenize(["a dog", "un chien sur la plage", "猫", "eine Katze"])
    ours = _features(model, images, text)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        theirs = reference.encode_image(images), reference.encode_text(text)
    assert len(taken) == 2 * 2 * 4  # towers x blocks x (in_proj, out_proj, c_fc, c_proj)
    assert all(taken) == layers._amx_onednn() and len(set(taken)) == 1
    for got, expected in zip(ours, theirs):
        assert got.dtype == expected.dtype == torch.bfloat16
        assert torch.equal(got, expected)
    taken.clear()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        assert model.encode_image(images).dtype == torch.float16
    assert len(taken) == 2 * 4 and not any(taken)  # fp16: the CPU kernel keeps F.linear
    taken.clear()
    with torch.no_grad():
        model.encode_image(images)  # autocast off: fp32 F.linear, no kept casts
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model.encode_image(images).sum().backward()  # autograd on: training keeps F.linear
    assert taken == []


def test_copies_and_saves_of_a_model_carry_no_kept_casts(model_and_inputs):
    model, images, text = model_and_inputs
    _features(model, images, text)
    assert _kept(model) == 32
    duplicate = copy.deepcopy(model)
    assert _kept(duplicate) == 0 and _kept(model) == 32
    saved, bare = io.BytesIO(), io.BytesIO()
    torch.save(model, saved)
    torch.save(copy.deepcopy(model), bare)
    assert abs(saved.tell() - bare.tell()) < 4096  # the 32 bf16 copies would add about 400 kB
    assert all(torch.equal(a, b) for a, b in zip(_features(duplicate, images, text), _features(model, images, text)))


def test_kept_linear_is_a_well_formed_torch_op():
    """`open_mclip::kept_linear` (torch's dispatcher picks its kernel by device): schema, shapes without data (fake
    tensors, as torch.compile traces them) and dispatch pass torch's own op checks, with and without a bias."""
    x, weight, bias = torch.randn(3, 5, 8).bfloat16(), torch.randn(4, 8).bfloat16(), torch.randn(4).bfloat16()
    for args in ((x, weight, bias), (x, weight, None)):
        results = torch.library.opcheck(layers._kept_linear, args)
        assert set(results.values()) == {"SUCCESS"}, results
        assert torch.equal(layers._kept_linear(*args), torch.nn.functional.linear(*args))
