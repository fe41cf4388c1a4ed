"""Coverage of open_clip 3.3.0, read live from the installed package: every config of open_clip's that our schema
converts ships in model_configs/, every pretrained tag of a shipped architecture is in our registry with open_clip's
entry, `get_tokenizer` asks for what open_clip's asks, and the configs that do not convert are exactly the families
listed here, each for its reason (so a family that becomes convertible shows up)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import open_clip
import open_clip.factory as oc_factory
import open_clip.pretrained as oc_pretrained
import pytest

import open_mclip
import open_mclip.factory
from open_mclip import ModelConfig, get_pretrained_cfg, list_models, list_pretrained

OPEN_CLIP_CONFIGS = Path(open_clip.__file__).parent / "model_configs"

# open_clip's configs that our schema does not convert: family -> (reason, the key our converter's error names,
# the configs)
NOT_CONVERTING = {
    "CoCa": (
        "a captioning text decoder over the image tokens (multimodal_cfg): open_mclip builds two-tower models only",
        "multimodal_cfg",
        "coca_ViT-B-32 coca_ViT-L-14 coca_base coca_roberta-ViT-B-32",
    ),
    "SigLIP 2": (
        "tanh-approximated GELU in the text tower (act_kwargs), which our text transformer does not offer",
        "act_kwargs",
        """ViT-B-16-SigLIP2 ViT-B-16-SigLIP2-256 ViT-B-16-SigLIP2-384 ViT-B-16-SigLIP2-512 ViT-B-32-SigLIP2-256
        ViT-L-16-SigLIP2-256 ViT-L-16-SigLIP2-384 ViT-L-16-SigLIP2-512 ViT-SO400M-14-SigLIP2 ViT-SO400M-14-SigLIP2-378
        ViT-SO400M-16-SigLIP2-256 ViT-SO400M-16-SigLIP2-384 ViT-SO400M-16-SigLIP2-512 ViT-gopt-16-SigLIP2-256
        ViT-gopt-16-SigLIP2-384""",
    ),
}


@functools.cache
def _conversion_errors() -> dict[str, str | None]:
    """Each of open_clip's config files -> our converter's error, or None where it converts."""
    errors: dict[str, str | None] = {}
    for path in sorted(OPEN_CLIP_CONFIGS.glob("*.json")):
        try:
            ModelConfig.from_open_clip_dict(json.loads(path.read_text(encoding="utf-8")), source=path.name)
        except ValueError as err:
            errors[path.stem] = str(err)
        else:
            errors[path.stem] = None
    return errors


def _shipped_from_open_clip() -> list[str]:
    ours = set(list_models())
    return [name for name in open_clip.list_models() if name in ours]


def test_reads_open_clips_own_list():
    assert open_clip.__version__ == "3.3.0"
    assert sorted(_conversion_errors()) == sorted(open_clip.list_models())  # its folder is its list
    assert len(_conversion_errors()) > 100


def test_every_config_that_converts_ships():
    ours = set(list_models())
    missing = [name for name, error in _conversion_errors().items() if error is None and name not in ours]
    assert missing == [], (
        f"{len(missing)} open_clip configs convert (we could build them) but do not ship; add them to "
        f"scripts/make_model_configs.py and check their parity: {missing}"
    )


def test_configs_that_do_not_convert_are_the_known_families():
    expected = {name: family for family, (_, _, names) in NOT_CONVERTING.items() for name in names.split()}
    failing = {name: error for name, error in _conversion_errors().items() if error is not None}
    now_convert = sorted(set(expected) - set(failing))
    new_failures = {name: failing[name] for name in sorted(set(failing) - set(expected))}
    assert now_convert == [], f"these configs convert now: ship them and drop them from NOT_CONVERTING: {now_convert}"
    assert new_failures == {}, f"configs that do not convert, for a reason not listed in NOT_CONVERTING: {new_failures}"
    for name, family in expected.items():
        reason, key, _ = NOT_CONVERTING[family]
        assert key in failing[name], f"{name} ({family}: {reason}) fails for another reason: {failing[name]}"
        assert name not in list_models()


def test_every_pretrained_tag_of_a_shipped_model_ships():
    ours, shipped = set(list_pretrained()), set(list_models())
    missing = [f"{m}:{t}" for m, t in open_clip.list_pretrained() if m in shipped and (m, t) not in ours]
    assert missing == [], (
        f"{len(missing)} open_clip pretrained tags of architectures we ship are missing; regenerate "
        f"src/open_mclip/pretrained.json with scripts/make_pretrained_registry.py: {missing}"
    )


def test_pretrained_entries_are_open_clips():
    """Every (model, tag) we list is open_clip's, with its preprocessing (mean, std, interpolation, resize mode),
    hub location and quick_gelu flag unchanged."""
    theirs = set(open_clip.list_pretrained())
    invented = [pair for pair in list_pretrained() if pair not in theirs]
    assert invented == []
    differ = [
        f"{m}:{t}" for m, t in list_pretrained() if get_pretrained_cfg(m, t) != oc_pretrained.get_pretrained_cfg(m, t)
    ]
    assert differ == []


def _recorder(calls: list, kind: str):
    def record(*args, **kwargs):
        calls.append((kind, args, kwargs))
        return kind

    return record


def _open_clips_request(name: str, monkeypatch, **kwargs) -> tuple:
    calls: list = []
    for kind in ("HFTokenizer", "SimpleTokenizer", "SigLipTokenizer"):
        monkeypatch.setattr(oc_factory, kind, _recorder(calls, kind))
    open_clip.get_tokenizer(name, **kwargs)
    (kind, args, kw), *rest = calls
    assert rest == []
    if kind == "SimpleTokenizer":  # our CLIP BPE tokenizer
        return ("clip", *args), kw
    if kind == "HFTokenizer" and kw.get("tokenizer_mode", "") is None:  # our HFTokenizer has no modes
        kw.pop("tokenizer_mode")
    return (kind, *args), kw


def _our_request(name: str, monkeypatch, **kwargs) -> tuple:
    calls: list = []
    monkeypatch.setattr(open_mclip.factory, "HFTokenizer", _recorder(calls, "HFTokenizer"))
    monkeypatch.setattr(open_mclip.factory, "ClipTokenizer", _recorder(calls, "clip"))
    open_mclip.get_tokenizer(name, **kwargs)
    (kind, args, kw), *rest = calls
    assert rest == []
    return (kind, *args), kw


def test_get_tokenizer_asks_for_what_open_clips_asks(monkeypatch):
    """For every shipped architecture of open_clip's: the same tokenizer class, name, context length, options (hub
    downloads are recorded, not made); caller options (NLLB's source language) pass through as in open_clip."""
    requests = [(name, {}) for name in _shipped_from_open_clip()]
    requests += [
        ("nllb-clip-base-siglip", {"language": "fra_Latn"}),
        ("nllb-clip-large-siglip", {"context_length": 32}),
    ]
    differ = {}
    for name, kwargs in requests:
        theirs, ours = _open_clips_request(name, monkeypatch, **kwargs), _our_request(name, monkeypatch, **kwargs)
        if ours != theirs:
            differ[name] = {"open_clip": theirs, "ours": ours}
    assert differ == {}
    nllb = _our_request("nllb-clip-base-siglip", monkeypatch, language="fra_Latn")
    expected = {"context_length": 77, "cache_dir": None, "language": "fra_Latn"}
    assert nllb == (("HFTokenizer", "facebook/nllb-200-distilled-600M"), expected)


@pytest.mark.parametrize("name", ["nllb-clip-base-siglip", "nllb-clip-large-siglip"])
def test_nllb_siglip_ships_with_both_tags(name):
    """The multilingual SigLIP models: their v1 and mrl weights, SigLIP's preprocessing, a logit bias."""
    assert name in list_models()
    assert [t for m, t in list_pretrained() if m == name] == ["v1", "mrl"]
    for tag in ("v1", "mrl"):
        cfg = get_pretrained_cfg(name, tag)
        assert (cfg["mean"], cfg["std"], cfg["interpolation"], cfg["resize_mode"]) == (
            (0.5, 0.5, 0.5),
            (0.5, 0.5, 0.5),
            "bicubic",
            "squash",
        )
