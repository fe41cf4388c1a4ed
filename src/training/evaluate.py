"""Evaluation in the loop: validation loss, image<->text retrieval recall, zero-shot classification per language.

Retrieval ranks are computed in chunks of queries against all candidates, so memory grows linearly with the
validation set (no N x N matrix). Zero-shot evaluation shards the images over ranks and all-reduces the counts.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from open_mclip.transform import load_image
from open_mclip.zero_shot import build_zero_shot_classifier

from .distributed import World, all_reduce_sum

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def retrieval_ranks(queries: torch.Tensor, candidates: torch.Tensor, *, chunk: int = 1024) -> torch.Tensor:
    """Rank (0 = first) of candidate i for query i, for normalized (N, dim) features."""
    ranks = []
    for start in range(0, len(queries), chunk):
        q = queries[start : start + chunk]  # (chunk, dim)
        sims = q @ candidates.T  # (chunk, N)
        true = sims[torch.arange(len(q)), torch.arange(start, start + len(q))]  # (chunk,)
        ranks.append((sims > true[:, None]).sum(dim=1))
    return torch.cat(ranks)


def recall_metrics(image_features: torch.Tensor, text_features: torch.Tensor) -> dict[str, float]:
    out = {}
    for name, (q, c) in {"image_to_text": (image_features, text_features),
                         "text_to_image": (text_features, image_features)}.items():  # fmt: skip
        ranks = retrieval_ranks(q, c)
        for k in (1, 5, 10):
            out[f"{name}_R@{k}"] = (ranks < k).float().mean().item()
    return out


@torch.no_grad()
def validate(model, dataloader, loss_fn, *, device, autocast) -> dict[str, float]:
    """Mean contrastive loss over validation batches and retrieval recall over the whole set."""
    model.eval()
    images_out, texts_out, loss_sum, batches = [], [], 0.0, 0
    for images, texts in dataloader:
        images, texts = images.to(device.torch_device), texts.to(device.torch_device)
        with autocast():
            image_features, text_features, scale, *bias = model(images, texts)
            loss = loss_fn(image_features, text_features, scale, *bias)
        loss_sum += loss.item()
        batches += 1
        images_out.append(image_features.float().cpu())
        texts_out.append(text_features.float().cpu())
    if not batches:
        return {}
    metrics = {"val_loss": loss_sum / batches, "num_samples": sum(len(x) for x in images_out)}
    metrics.update(recall_metrics(torch.cat(images_out), torch.cat(texts_out)))
    return metrics


class ImageFolder(Dataset):
    """`root/<class>/<image>` without torchvision: classes sorted by folder name."""

    def __init__(self, root: str | Path, transform, *, rank: int = 0, world_size: int = 1):
        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"zero-shot data folder {root} does not exist")
        self.classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        samples = [
            (path, label)
            for label, name in enumerate(self.classes)
            for path in sorted((root / name).iterdir())
            if path.suffix.lower() in IMAGE_SUFFIXES
        ]
        self.samples = samples[rank::world_size]  # each rank evaluates its own shard
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        return self.transform(load_image(path)), label


def _by_language(path: str, what: str) -> dict[str, list[str]]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(data, list):
        return {"default": data}
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ValueError(f"{path}: {what} must be a JSON list or an object of lists per language")
    return data


def zero_shot_sets(classnames_file: str, templates_file: str, languages: str | None) -> dict[str, tuple]:
    """{language: (classnames, templates)} for the requested languages (all that both files have by default)."""
    classnames, templates = _by_language(classnames_file, "class names"), _by_language(templates_file, "templates")
    if "default" in templates and len(templates) == 1:
        templates = {lang: templates["default"] for lang in classnames}
    available = [lang for lang in classnames if lang in templates]
    wanted = languages.split(",") if languages else available
    unknown = [lang for lang in wanted if lang not in available]
    if unknown:
        raise ValueError(f"--zeroshot-languages {','.join(unknown)} not found; the files have: {', '.join(available)}")
    return {lang: (classnames[lang], templates[lang]) for lang in wanted}


@torch.no_grad()
def zero_shot(model, cfg, *, tokenizer, preprocess, device, autocast, world: World, workers: int = 2) -> dict:
    """Top-1/top-5 accuracy per language on an ImageFolder, every rank on its shard, counts all-reduced."""
    sets = zero_shot_sets(cfg.zeroshot_classnames, cfg.zeroshot_templates, cfg.zeroshot_languages)
    dataset = ImageFolder(cfg.zeroshot_data, preprocess, rank=world.rank, world_size=world.world_size)
    for lang, (names, _) in sets.items():
        if len(names) != len(dataset.classes):
            raise ValueError(
                f"{cfg.zeroshot_classnames} [{lang}] has {len(names)} class names but {cfg.zeroshot_data} has "
                f"{len(dataset.classes)} class folders ({', '.join(dataset.classes[:10])}...)"
            )
    model.eval()
    with autocast():
        classifiers = {
            lang: build_zero_shot_classifier(model, tokenizer, names, templates, device=device.torch_device)
            for lang, (names, templates) in sets.items()
        }
    counts = torch.zeros(len(sets), 2, dtype=torch.float64)  # (languages, [top1, top5])
    total = torch.zeros(1, dtype=torch.float64)
    loader = DataLoader(dataset, batch_size=256, num_workers=workers)
    for images, labels in loader:
        with autocast():
            features = model.encode_image(images.to(device.torch_device), normalize=True).float()
        labels = labels.to(features.device)
        for i, classifier in enumerate(classifiers.values()):
            top5 = (features @ classifier).topk(min(5, classifier.shape[1]), dim=1).indices  # (batch, 5)
            hits = top5 == labels[:, None]
            counts[i, 0] += hits[:, 0].sum().item()
            counts[i, 1] += hits.any(dim=1).sum().item()
        total += len(labels)
    all_reduce_sum(counts, world), all_reduce_sum(total, world)
    out = {}
    for i, lang in enumerate(sets):
        out[f"{lang}_top1"] = (counts[i, 0] / total).item()
        out[f"{lang}_top5"] = (counts[i, 1] / total).item()
    out["num_images"] = int(total.item())
    return out
