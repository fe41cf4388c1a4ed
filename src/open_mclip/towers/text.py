"""Causal text Transformer tower over token ids, pooled at the end-of-text token."""

from __future__ import annotations

import torch
from torch import nn

from ..config import TextTransformerConfig
from ..layers import LayerNorm, Transformer
from .base import Tower, params_of


class TextTransformer(Tower):
    """Token + position embeddings, causal pre-norm blocks, final norm, EOT pooling, projection."""

    def __init__(self, cfg: TextTransformerConfig, *, embed_dim: int):
        super().__init__()
        self.context_length = cfg.context_length
        self.vocab_size = cfg.vocab_size
        self.pool_type = cfg.pool_type
        self.eos_id = cfg.eos_id
        self.causal = cfg.causal
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.width))
        self.transformer = Transformer(
            cfg.width,
            cfg.layers,
            cfg.heads,
            mlp_ratio=cfg.mlp_ratio,
            act=cfg.act,
            ls_init_value=cfg.ls_init_value,
            norm_eps=cfg.norm_eps,
        )
        self.ln_final = LayerNorm(cfg.width, eps=cfg.norm_eps)
        self.text_projection: nn.Parameter | nn.Linear | None = None
        if cfg.proj_type == "none":
            self.output_dim = cfg.width
        elif cfg.proj_bias:
            self.text_projection = nn.Linear(cfg.width, embed_dim)
            self.output_dim = embed_dim
        else:
            self.text_projection = nn.Parameter(torch.empty(cfg.width, embed_dim))
            self.output_dim = embed_dim
        self.init_weights()

    def init_weights(self) -> None:
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        self.transformer.init_weights()
        proj = self.text_projection
        if isinstance(proj, nn.Linear):
            nn.init.normal_(proj.weight, std=self.transformer.width**-0.5)
            nn.init.zeros_(proj.bias)
        elif proj is not None:
            nn.init.normal_(proj, std=self.transformer.width**-0.5)

    def lock_groups(self):
        stem = params_of(self.token_embedding, self.positional_embedding)
        blocks = [params_of(block) for block in self.transformer.resblocks]
        return stem, blocks, params_of(self.ln_final, self.text_projection)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.transformer.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        return {"positional_embedding"}

    def _pool(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """(batch, tokens, width) -> (batch, width) at the position the pool type names."""
        if self.pool_type == "first":
            return x[:, 0]
        if self.pool_type == "last":
            return x[:, -1]
        if self.pool_type == "argmax":  # CLIP's EOT token has the highest id in its vocabulary
            index = text.argmax(dim=-1)
        else:
            index = (text == self.eos_id).int().argmax(dim=-1)
        return x[torch.arange(x.shape[0], device=x.device), index]

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        seq_len = text.shape[1]
        if seq_len > self.context_length:
            raise ValueError(f"text has {seq_len} tokens but this text tower's context_length is {self.context_length}")
        dtype = self.transformer.resblocks[0].mlp.c_fc.weight.dtype if len(self.transformer.resblocks) else None
        x = self.token_embedding(text)  # (batch, tokens, width)
        dtype = dtype or x.dtype  # cast before adding positions, as open_clip does, so 16-bit weights round alike
        x = x.to(dtype) + self.positional_embedding[:seq_len].to(dtype)
        x = self.ln_final(self.transformer(x, is_causal=self.causal))
        pooled = self._pool(x, text)  # (batch, width)
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(pooled)
        if self.text_projection is not None:
            return pooled @ self.text_projection.to(pooled.dtype)
        return pooled
