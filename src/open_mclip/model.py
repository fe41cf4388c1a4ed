"""The two-tower CLIP model: one class for every image/text tower combination."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .towers import Tower, build_tower


class CLIP(nn.Module):
    """Image tower `visual`, text tower `text`, learnable `logit_scale` and optional `logit_bias` (SigLIP).

    `forward` returns what open_clip's does: `(image_features, text_features, logit_scale.exp())`, plus
    `logit_bias` when the model has one, or a dict of the same when `output_dict=True`.
    """

    def __init__(self, cfg: ModelConfig, *, output_dict: bool = False):
        super().__init__()
        self.cfg = cfg
        self.output_dict = output_dict
        self.visual: Tower = build_tower(cfg.vision, embed_dim=cfg.embed_dim)
        self.text: Tower = build_tower(cfg.text, embed_dim=cfg.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.init_logit_scale)))
        self.logit_bias = None
        if cfg.init_logit_bias is not None:
            self.logit_bias = nn.Parameter(torch.tensor(float(cfg.init_logit_bias)))
        self.preprocess_cfg = None  # a transform.PreprocessConfig, attached by the factory

    @property
    def context_length(self) -> int | None:
        return getattr(self.text, "context_length", None)

    @property
    def vocab_size(self) -> int | None:
        return getattr(self.text, "vocab_size", None)

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = self.visual(images)  # (batch, embed_dim)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = self.text(text)  # (batch, embed_dim)
        return F.normalize(features, dim=-1) if normalize else features

    def get_logits(self, images: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits_per_image, logits_per_text), each scaled (and biased) similarity matrices."""
        image_features = self.encode_image(images, normalize=True)
        text_features = self.encode_text(text, normalize=True)
        logits = self.logit_scale.exp() * image_features @ text_features.T  # (images, texts)
        if self.logit_bias is not None:
            logits = logits + self.logit_bias
        return logits, logits.T

    def forward(self, image: torch.Tensor | None = None, text: torch.Tensor | None = None):
        image_features = self.encode_image(image, normalize=True) if image is not None else None
        text_features = self.encode_text(text, normalize=True) if text is not None else None
        if self.output_dict:
            out = {
                "image_features": image_features,
                "text_features": text_features,
                "logit_scale": self.logit_scale.exp(),
            }
            if self.logit_bias is not None:
                out["logit_bias"] = self.logit_bias
            return out
        if self.logit_bias is not None:
            return image_features, text_features, self.logit_scale.exp(), self.logit_bias
        return image_features, text_features, self.logit_scale.exp()

    def lock_image_tower(self, unlocked_layers: int = 0, *, freeze_norm_stats: bool = False) -> None:
        """LiT: freeze the image tower but its top `unlocked_layers` blocks (see `Tower.lock`)."""
        self.visual.lock(unlocked_layers, freeze_norm_stats=freeze_norm_stats)

    def lock_text_tower(self, unlocked_layers: int = 0, *, freeze_norm_stats: bool = False) -> None:
        """Freeze the text tower but its top `unlocked_layers` blocks (see `Tower.lock`)."""
        self.text.lock(unlocked_layers, freeze_norm_stats=freeze_norm_stats)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.visual.set_grad_checkpointing(enable)
        self.text.set_grad_checkpointing(enable)

    def no_weight_decay(self) -> set[str]:
        """Full parameter names to exclude from weight decay, besides 1-d parameters (gains, biases)."""
        names = {"logit_scale", "logit_bias"}
        names |= {f"visual.{n}" for n in self.visual.no_weight_decay()}
        names |= {f"text.{n}" for n in self.text.no_weight_decay()}
        return names
