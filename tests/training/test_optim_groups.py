"""Per-tower learning rates and layer-wise decay: every trainable parameter lands in exactly one group with the
peak lr its tower and depth give, the scheduler scales every group alike, and the flags reach the optimizer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import open_mclip
from training.config import OptimConfig, ScheduleConfig
from training.devices import get_device
from training.optim import (
    adam_defaults,
    create_optimizer,
    has_vit_image_tower,
    layer_scales,
    no_decay_names,
    param_groups,
    tower_lrs,
    uses_vit_defaults,
)
from training.params import parse_args
from training.scheduler import Scheduler

SHIPPED_CONFIGS = Path(__file__).resolve().parents[2] / "model_configs"


def _lr_of(optimizer) -> dict[int, float]:
    return {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}


def _create(model, **kwargs):
    cfg = OptimConfig(lr=1e-3, **kwargs)
    return create_optimizer(model, cfg, device=get_device("cpu"), model_name="mclip-tiny")


def test_default_is_two_groups_at_one_lr():
    model = open_mclip.CLIP(open_mclip.model_config("mclip-tiny"))
    optimizer = _create(model)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.0, 0.2]
    assert {g["lr"] for g in optimizer.param_groups} == {1e-3}
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


def test_lr_per_tower():
    model = open_mclip.CLIP(open_mclip.model_config("mclip-tiny"))
    lrs = _lr_of(_create(model, lr_image=1e-2, lr_text=1e-5))
    assert all(lrs[id(p)] == 1e-2 for p in model.visual.parameters())
    assert all(lrs[id(p)] == 1e-5 for p in model.text.parameters())
    assert lrs[id(model.logit_scale)] == 1e-3  # neither tower: --lr


@pytest.mark.parametrize("name", ["mclip-tiny", "mclip-tiny-rn"])
def test_layer_decay_follows_depth(name):
    """Head at the full rate, block i from the top at decay**i, stem at decay**(blocks + 1), per tower."""
    model = open_mclip.CLIP(open_mclip.model_config(name))
    decay = 0.5
    lrs = _lr_of(_create(model, layer_decay_image=decay, layer_decay_text=0.9, lr_text=2e-3))
    for tower, base, d in ((model.visual, 1e-3, decay), (model.text, 2e-3, 0.9)):
        stem, blocks, head = tower.lock_groups()
        assert all(lrs[id(p)] == pytest.approx(base) for p in head)
        for i, block in enumerate(reversed(blocks), start=1):
            assert all(lrs[id(p)] == pytest.approx(base * d**i) for p in block), (name, i)
        assert all(lrs[id(p)] == pytest.approx(base * d ** (len(blocks) + 1)) for p in stem)
        assert len({id(p) for p in tower.parameters()} - {id(p) for p in [*stem, *head, *sum(blocks, [])]}) == 0


def test_hf_text_tower_layer_decay_counts_transformer_layers():
    """An HF encoder's embeddings sit below its first layer; its projection head keeps the full rate."""
    text = open_mclip.create_model("mclip-tiny-xlmr").text
    scales = layer_scales(text, 0.5)
    stem, blocks, head = text.lock_groups()
    n = len(blocks)
    assert n == text.transformer.config.num_hidden_layers
    word_embeddings = text.transformer.embeddings.word_embeddings.weight
    assert scales[id(word_embeddings)] == 0.5 ** (n + 1)
    assert all(scales[id(p)] == 1.0 for p in head)


def test_frozen_tower_is_left_out_and_groups_partition_the_trainable():
    """LiT: a locked text tower has no group; every trainable parameter is in exactly one group."""
    model = open_mclip.CLIP(open_mclip.model_config("mclip-tiny"))
    model.lock_text_tower(0)
    groups = param_groups(model, weight_decay=0.1, lr=1e-3, lrs=tower_lrs(model, OptimConfig(lr_image=3e-3), lr=1e-3))
    ids = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(ids) == sorted(trainable) and len(ids) == len(set(ids))
    assert not {id(p) for p in model.text.parameters()} & set(ids)
    assert {g["lr"] for g in groups} == {3e-3, 1e-3}  # image tower, logit scale


def test_scheduler_scales_every_group_by_the_same_factor():
    model = open_mclip.CLIP(open_mclip.model_config("mclip-tiny"))
    optimizer = _create(model, lr_image=1e-2, lr_text=1e-4, layer_decay_text=0.8)
    scheduler = Scheduler(optimizer, ScheduleConfig(epochs=1, warmup=4), steps_per_epoch=20)
    for step in (0, 3, 10, 19):
        scheduler(step)
        factors = {round(g["lr"] / g["base_lr"], 12) for g in optimizer.param_groups}
        assert len(factors) == 1, (step, factors)


def test_flags_reach_the_optimizer_and_bad_decay_is_named():
    cfg = parse_args(["--lr-image", "0.01", "--lr-text", "1e-5", "--layer-decay-text", "0.75"]).optim
    assert (cfg.lr_image, cfg.lr_text, cfg.layer_decay_text, cfg.layer_decay_image) == (0.01, 1e-5, 0.75, 1.0)
    model = open_mclip.CLIP(open_mclip.model_config("mclip-tiny"))
    with pytest.raises(ValueError, match="layer-decay-image"):
        _create(model, layer_decay_image=1.5)


def test_a_training_step_moves_towers_at_their_own_rates():
    """One AdamW step (first step moves each weight by about lr) with lr_text = 0 leaves the text tower unchanged."""
    torch.manual_seed(0)
    model = open_mclip.CLIP(open_mclip.model_config("mclip-tiny"))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = _create(model, lr_image=1e-2, lr_text=0.0)
    images, texts = torch.randn(4, 3, 32, 32), torch.randint(1, 49000, (4, 77))
    image_features, text_features, scale = model(images, texts)[:3]
    (scale * image_features @ text_features.T).logsumexp(dim=1).mean().backward()
    optimizer.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.startswith("visual.") for n in moved)
    assert not any(n.startswith("text.") for n in moved)


def test_adam_defaults_are_open_clips_for_its_names_and_by_declared_tower_for_ours():
    """open_clip_train picks beta2 and eps by "vit" in the model name (so its nllb-clip-*, PE-Core-* and MobileCLIP-B
    get the ResNet numbers); the same numbers here for every open_clip name, run through its own function, while
    our mclip-* architectures, whose names do not say the tower type, go by the declared image tower."""
    from open_clip_train.params import get_default_params

    shipped = [path.stem for path in SHIPPED_CONFIGS.glob("*.json")]  # list_models() also has what tests added
    assert len(shipped) >= 79
    for name in shipped:
        if not name.startswith("mclip-"):
            theirs = get_default_params(name)
            ours = adam_defaults(vit=uses_vit_defaults(name, open_mclip.model_config(name)))
            assert {k: ours[k] for k in theirs} == theirs, name
    assert not uses_vit_defaults("nllb-clip-base", open_mclip.model_config("nllb-clip-base"))
    assert has_vit_image_tower(open_mclip.model_config("nllb-clip-base"))  # a ViT that open_clip's rule misses
    for name, (beta2, eps) in {"mclip-tiny": (0.98, 1e-6), "mclip-tiny-rn": (0.999, 1e-8)}.items():
        model = open_mclip.create_model(name)
        optimizer = create_optimizer(model, OptimConfig(), device=get_device("cpu"), model_name=name)
        assert optimizer.defaults["betas"] == (0.9, beta2) and optimizer.defaults["eps"] == eps, name
    optimizer = create_optimizer(
        open_mclip.create_model("mclip-tiny"),
        OptimConfig(beta2=0.95, eps=1e-7),
        device=get_device("cpu"),
        model_name="mclip-tiny",
    )
    assert optimizer.defaults["betas"] == (0.9, 0.95) and optimizer.defaults["eps"] == 1e-7  # flags win


def test_weight_decay_groups_are_open_clips_and_the_flag_adds_embeddings():
    """open_clip_train's rule: no decay under 2-d or on names with bn, ln, bias, logit_scale, so embedding tables and
    positional embeddings are decayed; --no-decay-embeddings adds those (the class embedding is 1-d either way)."""
    model = open_mclip.CLIP(open_mclip.model_config("mclip-tiny"))
    embeddings = {"text.token_embedding.weight", "text.positional_embedding", "visual.positional_embedding"}
    always = {"logit_scale", "visual.class_embedding", "visual.ln_pre.weight"}
    always |= {"visual.transformer.resblocks.0.attn.in_proj_bias", "visual.transformer.resblocks.0.ln_1.weight"}
    skip = no_decay_names(model)
    assert always <= skip and not embeddings & skip
    assert "visual.transformer.resblocks.0.attn.in_proj_weight" not in skip
    assert no_decay_names(model, embeddings=True) == skip | embeddings
    groups = param_groups(model, weight_decay=0.2)
    assert groups[0]["weight_decay"] == 0.0 and groups[1]["weight_decay"] == 0.2
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_no_decay_embeddings_flag_reaches_the_optimizer():
    model = open_mclip.CLIP(open_mclip.model_config("mclip-tiny"))
    cfg = parse_args(["--no-decay-embeddings", "--wd", "0.1"]).optim
    optimizer = create_optimizer(model, cfg, device=get_device("cpu"), model_name="mclip-tiny")
    undecayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0.0 for p in g["params"]}
    assert id(model.text.token_embedding.weight) in undecayed and id(model.visual.positional_embedding) in undecayed
    optimizer = _create(model, wd=0.1)
    undecayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0.0 for p in g["params"]}
    assert id(model.text.token_embedding.weight) not in undecayed
