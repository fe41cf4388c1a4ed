"""Causal text Transformer tower over token ids, pooled at the end-of-text token; padding-free text.

Padding-free text: under causal attention the feature pooled at position p depends on positions 0..p only, so the
positions after a row's pooled position can be dropped before the blocks. Each batch is split into groups of rows of
similar length (by default rows needing 1-16, 17-32, ... positions), and each group runs only up to its longest
row: rows never interact in a text tower, so the features are those of the full context (to float rounding,
`tests/library/test_padding_free.py`) for a fraction of the text compute. Captions are short (most under 20 CLIP
tokens), the context is 77, and one long caption no longer makes the whole batch pay for it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..config import TextTransformerConfig
from ..layers import LayerNorm, Transformer
from .base import Tower, params_of

Groups = list[tuple[torch.Tensor | None, int]]  # (rows of the batch, or None for all of them; positions kept)


class PaddingFree:
    """The padding-free switch of a text tower: run each row only up to the positions its features depend on.

    `group_width` splits a batch into groups of rows whose needed lengths fall in the same band of that many
    positions, each group cut to its longest row (None: one group, the whole batch cut to its longest row).
    `multiple` rounds each kept length up (to 8, 16, ...), which bounds the number of distinct shapes a device that
    compiles one graph per shape (HPU, CUDA graphs) sees. Under `torch.compile` nothing is trimmed: the lengths are
    data dependent and would break the graph.
    """

    padding_free: bool = True
    padding_multiple: int = 1
    padding_group_width: int | None = 16

    def set_padding_free(self, enabled: bool = True, *, multiple: int = 1, group_width: int | None = 16) -> None:
        for name, value in (("multiple", multiple), ("group_width", group_width)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name}={value!r} must be a positive int")
        if multiple is None:
            raise ValueError("multiple=None: use multiple=1 to keep exact lengths")
        self.padding_free = enabled
        self.padding_multiple = multiple
        self.padding_group_width = group_width

    def _kept(self, needed: int, seq_len: int) -> int:
        return min(seq_len, -(-max(needed, 1) // self.padding_multiple) * self.padding_multiple)

    def length_groups(self, needed: torch.Tensor, seq_len: int) -> Groups:
        """The groups to run: `needed` (batch,) is how many leading positions each row's features depend on."""
        if not self.padding_free or torch.compiler.is_compiling() or needed.shape[0] == 0:
            return [(None, seq_len)]
        lengths = needed.tolist()  # one host sync per batch
        if self.padding_group_width is None:
            return [(None, self._kept(max(lengths), seq_len))]
        bands: dict[int, list[int]] = {}
        for row, length in enumerate(lengths):
            bands.setdefault(-(-length // self.padding_group_width), []).append(row)
        if len(bands) == 1:
            return [(None, self._kept(max(lengths), seq_len))]
        return [
            (torch.tensor(rows, device=needed.device), self._kept(max(lengths[r] for r in rows), seq_len))
            for _, rows in sorted(bands.items())
        ]


def run_groups(groups: Groups, encode: Callable[..., torch.Tensor], *tensors: torch.Tensor) -> torch.Tensor:
    """`encode(*tensors cut to a group's rows and length)` per group, the results back in the batch's order."""
    if len(groups) == 1 and groups[0][0] is None:
        length = groups[0][1]
        return encode(*(t[:, :length] for t in tensors))
    outputs = [encode(*(t[rows, :length] for t in tensors)) for rows, length in groups]
    order = torch.cat([rows for rows, _ in groups])  # (batch,) the batch row of each output row
    return torch.cat(outputs)[torch.argsort(order)]  # (batch, ...)


class TextTransformer(Tower, PaddingFree):
    """Token + position embeddings, causal pre-norm blocks, final norm, EOT pooling, projection.

    Padding-free (the default, `set_padding_free`): a causal tower runs each row only up to its pooled position
    (for `first` pooling: position 0; for `last` pooling nothing is trimmed, the last position is the context's).
    A non-causal tower without a padding mask sees every position, so it always runs the full length.
    """

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

    def _pool_index(self, text: torch.Tensor) -> torch.Tensor:
        """(batch, tokens) ids -> (batch,) the position each row is pooled at, read from the full-length ids."""
        batch, seq_len = text.shape
        if self.pool_type == "first":
            return torch.zeros(batch, dtype=torch.long, device=text.device)
        if self.pool_type == "last":
            return torch.full((batch,), seq_len - 1, dtype=torch.long, device=text.device)
        if self.pool_type == "argmax":  # CLIP's EOT token has the highest id in its vocabulary
            return text.argmax(dim=-1)
        return (text == self.eos_id).int().argmax(dim=-1)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        if text.shape[1] > self.context_length:
            raise ValueError(
                f"text has {text.shape[1]} tokens but this text tower's context_length is {self.context_length}"
            )
        index = self._pool_index(text)  # (batch,)
        if not self.causal:
            return self._project(self._encode(text, index))
        return self._project(self._encode_packed(text, index, self.length_groups(index + 1, text.shape[1])))

    def _cast_dtype(self, default: torch.dtype) -> torch.dtype:
        """The blocks' weight dtype (16-bit in the pure_* precisions): embeddings are cast to it, as open_clip does."""
        return self.transformer.resblocks[0].mlp.c_fc.weight.dtype if len(self.transformer.resblocks) else default

    def _encode(self, text: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """(batch, tokens) ids and (batch,) pooled positions -> (batch, width) pooled, normed features."""
        seq_len = text.shape[1]
        x = self.token_embedding(text)  # (batch, tokens, width)
        dtype = self._cast_dtype(x.dtype)  # cast before adding positions (as open_clip), so 16-bit weights round alike
        x = x.to(dtype) + self.positional_embedding[:seq_len].to(dtype)
        x = self.transformer(x, is_causal=self.causal)
        return self.ln_final(x[torch.arange(x.shape[0], device=x.device), index])  # (batch, width)

    def _encode_packed(self, text: torch.Tensor, index: torch.Tensor, groups: Groups) -> torch.Tensor:
        """Each group's rows cut to its length and packed end to end as one (tokens, width) sequence: embeddings,
        norms, projections and MLPs run once over all groups, attention within each (layers.Segments)."""
        device, batch = text.device, text.shape[0]
        ids, positions, segments = [], [], []
        pooled_at = torch.empty(batch, dtype=torch.long, device=device)  # (batch,) each row's pooled packed token
        start = 0
        for rows, length in groups:
            group = text[:, :length] if rows is None else text[rows, :length]  # (group rows, length)
            offsets = start + torch.arange(group.shape[0], device=device) * length  # (group rows,)
            if rows is None:
                pooled_at = offsets + index
            else:
                pooled_at[rows] = offsets + index[rows]
            ids.append(group.reshape(-1))
            positions.append(torch.arange(length, device=device).repeat(group.shape[0]))
            segments.append((group.shape[0], length))
            start += group.numel()
        x = self.token_embedding(torch.cat(ids))  # (tokens, width): one lookup, one dense table gradient
        dtype = self._cast_dtype(x.dtype)
        x = x.to(dtype) + self.positional_embedding.to(dtype)[torch.cat(positions)]
        x = self.transformer(x, is_causal=True, segments=tuple(segments))
        return self.ln_final(x[pooled_at])  # (batch, width), in the batch's order

    def _project(self, pooled: torch.Tensor) -> torch.Tensor:
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(pooled)
        if self.text_projection is not None:
            return pooled @ self.text_projection.to(pooled.dtype)
        return pooled
