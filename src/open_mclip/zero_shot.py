"""Zero-shot classifiers: one normalized text embedding per class, averaged over prompt templates (open_clip's
`build_zero_shot_classifier` and `build_zero_shot_classifier_legacy`, same numbers)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F


def _fill(template: str | Callable[[str], str], classname: str) -> str:
    """A prompt from a callable, a `{c}` template (clip_benchmark's style) or a `{}` format string."""
    if callable(template):
        return template(classname)
    return template.replace("{c}", classname) if "{c}" in template else template.format(classname)


def _check(classnames: Sequence[str], templates: Sequence) -> None:
    if not isinstance(classnames, Sequence) or isinstance(classnames, str) or not classnames:
        raise ValueError("zero-shot classification needs a non-empty sequence of class names")
    if not isinstance(templates, Sequence) or isinstance(templates, str) or not templates:
        raise ValueError("zero-shot classification needs a non-empty sequence of templates (strings or callables)")


def _progress(items: Iterable, *, total: int, enabled: bool, unit: str) -> Iterable:
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, total=total, unit=unit)


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@torch.no_grad()
def build_zero_shot_classifier(
    model: torch.nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    classnames: Sequence[str],
    templates: Sequence[str | Callable[[str], str]],
    num_classes_per_batch: int | None = 10,
    device: str | torch.device = "cpu",
    use_tqdm: bool = False,
) -> torch.Tensor:
    """(embed_dim, classes) weights: the normalized mean of each class's normalized prompt embeddings.

    The prompts of `num_classes_per_batch` classes are encoded together (all classes at once for None); the batch
    size changes nothing but memory. Templates are strings with `{}` or `{c}` where the class name goes, or
    callables. `use_tqdm` shows a progress bar over the batches.
    """
    _check(classnames, templates)
    per_batch = num_classes_per_batch or len(classnames)
    batches = _chunks(classnames, per_batch)
    total = (len(classnames) + per_batch - 1) // per_batch
    columns = []
    for names in _progress(batches, total=total, enabled=use_tqdm, unit="batch"):
        prompts = [_fill(t, c) for c in names for t in templates]  # class-major order
        embeddings = model.encode_text(tokenizer(prompts).to(device), normalize=True)  # (prompts, dim)
        embeddings = embeddings.reshape(len(names), len(templates), -1).mean(dim=1)  # (classes, dim)
        columns.append(F.normalize(embeddings, dim=-1).T)  # (dim, classes)
    return torch.cat(columns, dim=1)


@torch.no_grad()
def build_zero_shot_classifier_legacy(
    model: torch.nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    classnames: Sequence[str],
    templates: Sequence[str | Callable[[str], str]],
    device: str | torch.device = "cpu",
    use_tqdm: bool = False,
) -> torch.Tensor:
    """The same weights, one class per forward pass (open_clip's older function, kept for its callers)."""
    _check(classnames, templates)
    columns = []
    for name in _progress(classnames, total=len(classnames), enabled=use_tqdm, unit="class"):
        embeddings = model.encode_text(tokenizer([_fill(t, name) for t in templates]).to(device))
        columns.append(F.normalize(F.normalize(embeddings, dim=-1).mean(dim=0), dim=0))
    return torch.stack(columns, dim=1).to(device)
