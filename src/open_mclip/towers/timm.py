"""A timm image model as image tower (optional: needs `pip install open_mclip[timm]`)."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..config import TimmConfig
from ..extras import import_extra
from .base import Tower, params_of


class TimmTower(Tower):
    """timm trunk without its classifier, then optional attention pooling and a linear or MLP projection."""

    lp_casts_whole_model = True  # precision bf16/fp16 casts such a model whole, as open_clip does (precision.py)

    def __init__(self, cfg: TimmConfig, *, embed_dim: int):
        super().__init__()
        timm = import_extra("timm", extra="timm", needed_for="a model with a timm image tower")
        from timm.layers import AttentionPool2d, Mlp, RotAttentionPool2d

        self.output_dim = embed_dim
        size = cfg.image_size
        self.image_size = (size, size) if isinstance(size, int) else tuple(size)
        kwargs = {}
        if cfg.drop_path is not None:
            kwargs["drop_path_rate"] = cfg.drop_path
        if cfg.patch_dropout > 0:
            kwargs["patch_drop_rate"] = cfg.patch_dropout
        attn_pool = cfg.pool in ("abs_attn", "rot_attn")
        proj = cfg.proj
        head = OrderedDict()
        if proj in ("", "none") and not attn_pool:
            # "": the trunk's own classifier becomes the projection; "none": the trunk's pooled features pass through
            classes = 0 if proj == "none" else embed_dim
            self.trunk = timm.create_model(
                cfg.model_name, num_classes=classes, global_pool=cfg.pool, pretrained=cfg.pretrained, **kwargs
            )
        else:
            self.trunk = timm.create_model(cfg.model_name, pretrained=cfg.pretrained, **kwargs)
            features = self.trunk.num_features
            feat_size = self.trunk.default_cfg.get("pool_size", None)
            if attn_pool:
                self.trunk.reset_classifier(0, global_pool="")
            else:  # an empty pool keeps the trunk's own default pooling
                self.trunk.reset_classifier(0, **({"global_pool": cfg.pool} if cfg.pool else {}))
            if cfg.pool == "abs_attn":
                head["pool"] = AttentionPool2d(features, feat_size=feat_size, out_features=embed_dim)
                features = embed_dim
            elif cfg.pool == "rot_attn":
                head["pool"] = RotAttentionPool2d(features, out_features=embed_dim)
                features = embed_dim
            if proj == "linear":
                head["drop"] = nn.Dropout(cfg.drop)
                head["proj"] = nn.Linear(features, embed_dim, bias=cfg.proj_bias)
            elif proj == "mlp":
                head["mlp"] = Mlp(features, 2 * embed_dim, embed_dim, drop=(cfg.drop, 0), bias=(True, cfg.proj_bias))
        self.head = nn.Sequential(head)

    def lock_groups(self):
        from timm.models import group_parameters

        groups = group_parameters(self.trunk, self.trunk.group_matcher())  # {group id: [param names]}
        named = dict(self.trunk.named_parameters())
        ordered = [[named[n] for n in groups[g]] for g in sorted(groups)]
        return ordered[0], ordered[1:], params_of(self.head)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        try:
            self.trunk.set_grad_checkpointing(enable)
        except (AttributeError, AssertionError, NotImplementedError) as err:
            if enable:  # (open_clip warns and continues without)
                raise self.no_grad_checkpointing(f"timm's {type(self.trunk).__name__} has none ({err})") from err

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(images))  # (batch, embed_dim)
