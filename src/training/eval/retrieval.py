"""Validation: the contrastive loss and image<->text retrieval recall on --val-data (zero-shot is in zero_shot.py).

Retrieval ranks are computed in chunks of queries against all candidates, so memory grows linearly with the
validation set (no N x N matrix). Captions tagged with a language also get recall per language.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..placement import Placement
from ..progress import Progress

RECALL_AT = (1, 5, 10)


def retrieval_ranks(queries: torch.Tensor, candidates: torch.Tensor, *, chunk: int = 1024) -> torch.Tensor:
    """Rank (0 = first) of candidate i for query i, for normalized (N, dim) features.

    A tie counts in the query's favour: the rank is the number of candidates strictly more similar than the
    true one. Queries go ``chunk`` at a time, so memory is (chunk, N), never (N, N).
    """
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk={chunk!r} is invalid; use an int >= 1")
    if queries.shape != candidates.shape:
        raise ValueError(f"queries {tuple(queries.shape)} and candidates {tuple(candidates.shape)} must be (N, dim)")
    ranks = []
    for start in range(0, len(queries), chunk):
        q = queries[start : start + chunk]  # (chunk, dim)
        sims = q @ candidates.T  # (chunk, N)
        true = sims[torch.arange(len(q)), torch.arange(start, start + len(q))]  # (chunk,)
        ranks.append((sims > true[:, None]).sum(dim=1))
    return torch.cat(ranks)


def recall_metrics(image_features: torch.Tensor, text_features: torch.Tensor, *, chunk: int = 1024) -> dict[str, float]:
    """``image_to_text_R@k`` and ``text_to_image_R@k`` for k in 1, 5, 10: pair i is image i with caption i."""
    out = {}
    directions = {"image_to_text": (image_features, text_features), "text_to_image": (text_features, image_features)}
    for name, (q, c) in directions.items():
        ranks = retrieval_ranks(q, c, chunk=chunk)
        for k in RECALL_AT:
            out[f"{name}_R@{k}"] = (ranks < k).float().mean().item()
    return out


def language_recall(
    image_features: torch.Tensor, text_features: torch.Tensor, langs: Sequence[str], *, chunk: int = 1024
) -> dict[str, float]:
    """Recall per language tag: ``{lang}_image_to_text_R@k``, ``{lang}_text_to_image_R@k``, ``{lang}_num_samples``.

    For language L both the queries and the candidate pool are the pairs tagged L only, so a German caption
    is ranked among the images of the German pairs, as on a monolingual benchmark of that size (pools of
    different sizes are not equally hard: compare a language with itself over time). Untagged pairs ("")
    count only in the overall metrics.
    """
    if len(langs) != len(image_features):
        raise ValueError(f"{len(langs)} language tags for {len(image_features)} pairs; give one tag per pair")
    rows: dict[str, list[int]] = {}
    for i, lang in enumerate(langs):
        if lang:
            rows.setdefault(lang, []).append(i)
    out: dict[str, float] = {}
    for lang, index in sorted(rows.items()):
        pool = torch.tensor(index)  # (pairs of this language,)
        metrics = recall_metrics(image_features[pool], text_features[pool], chunk=chunk)
        out.update({f"{lang}_{key}": value for key, value in metrics.items()})
        out[f"{lang}_num_samples"] = len(index)
    return out


def retrieval_table(metrics: dict) -> str:
    """A plain-text table of recall in percent: the whole set ("all"), then one row per language tag."""
    langs = [key[: -len("_num_samples")] for key in metrics if key.endswith("_num_samples")]
    width = max([8, *(len(lang) for lang in langs)])
    columns = {
        f"{short} R@{k}": f"{name}_R@{k}"
        for short, name in (("i->t", "image_to_text"), ("t->i", "text_to_image"))
        for k in RECALL_AT
    }
    header = f"{'language':<{width}} | pairs | " + " | ".join(columns)
    rows = [header, "-" * len(header)]
    for lang, prefix in [("all", ""), *((lang, f"{lang}_") for lang in langs)]:
        recall = " | ".join(f"{100 * metrics[prefix + key]:{len(title)}.1f}" for title, key in columns.items())
        rows.append(f"{lang:<{width}} | {metrics[f'{prefix}num_samples']:5d} | {recall}")
    return "\n".join(rows)


@torch.no_grad()
def validate(model, dataloader, loss_fn, *, placement: Placement, total_batches: int | None = None) -> dict[str, float]:
    """Mean contrastive loss over validation batches and retrieval recall over the whole set, plus recall per
    language (see ``language_recall``) when the loader's batches carry language tags, ``(images, texts, langs)``.
    Progress is logged against `total_batches` (None or 0: a stream of unknown length).
    """
    model.eval()
    images_out, texts_out, langs, loss_sum, batches = [], [], [], 0.0, 0
    progress = Progress("validation", total=total_batches or None)
    for images, texts, *tags in dataloader:
        langs += tags[0] if tags else [""] * len(images)
        images, texts = placement.batch(images, texts)
        with placement.autocast():
            image_features, text_features, scale, *bias = model(images, texts)
            loss = loss_fn(image_features, text_features, scale, *bias)
        loss_sum += loss.item()
        batches += 1
        progress.update(batches)
        images_out.append(image_features.float().cpu())
        texts_out.append(text_features.float().cpu())
    if not batches:
        return {}
    metrics = {"val_loss": loss_sum / batches, "num_samples": sum(len(x) for x in images_out)}
    image_features, text_features = torch.cat(images_out), torch.cat(texts_out)  # (N, dim) each, float32 on CPU
    metrics.update(recall_metrics(image_features, text_features))
    metrics.update(language_recall(image_features, text_features, langs))
    return metrics
