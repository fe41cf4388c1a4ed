"""Tower registry: each config type maps to the class that builds it."""

from __future__ import annotations

from ..config import HFTextConfig, ModifiedResNetConfig, TextTransformerConfig, TimmConfig, TowerConfig, ViTConfig
from .base import Tower
from .hf import HFTextTower  # transformers itself is imported only when such a tower is built
from .resnet import ModifiedResNet
from .text import TextTransformer
from .vit import VisionTransformer


def _timm_tower(cfg: TimmConfig, *, embed_dim: int) -> Tower:
    from .timm import TimmTower  # timm is optional: import it only when a timm tower is built

    return TimmTower(cfg, embed_dim=embed_dim)


BUILDERS = {
    ViTConfig: VisionTransformer,
    ModifiedResNetConfig: ModifiedResNet,
    TimmConfig: _timm_tower,
    TextTransformerConfig: TextTransformer,
    HFTextConfig: HFTextTower,
}


def build_tower(cfg: TowerConfig, *, embed_dim: int) -> Tower:
    """Instantiate the tower a config describes."""
    try:
        builder = BUILDERS[type(cfg)]
    except KeyError:
        raise ValueError(f"no builder registered for tower type {cfg.type!r}") from None
    return builder(cfg, embed_dim=embed_dim)


__all__ = ["Tower", "build_tower", "BUILDERS", "VisionTransformer", "ModifiedResNet", "TextTransformer", "HFTextTower"]
