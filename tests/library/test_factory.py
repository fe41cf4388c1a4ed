"""The entry points open_clip users call, end to end against open_clip: files, registry tags from an offline
hub cache, hf-hub: and local-dir: models, precision, tokenizers, and the library without torchvision."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap

import open_clip
import pytest
import torch
from safetensors.torch import save_file

import open_mclip
from open_mclip import factory
from open_mclip.layers import QuickGELU

CAPTIONS = ["a photo of an astronaut", "ein Foto einer Katze", "一杯のコーヒー"]
TINY_OC = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 64, "layers": 2, "head_width": 32},
    "text_cfg": {"context_length": 77, "width": 64, "heads": 2, "layers": 2},
}


def _encode(model, preprocess, tokenizer, photos):
    images = torch.stack([preprocess(p) for p in photos[:3]])
    with torch.no_grad():
        return model.encode_image(images, normalize=True), model.encode_text(tokenizer(CAPTIONS), normalize=True)


def tmp_file_bytes(state_dict, path) -> bytes:
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path))
    return path.read_bytes()


@pytest.mark.slow  # two ViT-B-32 built, loaded and run: 7 s
def test_create_model_and_transforms_from_file_matches_open_clip(tmp_path, photos):
    ref_model, _, ref_val = open_clip.create_model_and_transforms("ViT-B-32")
    path = tmp_path / "vit-b-32.pt"
    torch.save(ref_model.state_dict(), path)
    ref_model, _, ref_val = open_clip.create_model_and_transforms("ViT-B-32", pretrained=str(path))
    model, train, val = open_mclip.create_model_and_transforms("ViT-B-32", pretrained=str(path))
    model.eval(), ref_model.eval()
    ours = _encode(model, val, open_mclip.get_tokenizer("ViT-B-32"), photos)
    theirs = _encode(ref_model, ref_val, open_clip.get_tokenizer("ViT-B-32"), photos)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert train(photos[0]).shape == (3, 224, 224)


@pytest.mark.slow  # two ViT-B-32 built, loaded and run: 9 s
def test_pretrained_tag_from_offline_hub_cache(hub_cache, add_hub_repo, photos):
    """`pretrained="openai"` resolves through the registry and huggingface_hub (offline, from a cache laid out as
    the hub serves it), applies the QuickGELU the weights were trained with, and matches open_clip."""
    ref = open_clip.create_model("ViT-B-32-quickgelu")
    payload = tmp_file_bytes(ref.state_dict(), hub_cache.parent / "w.safetensors")
    add_hub_repo("timm/vit_base_patch32_clip_224.openai", {"open_clip_model.safetensors": payload})
    model, _, val = open_mclip.create_model_and_transforms("ViT-B-32", pretrained="openai", cache_dir=str(hub_cache))
    assert isinstance(model.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)
    ref, _, ref_val = open_clip.create_model_and_transforms(
        "ViT-B-32-quickgelu", pretrained="openai", cache_dir=str(hub_cache)
    )
    model.eval(), ref.eval()
    tok = open_mclip.get_tokenizer("ViT-B-32")
    for a, b in zip(
        _encode(model, val, tok, photos), _encode(ref, ref_val, open_clip.get_tokenizer("ViT-B-32"), photos)
    ):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_pretrained_entry_preprocessing_is_used(hub_cache, add_hub_repo):
    """The LAION-2B ViT-L/14 weights were trained with mean/std 0.5: the registry entry carries that."""
    add_hub_repo("laion/CLIP-ViT-L-14-laion2B-s32B-b82K", {"open_clip_model.safetensors": b"x"})
    resolved = factory._resolve("ViT-L-14", "laion2b_s32b_b82k", cache_dir=str(hub_cache))
    assert resolved.preprocess["mean"] == resolved.preprocess["std"] == (0.5, 0.5, 0.5)
    assert resolved.weights.endswith("open_clip_model.safetensors")


def test_hf_hub_and_local_dir_models(hub_cache, add_hub_repo, tmp_path, photos):
    ref = open_clip.model.CLIP(**copy.deepcopy(TINY_OC))
    config = {"model_cfg": TINY_OC, "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3, "resize_mode": "squash"}}
    files = {
        "open_clip_config.json": json.dumps(config).encode(),
        "open_clip_model.safetensors": tmp_file_bytes(ref.state_dict(), tmp_path / "w.safetensors"),
    }
    add_hub_repo("someone/tiny-clip", files)
    local = tmp_path / "local"
    local.mkdir()
    for name, payload in files.items():
        (local / name).write_bytes(payload)
    for name in ("hf-hub:someone/tiny-clip", f"local-dir:{local}"):
        model, _, val = open_mclip.create_model_and_transforms(name, cache_dir=str(hub_cache))
        assert model.preprocess_cfg.mean == (0.5, 0.5, 0.5) and model.preprocess_cfg.resize_mode == "squash"
        oc_model, _, oc_val = open_clip.create_model_and_transforms(name, cache_dir=str(hub_cache))
        oc_model.eval(), model.eval()
        tok = open_clip.get_tokenizer("ViT-B-32")
        for a, b in zip(_encode(model, val, tok, photos), _encode(oc_model, oc_val, tok, photos)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_bad_names_and_tags_are_explained(tmp_path):
    with pytest.raises(ValueError, match="Did you mean 'ViT-B-32'"):
        open_mclip.create_model("ViT-B-33")
    with pytest.raises(ValueError, match="laion2b_s34b_b79k"):
        open_mclip.create_model("ViT-B-32", pretrained="laion2b_s99b")
    with pytest.raises(RuntimeError, match="weights are required"):
        open_mclip.create_model_from_pretrained("mclip-tiny")
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        open_mclip.create_model("mclip-tiny", precision="fp8")


@pytest.mark.parametrize("precision", ["bf16", "pure_bf16", "fp16", "pure_fp16"])
def test_precision_modes(precision):
    model = open_mclip.create_model("mclip-tiny", precision=precision)
    dtype = torch.bfloat16 if "bf16" in precision else torch.float16
    assert model.visual.conv1.weight.dtype == dtype
    ln_dtype = dtype if precision.startswith("pure") else torch.float32
    assert model.visual.ln_pre.weight.dtype == ln_dtype
    images = torch.randn(2, 3, 32, 32, dtype=dtype)
    with torch.no_grad():
        features = model.encode_image(images, normalize=True)
        text = model.encode_text(open_mclip.tokenize(["a", "b"]), normalize=True)
    assert features.dtype == dtype and torch.isfinite(features).all() and torch.isfinite(text).all()


def test_force_options_and_tokenizer():
    model = open_mclip.create_model(
        "mclip-tiny", force_image_size=48, force_patch_dropout=0.25, force_context_length=16, force_quick_gelu=True
    )
    assert model.visual.image_size == (48, 48) and model.preprocess_cfg.size == (48, 48)
    assert model.context_length == 16 and model.visual.patch_dropout.prob == 0.25
    assert isinstance(model.text.transformer.resblocks[0].mlp.gelu, QuickGELU)
    tok = open_mclip.get_tokenizer("mclip-tiny", context_length=16)
    assert tok(["hello world"]).shape == (1, 16)
    assert torch.equal(open_mclip.get_tokenizer("ViT-B-32")(CAPTIONS), open_clip.tokenize(CAPTIONS))
    out = open_mclip.create_model("mclip-tiny", output_dict=True)(text=tok(["x"]))
    assert set(out) == {"image_features", "text_features", "logit_scale"} and out["image_features"] is None


@pytest.mark.slow  # a fresh interpreter that imports and runs the library: 7 s
def test_library_runs_with_torchvision_and_timm_blocked():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["torchvision"] = None
        sys.modules["timm"] = None
        import numpy as np, torch
        from PIL import Image
        import open_mclip
        model, train, val = open_mclip.create_model_and_transforms("ViT-B-32")
        tok = open_mclip.get_tokenizer("ViT-B-32")
        image = val(Image.fromarray((np.random.rand(240, 320, 3) * 255).astype("uint8"))).unsqueeze(0)
        with torch.no_grad():
            img, txt, scale = model(image, tok(["a cat"]))
        assert img.shape == (1, 512) and txt.shape == (1, 512)
        assert "torchvision" not in [m for m in sys.modules if sys.modules[m] is not None]
        try:
            open_mclip.create_model("convnext_base")
        except ImportError as err:
            assert "pip install 'open_mclip[timm]'" in str(err)
        else:
            raise AssertionError("a timm tower built without timm")
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


@pytest.mark.parametrize(
    "model", ["ViT-B-16-SigLIP", "ViT-SO400M-16-SigLIP-i18n-256", "ViT-H-14-CLIPA", "ViT-H-14-worldwide"]
)
def test_tokenizer_of_siglip_clipa_and_metaclip2_is_open_clips(model, monkeypatch):
    """These towers use Hugging Face tokenizers (hub downloads): ours asks for the same one, with the same context
    length and options, as open_clip's config says."""
    asked = {}

    def record(name, **kwargs):
        asked.update(name=name, **kwargs)
        return "tokenizer"

    monkeypatch.setattr(open_mclip.factory, "HFTokenizer", record)
    assert open_mclip.get_tokenizer(model) == "tokenizer"
    text_cfg = open_clip.get_model_config(model)["text_cfg"]
    expected = {"name": text_cfg["hf_tokenizer_name"], "context_length": text_cfg["context_length"]}
    assert asked == {**expected, "cache_dir": None, **text_cfg.get("tokenizer_kwargs", {})}
