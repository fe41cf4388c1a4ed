"""open_clip's tower locking, for `CLIP.lock_image_tower(unlocked_groups, freeze_bn_stats)` and
`CLIP.lock_text_tower(unlocked_layers, freeze_layer_norm)`: the same parameters frozen as open_clip 3.3 freezes.

open_clip counts differently per tower type: a ViT's last "group" is its projection alone, and the last block comes
with the final norm; its ModifiedResNet only locks whole; a timm trunk is locked by timm's layer groups while the
head stays trainable; a Hugging Face encoder keeps its projection (and, unless `freeze_layer_norm`, its LayerNorms)
trainable. Our own uniform rule is `Tower.lock(unlocked_layers, freeze_norm_stats=...)` (towers/base.py).
Frozen BatchNorm statistics are kept fixed by keeping those layers in eval mode, which computes what open_clip's
FrozenBatchNorm2d does without replacing modules.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from .towers import HFTextTower, ModifiedResNet, TextTransformer, Tower, VisionTransformer
from .towers.base import params_of
from .towers.timm import TimmTower  # the class only: timm itself is imported when one is built


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name}={value!r} must be an int >= 0 (the number of groups left trainable from the top)")


def _set_trainable(params: Iterable[nn.Parameter], trainable: bool) -> None:
    for p in params:
        p.requires_grad = trainable


def _unlock_last(tower: Tower, groups: list[list[nn.Parameter]], count: int) -> None:
    """Freeze the whole tower, then make the last `count` groups trainable."""
    _set_trainable(tower.parameters(), False)
    if count:
        _set_trainable((p for group in groups[-count:] for p in group), True)


def _vit_groups(tower: VisionTransformer) -> list[list[nn.Parameter]]:
    """open_clip's ViT groups: stem, each block but the last, the last block with ln_post, the projection."""
    blocks = list(tower.transformer.resblocks)
    stem = params_of(tower.conv1, tower.class_embedding, tower.positional_embedding, tower.ln_pre)
    return [stem, *(params_of(b) for b in blocks[:-1]), params_of(blocks[-1], tower.ln_post), [tower.proj]]


def _timm_lock(tower: TimmTower, unlocked_groups: int, freeze_bn_stats: bool) -> None:
    """timm trunks: timm's layer groups, all but the top `unlocked_groups` frozen; the head is never frozen."""
    stem, blocks, _ = tower.lock_groups()  # timm's groups, bottom to top
    groups = [stem, *blocks]
    frozen = groups if not unlocked_groups else groups[: max(len(groups) - unlocked_groups, 0)]
    _set_trainable((p for group in frozen for p in group), False)
    if freeze_bn_stats:
        tower.freeze_norm_stats()


def lock_image_tower(tower: Tower, unlocked_groups: int = 0, freeze_bn_stats: bool = False) -> None:
    """Freeze an image tower as open_clip's `lock_image_tower` does for the same tower type."""
    _check_count("unlocked_groups", unlocked_groups)
    if isinstance(tower, VisionTransformer):
        _unlock_last(tower, _vit_groups(tower), unlocked_groups)
    elif isinstance(tower, ModifiedResNet):
        if unlocked_groups:
            raise ValueError(
                f"unlocked_groups={unlocked_groups}: open_clip locks a ModifiedResNet only whole (0); "
                "model.visual.lock(unlocked_layers=k) keeps its top k stages trainable"
            )
        _set_trainable(tower.parameters(), False)
        if freeze_bn_stats:
            tower.freeze_norm_stats()
    elif isinstance(tower, TimmTower):
        _timm_lock(tower, unlocked_groups, freeze_bn_stats)
    else:
        raise ValueError(f"open_clip has no lock rule for a {type(tower).__name__} image tower; use model.visual.lock")


def _text_groups(tower: TextTransformer) -> list[list[nn.Parameter]]:
    """open_clip's text groups: embeddings, each block but the last, the last block with ln_final, the projection."""
    blocks = list(tower.transformer.resblocks)
    groups = [params_of(tower.token_embedding, tower.positional_embedding)]
    groups += [params_of(b) for b in blocks[:-1]]
    groups.append(params_of(blocks[-1], tower.ln_final) if blocks else params_of(tower.ln_final))
    if tower.text_projection is not None:
        groups.append(params_of(tower.text_projection))
    return groups


def _hf_lock(tower: HFTextTower, unlocked_layers: int, freeze_layer_norm: bool) -> None:
    """open_clip's HFTextEncoder.lock: freeze the encoder (or its embeddings and lower layers); the projection and,
    unless `freeze_layer_norm`, parameters under a `LayerNorm` module stay trainable."""
    stem, blocks, _ = tower.lock_groups()
    if unlocked_layers:
        frozen = {id(p) for group in [stem, *blocks][:-unlocked_layers] for p in group}
    else:
        frozen = {id(p) for p in tower.transformer.parameters()}
    for name, param in tower.transformer.named_parameters():
        if id(param) in frozen:
            param.requires_grad = not freeze_layer_norm and "LayerNorm" in name.split(".")


def lock_text_tower(tower: Tower, unlocked_layers: int = 0, freeze_layer_norm: bool = True) -> None:
    """Freeze a text tower as open_clip's `lock_text_tower` does for the same tower type."""
    _check_count("unlocked_layers", unlocked_layers)
    if isinstance(tower, HFTextTower):
        _hf_lock(tower, unlocked_layers, freeze_layer_norm)
        return
    if not isinstance(tower, TextTransformer):
        raise ValueError(f"open_clip has no lock rule for a {type(tower).__name__} text tower; use model.text.lock")
    if not freeze_layer_norm:
        raise ValueError(
            "freeze_layer_norm=False: open_clip locks a Transformer text tower's LayerNorms like its other weights "
            "(only Hugging Face towers keep them trainable); use freeze_layer_norm=True"
        )
    _unlock_last(tower, _text_groups(tower), unlocked_layers)
