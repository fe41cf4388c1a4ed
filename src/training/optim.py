"""AdamW as open_clip_train builds it: its defaults, its weight-decay groups (no decay on parameters under 2-d and on
names with "bn", "ln", "bias" or "logit_scale"), plus learning rates per tower (--lr-image, --lr-text), optional
layer-wise decay (--layer-decay-image, --layer-decay-text) and, opt-in, no decay on embeddings
(--no-decay-embeddings). Large token tables take a row-sparse step with the same numbers (sparse_rows.py)."""

from __future__ import annotations

import logging

import torch
from torch import nn

from open_mclip.config import ModelConfig, TimmConfig, ViTConfig

from .config import OptimConfig
from .devices import Device
from .sparse_rows import RowSparseAdamW, row_sparse_parameters

log = logging.getLogger(__name__)

# open_mclip's own architectures (model_configs/mclip-*.json): their names do not say the tower type
OWN_ARCHITECTURE_PREFIX = "mclip-"
# open_clip_train's main.py: substrings of a parameter name that exclude it from weight decay
NO_DECAY_SUBSTRINGS = ("bn", "ln", "bias", "logit_scale")


def has_vit_image_tower(cfg: ModelConfig) -> bool:
    """Whether the architecture's image tower is a vision transformer, by its declared type: ours ("vit"), or a
    timm trunk of timm's ViT family (`vit_*`, as the SigLIP trunks are)."""
    vision = cfg.vision
    return isinstance(vision, ViTConfig) or (isinstance(vision, TimmConfig) and vision.model_name.startswith("vit_"))


def uses_vit_defaults(model_name: str, cfg: ModelConfig) -> bool:
    """open_clip's rule, "vit" anywhere in the model name (so open_clip's nllb-clip-*, PE-Core-* and MobileCLIP-B
    get the ResNet numbers there and here); open_mclip's own mclip-* architectures go by their declared tower."""
    if model_name.startswith(OWN_ARCHITECTURE_PREFIX):
        return has_vit_image_tower(cfg)
    return "vit" in model_name.lower()


def adam_defaults(*, vit: bool) -> dict[str, float]:
    """open_clip's AdamW defaults, the CLIP paper's: beta2 0.98 and eps 1e-6 for ViT image towers, else 0.999
    and 1e-8 (see `uses_vit_defaults` for which architectures count as ViT)."""
    if vit:
        return {"lr": 5.0e-4, "beta1": 0.9, "beta2": 0.98, "eps": 1.0e-6}
    return {"lr": 5.0e-4, "beta1": 0.9, "beta2": 0.999, "eps": 1.0e-8}


def embedding_names(model: nn.Module) -> set[str]:
    """Embedding tables (every nn.Embedding) and what the towers declare: positional and class embeddings."""
    names = {f"{name}.weight" for name, module in model.named_modules() if isinstance(module, nn.Embedding)}
    declared = getattr(model, "no_weight_decay", None)
    names |= set(declared()) if declared else set()
    return names & {name for name, _ in model.named_parameters()}


def no_decay_names(model: nn.Module, *, embeddings: bool = False) -> set[str]:
    """The parameters open_clip_train does not decay: under 2-d (gains, biases, scales) or named with "bn", "ln",
    "bias" or "logit_scale". Our names are open_clip's (CustomTextCLIP layout; its CLIP layout only drops "text."),
    so the name test picks the same parameters. `embeddings` adds `embedding_names` (--no-decay-embeddings)."""
    names = {n for n, p in model.named_parameters() if p.ndim < 2 or any(s in n for s in NO_DECAY_SUBSTRINGS)}
    return names | (embedding_names(model) if embeddings else set())


def layer_scales(tower: nn.Module, decay: float) -> dict[int, float]:
    """id(parameter) -> learning-rate multiplier for layer-wise decay (BEiT, arXiv:2106.08254).

    With n blocks (see Tower.lock_groups): the head keeps the full rate, block i from the top (i = 1 for the top
    block) gets decay**i, and the stem decay**(n + 1). Parameters a tower does not list count as head.
    """
    stem, blocks, head = tower.lock_groups()
    scales = {id(p): 1.0 for p in head}
    for depth, block in enumerate(reversed(blocks), start=1):
        scales.update({id(p): decay**depth for p in block})
    scales.update({id(p): decay ** (len(blocks) + 1) for p in stem})
    return scales


def tower_lrs(model: nn.Module, cfg: OptimConfig, *, lr: float) -> dict[int, float]:
    """id(parameter) -> peak learning rate: --lr-image/--lr-text per tower (default --lr), times the layer-wise
    decay of that tower; the logit scale and bias keep --lr."""
    out = {}
    for tower, tower_lr, decay in (
        (model.visual, cfg.lr_image, cfg.layer_decay_image),
        (model.text, cfg.lr_text, cfg.layer_decay_text),
    ):
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"layer-wise lr decay must be in (0, 1], got {decay}: use e.g. --layer-decay-image 0.75")
        base = tower_lr if tower_lr is not None else lr
        scales = layer_scales(tower, decay) if decay != 1.0 else {}
        out.update({id(p): base * scales.get(id(p), 1.0) for p in tower.parameters()})
    return out


def param_groups(
    model: nn.Module,
    *,
    weight_decay: float,
    lr: float = 0.0,
    lrs: dict[int, float] | None = None,
    no_decay_embeddings: bool = False,
) -> list[dict]:
    """One group per (peak lr, weight decay), decay as `no_decay_names` says; frozen parameters are left out.

    `lrs` maps id(parameter) to its peak lr (default `lr` for all, giving the two groups open_clip has). Each group
    carries `base_lr`, the peak the scheduler scales.
    """
    skip, lrs = no_decay_names(model, embeddings=no_decay_embeddings), lrs or {}
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            key = (0.0 if name in skip else weight_decay, lrs.get(id(param), lr))
            groups.setdefault(key, []).append(param)
    keys = sorted(groups, key=lambda k: (k[0] != 0.0, -k[1]))  # undecayed first, then by falling lr
    return [{"params": groups[k], "weight_decay": k[0], "lr": k[1], "base_lr": k[1]} for k in keys]


def create_optimizer(
    model: nn.Module,
    cfg: OptimConfig,
    *,
    device: Device,
    model_name: str,
    tokens_per_step: int | None = None,
) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters of `model` (the bare CLIP module built from --model `model_name`), in
    `param_groups`' groups; unset --lr, --beta1, --beta2 and --eps take `adam_defaults`. Given the text tokens of
    one optimizer step (all ranks), text token tables far larger than that take `RowSparseAdamW`'s exact
    row-sparse step, unless --dense-token-tables."""
    if cfg.opt != "adamw":
        raise ValueError(f"--opt {cfg.opt} is not supported; use adamw")
    given = {"lr": cfg.lr, "beta1": cfg.beta1, "beta2": cfg.beta2, "eps": cfg.eps}
    defaults = adam_defaults(vit=uses_vit_defaults(model_name, model.cfg))
    hp = {**defaults, **{k: v for k, v in given.items() if v is not None}}
    lrs = tower_lrs(model, cfg, lr=hp["lr"])
    groups = param_groups(model, weight_decay=cfg.wd, lr=hp["lr"], lrs=lrs, no_decay_embeddings=cfg.no_decay_embeddings)
    optimizer = device.optimizer(groups, lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"])
    if tokens_per_step is None or cfg.dense_token_tables:
        return optimizer
    return with_row_sparse_tables(optimizer, row_sparse_parameters(model, tokens_per_step=tokens_per_step))


def with_row_sparse_tables(optimizer: torch.optim.Optimizer, tables: list[nn.Parameter]) -> torch.optim.Optimizer:
    """The device's optimizer, as a `RowSparseAdamW` with its settings (fused where it was fused) when it is
    torch's AdamW and there are `tables`; another optimizer (Habana's fused AdamW) stays as it is."""
    if not tables:
        return optimizer
    if type(optimizer) is not torch.optim.AdamW:
        log.info("%s has no row-sparse variant: token tables take its dense step", type(optimizer).__name__)
        return optimizer
    keys = ("lr", "betas", "eps", "weight_decay", "foreach", "fused")
    rows = sum(p.shape[0] for p in tables)
    log.info("row-sparse AdamW for %d token table(s), %d rows: only rows with gradients are updated", len(tables), rows)
    return RowSparseAdamW(optimizer.param_groups, row_params=tables, **{k: optimizer.defaults[k] for k in keys})
