"""Zero-shot classifiers: one normalized text embedding per class, averaged over prompt templates."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F


def _fill(template: str | Callable[[str], str], classname: str) -> str:
    """A prompt from a callable, a `{c}` template (clip_benchmark's style) or a `{}` format string."""
    if callable(template):
        return template(classname)
    return template.replace("{c}", classname) if "{c}" in template else template.format(classname)


@torch.no_grad()
def build_zero_shot_classifier(
    model: torch.nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    classnames: Sequence[str],
    templates: Sequence[str | Callable[[str], str]],
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """(embed_dim, classes) weights: the normalized mean of each class's normalized prompt embeddings.

    Prompts for all classes and templates are encoded in batches of `batch_size`, whatever the class count.
    Templates are strings with `{}` or `{c}` where the class name goes, or callables.
    """
    if not classnames or not templates:
        raise ValueError("zero-shot classification needs at least one class name and one template")
    prompts = [_fill(t, c) for c in classnames for t in templates]  # class-major order
    chunks = []
    for start in range(0, len(prompts), batch_size):
        tokens = tokenizer(prompts[start : start + batch_size]).to(device)
        chunks.append(model.encode_text(tokens, normalize=True).float())
    embeddings = torch.cat(chunks).view(len(classnames), len(templates), -1)  # (classes, templates, dim)
    return F.normalize(embeddings.mean(dim=1), dim=-1).T  # (dim, classes)
