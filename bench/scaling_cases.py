"""The work of the scaling curves (bench/scaling.py), built for either side as bench/cases.py builds its cases:
zero-shot classification (classifier from templates, then scoring) and retrieval recall over embedding pairs.

The contrastive loss on one process is `bench.cases.contrastive_loss`; across processes it is bench/scaling_dist.py.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from bench.cases import _configs, build_models
from bench.harness import OURS, REFERENCE

# mclip-tiny's shape as an open_clip config dict, so that both libraries build it with the same weights
TINY = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def _unit_rows(count: int, dim: int, *, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(count, dim, generator=generator), dim=-1)


def _reference_scores(classifier: torch.Tensor, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """open_clip_train's zero-shot scoring (`zero_shot.run`): logits 100 x features @ classifier, top-5 predictions
    compared with the labels. Its `accuracy` helper fails on numpy 2 (a float of a 1-element array), so the same
    counting is done here."""
    logits = 100.0 * features @ classifier  # (images, classes)
    correct = logits.topk(5, dim=1).indices.t() == labels[None, :]  # (5, images)
    return torch.stack([correct[:1].sum(), correct.sum()])


def _our_scores(classifier: torch.Tensor, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Our trainer's zero-shot scoring (training.eval.zero_shot): top-1 and top-5 hits."""
    from training.eval.zero_shot import _hits

    return _hits(features, classifier, labels)[:2]


def zero_shot(
    *,
    sides: tuple[str, ...],
    classes: int = 10,
    templates: int = 8,
    images: int = 10_000,
    model: str | None = None,
    config: dict | None = None,
    device: str = "cpu",
) -> dict[str, Callable[[], torch.Tensor]]:
    """Build a zero-shot classifier for `classes` ImageNet classes from `templates` English prompt templates (each
    side with its own tokenizer and model, same weights), then score `images` precomputed image embeddings with it.
    The image tower's work does not grow with the classes, so it is left out."""
    import open_clip

    from open_mclip import load_zero_shot_pack
    from open_mclip.tokenizer import ClipTokenizer
    from open_mclip.zero_shot import build_zero_shot_classifier

    pack = load_zero_shot_pack("imagenet", "en")
    if not 1 <= classes <= len(pack.classnames):
        raise ValueError(f"classes={classes} is outside 1..{len(pack.classnames)} (the ImageNet pack's classes)")
    names, prompts = list(pack.classnames[:classes]), list(pack.templates[:templates])
    config = config or (None if model else TINY)
    models = build_models(sides, model=model, config=config, device=device)
    dim = _configs(model, config)["embed_dim"]
    features = _unit_rows(images, dim, seed=4).to(device)
    labels = torch.randint(classes, (images,), generator=torch.Generator().manual_seed(5)).to(device)
    build = {REFERENCE: open_clip.build_zero_shot_classifier, OURS: build_zero_shot_classifier}
    tokenizers = {REFERENCE: open_clip.get_tokenizer("ViT-B-32"), OURS: ClipTokenizer()}
    score = {REFERENCE: _reference_scores, OURS: _our_scores}

    @torch.no_grad()
    def call(net: torch.nn.Module, side: str) -> torch.Tensor:
        classifier = build[side](net, tokenizers[side], names, prompts, device=device)  # (dim, classes)
        hits = score[side](classifier.float(), features, labels)
        return torch.cat([classifier[:8, :2].flatten().float().cpu(), hits.float().cpu()])

    return {side: functools.partial(call, models[side].eval(), side) for side in sides}


def _reference_recall(image: torch.Tensor, text: torch.Tensor) -> dict[str, float]:
    """open_clip_train's retrieval metrics: argsort of the full (N, N) logit matrix, both directions."""
    from open_clip_train.train import get_clip_metrics

    return get_clip_metrics(image, text, torch.tensor(100.0))


def _our_recall(image: torch.Tensor, text: torch.Tensor) -> dict[str, float]:
    """Our trainer's retrieval metrics: ranks in chunks of queries, never the (N, N) matrix."""
    from training.eval.retrieval import recall_metrics

    return recall_metrics(image, text)


RECALL_KEYS = [f"{direction}_R@{k}" for direction in ("image_to_text", "text_to_image") for k in (1, 5, 10)]


def retrieval(
    *, sides: tuple[str, ...], pairs: int = 1000, dim: int = 512, noise: float = 6.0, device: str = "cpu"
) -> dict[str, Callable[[], torch.Tensor]]:
    """Recall@1/5/10 image->text and text->image over `pairs` normalised embedding pairs (text = image plus
    `noise` times Gaussian noise, renormalised, so that recall is neither 0 nor 1)."""
    image = _unit_rows(pairs, dim, seed=6)
    text = torch.nn.functional.normalize(image + noise * _unit_rows(pairs, dim, seed=7), dim=-1)
    image, text = image.to(device), text.to(device)
    recall = {REFERENCE: _reference_recall, OURS: _our_recall}

    @torch.no_grad()
    def call(side: str) -> torch.Tensor:
        metrics = recall[side](image, text)
        return torch.tensor([float(metrics[key]) for key in RECALL_KEYS])

    return {side: functools.partial(call, side) for side in sides}
