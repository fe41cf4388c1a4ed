"""Parity with open_clip 3.3.0: the same random weights give the same embeddings and logits (fp32), and
our export loads back into open_clip strictly. Full size up to ViT-H-14; g, bigG and e at their real widths
with the depth cut to 2 layers (two full copies would not fit in 24 GiB); timm trunks and Hugging Face text towers
at their real widths too, cut to 2 blocks (or one block per stage), the Hugging Face ones built from a config
without the hub."""

from __future__ import annotations

import contextlib
import copy
import json
from pathlib import Path

import open_clip
import pytest
import torch

import open_mclip
from open_mclip import CLIP, ModelConfig, from_open_clip, to_open_clip
from open_mclip.config import TimmConfig
from open_mclip.convert import load_state_dict_strict
from open_mclip.transform import PreprocessConfig, image_transform

SHIPPED = Path(__file__).resolve().parents[2] / "model_configs"

CAPTIONS = ["a photo of a cat", "ein Foto von einem Hund 🐶", "猫の写真", "صورة قطة على الأريكة"]
SMALL = """
    ViT-B-32 ViT-B-32-quickgelu ViT-B-16 ViT-B-16-quickgelu RN50 RN50-quickgelu RN101 ViT-B-32-256 ViT-S-16-alt
""".split()
LARGE = """
    ViT-B-16-plus-240 ViT-L-14 ViT-L-14-336 ViT-H-14 RN101-quickgelu RN50x4 RN50x4-quickgelu RN50x16 RN50x64
""".split()
# real width, 2 layers: the giants, and the QuickGELU twins of large models checked at full depth above (a twin
# differs only in its activation; its whole config is still compared with open_clip's)
CUT_DEPTH = """
    ViT-g-14 ViT-bigG-14 ViT-bigG-14-quickgelu ViT-e-14 ViT-L-14-quickgelu ViT-L-14-336-quickgelu
    ViT-H-14-quickgelu RN50x16-quickgelu RN50x64-quickgelu ViT-B-16-plus ViT-B-32-plus-256 ViT-L-14-280 ViT-L-16
    ViT-L-16-320 ViT-H-16 ViT-H-14-378 ViT-H-14-378-quickgelu ViT-M-16-alt ViT-S-32-alt ViT-M-32-alt
    ViT-L-14-CLIPA ViT-L-14-CLIPA-336 ViT-H-14-CLIPA-336 ViT-bigG-14-CLIPA ViT-bigG-14-CLIPA-336
    ViT-L-14-worldwide-quickgelu ViT-H-14-worldwide ViT-H-14-worldwide-quickgelu ViT-H-14-worldwide-378
    ViT-bigG-14-worldwide ViT-bigG-14-worldwide-378
""".split()
# one of each family that came with CLIPA, MetaCLIP 2 (worldwide) and SigLIP: their own vocabularies, `eos` and `last`
# pooling, bidirectional text, average image pooling, timm trunks with attention pooling, logit bias
NEW_FAMILIES = ["ViT-H-14-CLIPA", "ViT-L-14-worldwide", "ViT-B-16-SigLIP", "ViT-SO400M-16-SigLIP-i18n-256"]
SIGLIP_CUT = """
    ViT-B-16-SigLIP-256 ViT-B-16-SigLIP-384 ViT-B-16-SigLIP-512 ViT-B-16-SigLIP-i18n-256 ViT-L-16-SigLIP-256
    ViT-L-16-SigLIP-384 ViT-SO400M-14-SigLIP ViT-SO400M-14-SigLIP-378 ViT-SO400M-14-SigLIP-384
""".split()
# NLLB-SigLIP: timm SigLIP image towers (MAP pooling, no projection), NLLB text towers (first-token pooling, linear
# projection), logit bias
NLLB_SIGLIP = ["nllb-clip-base-siglip", "nllb-clip-large-siglip"]
# one of each timm trunk family shipped with them (EVA, FastViT and hybrid-ViT MobileCLIPs, PE-Core, ViTamin, ConvNeXt,
# Swin); the rest of each family below at the same cut depth, with the timm ViTs of average pooling and relative
# positions
TIMM_FAMILIES = """EVA02-B-16 MobileCLIP-S1 MobileCLIP-B PE-Core-T-16-384 ViTamin-S convnext_tiny
    swin_base_patch4_window7_224""".split()
TIMM_CUT = """EVA01-g-14 EVA01-g-14-plus EVA02-L-14 EVA02-L-14-336 EVA02-E-14 EVA02-E-14-plus
    MobileCLIP-S2 MobileCLIP2-S0 MobileCLIP2-S2 MobileCLIP2-S3 MobileCLIP2-S4 MobileCLIP2-B MobileCLIP2-L-14
    PE-Core-S-16-384 PE-Core-B-16 PE-Core-L-14-336 PE-Core-bigG-14-448
    ViTamin-S-LTT ViTamin-B ViTamin-B-LTT ViTamin-L ViTamin-L-256 ViTamin-L-336 ViTamin-L-384 ViTamin-L2
    ViTamin-L2-256 ViTamin-L2-336 ViTamin-L2-384 ViTamin-XL-256 ViTamin-XL-336 ViTamin-XL-384
    convnext_base_w convnext_base_w_320 convnext_small convnext_large convnext_large_d convnext_large_d_320
    convnext_xlarge convnext_xxlarge convnext_xxlarge_320 vit_medium_patch16_gap_256
    vit_relpos_medium_patch16_cls_224""".split()
# the hub configs of the Hugging Face text towers above: their real widths, for building them offline. The
# vocabulary is cut to HF_VOCAB rows (256206 on the hub): initialising two copies of the full embedding table costs a
# minute on two cores, and the rows change no computation
HF_HUB_CONFIGS = {
    "facebook/nllb-200-distilled-600M": {
        "model_type": "m2m_100",
        "d_model": 1024,
        "encoder_ffn_dim": 4096,
        "encoder_attention_heads": 16,
    },
    "facebook/nllb-200-distilled-1.3B": {
        "model_type": "m2m_100",
        "d_model": 1024,
        "encoder_ffn_dim": 8192,
        "encoder_attention_heads": 16,
    },
}
HF_VOCAB = 8192


def _offline_hf_text(oc_cfg: dict, folder: Path, *, depth: int) -> None:
    """Point an open_clip Hugging Face text_cfg at a local config folder (the hub config's widths, `depth` encoder
    layers, random weights) so that open_clip and we build it without the hub."""
    import transformers

    text_cfg = oc_cfg["text_cfg"]
    hub = dict(HF_HUB_CONFIGS[text_cfg["hf_model_name"]])
    config = transformers.AutoConfig.for_model(
        hub.pop("model_type"), **hub, vocab_size=HF_VOCAB, encoder_layers=depth, decoder_layers=1, encoder_layerdrop=0.0
    )
    config.save_pretrained(folder)
    text_cfg.update(hf_model_name=str(folder), hf_model_pretrained=False)


def _inputs(photos, image_size, text_cfg: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Two real photos, and two texts: CLIP BPE captions for CLIP's vocabulary, else random ids of the tower's own
    vocabulary with its end token (the pooled position for `eos` pooling) and padding after it (a Hugging Face
    tower's vocabulary, end and padding ids from its config)."""
    transform = image_transform(PreprocessConfig(size=image_size), is_train=False)
    images = torch.stack([transform(p) for p in photos[:2]])
    text_cfg = dict(text_cfg or {})
    if "hf_model_name" in text_cfg:
        import transformers

        hf = transformers.AutoConfig.from_pretrained(text_cfg["hf_model_name"])
        text_cfg.update(vocab_size=hf.vocab_size, eos_id=hf.eos_token_id, pad_id=hf.pad_token_id)
    vocab, length = text_cfg.get("vocab_size", 49408), text_cfg.get("context_length", 77)
    if vocab == 49408:
        return images, open_clip.tokenize(CAPTIONS[:2], context_length=length)
    text = torch.randint(3, vocab, (2, length), generator=torch.Generator().manual_seed(0))
    text[0, 9], text[1, 5] = text_cfg.get("eos_id", 2), text_cfg.get("eos_id", 2)
    text[0, 10:], text[1, 6:] = text_cfg.get("pad_id", 0), text_cfg.get("pad_id", 0)
    return images, text


def _compare(ref: torch.nn.Module, ours: CLIP, images: torch.Tensor, text: torch.Tensor) -> None:
    ref.eval(), ours.eval()
    with torch.no_grad():
        ref_out, our_out = ref(images, text), ours(images, text)
        ref_img, ref_txt, ref_scale = ref_out[:3]
        our_img, our_txt, our_scale = our_out[:3]
        ref_logits, _ = ref.get_logits(images, text)
        our_logits, _ = ours.get_logits(images, text)
    torch.testing.assert_close(our_img, ref_img, atol=1e-5, rtol=0)
    torch.testing.assert_close(our_txt, ref_txt, atol=1e-5, rtol=0)
    torch.testing.assert_close(our_logits, ref_logits, atol=1e-5, rtol=0)
    assert torch.equal(our_scale, ref_scale)
    assert len(our_out) == len(ref_out)  # a logit bias (SigLIP) on both sides or on neither
    if len(ref_out) == 4:
        assert torch.equal(our_out[3], ref_out[3])
    # the comparison must be able to fail: features of different inputs differ by far more than the tolerance
    assert (our_img[0] - our_img[1]).abs().max() > 1e-4
    assert (our_txt[0] - our_txt[1]).abs().max() > 1e-4


def _shipped(name: str) -> ModelConfig:
    path = SHIPPED / f"{name}.json"
    return ModelConfig.from_dict(json.loads(path.read_text(encoding="utf-8")), source=str(path))


def _check_arch(
    name: str, photos, *, depth: int | None = None, hf_folder: Path | None = None, channels_last: bool = False
) -> None:
    """`hf_folder`: where a Hugging Face text tower's config is written, to build it without the hub;
    `channels_last`: our image tower runs channels-last (NHWC), open_clip's as it is."""
    oc_cfg = open_clip.get_model_config(name)
    assert ModelConfig.from_dict(oc_cfg, source=name) == _shipped(name), "shipped config differs"
    if "hf_model_name" in oc_cfg["text_cfg"]:
        _offline_hf_text(oc_cfg, hf_folder, depth=depth or 2)
    if depth is not None:
        vision_layers = oc_cfg["vision_cfg"].get("layers")  # a ResNet counts layers per stage; timm has none here
        if vision_layers is not None:
            oc_cfg["vision_cfg"]["layers"] = [1, 1, 1, 1] if isinstance(vision_layers, (list, tuple)) else depth
        oc_cfg["text_cfg"]["layers"] = depth
    custom_text = oc_cfg.get("custom_text", False)
    oc_kwargs = {k: v for k, v in copy.deepcopy(oc_cfg).items() if k != "custom_text"}
    ref = (open_clip.model.CustomTextCLIP if custom_text else open_clip.model.CLIP)(**oc_kwargs)
    for module in ref.modules():  # LayerScale gammas start at 1e-4, which leaves a random model's output blind to
        if hasattr(module, "gamma"):  # its input: open them so different photos give different features
            module.gamma.data.uniform_(0.5, 1.5)
    cfg = ModelConfig.from_dict(oc_cfg, source=name)
    # built as the factory builds it: on the meta device, except timm trunks (their non-persistent buffers, such as
    # Swin's relative position index, are not in state dicts)
    on_meta = not isinstance(cfg.vision, TimmConfig)
    with torch.device("meta") if on_meta else contextlib.nullcontext():
        ours = CLIP(cfg)
    load_state_dict_strict(ours, from_open_clip(ref.state_dict()), source=f"open_clip {name}", assign=on_meta)
    if channels_last:
        ours.visual.set_channels_last(True)
        assert ours.visual.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    _compare(ref, ours, *_inputs(photos, ref.visual.image_size, oc_cfg["text_cfg"]))
    assert (ours.context_length, ours.vocab_size) == (ref.context_length, ref.vocab_size)  # HF towers: positions
    assert open_mclip.get_model_tokenize_cfg(ours) == open_clip.get_model_tokenize_cfg(ref)
    exported = to_open_clip(ours.state_dict(), layout="custom_text" if custom_text else "clip")
    ref.load_state_dict(exported, strict=True)


def _slow_but(*fast: str):
    """Parametrize over names, all but `fast` marked slow: `make test-fast` keeps one of a kind, CI runs them all."""
    return lambda names: [n if n in fast else pytest.param(n, marks=pytest.mark.slow) for n in names]


@pytest.mark.parametrize("name", _slow_but("ViT-B-32", "RN50", "ViT-S-16-alt")(SMALL))
def test_parity_small(name, photos):
    _check_arch(name, photos)


def test_parity_channels_last_resnet(photos):
    # the trainer's default layout for ResNet towers on the CPU and CUDA: open_clip's features, to 1e-5
    _check_arch("RN50", photos, depth=2, channels_last=True)


def test_channels_last_is_refused_for_a_tower_without_convolutions():
    model = open_mclip.create_model("mclip-tiny")
    model.visual.set_channels_last(False)  # asking for the default layout is always fine
    with pytest.raises(ValueError, match="channels-last layout is not available for this VisionTransformer"):
        model.visual.set_channels_last(True)


@pytest.mark.slow
@pytest.mark.parametrize("name", LARGE)
def test_parity_large(name, photos):
    _check_arch(name, photos)


@pytest.mark.slow
@pytest.mark.parametrize("name", CUT_DEPTH)
def test_parity_real_width_cut_depth(name, photos):
    _check_arch(name, photos, depth=2)


@pytest.mark.parametrize("name", _slow_but("ViT-H-14-CLIPA", "ViT-B-16-SigLIP")(NEW_FAMILIES))
def test_parity_new_families_cut_depth(name, photos, shallow_timm):
    _check_arch(name, photos, depth=2)


@pytest.mark.slow
@pytest.mark.parametrize("name", SIGLIP_CUT)
def test_parity_siglip_cut_depth(name, photos, shallow_timm):
    _check_arch(name, photos, depth=2)


@pytest.mark.parametrize("name", _slow_but("nllb-clip-base-siglip")(NLLB_SIGLIP))
def test_parity_nllb_siglip_real_width(name, photos, shallow_timm, tmp_path):
    """open_clip's strongest multilingual retrieval models: SigLIP trunk and NLLB encoder at real width, 2 layers."""
    _check_arch(name, photos, depth=2, hf_folder=tmp_path)


@pytest.mark.parametrize("name", TIMM_FAMILIES)
def test_parity_timm_families_cut_depth(name, photos, shallow_timm):
    _check_arch(name, photos, depth=2)


@pytest.mark.slow
@pytest.mark.parametrize("name", TIMM_CUT)
def test_parity_timm_cut_depth(name, photos, shallow_timm):
    _check_arch(name, photos, depth=2)


@pytest.mark.slow  # a full timm ViT-B/16 trunk on both sides: 6 s (the cut-depth timm families run in make test-fast)
def test_parity_timm_tower(photos):
    """convnext_base through timm: open_clip's TimmModel and ours agree with shared weights."""
    oc_cfg = open_clip.get_model_config("convnext_base")
    oc_cfg["text_cfg"]["layers"] = 2
    ref = open_clip.model.CLIP(**copy.deepcopy(oc_cfg))
    ours = CLIP(ModelConfig.from_dict(oc_cfg, source="convnext_base"))
    load_state_dict_strict(ours, from_open_clip(ref.state_dict()), source="open_clip convnext_base")
    _compare(ref, ours, *_inputs(photos, 224))
    ref.load_state_dict(to_open_clip(ours.state_dict()), strict=True)


def test_parity_custom_text_layout_and_features(photos):
    """open_clip's CustomTextCLIP layout, LayerScale, avg pooling, attentional pooling and a biased text
    projection all load and agree."""
    oc_cfg = {
        "embed_dim": 64,
        "vision_cfg": {
            "image_size": 64,
            "patch_size": 16,
            "width": 96,
            "layers": 2,
            "head_width": 32,
            "ls_init_value": 0.1,
            "attentional_pool": True,
            "attn_pooler_queries": 1,
            "attn_pooler_heads": 4,
        },
        "text_cfg": {
            "context_length": 77,
            "width": 64,
            "heads": 4,
            "layers": 2,
            "proj_bias": True,
            "ls_init_value": 0.1,
        },
        "init_logit_bias": -10.0,
    }
    ref = open_clip.model.CustomTextCLIP(**copy.deepcopy(oc_cfg))
    for module in ref.modules():  # LayerScale gammas away from their constant init
        if hasattr(module, "gamma"):
            module.gamma.data.uniform_(0.5, 1.5)
    ours = CLIP(ModelConfig.from_dict(oc_cfg, source="custom"))
    load_state_dict_strict(ours, from_open_clip(ref.state_dict()), source="open_clip custom")
    images, text = _inputs(photos, 64)
    with torch.no_grad():
        ref_out, our_out = ref(images, text), ours(images, text)
    assert len(our_out) == 4  # logit_bias present
    for a, b in zip(ref_out, our_out):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0)
    ref.load_state_dict(to_open_clip(ours.state_dict(), layout="custom_text"), strict=True)

    avg = {
        **oc_cfg,
        "vision_cfg": {
            **oc_cfg["vision_cfg"],
            "attentional_pool": False,
            "pool_type": "avg",
            "final_ln_after_pool": True,
        },
    }
    ref = open_clip.model.CustomTextCLIP(**copy.deepcopy(avg))
    ours = CLIP(ModelConfig.from_dict(avg, source="avg"))
    load_state_dict_strict(ours, from_open_clip(ref.state_dict()), source="open_clip avg")
    with torch.no_grad():
        torch.testing.assert_close(ours.encode_image(images), ref.encode_image(images), atol=1e-5, rtol=0)
