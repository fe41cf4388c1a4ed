"""The interface every tower offers, so optimizers, locking and tests can treat towers alike."""

from __future__ import annotations

from torch import nn


class Tower(nn.Module):
    """Base class: subclasses set `output_dim` and implement `lock_groups` and `set_grad_checkpointing`.

    Locking is uniform across tower types (LiT, arXiv:2111.07991). `lock(unlocked_layers=k)`:
      - k == 0: every parameter of the tower is frozen;
      - k > 0: the head (final norm, pooling, projection) and the top k blocks stay trainable;
      - k >= number of blocks: the stem/embeddings too, i.e. nothing is frozen.
    A "block" is a transformer layer for ViT and text towers, a ResNet stage for ModifiedResNet, and a timm
    layer group (`group_matcher`) for timm trunks. `freeze_norm_stats=True` also keeps the running statistics
    of BatchNorm layers in frozen parts fixed (they stay in eval mode when the model trains).
    """

    output_dim: int
    channels_last_capable = False  # whether `set_channels_last` may be enabled

    def lock_groups(self) -> tuple[list[nn.Parameter], list[list[nn.Parameter]], list[nn.Parameter]]:
        """(stem parameters, per-block parameters bottom to top, head parameters)."""
        raise NotImplementedError

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute activations in the backward pass to save memory. A tower that cannot is refused when asked to
        enable it (disabling is always fine): every tower behaves alike, and `--grad-checkpointing` fails at start-up
        instead of doing nothing."""
        if enable:
            raise self.no_grad_checkpointing("it has no checkpointed blocks")

    def no_grad_checkpointing(self, reason: str) -> ValueError:
        return ValueError(f"gradient checkpointing is not available for this {type(self).__name__} tower: {reason}")

    def set_channels_last(self, enable: bool = True) -> None:
        """Lay out convolution weights and inputs channels-last (NHWC), for towers whose convolutions run faster
        so (`channels_last_capable`); the features are the same to float rounding. Other towers are refused when
        asked to enable it, as for gradient checkpointing."""
        if enable:
            raise ValueError(f"channels-last layout is not available for this {type(self).__name__} tower: it has no "
                             "convolution stages it was measured for (ModifiedResNet has)")  # fmt: skip

    def no_weight_decay(self) -> set[str]:
        """Names (relative to this tower) of parameters that must not be weight-decayed besides 1-d ones."""
        return set()

    def lock(self, unlocked_layers: int = 0, *, freeze_norm_stats: bool = False) -> None:
        if unlocked_layers < 0:
            raise ValueError(f"unlocked_layers must be >= 0, got {unlocked_layers}")
        stem, blocks, head = self.lock_groups()
        for p in self.parameters():
            p.requires_grad = False
        if unlocked_layers > 0:
            trainable = [*head, *(p for block in blocks[len(blocks) - unlocked_layers :] for p in block)]
            if unlocked_layers >= len(blocks):
                trainable += stem
            for p in trainable:
                p.requires_grad = True
        self.freeze_norm_stats(freeze_norm_stats)

    def freeze_norm_stats(self, enable: bool = True) -> None:
        """Keep the running statistics of BatchNorm layers whose weights are frozen fixed (eval mode while the
        model trains), or, with `enable=False`, let them update again."""
        self._frozen_norms = [m for m in self.modules() if _is_frozen_batch_norm(m)] if enable else []
        self.train(self.training)

    def train(self, mode: bool = True) -> Tower:
        super().train(mode)
        for module in getattr(self, "_frozen_norms", ()):
            module.eval()
        return self


def _is_frozen_batch_norm(module: nn.Module) -> bool:
    params = list(module.parameters(recurse=False))
    return isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in params)


def params_of(*items: nn.Module | nn.Parameter | None) -> list[nn.Parameter]:
    """Flatten modules and parameters into one parameter list (None is skipped)."""
    out: list[nn.Parameter] = []
    for item in items:
        if item is None:
            continue
        if isinstance(item, nn.Parameter):
            out.append(item)
        else:
            out.extend(item.parameters())
    return out
