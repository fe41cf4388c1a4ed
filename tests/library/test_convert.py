"""Checkpoint conversion and loading: OpenAI TorchScript archives, open_clip trainer checkpoints, strictness,
safe loading and position-embedding resizing."""

from __future__ import annotations

import copy
import warnings

import open_clip
import pytest
import torch
from open_clip.model import convert_weights_to_lp, resize_pos_embed

from open_mclip import CLIP, ModelConfig, create_model, model_config, to_open_clip
from open_mclip.convert import config_from_openai_state_dict, load_checkpoint, load_state_dict_strict
from open_mclip.weights_io import is_torchscript_archive, load_weights_file, read_torchscript_tensors

TEXT = open_clip.tokenize(["a diagram", "ein Hund", "un chat"])

OPENAI_LIKE = {
    "vit": {"image_size": 64, "patch_size": 16, "width": 128, "layers": 2},
    "resnet": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 64},
}


def _openai_archive(tmp_path, kind: str):
    """An open_clip CLIP with OpenAI's layout, QuickGELU and partial fp16 weights, saved as TorchScript."""
    oc_cfg = {
        "embed_dim": 64,
        "quick_gelu": True,
        "vision_cfg": OPENAI_LIKE[kind],
        "text_cfg": {"width": 128, "heads": 2, "layers": 2},
    }
    ref = open_clip.model.CLIP(**copy.deepcopy(oc_cfg)).eval()
    convert_weights_to_lp(ref, torch.float16)  # OpenAI's files hold most weights in fp16
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(ref)
        path = tmp_path / f"openai-{kind}.pt"
        torch.jit.save(scripted, str(path))
        jit_state = torch.jit.load(str(path), map_location="cpu").state_dict()
    ref.float()
    return path, ref, jit_state


@pytest.mark.parametrize("kind", ["vit", "resnet"])
def test_openai_torchscript_archive_loads_without_running_code(tmp_path, kind):
    path, ref, jit_state = _openai_archive(tmp_path, kind)
    assert is_torchscript_archive(path)
    tensors = read_torchscript_tensors(path)
    for key, value in jit_state.items():  # every weight torch.jit.load sees, bit for bit
        assert torch.equal(tensors[key], value), key
    assert tensors["visual.conv1.weight" if kind == "vit" else "visual.layer1.0.conv1.weight"].dtype == torch.float16

    cfg = config_from_openai_state_dict(tensors)
    assert cfg.vision.type == ("vit" if kind == "vit" else "modified_resnet")
    assert cfg.text.act == "quick_gelu" and cfg.embed_dim == 64
    model = CLIP(cfg).eval()
    load_checkpoint(model, path)
    assert model.visual.conv1.weight.dtype == torch.float32
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for ours, theirs in zip(model(images, TEXT), ref(images, TEXT)):
            torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_open_clip_trainer_checkpoint_with_ddp_prefix(tmp_path):
    """open_clip's trainer saves {"epoch", "name", "state_dict" (DDP "module." keys), "optimizer"}."""
    oc_cfg = {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 64, "patch_size": 32, "width": 64, "layers": 1},
        "text_cfg": {"width": 64, "heads": 1, "layers": 1},
    }
    ref = open_clip.model.CLIP(**copy.deepcopy(oc_cfg))
    optimizer = torch.optim.AdamW(ref.parameters())
    path = tmp_path / "epoch_3.pt"
    state = {f"module.{k}": v for k, v in ref.state_dict().items()}
    torch.save({"epoch": 3, "name": "run", "state_dict": state, "optimizer": optimizer.state_dict()}, path)
    ours = CLIP(ModelConfig.from_dict(oc_cfg, source="trainer"))
    load_checkpoint(ours, path)
    assert torch.equal(ours.text.text_projection, ref.text_projection)


def test_missing_and_unexpected_keys_are_listed():
    model = CLIP(model_config("mclip-tiny"))
    state = dict(model.state_dict())
    del state["visual.proj"]
    state["visual.extra_weight"] = torch.zeros(1)
    state["text.text_projection"] = torch.zeros(3, 3)
    with pytest.raises(ValueError) as err:
        load_state_dict_strict(model, state, source="ckpt.pt")
    message = str(err.value)
    assert "ckpt.pt" in message
    assert "missing keys (1): visual.proj" in message
    assert "unexpected keys (1): visual.extra_weight" in message
    assert "text.text_projection: checkpoint (3, 3) vs model (64, 64)" in message


class _Payload:
    """Any class: pickling it into a checkpoint means code would run on load."""


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "obj": _Payload()}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        load_weights_file(path)


def test_safetensors_round_trip(tmp_path):
    from safetensors.torch import save_file

    model = CLIP(model_config("mclip-tiny"))
    path = tmp_path / "open_clip_model.safetensors"
    save_file(to_open_clip(model.state_dict()), str(path))
    clone = CLIP(model_config("mclip-tiny"))
    load_checkpoint(clone, path)
    for key, value in model.state_dict().items():
        assert torch.equal(clone.state_dict()[key], value)


@pytest.mark.slow  # two ViT-B-32 resized and run: 5 s
def test_position_embedding_resized_as_open_clip_does(tmp_path):
    cfg = open_clip.get_model_config("ViT-B-32")
    cfg["text_cfg"]["layers"] = 1
    ref = open_clip.model.CLIP(**copy.deepcopy(cfg))
    path = tmp_path / "b32.pt"
    torch.save(ref.state_dict(), path)
    expected = dict(ref.state_dict())
    cfg["vision_cfg"]["image_size"] = 288
    resize_pos_embed(expected, open_clip.model.CLIP(**copy.deepcopy(cfg)))
    with pytest.raises(ValueError, match="unexpected keys|missing keys"):  # shipped ViT-B-32 has 12 text layers
        create_model("ViT-B-32", pretrained=str(path), force_image_size=288)
    model = CLIP(model_config("ViT-B-32").replace(vision={"image_size": 288}, text={"layers": 1}))
    load_checkpoint(model, path)
    assert model.visual.positional_embedding.shape == (82, 768)
    resized = expected["visual.positional_embedding"]
    torch.testing.assert_close(model.visual.positional_embedding, resized, atol=1e-6, rtol=0)


# --- load_checkpoint as open_clip's ----------------------------------------------------------------------------

SMALL_CUSTOM = {
    "embed_dim": 64,
    "init_logit_bias": -10.0,
    "vision_cfg": {"image_size": 32, "patch_size": 16, "width": 64, "layers": 1, "head_width": 32},
    "text_cfg": {"width": 64, "heads": 2, "layers": 1},
}


def _custom_text_pair():
    """open_clip's CustomTextCLIP (its names are ours) and our model of the same config, different weights."""
    ref = open_clip.model.CustomTextCLIP(**copy.deepcopy(SMALL_CUSTOM))
    ours = CLIP(ModelConfig.from_dict(SMALL_CUSTOM, source="small"))
    return ref, ours


def test_load_checkpoint_signature_is_open_clips():
    import inspect

    theirs = list(inspect.signature(open_clip.load_checkpoint).parameters.values())
    ours = list(inspect.signature(load_checkpoint).parameters.values())
    assert [(p.name, p.kind, p.default) for p in ours[: len(theirs)]] == [(p.name, p.kind, p.default) for p in theirs]
    assert [(p.name, p.kind, p.default) for p in ours[len(theirs) :]] == [
        ("assign", inspect.Parameter.KEYWORD_ONLY, False)
    ]


def test_load_checkpoint_returns_open_clips_incompatible_keys(tmp_path):
    ref, ours = _custom_text_pair()
    path = tmp_path / "full.pt"
    torch.save(ref.state_dict(), path)
    expected = open_clip.load_checkpoint(open_clip.model.CustomTextCLIP(**copy.deepcopy(SMALL_CUSTOM)), str(path))
    result = load_checkpoint(ours, path)
    assert type(result) is type(expected) and result == expected == ([], [])  # torch's _IncompatibleKeys
    assert (result.missing_keys, result.unexpected_keys) == ([], [])
    assert torch.equal(ours.visual.proj, ref.visual.proj)


def test_load_checkpoint_not_strict_loads_what_matches(tmp_path):
    ref, ours = _custom_text_pair()
    state = dict(ref.state_dict())
    del state["visual.proj"], state["text.ln_final.weight"]
    state["visual.extra"] = torch.zeros(2)
    path = tmp_path / "partial.safetensors"
    from safetensors.torch import save_file

    save_file(state, str(path))
    kept = ours.visual.proj.detach().clone()
    theirs = open_clip.load_checkpoint(
        open_clip.model.CustomTextCLIP(**copy.deepcopy(SMALL_CUSTOM)), str(path), strict=False
    )
    result = load_checkpoint(ours, path, strict=False)
    assert sorted(result.missing_keys) == sorted(theirs.missing_keys) == ["text.ln_final.weight", "visual.proj"]
    assert result.unexpected_keys == theirs.unexpected_keys == ["visual.extra"]
    assert torch.equal(ours.visual.proj, kept)  # missing: left as it was
    assert torch.equal(ours.visual.conv1.weight, ref.visual.conv1.weight)  # matching: loaded
    assert torch.equal(ours.logit_bias, ref.logit_bias)
    with pytest.raises(ValueError, match=r"missing keys \(2\): text.ln_final.weight, visual.proj"):
        load_checkpoint(ours, path)  # strict (the default): every difference listed
    with pytest.raises(RuntimeError):  # what open_clip's strict loading raises, too
        load_checkpoint(ours, path, strict=True)


def test_load_checkpoint_shape_mismatch_raises_strict_or_not(tmp_path):
    ref, ours = _custom_text_pair()
    state = dict(ref.state_dict())
    state["visual.proj"] = torch.zeros(3, 3)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(RuntimeError):  # open_clip (torch) refuses mis-shaped weights even when not strict
        open_clip.load_checkpoint(
            open_clip.model.CustomTextCLIP(**copy.deepcopy(SMALL_CUSTOM)), str(path), strict=False
        )
    with pytest.raises(ValueError, match=r"visual.proj: checkpoint \(3, 3\) vs model \(64, 64\)"):
        load_checkpoint(ours, path, strict=False)


def test_load_checkpoint_refuses_weights_only_false(tmp_path):
    model = CLIP(model_config("mclip-tiny"))
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(ValueError, match="arbitrary code"):
        load_checkpoint(model, path, weights_only=False)
    with pytest.raises(ValueError, match="big_vision"):
        load_checkpoint(model, tmp_path / "w.npz")


def test_load_checkpoint_assign_on_meta(tmp_path):
    source = CLIP(model_config("mclip-tiny"))
    path = tmp_path / "w.safetensors"
    from safetensors.torch import save_file

    save_file(to_open_clip(source.state_dict()), str(path))
    with torch.device("meta"):
        model = CLIP(model_config("mclip-tiny"))
    assert load_checkpoint(model, path, assign=True) == ([], [])
    assert model.visual.proj.device.type == "cpu" and torch.equal(model.visual.proj, source.visual.proj)
    with torch.device("meta"):
        model = CLIP(model_config("mclip-tiny"))
    state = to_open_clip(source.state_dict())
    del state["visual.proj"]
    save_file(state, str(path))
    with pytest.raises(ValueError, match="assign=True needs every weight"):  # it would stay on the meta device
        load_checkpoint(model, path, strict=False, assign=True)
