"""Model configs: every shipped JSON parses and builds; strict keys; open_clip's schema converts."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
import torch

from open_mclip import CLIP, ModelConfig, add_model_config, list_models, model_config
from open_mclip.config import HFTextConfig, ModifiedResNetConfig, TimmConfig, ViTConfig

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted(p.stem for p in (REPO / "model_configs").glob("*.json"))
OPEN_CLIP_CONFIGS = Path(open_clip.__file__).parent / "model_configs"
NOT_FROM_OPEN_CLIP = {"RN50x4-xlm-roberta-base"}  # architectures open_clip does not have


def _family(name: str) -> tuple:
    """What a config's build exercises: its tower types, a timm trunk's family and a Hugging Face tower's encoder."""
    cfg = model_config(name)
    trunk = cfg.vision.model_name.split("_")[0] if isinstance(cfg.vision, TimmConfig) else ""
    encoder = (cfg.text.model_type or cfg.text.model_name.split("/")[-1].split("-")[0]) if cfg.text.type == "hf" else ""
    return cfg.vision.type, trunk, cfg.text.type, encoder


# every shipped config builds, runs and trains in CI (`slow`); these, one per family, also in `make test-fast`
FAST = """
    mclip-tiny mclip-tiny-rn mclip-tiny-xlmr ViT-B-32 RN50 convnext_tiny ViT-B-16-SigLIP EVA01-g-14 EVA02-B-16
    MobileCLIP-S1 MobileCLIP2-B PE-Core-T-16-384 ViTamin-S swin_base_patch4_window7_224 vit_medium_patch16_gap_256
    vit_relpos_medium_patch16_cls_224 xlm-roberta-base-ViT-B-32 roberta-ViT-B-32 mt5-base-ViT-B-32 nllb-clip-base
    nllb-clip-base-siglip RN50x4-xlm-roberta-base ViT-H-14-CLIPA ViT-L-14-worldwide
""".split()


# Hugging Face text towers shrink to the same encoder family built from config, offline (vocabulary > 49407)
_HF_FAMILY = {
    "xlm-roberta-base": "xlm-roberta",
    "xlm-roberta-large": "xlm-roberta",
    "roberta-base": "roberta",
    "google/mt5-base": "mt5",
    "google/mt5-xl": "mt5",
    "facebook/nllb-200-distilled-600M": "m2m_100",
    "facebook/nllb-200-distilled-1.3B": "m2m_100",
}
_HF_TINY = {
    "xlm-roberta": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    "roberta": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    "mt5": {"d_model": 32, "num_layers": 2, "num_heads": 2, "d_ff": 64, "d_kv": 16},
    "m2m_100": {
        "d_model": 32,
        "encoder_layers": 2,
        "decoder_layers": 1,
        "encoder_attention_heads": 2,
        "decoder_attention_heads": 2,
        "encoder_ffn_dim": 64,
        "decoder_ffn_dim": 64,
    },
}


def _shrink_text(text) -> dict:
    if isinstance(text, HFTextConfig):
        family = text.model_type or _HF_FAMILY[text.model_name]
        kwargs = {"vocab_size": 50000, **_HF_TINY[family]}
        return {"model_name": "", "model_type": family, "pretrained": False, "model_kwargs": kwargs}
    if getattr(text, "proj_type", "linear") == "none":  # no projection: the width is the embedding size
        return {"heads": 2, "layers": 2}
    return {"width": 32, "heads": 2, "layers": 2}


def _shrink(cfg: ModelConfig) -> ModelConfig:
    """The same architecture family at a width and depth that builds in well under a second."""
    vision = {}
    if isinstance(cfg.vision, ViTConfig):
        vision = {"width": 64, "head_width": 32, "layers": 2}
    elif isinstance(cfg.vision, ModifiedResNetConfig):
        vision = {"width": 16, "head_width": 16, "layers": (1, 1, 1, 1)}
    return cfg.replace(vision=vision, text=_shrink_text(cfg.text))


def test_required_architectures_ship():
    required = {
        "ViT-B-32",
        "ViT-B-32-quickgelu",
        "ViT-B-16",
        "ViT-B-16-plus-240",
        "ViT-L-14",
        "ViT-L-14-336",
        "ViT-H-14",
        "ViT-g-14",
        "ViT-bigG-14",
        "ViT-e-14",
        "RN50",
        "RN101",
        "RN50x4",
        "RN50x16",
        "RN50x64",
        "RN50-quickgelu",
        "RN101-quickgelu",
        "RN50x4-quickgelu",
        "RN50x16-quickgelu",
        "RN50x64-quickgelu",
        "convnext_base",
        "mclip-tiny",
    }
    assert required <= set(list_models())
    assert set(SHIPPED) <= set(list_models())


def test_fast_configs_cover_every_family():
    """The `make test-fast` subset builds one config of every family that ships (a new family must join it)."""
    assert set(FAST) <= set(SHIPPED)
    assert {_family(n) for n in FAST} == {_family(n) for n in SHIPPED}


@pytest.mark.parametrize("name", [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in SHIPPED])
def test_shipped_config_builds_runs_and_trains(name, shallow_timm):
    cfg = model_config(name)
    assert ModelConfig.from_dict(cfg.to_dict(), source=name) == cfg  # to_dict round-trips
    if not isinstance(cfg.vision, TimmConfig):
        cfg = _shrink(cfg)
    else:
        cfg = cfg.replace(text=_shrink_text(cfg.text))
    model = CLIP(cfg)
    for pname, param in model.named_parameters():
        if pname.endswith("bn3.weight"):  # CLIP starts residual branches at zero gain; open them for the check
            param.data.fill_(1.0)
    size = model.visual.image_size
    size = (size, size) if isinstance(size, int) else size  # a ModifiedResNet keeps an int, as open_clip's
    images = torch.randn(2, 3, *size)
    text = torch.randint(1, 1000, (2, cfg.text.context_length))
    text_cfg = cfg.text
    # the pooled token: CLIP's EOT (its highest id), or the tower's own end token for `eos` pooling
    text[:, 5] = (
        text_cfg.eos_id
        if getattr(text_cfg, "pool_type", "") == "eos"
        else min(49407, getattr(text_cfg, "vocab_size", 49408) - 1)
    )
    out = model(images, text)
    image_features, text_features, scale = out[:3]
    bias = out[3] if len(out) == 4 else 0  # SigLIP models return a logit bias too
    assert image_features.shape == text_features.shape == (2, cfg.embed_dim)
    loss = (image_features @ text_features.T * scale + bias).logsumexp(dim=1).mean()
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert no_grad == _expected_without_gradient(name, model), f"parameters without gradient: {no_grad[:10]}"


def _expected_without_gradient(name: str, model: CLIP) -> list[str]:
    """vit_relpos: the last block's relative-position MLP only shapes patch-to-patch attention, which never reaches
    the class token the model pools; it gets no gradient in open_clip's model either."""
    if name != "vit_relpos_medium_patch16_cls_224":
        return []
    last = f"visual.trunk.blocks.{len(model.visual.trunk.blocks) - 1}.attn.rel_pos.mlp."
    return [n for n, _ in model.named_parameters() if n.startswith(last)]


@pytest.mark.parametrize("name", [n for n in SHIPPED if not n.startswith("mclip") and n not in NOT_FROM_OPEN_CLIP])
def test_shipped_config_equals_open_clip_architecture(name):
    path = OPEN_CLIP_CONFIGS / f"{name}.json"
    assert ModelConfig.from_dict(json.loads(path.read_text()), source=str(path)) == model_config(name)


def test_unknown_key_names_key_and_file(tmp_path):
    bad = tmp_path / "bad-model.json"
    data = json.loads((REPO / "model_configs" / "mclip-tiny.json").read_text())
    data["vision"]["widht"] = 64
    bad.write_text(json.dumps(data))
    add_model_config(bad)
    with pytest.raises(ValueError, match=r"bad-model\.json.*widht"):
        model_config("bad-model")


def test_malformed_json_names_file(tmp_path):
    (tmp_path / "broken.json").write_text('{"embed_dim": 64,')
    add_model_config(tmp_path / "broken.json")
    with pytest.raises(ValueError, match=r"broken\.json is not valid JSON"):
        model_config("broken")


def test_unknown_tower_type_and_bad_values_are_named():
    with pytest.raises(ValueError, match="unknown tower type 'vitt'"):
        ModelConfig.from_dict({"embed_dim": 8, "vision": {"type": "vitt"}, "text": {"type": "transformer"}})
    with pytest.raises(ValueError, match="act='relu'"):
        ModelConfig.from_dict(
            {"embed_dim": 8, "vision": {"type": "vit", "act": "relu"}, "text": {"type": "transformer"}}
        )
    with pytest.raises(ValueError, match="missing 'text'"):
        ModelConfig.from_dict({"embed_dim": 8, "vision": {"type": "vit"}})


def test_unknown_model_lists_closest_names():
    with pytest.raises(ValueError, match="Did you mean 'ViT-B-32'"):
        model_config("ViT-B-33")


def test_model_config_returns_a_copy():
    cfg = model_config("ViT-B-32")
    cfg.vision.width = 1
    assert model_config("ViT-B-32").vision.width == 768


def test_open_clip_config_folder_loads_or_names_the_unsupported_key(tmp_path):
    """`add_model_config` on open_clip's own folder: each config parses, or fails naming file and key."""
    for path in sorted(OPEN_CLIP_CONFIGS.glob("*.json")):
        (tmp_path / f"oc-{path.name}").write_text(path.read_text())
    add_model_config(tmp_path)
    parsed, refused = 0, 0
    for path in sorted(tmp_path.glob("*.json")):
        try:
            model_config(path.stem)
            parsed += 1
        except ValueError as err:
            assert path.name in str(err) and ("=" in str(err) or "tower type" in str(err)), str(err)
            refused += 1
    assert parsed >= 60 and parsed + refused == len(list(tmp_path.glob("*.json")))
    # an open_clip ViT config in the folder builds a model equal to the shipped one
    assert model_config("oc-ViT-L-14") == model_config("ViT-L-14")


def test_replace_rejects_fields_the_tower_lacks():
    with pytest.raises(ValueError, match="patch_size"):
        model_config("RN50").replace(vision={"patch_size": 16})


def test_timm_proj_null_or_empty_is_the_trunk_classifier_and_none_passes_features_through(shallow_timm):
    """open_clip's `timm_proj`: null or "" make the trunk's classifier the projection; "none" keeps the trunk's
    pooled features as they are (SigLIP), so the embedding size is the trunk's width."""
    text = {"context_length": 8, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1}
    base = {"timm_model_name": "vit_tiny_patch16_224", "image_size": 224, "timm_pool": "avg"}
    null = ModelConfig.from_dict({"embed_dim": 16, "vision_cfg": {**base, "timm_proj": None}, "text_cfg": text})
    assert null.vision.proj == ""
    trunk = CLIP(null).visual.trunk
    assert trunk.head.out_features == 16
    passthrough = ModelConfig.from_dict(
        {"embed_dim": 192, "vision_cfg": {**base, "timm_proj": "none"}, "text_cfg": text}
    )
    tower = CLIP(passthrough).visual
    assert isinstance(tower.trunk.head, torch.nn.Identity)
    assert tower(torch.randn(1, 3, 224, 224)).shape == (1, 192)  # the trunk width of vit_tiny
