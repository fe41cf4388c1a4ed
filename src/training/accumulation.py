"""Contrastive gradient accumulation: the update of one batch of N x B from N micro-batches of B.

The contrastive loss couples every sample with every other, so micro-batch losses cannot simply be summed.
First every micro-batch's features are computed without gradients and cached; then each micro-batch is run
again with gradients and the loss is computed over all N x B features, its own fresh and the others cached.
The gradient of pass j is dL/df_j * df_j/dtheta; their sum is the full-batch gradient of the towers. The logit
scale and bias enter every pass with their gradient, as in open_clip_train, so they get N times theirs: AdamW's
update hardly depends on a gradient's scale, but --grad-clip-norm sees the larger norm (docs/training.md).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def model_features(model, images: torch.Tensor, texts: torch.Tensor) -> dict[str, torch.Tensor]:
    """The model's outputs by name (image_features, text_features, logit_scale and logit_bias if it has one),
    whether it returns a tuple or, with output_dict=True, a dict."""
    out = model(images, texts)
    keys = ("image_features", "text_features", "logit_scale", "logit_bias")
    return dict(out) if isinstance(out, dict) else dict(zip(keys, out))


def accumulated_backward(
    model: torch.nn.Module,
    micro_batches: list[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: Callable[..., torch.Tensor],
    *,
    autocast: Callable,
    backward: Callable[[torch.Tensor], None],
) -> torch.Tensor:
    """Back-propagate the loss of the concatenated micro-batches; returns that loss (detached)."""
    with torch.no_grad(), autocast():
        cached = [model_features(model, images, texts) for images, texts in micro_batches]
    loss_value = None
    for j, (images, texts) in enumerate(micro_batches):
        with autocast():
            fresh = model_features(model, images, texts)
            image_features = torch.cat(
                [fresh["image_features"] if i == j else c["image_features"] for i, c in enumerate(cached)]
            )  # (N * B, dim)
            text_features = torch.cat(
                [fresh["text_features"] if i == j else c["text_features"] for i, c in enumerate(cached)]
            )
            loss = loss_fn(image_features, text_features, fresh["logit_scale"], fresh.get("logit_bias"))
        backward(loss)
        loss_value = loss.detach()
    return loss_value
