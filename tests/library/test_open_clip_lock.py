"""`lock_image_tower(unlocked_groups, freeze_bn_stats)` and `lock_text_tower(unlocked_layers, freeze_layer_norm)` with
open_clip's meaning: the same parameters stay trainable as in open_clip's model with the same weights, for every
tower type and every count."""

from __future__ import annotations

import copy

import open_clip
import pytest
import torch

import open_mclip

TEXT = {"context_length": 16, "width": 32, "heads": 2, "layers": 3}
VISION = {
    "vit": {"image_size": 32, "patch_size": 16, "width": 32, "layers": 3, "head_width": 16},
    "resnet": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "head_width": 16},
    "timm": {"timm_model_name": "resnet18", "timm_pool": "avg", "timm_proj": "linear", "image_size": 64},
}
CONFIGS = {kind: {"embed_dim": 16, "vision_cfg": vision, "text_cfg": TEXT} for kind, vision in VISION.items()}


def _pair(kind: str):
    cfg = CONFIGS[kind]
    ref = open_clip.model.CLIP(**copy.deepcopy(cfg))
    ours = open_mclip.CLIP(open_mclip.ModelConfig.from_open_clip_dict(copy.deepcopy(cfg), source=kind))
    ours.load_state_dict(open_mclip.from_open_clip(ref.state_dict()))
    return ours, ref


def _trainable(model) -> set[str]:
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return set(open_mclip.from_open_clip(dict.fromkeys(names, torch.zeros(0))))


@pytest.mark.parametrize("kind", ["vit", "timm"])
@pytest.mark.parametrize("groups", [0, 1, 2, 3, 4, 5, 9])
def test_image_tower_locks_as_open_clip(kind, groups):
    ours, ref = _pair(kind)
    ours.lock_image_tower(groups)
    ref.lock_image_tower(groups)
    assert _trainable(ours) == _trainable(ref)


def test_resnet_locks_whole_and_freezes_batchnorm_statistics():
    ours, ref = _pair("resnet")
    ours.lock_image_tower(0, freeze_bn_stats=True)
    ref.lock_image_tower(0, freeze_bn_stats=True)
    assert _trainable(ours) == _trainable(ref)  # open_clip replaces the BatchNorms by frozen ones; ours stay in eval
    ours.train(), ref.train()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours.encode_image(images), ref.encode_image(images), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="only whole"):
        ours.lock_image_tower(1)


@pytest.mark.parametrize("layers", [0, 1, 2, 3, 4, 5, 8])
def test_text_tower_locks_as_open_clip(layers):
    ours, ref = _pair("vit")
    ours.lock_text_tower(layers)
    ref.lock_text_tower(layers)
    assert _trainable(ours) == _trainable(ref)


def test_refusals_name_the_reason():
    ours, _ = _pair("vit")
    with pytest.raises(ValueError, match="LayerNorms"):
        ours.lock_text_tower(0, freeze_layer_norm=False)
    with pytest.raises(ValueError, match=">= 0"):
        ours.lock_image_tower(-1)


@pytest.fixture(scope="module")
def hf_pair():
    """open_clip's HFTextEncoder and our hf tower over the same small XLM-R encoder (built from a config, no hub)."""
    import transformers

    sizes = {"vocab_size": 500, "hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2}
    hf_config = transformers.XLMRobertaConfig(**sizes, intermediate_size=64)
    torch.manual_seed(0)
    encoder = open_clip.hf_model.HFTextEncoder
    ref = encoder("xlm-roberta-base", 16, config=hf_config, pooler_type="mean_pooler", proj_type="mlp")
    kwargs = {**sizes, "intermediate_size": 64}
    cfg = open_mclip.config.HFTextConfig(model_type="xlm-roberta", pretrained=False, model_kwargs=kwargs)
    return ref, cfg


@pytest.mark.parametrize("layers", [0, 1, 2, 4, 9])
@pytest.mark.parametrize("freeze_layer_norm", [True, False])
def test_hf_text_tower_locks_as_open_clip(hf_pair, layers, freeze_layer_norm):
    ref, cfg = hf_pair
    ref = copy.deepcopy(ref)
    tower = open_mclip.towers.HFTextTower(cfg, embed_dim=16)
    shared = set(dict(tower.named_parameters())) & set(dict(ref.named_parameters()))
    assert shared == set(dict(tower.named_parameters()))  # open_clip's has a BERT pooler ours leaves out (unused)
    ref.lock(layers, freeze_layer_norm)
    open_mclip.open_clip_lock.lock_text_tower(tower, layers, freeze_layer_norm)
    ours = {n for n, p in tower.named_parameters() if p.requires_grad}
    assert ours == {n for n, p in ref.named_parameters() if p.requires_grad and n in shared}
