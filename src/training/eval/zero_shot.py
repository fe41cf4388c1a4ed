"""Zero-shot classification per language on ImageFolder sets: every rank evaluates its shard, counts all-reduced.

Three evaluation sets, each reported under its own key:
- "zeroshot": `--zeroshot-data DIR` with `--zeroshot-classnames` and `--zeroshot-templates` files.
- "imagenet": `--imagenet-val DIR`, ImageNet-1k's validation set (one folder per WordNet id), with the library's
  shipped packs. A language of the "imagenet" pack (en, ar, zh, it, ja) is scored over all 1000 classes; a language
  only Babel-ImageNet has is scored as Babel-ImageNet defines it: on the images of the classes it names, with a
  classifier over those classes only (`{lang}_num_images` says how many images that was).
- "imagenet-v2": `--imagenet-v2 DIR`, ImageNet-V2 (matched frequency), scored exactly as "imagenet". DIR is what
  open_clip's trainer reads (a folder holding `ImageNetV2-matched-frequency/`), ImageNet-V2's own layout (class
  folders `0` ... `999`, the number being the ImageNet class index), or 1000 wnid folders as for --imagenet-val.
`--zeroshot-languages` applies to all sets; by default --zeroshot-data takes every language of its files and the
ImageNet sets take en.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from open_mclip.image_ops import image_bounds_of
from open_mclip.zero_shot import build_zero_shot_classifier
from open_mclip.zero_shot_packs import (
    imagenet_wnids,
    list_zero_shot_languages,
    list_zero_shot_packs,
    load_zero_shot_pack,
)

from ..config import EvalConfig
from ..data.info import SAMPLE_REASONS, SkipCounter
from ..data.samples import SampleDecoder
from ..distributed import World, all_reduce_sum
from ..placement import Placement
from ..progress import Progress

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
LISTED = 10  # names shown in an error before "... (N in all)"
IMAGENET_V2_FOLDER = "ImageNetV2-matched-frequency"  # where open_clip's ImageNetV2Dataset(location=DIR) looks
CLASSES_PER_CALL = 100  # classes per classifier call between progress updates (a multiple of the library's 10)


@dataclass(frozen=True)
class ZeroShotSet:
    """One language's classifier: class names, templates, and the dataset label (folder index) of each class."""

    classnames: list[str]
    templates: list[str]
    labels: list[int] | None = None  # None: class i is folder i, every folder


def class_folders(root: str | Path, *, flag: str) -> list[str]:
    """The class folders of an ImageFolder-layout directory, sorted (the order labels follow)."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{flag} {root} is not a folder: expected one sub-folder of images per class")
    return sorted(p.name for p in root.iterdir() if p.is_dir())


class ImageFolder(Dataset):
    """`root/<class>/<image>` without torchvision: class i is the i-th of `classes` (default: the folders sorted by
    name); this rank's shard of the images. An image that cannot be used (broken, gone, beyond the transform's size
    bounds) gives None and is counted."""

    def __init__(
        self, root: str | Path, transform, *, classes: list[str] | None = None, rank: int = 0, world_size: int = 1
    ):
        root = Path(root)
        self.classes = list(classes) if classes is not None else class_folders(root, flag="zero-shot image folder")
        samples = [
            (path, label)
            for label, name in enumerate(self.classes)
            for path in sorted((root / name).iterdir())
            if path.suffix.lower() in IMAGE_SUFFIXES
        ]
        self.samples = samples[rank::world_size]  # each rank evaluates its own shard
        self.transform = transform
        self.decoder = SampleDecoder(
            preprocess=transform, tokenizer=None, bounds=image_bounds_of(transform), skipped=SkipCounter(rows=len(self))
        )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        image = self.decoder.image_file(str(path), where=f"zero-shot image {index}", row=index)
        return None if image is None else (self.transform(image), label)


def _usable(batch: list) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Collate the samples that could be read (None: none of the batch could)."""
    batch = [sample for sample in batch if sample is not None]
    return default_collate(batch) if batch else None


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:LISTED])
    return shown + (f", ... ({len(items)} in all)" if len(items) > LISTED else "")


def _by_language(path: str, what: str) -> dict[str, list | dict]:
    """A JSON list, a {folder: name} object, or either per language -> {language: list or dict}."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(data, list) or (isinstance(data, dict) and all(isinstance(v, str) for v in data.values())):
        return {"default": data}
    if not isinstance(data, dict) or not all(isinstance(v, (list, dict)) for v in data.values()):
        raise ValueError(f"{path}: {what} must be a JSON list, a {{folder: name}} object, or either per language")
    return data


def _in_folder_order(names: list | dict, folders: list[str], *, where: str, data_dir: str) -> list[str]:
    """Class names in folder order; a mismatch with the folders names what is missing or left over."""
    if isinstance(names, dict):
        known = set(folders)
        missing = [f for f in folders if f not in names]
        extra = [n for n in names if n not in known]
        if missing or extra:
            parts = [f"folders without a name: {_listed(missing)}"] if missing else []
            parts += [f"names without a folder: {_listed(extra)}"] if extra else []
            raise ValueError(f"{where} does not match the class folders of {data_dir}: {'; '.join(parts)}")
        return [names[f] for f in folders]
    if len(names) != len(folders):
        beyond = (
            f"folders beyond the list: {_listed(folders[len(names) :])}"
            if len(names) < len(folders)
            else f"names beyond the folders: {_listed([str(n) for n in names[len(folders) :]])}"
        )
        raise ValueError(
            f"{where} has {len(names)} class names but {data_dir} has {len(folders)} class folders; {beyond}. "
            "Give one name per folder in sorted folder order, or an object {folder: name}"
        )
    return list(names)


def _wanted(languages: str | None, default: list[str]) -> list[str]:
    return [lang.strip() for lang in languages.split(",") if lang.strip()] if languages else default


def zero_shot_sets(
    classnames_file: str,
    templates_file: str,
    languages: str | None,
    *,
    folders: list[str],
    data_dir: str = "--zeroshot-data",
) -> dict[str, ZeroShotSet]:
    """{language: set} for the requested languages (all that both files have by default), names in folder order."""
    classnames, templates = _by_language(classnames_file, "class names"), _by_language(templates_file, "templates")
    if not all(isinstance(t, list) for t in templates.values()):
        raise ValueError(f"{templates_file}: templates must be a JSON list or an object of lists per language")
    if "default" in templates and len(templates) == 1:
        templates = {lang: templates["default"] for lang in classnames}
    available = [lang for lang in classnames if lang in templates]
    unknown = [lang for lang in _wanted(languages, available) if lang not in available]
    if unknown:
        raise ValueError(f"--zeroshot-languages {','.join(unknown)} not found; the files have: {', '.join(available)}")
    return {
        lang: ZeroShotSet(
            _in_folder_order(classnames[lang], folders, where=f"{classnames_file} [{lang}]", data_dir=data_dir),
            list(templates[lang]),
        )
        for lang in _wanted(languages, available)
    }


def check_imagenet_folders(folders: list[str], *, root: str, flag: str = "--imagenet-val", hint: str = "") -> None:
    """--imagenet-val must hold exactly ImageNet-1k's 1000 wnid folders (a folder may be empty)."""
    wnids = imagenet_wnids()
    known, present = set(wnids), set(folders)
    strangers = [f for f in folders if f not in known]
    missing = [w for w in wnids if w not in present]
    if strangers or missing:
        parts = [f"{len(strangers)} folders are not ImageNet-1k wnids: {_listed(strangers)}"] if strangers else []
        parts += [f"{len(missing)} wnids have no folder: {_listed(missing)}"] if missing else []
        raise ValueError(
            f"{flag} {root} is not ImageNet-1k in ImageFolder layout (one folder per WordNet id, "
            f"{wnids[0]} ... {wnids[-1]}, images inside){hint}: {'; '.join(parts)}"
        )


def imagenet_v2_classes(root: str) -> tuple[str, list[str]]:
    """(image folder, its class folders in label order) of --imagenet-v2: open_clip's folder (holding
    ImageNetV2-matched-frequency/), ImageNet-V2's class-index folders 0..999, or ImageNet's 1000 wnid folders."""
    path = Path(root)
    if (path / IMAGENET_V2_FOLDER).is_dir():
        path = path / IMAGENET_V2_FOLDER
    folders = class_folders(path, flag="--imagenet-v2")
    numbered = [str(index) for index in range(len(imagenet_wnids()))]
    if set(folders) == set(numbered):
        return str(path), numbered
    hint = f", nor ImageNet-V2's class folders 0 ... {numbered[-1]}, nor a folder holding {IMAGENET_V2_FOLDER}/"
    if folders and all(folder.isdigit() for folder in folders):
        missing = [n for n in numbered if n not in set(folders)]
        beyond = [f for f in folders if f not in set(numbered)]
        parts = [f"class folders missing: {_listed(missing)}"] if missing else []
        parts += [f"beyond 0 ... {numbered[-1]}: {_listed(beyond)}"] if beyond else []
        raise ValueError(
            f"--imagenet-v2 {root} is not ImageNet-V2's layout (class folders 0 ... 999): {'; '.join(parts)}"
        )
    check_imagenet_folders(folders, root=root, flag="--imagenet-v2", hint=hint)
    return str(path), folders


def imagenet_sets(languages: str | None) -> dict[str, ZeroShotSet]:
    """The shipped ImageNet class names per language: the full pack where it has the language, else Babel-ImageNet."""
    full = list_zero_shot_languages("imagenet")
    babel = list_zero_shot_languages("babel_imagenet") if "babel_imagenet" in list_zero_shot_packs() else []
    wanted = _wanted(languages, ["en"])
    unknown = [lang for lang in wanted if lang not in full and lang not in babel]
    if unknown:
        subsets = ", ".join(babel) if babel else "none here (pip install --no-deps clip-benchmark==1.6.2 adds 93)"
        raise ValueError(
            f"--zeroshot-languages {','.join(unknown)}: no ImageNet class names in that language. All 1000 classes: "
            f"{', '.join(full)}; a class subset (Babel-ImageNet): {subsets}"
        )
    packs = {lang: load_zero_shot_pack("imagenet" if lang in full else "babel_imagenet", lang) for lang in wanted}
    return {lang: ZeroShotSet(p.classnames, p.templates, p.class_indices) for lang, p in packs.items()}


@dataclass(frozen=True)
class ZeroShotTask:
    """One evaluation set: its image folder, a classifier per language, and the class folders in label order."""

    root: str
    sets: dict[str, ZeroShotSet]
    classes: list[str] | None = None  # None: the sub-folders of root sorted by name


ZeroShotPlan = dict[str, ZeroShotTask]  # {result key: task}


def zero_shot_plan(cfg: EvalConfig) -> ZeroShotPlan:
    """{result key: task} of the configured evaluations. Cheap (no image is read): main() calls it at start-up so
    that bad folders, class names or languages fail before training, not after the first epoch."""
    plan = {}
    if cfg.zeroshot_data:
        if not (cfg.zeroshot_classnames and cfg.zeroshot_templates):
            raise ValueError("--zeroshot-data needs --zeroshot-classnames FILE and --zeroshot-templates FILE")
        folders = class_folders(cfg.zeroshot_data, flag="--zeroshot-data")
        files = (cfg.zeroshot_classnames, cfg.zeroshot_templates, cfg.zeroshot_languages)
        sets = zero_shot_sets(*files, folders=folders, data_dir=cfg.zeroshot_data)
        plan["zeroshot"] = ZeroShotTask(cfg.zeroshot_data, sets)
    if cfg.imagenet_val:
        check_imagenet_folders(class_folders(cfg.imagenet_val, flag="--imagenet-val"), root=cfg.imagenet_val)
        plan["imagenet"] = ZeroShotTask(cfg.imagenet_val, imagenet_sets(cfg.zeroshot_languages))
    if cfg.imagenet_v2:
        root, classes = imagenet_v2_classes(cfg.imagenet_v2)
        plan["imagenet-v2"] = ZeroShotTask(root, imagenet_sets(cfg.zeroshot_languages), classes)
    return plan


def _label_map(labels: list[int] | None, num_folders: int, device: torch.device) -> torch.Tensor:
    """(folders,) class position of each folder in a classifier, -1 for folders it does not cover."""
    if labels is None:
        return torch.arange(num_folders, device=device)
    out = torch.full((num_folders,), -1, dtype=torch.long, device=device)
    out[torch.tensor(labels, device=device)] = torch.arange(len(labels), device=device)
    return out


def _hits(features: torch.Tensor, classifier: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[top-1 hits, top-5 hits, images] of one batch; rows with target -1 are outside the classifier's classes."""
    top = (features @ classifier).topk(min(5, classifier.shape[1]), dim=1).indices  # (batch, k)
    hits = top == target[:, None]  # never true where target is -1
    return torch.stack([hits[:, 0].sum(), hits.any(dim=1).sum(), (target >= 0).sum()]).float()


def _classifiers(model, sets: dict[str, ZeroShotSet], *, tokenizer, placement: Placement, progress: Progress) -> list:
    """(dim, classes) float32 classifier per language, built `CLASSES_PER_CALL` classes at a time so that
    `progress` can follow (ImageNet: 1000 classes x 80 templates); a class's column depends on its prompts only, and
    a multiple of the library's 10 classes per batch gives the same batches, so the weights are the same."""
    classifiers, done = [], 0
    for zs_set in sets.values():
        columns = []
        for start in range(0, len(zs_set.classnames), CLASSES_PER_CALL):
            names = zs_set.classnames[start : start + CLASSES_PER_CALL]
            with placement.autocast():
                weights = build_zero_shot_classifier(
                    model, tokenizer, names, zs_set.templates, device=placement.device.torch_device
                )
            columns.append(weights.float())
            done += len(names)
            progress.update(done)
        classifiers.append(torch.cat(columns, dim=1))
    return classifiers


@torch.no_grad()
def evaluate_sets(
    model,
    dataset: ImageFolder,
    sets: dict[str, ZeroShotSet],
    *,
    tokenizer,
    placement: Placement,
    world: World,
    workers: int = 2,
    batch_size: int = 256,
    name: str = "zero-shot",
) -> dict:
    """Top-1/top-5 accuracy per language over the images of all ranks' shards of `dataset`; rank 0 logs the progress
    of the classifiers and of its images under `name`."""
    model.eval()
    device = placement.device
    where = device.torch_device
    all_classes = sum(len(s.classnames) for s in sets.values())
    classes = Progress(f"{name} classifiers", total=all_classes, unit="classes", enabled=world.is_master)
    classifiers = _classifiers(model, sets, tokenizer=tokenizer, placement=placement, progress=classes)
    label_maps = [_label_map(s.labels, len(dataset.classes), where) for s in sets.values()]
    counts = torch.zeros(len(sets), 3, device=where)  # (languages, [top-1 hits, top-5 hits, images])
    total = torch.zeros(1, device=where)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=_usable)
    progress = Progress(f"{name} images", total=len(loader), enabled=world.is_master)
    for done, batch in enumerate(loader, start=1):
        if batch is not None:  # None: no image of the batch could be read
            images, labels = batch
            with placement.autocast():
                features = model.encode_image(placement.images(images), normalize=True).float()  # (batch, dim)
            labels = labels.to(where)
            for i, (classifier, label_map) in enumerate(zip(classifiers, label_maps)):
                counts[i] += _hits(features, classifier, label_map[labels])
            total += len(labels)
            device.mark_step()
        progress.update(done)
    skipped = torch.tensor([dataset.decoder.skipped.by_reason().get(r, 0) for r in SAMPLE_REASONS], device=where)
    all_reduce_sum(counts, world), all_reduce_sum(total, world), all_reduce_sum(skipped, world)
    skips = {f"skipped_{r}": int(n) for r, n in zip(SAMPLE_REASONS, skipped.tolist()) if n}
    return {**_metrics(sets, counts.cpu(), int(total.item())), "skipped_samples": sum(skips.values()), **skips}


def _metrics(sets: dict[str, ZeroShotSet], counts: torch.Tensor, total: int) -> dict:
    out = {}
    for (lang, zs_set), (top1, top5, images) in zip(sets.items(), counts.tolist()):
        if zs_set.labels is not None:
            out[f"{lang}_num_images"] = int(images)
        if images == 0:
            log.warning("zero-shot [%s]: no images of its %d classes: no accuracy", lang, len(zs_set.classnames))
            continue
        out[f"{lang}_top1"], out[f"{lang}_top5"] = top1 / images, top5 / images
    out["num_images"] = total
    return out


def zero_shot(
    model, plan: ZeroShotPlan, *, tokenizer, preprocess, placement: Placement, world: World, workers: int = 2
) -> dict[str, dict]:
    """Results per evaluation set of `plan` (from `zero_shot_plan`), each rank on its shard of the images."""
    results = {}
    for key, task in plan.items():
        dataset = ImageFolder(task.root, preprocess, classes=task.classes, rank=world.rank, world_size=world.world_size)
        results[key] = evaluate_sets(
            model,
            dataset,
            task.sets,
            tokenizer=tokenizer,
            placement=placement,
            world=world,
            workers=workers,
            name=f"zero-shot ({key})",
        )
    return results


def zero_shot_table(metrics: dict) -> str:
    """A plain-text table: one row per language with top-1 and top-5 accuracy in percent and the images scored."""
    languages = [key[: -len("_top1")] for key in metrics if key.endswith("_top1")]
    rows = ["language | top-1 | top-5 | images", "---------|-------|-------|-------"]
    for lang in languages:
        images = metrics.get(f"{lang}_num_images", metrics.get("num_images", ""))
        rows.append(
            f"{lang:<8} | {100 * metrics[f'{lang}_top1']:5.1f} | {100 * metrics[f'{lang}_top5']:5.1f} | {images}"
        )
    return "\n".join(rows)
