"""The tower interface: locking (LiT), gradient checkpointing, weight-decay names, patch dropout."""

from __future__ import annotations

import pytest
import torch

from open_mclip import CLIP, model_config

TINY = {
    "vit": model_config("mclip-tiny"),
    "resnet": model_config("mclip-tiny-rn"),
    "timm": model_config("convnext_base").replace(text={"width": 32, "heads": 2, "layers": 2}),
}


def _trainable(module: torch.nn.Module) -> set[str]:
    return {n for n, p in module.named_parameters() if p.requires_grad}


def _block_names(tower) -> list[set[str]]:
    by_id = {id(p): n for n, p in tower.named_parameters()}
    _, blocks, _ = tower.lock_groups()
    return [{by_id[id(p)] for p in block} for block in blocks]


@pytest.mark.parametrize("kind", list(TINY))
@pytest.mark.parametrize("which", ["visual", "text"])
def test_lock_parameter_by_parameter(kind, which):
    model = CLIP(TINY[kind])
    tower = getattr(model, which)
    stem, blocks, head = tower.lock_groups()
    by_id = {id(p): n for n, p in tower.named_parameters()}
    stem_n, head_n = {by_id[id(p)] for p in stem}, {by_id[id(p)] for p in head}
    block_n = _block_names(tower)
    everything = set(by_id.values())
    assert stem_n | head_n | set().union(*block_n) == everything  # the groups cover the tower exactly
    n = len(blocks)
    assert n >= 2

    tower.lock(0)
    assert _trainable(tower) == set()
    other = model.text if which == "visual" else model.visual
    assert _trainable(other) == {n for n, _ in other.named_parameters()}  # the other tower is untouched

    tower.lock(1)
    assert _trainable(tower) == head_n | block_n[-1]

    tower.lock(n - 1)
    assert _trainable(tower) == head_n | set().union(*block_n[1:])

    tower.lock(n)
    assert _trainable(tower) == everything
    with pytest.raises(ValueError, match="unlocked_layers"):
        tower.lock(-1)


def test_freeze_norm_stats_keeps_batchnorm_statistics():
    model = CLIP(TINY["resnet"])
    model.lock_image_tower(0, freeze_bn_stats=True)
    model.train()
    bn = model.visual.bn1
    before = bn.running_mean.clone()
    model.encode_image(torch.randn(2, 3, 64, 64))
    assert not bn.training and torch.equal(bn.running_mean, before)

    unfrozen = CLIP(TINY["resnet"])
    unfrozen.lock_image_tower(0)
    unfrozen.train()
    before = unfrozen.visual.bn1.running_mean.clone()
    unfrozen.encode_image(torch.randn(2, 3, 64, 64))
    assert not torch.equal(unfrozen.visual.bn1.running_mean, before)  # without the flag statistics move


@pytest.mark.parametrize("kind", ["vit", pytest.param("timm", marks=pytest.mark.slow)])  # timm: 8 s
def test_grad_checkpointing_gives_the_same_gradients(kind):
    model = CLIP(TINY[kind]).train()
    size = model.visual.image_size
    size = (size, size) if isinstance(size, int) else size  # a ModifiedResNet keeps an int, as open_clip's
    images, text = torch.randn(2, 3, *size), torch.randint(1, 49407, (2, 77))

    def grads():
        torch.manual_seed(0)  # the same stochastic-depth draws in both runs
        model.zero_grad()
        image, txt, scale = model(images, text)
        (scale * image @ txt.T).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = grads()
    model.set_grad_checkpointing(True)
    assert model.text.transformer.grad_checkpointing
    checkpointed = grads()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5, msg=name)


def test_no_weight_decay_names_exist():
    for cfg in TINY.values():
        model = CLIP(cfg)
        names = {n for n, _ in model.named_parameters()}
        assert {n for n in model.no_weight_decay() if n != "logit_bias"} <= names


def test_patch_dropout_only_in_training():
    model = CLIP(model_config("mclip-tiny").replace(vision={"patch_dropout": 0.5}))
    images = torch.randn(2, 3, 32, 32)
    model.eval()
    torch.testing.assert_close(model.encode_image(images), model.encode_image(images))
    model.train()
    seen = []
    model.visual.transformer.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[1]))
    model.encode_image(images)
    assert seen == [1 + 8]  # class token + half of the 16 patches


def test_text_longer_than_context_is_refused():
    model = CLIP(model_config("mclip-tiny"))
    with pytest.raises(ValueError, match="context_length is 77"):
        model.encode_text(torch.ones(1, 78, dtype=torch.long))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_layer_norm_matches_open_clip_under_autocast_and_with_16_bit_weights(dtype):
    """fp32 weights under autocast: open_clip's LayerNorm (the native kernel on the 16-bit input); 16-bit weights
    (pure precisions): computed in float32, weights included (open_clip's LayerNormFp32 upcasts the input only, which
    the CPU kernel refuses). Both outputs keep the input's dtype."""
    from open_clip.transformer import LayerNorm as RefLayerNorm

    from open_mclip.layers import LayerNorm

    generator = torch.Generator().manual_seed(0)
    x = (3 * torch.randn(4, 7, 96, generator=generator) + 1).to(dtype)
    ours, ref = LayerNorm(96), RefLayerNorm(96)
    with torch.no_grad():
        for norm in (ours, ref):
            norm.weight.copy_(1 + 0.1 * torch.randn(96, generator=torch.Generator().manual_seed(1)))
            norm.bias.copy_(0.1 * torch.randn(96, generator=torch.Generator().manual_seed(2)))
    with torch.autocast("cpu", dtype=dtype):
        got, expected = ours(x), ref(x)
        # and without copies: no cast of the input to float32 and back in the autograd graph (the speed of it)
        graph, nodes = [], [ours(x.clone().requires_grad_()).grad_fn]
        while nodes:
            node = nodes.pop()
            graph.append(type(node).__name__)
            nodes += [child for child, _ in node.next_functions if child is not None]
    assert got.dtype == dtype and torch.equal(got, expected)
    assert "ToCopyBackward0" not in graph and "NativeLayerNormBackward0" in graph
    # 16-bit input without autocast: computed in float32, which every backend accepts (no mixed-dtype kernel)
    mixed = ours(x)
    assert mixed.dtype == dtype and torch.equal(
        mixed, torch.nn.functional.layer_norm(x.float(), (96,), ours.weight, ours.bias, ours.eps).to(dtype)
    )
    ours.to(dtype)
    expected = torch.nn.functional.layer_norm(x.float(), (96,), ours.weight.float(), ours.bias.float(), ours.eps).to(
        dtype
    )
    got = ours(x)
    assert got.dtype == dtype and torch.equal(got, expected)


def test_towers_without_grad_checkpointing_refuse_it_alike():
    """One behaviour for every tower type: enabling what a tower cannot do is refused with the reason (open_clip
    silently ignores it for ModifiedResNet and warns for timm); disabling is always accepted."""
    model = CLIP(TINY["resnet"])
    with pytest.raises(ValueError, match="ModifiedResNet tower: recomputing its BatchNorm"):
        model.set_grad_checkpointing(True)
    model.visual.set_grad_checkpointing(False)
    model.text.set_grad_checkpointing(True)
    assert model.text.transformer.grad_checkpointing
