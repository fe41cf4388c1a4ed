"""Building blocks shared by the towers: norms, activations, SDPA attention, residual blocks, pooling.

Parameter names follow open_clip's (``attn.in_proj_weight``, ``mlp.c_fc``, ``ls_1.gamma``...) so that its
checkpoints map onto ours without renaming individual weights.
"""

from __future__ import annotations

import functools
import weakref
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

Segments = tuple[tuple[int, int], ...]
"""Packed sequences: (rows, tokens) of each group of equally long rows, in the order their tokens are packed into
one (total tokens, width) tensor. Token-wise layers run once over all groups; attention runs within each group."""


class LayerNorm(nn.LayerNorm):
    """LayerNorm whose output has the input's dtype. With float32 weights, on float32 input or under autocast, it is
    the native kernel, which accumulates 16-bit input in float32 itself (under autocast about 3x faster than casting
    to float32 first, and equal to open_clip's LayerNorm). Otherwise (16-bit weights in the pure_* precisions, or
    mixed dtypes outside autocast) it computes in float32, as open_clip's LayerNormFp32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fp32_weights = self.weight is None or self.weight.dtype == torch.float32
        if fp32_weights and (x.dtype == torch.float32 or torch.is_autocast_enabled(x.device.type)):
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps).to(x.dtype)
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


_KEPT: weakref.WeakKeyDictionary[nn.Module, dict[str, tuple[tuple, torch.Tensor]]] = weakref.WeakKeyDictionary()
"""Inference's kept weight casts, per module; off the modules themselves, so `copy.deepcopy` and `torch.save` of a
model do not copy or save them."""


def _inference_dtype(weight: torch.Tensor | None) -> torch.dtype | None:
    """The dtype autocast would cast `weight` to, when inference (autocast on, autograd off, not compiling) may keep
    the cast; None otherwise (training, uncast dtypes, autocast off)."""
    if weight is None or weight.dtype != torch.float32 or torch.is_grad_enabled() or torch.compiler.is_compiling():
        return None
    device_type = weight.device.type
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None


def autocast_weight(module: nn.Module, name: str, weight: torch.Tensor | None) -> torch.Tensor | None:
    """`weight` as autocast would cast it, kept for `module` until the weight changes, in inference only (autocast on,
    autograd off): autocast casts every weight again on every call, which took most of a bf16 forward's casting
    time here. Training (autograd on) and uncast dtypes get `weight` itself. Costs one low-precision weight copy."""
    dtype = _inference_dtype(weight)
    if dtype is None:
        return weight
    key = (weight.data_ptr(), weight._version, dtype)  # in-place updates bump _version, `.to()`/`.data =` move data_ptr
    cache = _KEPT.setdefault(module, {})
    hit = cache.get(name)
    if hit is None or hit[0] != key:
        hit = cache[name] = (key, weight.detach().to(dtype))
    return hit[1]


@functools.cache
def _amx_onednn() -> bool:
    """A CPU with AMX tiles and a oneDNN with bf16 kernels: where calling oneDNN's linear directly was measured
    (the same results as F.linear, faster); other CPUs keep F.linear."""
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private torch names: a torch without them keeps F.linear
    onednn = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    return bool(onednn and amx and amx() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _onednn_bf16(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the CPU kernel of `_kept_linear` calls oneDNN's linear: bf16 on an AMX CPU (`_amx_onednn`). F.linear
    there is an addmm that copies the bias into every output row and then accumulates onto it; oneDNN's linear adds
    the bias inside its product, with bit-identical results (tests/library/test_autocast_weights.py)."""
    return weight.dtype == torch.bfloat16 and x.dim() >= 2 and torch.backends.mkldnn.enabled and _amx_onednn()


@torch.library.custom_op("open_mclip::kept_linear", mutates_args=())
def _kept_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """F.linear on inference's kept casts. An op of its own so that torch's dispatcher picks the kernel by device,
    as for its own ops: this one everywhere but the CPU."""
    return F.linear(x, weight, bias)


@_kept_linear.register_kernel("cpu")
def _kept_linear_cpu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    if _onednn_bf16(x, weight):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


@_kept_linear.register_fake
def _kept_linear_shape(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return x.new_empty(*x.shape[:-1], weight.shape[0])


def linear(module: nn.Module, x: torch.Tensor, weight_name: str = "weight", bias_name: str = "bias") -> torch.Tensor:
    """F.linear(x, module.<weight_name>, module.<bias_name>); in inference under autocast on the weights' kept casts
    (`autocast_weight`), through oneDNN's linear in bf16 on an AMX CPU (`_kept_linear`)."""
    weight, bias = getattr(module, weight_name), getattr(module, bias_name)
    dtype = _inference_dtype(weight)
    if dtype is None:
        return F.linear(x, weight, bias)
    kept = autocast_weight(module, weight_name, weight), autocast_weight(module, bias_name, bias)
    return _kept_linear(x.to(dtype), *kept)  # x cast as autocast casts it


def kept_weights(model: nn.Module) -> int:
    """How many weight casts inference keeps for `model`'s modules (`autocast_weight`, `linear`)."""
    return sum(len(_KEPT.get(module, {})) for module in model.modules())


def drop_autocast_weights(model: nn.Module) -> int:
    """Free the casts inference keeps for `model`'s modules (made again on the next inference call); returns how
    many were dropped."""
    return sum(len(_KEPT.pop(module, {})) for module in model.modules())


class Linear(nn.Linear):
    """nn.Linear (same parameters, same results) whose inference under autocast casts its weights once
    (`linear`) instead of on every call."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(self, x)


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the activation OpenAI's CLIP weights were trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def make_activation(name: str) -> nn.Module:
    """`gelu` (exact erf GELU) or `quick_gelu`."""
    if name == "gelu":
        return nn.GELU()
    if name == "quick_gelu":
        return QuickGELU()
    raise ValueError(f"unknown activation {name!r}; use 'gelu' or 'quick_gelu'")


class LayerScale(nn.Module):
    """Per-channel learned residual scale (CaiT)."""

    def __init__(self, dim: int, init_value: float):
        super().__init__()
        self.gamma = nn.Parameter(init_value * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Attention(nn.Module):
    """Multi-head self-attention through `F.scaled_dot_product_attention` (flash/memory-efficient kernels)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"attention width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def _in_proj(self, x: torch.Tensor) -> torch.Tensor:
        return linear(self, x, "in_proj_weight", "in_proj_bias")

    def forward(
        self,
        x: torch.Tensor,
        *,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        segments: Segments | None = None,
    ) -> torch.Tensor:
        """(batch, tokens, width) -> (batch, tokens, width); with `segments`, (packed tokens, width) likewise."""
        if segments is not None:
            return self.out_proj(self._attend_packed(x, segments, is_causal=is_causal))
        batch, tokens, width = x.shape
        qkv = self._in_proj(x)  # (batch, tokens, 3 * width)
        if attn_mask is not None and attn_mask.dtype != torch.bool:
            attn_mask = attn_mask.to(qkv.dtype)
        out = self._attend(qkv, batch, tokens, attn_mask=attn_mask, is_causal=is_causal)
        return self.out_proj(out.reshape(batch, tokens, width))

    def _attend(
        self, qkv: torch.Tensor, batch: int, tokens: int, *, attn_mask: torch.Tensor | None, is_causal: bool
    ) -> torch.Tensor:
        """(batch * tokens, 3 * width) projections of one group -> (batch * tokens, width) attention outputs."""
        width = qkv.shape[-1] // 3
        qkv = qkv.view(batch, tokens, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (batch, heads, tokens, head_width)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
        return out.transpose(1, 2).reshape(batch * tokens, width)

    def _attend_packed(self, x: torch.Tensor, segments: Segments, *, is_causal: bool) -> torch.Tensor:
        """(packed tokens, width) -> attention outputs before out_proj: one projection for all groups (so autocast
        casts each weight once), then attention within each group's rows."""
        qkv = self._in_proj(x)  # (packed tokens, 3 * width)
        outputs, start = [], 0
        for rows, tokens in segments:
            part = qkv[start : start + rows * tokens]
            outputs.append(self._attend(part, rows, tokens, attn_mask=None, is_causal=is_causal))
            start += rows * tokens
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)


class ResidualAttentionBlock(nn.Module):
    """Pre-norm Transformer block: x + attn(ln(x)), then x + mlp(ln(x)), with optional LayerScale."""

    def __init__(
        self, width: int, heads: int, *, mlp_ratio: float, act: str, ls_init_value: float | None, norm_eps: float
    ):
        super().__init__()
        self.ln_1 = LayerNorm(width, eps=norm_eps)
        self.attn = Attention(width, heads)
        self.ls_1 = LayerScale(width, ls_init_value) if ls_init_value is not None else nn.Identity()
        self.ln_2 = LayerNorm(width, eps=norm_eps)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", Linear(width, hidden)),
                    ("gelu", make_activation(act)),
                    ("c_proj", Linear(hidden, width)),
                ]
            )
        )
        self.ls_2 = LayerScale(width, ls_init_value) if ls_init_value is not None else nn.Identity()

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        segments: Segments | None = None,
    ) -> torch.Tensor:
        """(batch, tokens, width), or packed (tokens, width) with `segments` (see Segments)."""
        x = x + self.ls_1(self.attn(self.ln_1(x), attn_mask=attn_mask, is_causal=is_causal, segments=segments))
        return x + self.ls_2(self.mlp(self.ln_2(x)))


class Transformer(nn.Module):
    """A stack of residual attention blocks, batch-first, with optional gradient checkpointing per block."""

    def __init__(
        self,
        width: int,
        layers: int,
        heads: int,
        *,
        mlp_ratio: float = 4.0,
        act: str = "gelu",
        ls_init_value: float | None = None,
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        self.width = width
        self.grad_checkpointing = False
        self.resblocks = nn.ModuleList(
            ResidualAttentionBlock(
                width, heads, mlp_ratio=mlp_ratio, act=act, ls_init_value=ls_init_value, norm_eps=norm_eps
            )
            for _ in range(layers)
        )

    def forward(
        self,
        x: torch.Tensor,
        *,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        segments: Segments | None = None,
    ) -> torch.Tensor:
        """x: (batch, tokens, width), or with `segments` groups of rows packed as (tokens, width) (Segments)."""
        for block in self.resblocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, attn_mask, is_causal, segments, use_reentrant=False)
            else:
                x = block(x, attn_mask, is_causal, segments)
        return x

    def init_weights(self) -> None:
        """CLIP's init: attention/MLP weights scaled by width and depth (as OpenAI and open_clip do)."""
        layers = max(len(self.resblocks), 1)
        proj_std = (self.width**-0.5) * ((2 * layers) ** -0.5)
        for block in self.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=self.width**-0.5)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=(2 * self.width) ** -0.5)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)


class PatchDropout(nn.Module):
    """Keep a random subset of patch tokens while training (FLIP, arXiv:2212.00794); the class token is kept."""

    def __init__(self, prob: float):
        super().__init__()
        if not 0.0 <= prob < 1.0:
            raise ValueError(f"patch dropout probability {prob} must be in [0, 1)")
        self.prob = prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.prob == 0.0:
            return x
        cls_token, patches = x[:, :1], x[:, 1:]  # (batch, 1, width), (batch, patches, width)
        batch, num = patches.shape[:2]
        keep = max(1, int(num * (1.0 - self.prob)))
        idx = torch.randn(batch, num, device=x.device).topk(keep, dim=-1).indices  # (batch, keep)
        patches = patches.gather(1, idx.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
        return torch.cat([cls_token, patches], dim=1)


class AttentionalPooler(nn.Module):
    """Cross-attention from learned queries onto the token sequence (CoCa-style pooling)."""

    def __init__(self, dim: int, context_dim: int, *, heads: int, queries: int, norm_eps: float = 1e-5):
        super().__init__()
        self.query = nn.Parameter(torch.randn(queries, dim))
        # nn.MultiheadAttention keeps open_clip's parameter names (in_proj_weight or q/k/v_proj_weight)
        self.attn = nn.MultiheadAttention(dim, heads, kdim=context_dim, vdim=context_dim, batch_first=True)
        self.ln_q = LayerNorm(dim, eps=norm_eps)
        self.ln_k = LayerNorm(context_dim, eps=norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln_k(x)  # (batch, tokens, context_dim)
        q = self.ln_q(self.query).unsqueeze(0).expand(x.shape[0], -1, -1)  # (batch, queries, dim)
        return self.attn(q, x, x, need_weights=False)[0]
