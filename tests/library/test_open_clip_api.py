"""open_clip 3.3's public API, read live from the installed reference: every public name exists here with a
signature that accepts open_clip's parameters in open_clip's order and defaults, the submodule paths tools import
resolve, and open_clip's documented calls give open_clip's results (same random weights)."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import types

import open_clip
import pytest
import torch

import open_mclip

P = inspect.Parameter
OPEN_CLIP_NAMES = sorted(
    n for n in dir(open_clip) if not n.startswith("_") and not isinstance(getattr(open_clip, n), types.ModuleType)
)
# the submodules tools import names from, with the names they import beyond open_clip's top-level ones
SUBMODULE_EXTRAS = {
    "tokenizer": ["SimpleTokenizer", "HFTokenizer", "_tokenizer", "tokenize", "decode", "DEFAULT_CONTEXT_LENGTH"],
    "zero_shot_metadata": [],
    "zero_shot_classifier": [],
    "factory": ["HF_HUB_PREFIX", "load_checkpoint", "list_models", "add_model_config", "get_model_config"],
    "pretrained": ["download_pretrained_from_hf", "has_hf_hub", "is_pretrained_cfg"],
    "transform": ["PreprocessCfg", "image_transform_v2", "merge_preprocess_dict", "merge_preprocess_kwargs"],
    "loss": ["gather_features", "SigLipLoss"],
    "model": ["build_model_from_openai_state_dict"],
    "constants": [],
}
# (name, parameter): documented differences of a default value (docs/migrating.md)
DEFAULT_DIFFERENCES = {
    ("SimpleTokenizer", "bpe_path"): "ours: None means our own copy of the same vocabulary file",
}


def _defined_in(module: str) -> list[str]:
    """open_clip's top-level names defined in `open_clip.<module>`; for data modules, all their public names."""
    sub = importlib.import_module(f"open_clip.{module}")
    if module in ("constants", "zero_shot_metadata"):
        return [n for n in vars(sub) if not n.startswith("_") and not isinstance(getattr(sub, n), types.ModuleType)]
    return [n for n in OPEN_CLIP_NAMES if getattr(getattr(open_clip, n), "__module__", None) == sub.__name__]


def _signature(obj):
    if dataclasses.is_dataclass(obj) and isinstance(obj, type):
        return inspect.signature(obj)
    return inspect.signature(obj.__init__ if isinstance(obj, type) else obj)


def _check_signature(name: str, theirs, ours) -> list[str]:
    """Every parameter of `theirs` is accepted by `ours`: positional ones at the same position, same name and kind,
    same default (a default where theirs has none is accepted); keyword-only ones by name or **kwargs."""
    a, b = list(_signature(theirs).parameters.values()), list(_signature(ours).parameters.values())
    problems = []
    ours_by_name = {p.name: p for p in b}
    ours_kwargs = any(p.kind == P.VAR_KEYWORD for p in b)
    for index, p in enumerate(a):
        if p.kind == P.VAR_KEYWORD:
            if not ours_kwargs:
                problems.append(f"{name}: takes no **kwargs")
            continue
        if p.kind == P.VAR_POSITIONAL:
            if not any(q.kind == P.VAR_POSITIONAL for q in b):
                problems.append(f"{name}: takes no *args")
            continue
        q = ours_by_name.get(p.name)
        if q is None:
            if not ours_kwargs or p.kind != P.KEYWORD_ONLY:
                problems.append(f"{name}: no parameter {p.name!r}")
            continue
        if p.kind == P.POSITIONAL_OR_KEYWORD and (index >= len(b) or b[index].name != p.name or q.kind != p.kind):
            problems.append(f"{name}: {p.name!r} is not positional parameter {index}")
        if p.default is not P.empty and (name.rsplit(".", 1)[-1], p.name) not in DEFAULT_DIFFERENCES:
            if not _same_default(p.default, q.default):
                problems.append(f"{name}: {p.name}={q.default!r}, open_clip's default is {p.default!r}")
    return problems


def _same_default(theirs, ours) -> bool:
    if isinstance(theirs, torch.device) or isinstance(ours, torch.device):
        return torch.device(theirs) == torch.device(ours)
    try:
        return bool(theirs == ours)
    except (TypeError, RuntimeError):
        return theirs is ours


def test_every_public_name_of_open_clip_exists():
    assert len(OPEN_CLIP_NAMES) >= 49, OPEN_CLIP_NAMES  # open_clip 3.3.0 exports 49 names plus __version__
    missing = [n for n in [*OPEN_CLIP_NAMES, "__version__"] if not hasattr(open_mclip, n)]
    assert not missing, f"open_clip names missing from open_mclip: {missing}"


@pytest.mark.parametrize("name", [n for n in OPEN_CLIP_NAMES if callable(getattr(open_clip, n))])
def test_signature_accepts_open_clips_parameters(name):
    assert _check_signature(name, getattr(open_clip, name), getattr(open_mclip, name)) == []


@pytest.mark.parametrize("name", [n for n in OPEN_CLIP_NAMES if not callable(getattr(open_clip, n))])
def test_constants_equal_open_clips(name):
    theirs, ours = getattr(open_clip, name), getattr(open_mclip, name)
    if name.endswith("TEMPLATES"):
        assert [t("goldfish") for t in ours] == [t("goldfish") for t in theirs]
    else:
        assert tuple(ours) == tuple(theirs)


@pytest.mark.parametrize("module", sorted(SUBMODULE_EXTRAS))
def test_submodule_paths_and_names(module):
    theirs = importlib.import_module(f"open_clip.{module}")
    ours = importlib.import_module(f"open_mclip.{module}")
    names = sorted(set(_defined_in(module)) | set(SUBMODULE_EXTRAS[module]))
    assert names, module
    missing = [n for n in names if not hasattr(ours, n)]
    assert not missing, f"open_mclip.{module} lacks {missing}"
    problems = []
    for n in names:
        if callable(getattr(theirs, n)) and not isinstance(getattr(theirs, n), (open_clip.SimpleTokenizer,)):
            problems += _check_signature(f"{module}.{n}", getattr(theirs, n), getattr(ours, n))
    assert problems == []


@pytest.mark.parametrize("name", ["CLIPVisionCfg", "CLIPTextCfg", "AugmentationCfg"])
def test_config_dataclasses_have_open_clips_fields(name):
    theirs = {f.name: f.default for f in dataclasses.fields(getattr(open_clip, name))}
    ours = {f.name: f.default for f in dataclasses.fields(getattr(open_mclip, name))}
    assert ours == theirs


def test_tokenizer_module_default_instance_is_built_on_demand():
    from open_mclip.tokenizer import _tokenizer

    assert isinstance(_tokenizer, open_mclip.SimpleTokenizer)
    assert _tokenizer.decode(open_clip.tokenize("a dog")[0][:4].numpy()) == open_clip.decode(
        open_clip.tokenize("a dog")[0][:4]
    )


# ------------------------------------------------------------------------------------------- open_clip's calls
CAPTIONS = ["a photo of an astronaut", "ein Foto einer Katze", "一杯のコーヒー", "a <mask> of coffee"]


@pytest.fixture(scope="module")
def vit_s_32(tmp_path_factory):
    """open_clip's ViT-S-32 with random weights, saved: both libraries load the same file."""
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-S-32")
    path = tmp_path_factory.mktemp("weights") / "vit-s-32.pt"
    torch.save(model.state_dict(), path)
    return str(path)


def _features(model, preprocess, tokenizer, photos):
    model.eval()
    with torch.no_grad():
        images = torch.stack([preprocess(p) for p in photos[:3]])
        return model.encode_image(images, normalize=True), model.encode_text(tokenizer(CAPTIONS), normalize=True)


def _assert_features_equal(ours, theirs):
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "call",
    [
        lambda lib, w: lib.create_model_and_transforms("ViT-S-32", pretrained=w, jit=False)[::2],
        lambda lib, w: lib.create_model_and_transforms("ViT-S-32", w, True, "fp32", "cpu", force_custom_text=True)[::2],
        lambda lib, w: lib.create_model_and_transforms(
            "ViT-S-32", pretrained=w, weights_only=True, pretrained_image=False
        )[::2],
        lambda lib, w: lib.create_model_from_pretrained("ViT-S-32", pretrained=w),
        lambda lib, w: lib.create_model_from_pretrained(
            "ViT-S/32", w, "fp32", "cpu", False, image_resize_mode="longest"
        ),
    ],
    ids=["keywords", "positional", "weights_only", "from_pretrained", "from_pretrained-positional"],
)
def test_factory_calls_match_open_clip(call, vit_s_32, photos):
    model, preprocess = call(open_mclip, vit_s_32)
    ref_model, ref_preprocess = call(open_clip, vit_s_32)
    ours = _features(model, preprocess, open_mclip.get_tokenizer("ViT-S-32"), photos)
    theirs = _features(ref_model, ref_preprocess, open_clip.get_tokenizer("ViT-S-32"), photos)
    _assert_features_equal(ours, theirs)
    assert open_mclip.get_model_preprocess_cfg(model) == open_clip.get_model_preprocess_cfg(ref_model)
    assert open_mclip.get_model_tokenize_cfg(model) == open_clip.get_model_tokenize_cfg(ref_model)


def test_model_without_transform_and_attributes(vit_s_32):
    model = open_mclip.create_model_from_pretrained("ViT-S-32", pretrained=vit_s_32, return_transform=False)
    ref = open_clip.create_model_from_pretrained("ViT-S-32", pretrained=vit_s_32, return_transform=False)
    for name in ("token_embedding", "ln_final", "transformer"):
        assert type(getattr(model, name)).__name__ == type(getattr(ref, name)).__name__ or name == "transformer"
    for name in ("positional_embedding", "text_projection", "attn_mask"):
        torch.testing.assert_close(getattr(model, name), getattr(ref, name))
    assert (model.vocab_size, model.context_length) == (ref.vocab_size, ref.context_length)
    assert (model.text_pool_type, model.text_eos_id) == (ref.text_pool_type, ref.text_eos_id)
    torch.testing.assert_close(model.token_embedding.weight, ref.token_embedding.weight)
    torch.testing.assert_close(model.visual.conv1.weight, ref.visual.conv1.weight)
    torch.testing.assert_close(model.visual.proj, ref.visual.proj)
    assert model.visual.image_size == ref.visual.image_size
    assert model.visual.preprocess_cfg == ref.visual.preprocess_cfg
    assert (model.visual.image_mean, model.visual.image_std) == (ref.visual.image_mean, ref.visual.image_std)
    assert len(model.transformer.resblocks) == len(ref.transformer.resblocks)


@pytest.mark.parametrize("model_name", ["ViT-S-32", "RN50", "ViT-B-16-SigLIP", "mt5-base-ViT-B-32", "EVA02-B-16", ""])
def test_get_model_config_is_open_clips_dict(model_name):
    """The same config (compared after open_clip's dataclass defaults fill both), or None for an unknown name."""
    if not model_name:
        assert open_mclip.get_model_config("no-such-model") is None is open_clip.get_model_config("no-such-model")
        return
    ours, theirs = open_mclip.get_model_config(model_name), open_clip.get_model_config(model_name)
    assert isinstance(ours, dict)

    def filled(cfg):
        """open_clip's meaning of a config: its dataclass defaults filled in, the class it builds, null timm_proj as
        '' (open_clip treats them alike)."""
        cfg = dict(cfg)
        vision = dataclasses.asdict(open_clip.CLIPVisionCfg(**cfg.pop("vision_cfg")))
        vision["timm_proj"] = vision["timm_proj"] or ""
        text = dataclasses.asdict(open_clip.CLIPTextCfg(**cfg.pop("text_cfg")))
        custom_text = bool(cfg.pop("custom_text", False)) or bool(text["hf_model_name"])
        return vision, text, bool(cfg.pop("quick_gelu", False)), custom_text, cfg

    assert filled(ours) == filled(theirs)


@pytest.mark.parametrize("args", [("ViT-S-32",), ("ViT-S-32", 64), ("",), ("RN50", None, None)])
def test_get_tokenizer_calls(args):
    texts = CAPTIONS + ["x " * 100]
    assert torch.equal(open_mclip.get_tokenizer(*args)(texts), open_clip.get_tokenizer(*args)(texts))


def test_tokenizers_and_decode():
    assert torch.equal(open_mclip.tokenize(CAPTIONS, 32), open_clip.tokenize(CAPTIONS, 32))
    ids = open_clip.tokenize(CAPTIONS)[2]
    assert open_mclip.decode(ids) == open_clip.decode(ids)
    for kwargs in ({}, {"context_length": 16}, {"additional_special_tokens": ["<mask>"]}, {"clean": "whitespace"}):
        ours, theirs = open_mclip.SimpleTokenizer(**kwargs), open_clip.SimpleTokenizer(**kwargs)
        assert torch.equal(ours(CAPTIONS), theirs(CAPTIONS)), kwargs
        assert ours.all_special_ids == theirs.all_special_ids and ours.vocab_size == theirs.vocab_size
        assert ours.encoder == theirs.encoder and ours.decoder == theirs.decoder
        assert ours.bpe("hello") == theirs.bpe("hello")
    with pytest.raises(ValueError, match="reduction_mask"):
        open_mclip.SimpleTokenizer(reduction_mask="random")


def test_image_transform_calls(photos):
    calls = [
        lambda lib: lib.image_transform(224, is_train=False),
        lambda lib: lib.image_transform((224, 160), False, mean=(0.5,) * 3, std=(0.5,) * 3, resize_mode="longest"),
        lambda lib: lib.image_transform(96, False, None, None, "squash", "bilinear"),
    ]
    for call in calls:
        for photo in photos[:3]:
            torch.testing.assert_close(call(open_mclip)(photo), call(open_clip)(photo), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "precision", ["fp32", "amp", "amp_bf16", "amp_bfloat16", "bf16", "fp16", "pure_bf16", "pure_fp16"]
)
def test_precision_helpers(precision):
    assert open_mclip.get_cast_dtype(precision) == open_clip.get_cast_dtype(precision)
    assert open_mclip.get_input_dtype(precision) == open_clip.get_input_dtype(precision)


# RN50 takes 4-6 s a precision: make test-fast keeps it in fp16 (its batch norms are what differ from the ViT)
LOW_PRECISION_CASES = [
    (name, precision)
    if name == "ViT-S-32" or precision == "fp16"
    else pytest.param(name, precision, marks=pytest.mark.slow)
    for name in ("ViT-S-32", "RN50")
    for precision in ("bf16", "fp16", "pure_bf16")
]


@pytest.mark.parametrize(("name", "precision"), LOW_PRECISION_CASES)
def test_low_precision_casts_the_weights_open_clip_casts(name, precision):
    ours = open_mclip.create_model(name, precision=precision)
    theirs = open_clip.create_model(name, precision=precision)
    dtypes = {k: v.dtype for k, v in open_mclip.from_open_clip(theirs.state_dict()).items()}
    assert {k: v.dtype for k, v in ours.state_dict().items()} == dtypes
    fp32 = open_mclip.create_model(name)
    open_mclip.convert_weights_to_lp(fp32, torch.bfloat16)
    reference = open_clip.create_model(name)
    open_clip.convert_weights_to_lp(reference, torch.bfloat16)
    expected = {k: v.dtype for k, v in open_mclip.from_open_clip(reference.state_dict()).items()}
    assert {k: v.dtype for k, v in fp32.state_dict().items()} == expected


def test_zero_shot_classifier_calls(vit_s_32):
    model = open_mclip.create_model("ViT-S-32", pretrained=vit_s_32).eval()
    ref = open_clip.create_model("ViT-S-32", pretrained=vit_s_32).eval()
    # 7 classes in batches of 3 leave a short last batch; 4 templates keep the text tower's work small
    names, templates = list(open_clip.IMAGENET_CLASSNAMES[:7]), open_clip.SIMPLE_IMAGENET_TEMPLATES[:4]
    tok, ref_tok = open_mclip.get_tokenizer("ViT-S-32"), open_clip.get_tokenizer("ViT-S-32")
    for args in ({}, {"num_classes_per_batch": 3, "device": "cpu", "use_tqdm": True}, {"num_classes_per_batch": None}):
        ours = open_mclip.build_zero_shot_classifier(model, tok, names, templates, **args)
        theirs = open_clip.build_zero_shot_classifier(ref, ref_tok, names, templates, **args)
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    ours = open_mclip.build_zero_shot_classifier_legacy(model, tok, names, ["a photo of a {}."], "cpu", True)
    theirs = open_clip.build_zero_shot_classifier_legacy(ref, ref_tok, names, ["a photo of a {}."], "cpu", True)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def _features_pair(n=8, d=16):
    torch.manual_seed(1)
    return torch.nn.functional.normalize(torch.randn(n, d), dim=-1), torch.nn.functional.normalize(
        torch.randn(n, d), dim=-1
    )


def test_loss_calls():
    image, text = _features_pair()
    teacher_image, teacher_text = _features_pair()
    scale, bias = torch.tensor(10.0), torch.tensor(-2.0)
    for build in (lambda lib: lib.ClipLoss(), lambda lib: lib.ClipLoss(False, False, True, 0, 1)):
        torch.testing.assert_close(build(open_mclip)(image, text, scale), build(open_clip)(image, text, scale))
    ours = open_mclip.ClipLoss()(image, text, scale, bias, True)
    assert ours.keys() == {"contrastive_loss"}
    torch.testing.assert_close(ours, open_clip.ClipLoss()(image, text, scale, bias, True))
    siglip = open_mclip.SigLipLoss()(image, text, scale, bias, output_dict=True)
    torch.testing.assert_close(siglip, open_clip.loss.SigLipLoss()(image, text, scale, bias, output_dict=True))
    args = (image, text, scale, teacher_image, teacher_text, torch.tensor(20.0))
    torch.testing.assert_close(open_mclip.DistillClipLoss()(*args), open_clip.DistillClipLoss()(*args))
    torch.testing.assert_close(open_mclip.DistillClipLoss()(*args, True), open_clip.DistillClipLoss()(*args, True))
    with pytest.raises(TypeError, match="output_dict=True by name"):
        open_mclip.ClipLoss()(image, text, scale, True)
    with pytest.raises(ValueError, match="Horovod"):
        open_mclip.ClipLoss(use_horovod=True)
    with pytest.raises(NotImplementedError, match="CoCa"):
        open_mclip.CoCaLoss(1.0, 1.0)


def _open_clip_train_args(*argv):
    from open_clip_train.params import parse_args

    args = parse_args(["--model", "ViT-S-32", *argv])
    args.rank, args.world_size, args.distill = 0, 1, False  # set by open_clip_train.main after parsing
    return args


@pytest.mark.parametrize("argv", [(), ("--siglip",), ("--local-loss", "--gather-with-grad")])
def test_create_loss_from_open_clip_train_args(argv):
    image, text = _features_pair()
    scale, bias = torch.tensor(10.0), torch.tensor(-2.0)
    args = _open_clip_train_args(*argv)
    ours, theirs = open_mclip.create_loss(args), open_clip.create_loss(args)
    assert type(ours).__name__ == type(theirs).__name__
    extra = (bias,) if "--siglip" in argv else ()
    torch.testing.assert_close(ours(image, text, scale, *extra), theirs(image, text, scale, *extra))


def test_refused_options_say_why(vit_s_32):
    with pytest.raises(ValueError, match="jit=True .*torch.compile"):
        open_mclip.create_model("ViT-S-32", jit=True)
    with pytest.raises(ValueError, match="weights_only=False .*arbitrary code"):
        open_mclip.create_model("ViT-S-32", pretrained=vit_s_32, weights_only=False)
    with pytest.raises(NotImplementedError, match="CoCa"):
        open_mclip.CoCa(512, {}, {}, {})
    with pytest.raises(NotImplementedError, match="CoCa"):
        open_mclip.create_loss(argparse.Namespace(model="coca_ViT-B-32"))


def test_clip_class_from_open_clips_config_dataclasses(photos):
    vision = dict(layers=2, width=64, patch_size=16, image_size=64, head_width=32)
    text = dict(layers=2, width=64, heads=2)
    for cls in ("CLIP", "CustomTextCLIP"):
        ref = getattr(open_clip, cls)(32, open_clip.CLIPVisionCfg(**vision), open_clip.CLIPTextCfg(**text), True)
        ours = getattr(open_mclip, cls)(32, open_mclip.CLIPVisionCfg(**vision), open_mclip.CLIPTextCfg(**text), True)
        ours.load_state_dict(open_mclip.from_open_clip(ref.state_dict()))
        images = torch.stack([open_clip.image_transform(64, False)(p) for p in photos[:2]])
        with torch.no_grad():
            torch.testing.assert_close(ours.eval().encode_image(images), ref.eval().encode_image(images))
            tokens = open_clip.tokenize(CAPTIONS)
            torch.testing.assert_close(ours.encode_text(tokens), ref.encode_text(tokens), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="qk_norm"):
        open_mclip.CLIP(32, open_mclip.CLIPVisionCfg(**vision, qk_norm=True), open_mclip.CLIPTextCfg(**text))


@pytest.mark.parametrize("kwargs", [{"init_logit_bias": -10.0}, {"init_logit_scale": 1.5}, {"quick_gelu": True}])
def test_model_kwargs_override_config_keys(kwargs):
    ours = open_mclip.create_model("ViT-S-32", **kwargs)
    theirs = open_clip.create_model("ViT-S-32", **kwargs)
    assert (ours.logit_bias is None) == (theirs.logit_bias is None)
    torch.testing.assert_close(ours.logit_scale.detach().reshape(()), theirs.logit_scale.detach().reshape(()))
    assert (
        type(ours.visual.transformer.resblocks[0].mlp.gelu).__name__
        == type(theirs.visual.transformer.resblocks[0].mlp.gelu).__name__
    )


def test_trace_model_runs_the_same_numbers():
    model = open_mclip.create_model("mclip-tiny")
    traced = open_mclip.trace_model(model, batch_size=2)
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(traced.encode_image(images), model.encode_image(images))


def test_pretrained_registry_calls(tmp_path):
    for model, tag in [("ViT-B-32", "openai"), ("RN50", "yfcc15m"), ("ViT-B-32", "LAION2B-S34B-B79K"), ("x", "y")]:
        assert open_mclip.get_pretrained_cfg(model, tag) == open_clip.get_pretrained_cfg(model, tag)
        assert open_mclip.get_pretrained_url(model, tag) == open_clip.get_pretrained_url(model, tag)
        assert open_mclip.is_pretrained_cfg(model, tag) == open_clip.is_pretrained_cfg(model, tag)
    assert open_mclip.list_openai_models() == open_clip.list_openai_models()
    assert open_mclip.download_pretrained({}) == open_clip.download_pretrained({}) == ""
    local = {"file": str(tmp_path / "w.pt")}
    assert open_mclip.download_pretrained(local) == open_clip.download_pretrained(local)


@pytest.mark.slow  # a full ViT-B-32 built and run by both libraries: 7 s
def test_load_openai_model_from_a_local_file(tmp_path, photos):
    """An OpenAI-layout state dict file (what open_clip's ViT-B-32-quickgelu saves) loads in both, same numbers."""
    ref_model = open_clip.create_model("ViT-B-32-quickgelu")
    path = tmp_path / "ViT-B-32.pt"
    torch.save(ref_model.state_dict(), path)
    ours = open_mclip.load_openai_model(str(path), device="cpu")
    theirs = open_clip.load_openai_model(str(path), device="cpu")
    preprocess = open_clip.image_transform(224, False)
    _assert_features_equal(
        _features(ours, preprocess, open_mclip.tokenize, photos),
        _features(theirs, preprocess, open_clip.tokenize, photos),
    )
    with pytest.raises(RuntimeError, match="not found"):
        open_mclip.load_openai_model("no-such-model")


def test_tower_weight_files_load_as_open_clip(tmp_path, vit_s_32, photos):
    """pretrained_image_path / pretrained_text_path: a tower's own state dict, loaded after creation (non-strict)."""
    source = open_clip.create_model("ViT-S-32", pretrained=vit_s_32)
    visual, text = tmp_path / "visual.pt", tmp_path / "text.pt"
    torch.save(source.visual.state_dict(), visual)
    text_keys = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection")
    torch.save({k: v for k, v in source.state_dict().items() if k.startswith(text_keys)}, text)
    kwargs = {"pretrained_image_path": str(visual), "pretrained_text_path": str(text)}
    ours = open_mclip.create_model_and_transforms("ViT-S-32", **kwargs)[::2]
    theirs = open_clip.create_model_and_transforms("ViT-S-32", **kwargs)[::2]
    _assert_features_equal(
        _features(*ours, open_mclip.get_tokenizer("ViT-S-32"), photos),
        _features(*theirs, open_clip.get_tokenizer("ViT-S-32"), photos),
    )
    with pytest.raises(ValueError, match="no weights for the visual tower"):
        open_mclip.create_model("ViT-S-32", pretrained_image_path=str(text))
