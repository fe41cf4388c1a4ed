"""Vision Transformer image tower (ViT-B/32 ... ViT-e/14), open_clip-compatible parameter layout."""

from __future__ import annotations

import torch
from torch import nn

from ..config import ViTConfig
from ..layers import AttentionalPooler, LayerNorm, PatchDropout, Transformer
from .base import Tower, params_of


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


class VisionTransformer(Tower):
    """Patchify, prepend a class token, add learned positions, run pre-norm blocks, pool and project."""

    def __init__(self, cfg: ViTConfig, *, embed_dim: int):
        super().__init__()
        self.image_size = _pair(cfg.image_size)
        self.patch_size = _pair(cfg.patch_size)
        self.grid_size = (self.image_size[0] // self.patch_size[0], self.image_size[1] // self.patch_size[1])
        self.output_dim = embed_dim
        self.pool_type = cfg.pool_type
        self.final_ln_after_pool = cfg.final_ln_after_pool
        width, scale = cfg.width, cfg.width**-0.5

        self.conv1 = nn.Conv2d(3, width, kernel_size=self.patch_size, stride=self.patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(self.grid_size[0] * self.grid_size[1] + 1, width))
        self.patch_dropout = PatchDropout(cfg.patch_dropout) if cfg.patch_dropout > 0 else nn.Identity()
        self.ln_pre = nn.Identity() if cfg.no_ln_pre else LayerNorm(width, eps=cfg.norm_eps)
        self.transformer = Transformer(
            width,
            cfg.layers,
            width // cfg.head_width,
            mlp_ratio=cfg.mlp_ratio,
            act=cfg.act,
            ls_init_value=cfg.ls_init_value,
            norm_eps=cfg.norm_eps,
        )
        pool_dim = width
        self.attn_pool = None
        if cfg.attentional_pool:
            self.attn_pool = AttentionalPooler(
                embed_dim, width, heads=cfg.attn_pooler_heads, queries=cfg.attn_pooler_queries, norm_eps=cfg.norm_eps
            )
            pool_dim = embed_dim
        self.ln_post = LayerNorm(pool_dim, eps=cfg.norm_eps)
        self.proj = nn.Parameter(scale * torch.randn(pool_dim, embed_dim))

    def lock_groups(self):
        stem = params_of(self.conv1, self.class_embedding, self.positional_embedding, self.ln_pre)
        blocks = [params_of(block) for block in self.transformer.resblocks]
        return stem, blocks, params_of(self.attn_pool, self.ln_post, self.proj)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.transformer.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        return {"positional_embedding", "class_embedding"}

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, tokens, width) -> (batch, width): class token or mean of patch tokens."""
        return x[:, 0] if self.pool_type == "tok" else x[:, 1:].mean(dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.conv1(images)  # (batch, width, grid_h, grid_w)
        x = x.flatten(2).transpose(1, 2)  # (batch, patches, width)
        cls = self.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)  # (batch, 1 + patches, width)
        x = self.ln_pre(self.patch_dropout(x))
        x = self.transformer(x)
        if self.attn_pool is not None:
            pooled = self._pool(self.ln_post(self.attn_pool(x)))  # (batch, embed_dim)
        elif self.final_ln_after_pool:
            pooled = self.ln_post(self._pool(x))
        else:
            pooled = self._pool(self.ln_post(x))
        return pooled @ self.proj.to(pooled.dtype)  # (batch, embed_dim)
