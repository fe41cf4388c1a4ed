"""The command line: the only place that sees argv. Flags follow open_clip v3.3's names and meanings and are
generated from the `TrainConfig` dataclasses (flag `--foo-bar` is field `foo_bar`), grouped by theme in `--help`.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import types
import typing

from open_mclip.precision import PRECISION_CHOICES

from .config import TrainConfig

HELP = {
    "train_data": "training data: CSV/TSV file, or WebDataset shards with brace expansion; join sources with '::'",
    "val_data": "validation data (same formats as --train-data)",
    "val_lang_key": "CSV column, or field of each shard sample's .json, tagging a validation caption's language "
    "(e.g. 'en'): recall is then also reported per language; untagged captions count in the overall figures only",
    "train_data_upsampling_factors": "sampling weight per '::' source of --train-data, e.g. '1::2'",
    "train_num_samples": "samples per epoch (required for WebDataset without sizes.json, and for resampling)",
    "dataset_type": "auto picks from the file name",
    "dataset_resampled": "sample shards with replacement (virtual epochs of --train-num-samples)",
    "batch_size": "batch size per process",
    "workers": "data loader worker processes per process",
    "model": "architecture name (see open_mclip.list_models()), hf-hub:org/repo or local-dir:PATH",
    "pretrained": "pretrained tag or checkpoint file to start from",
    "lr": "peak learning rate (default 5e-4)",
    "lr_image": "peak learning rate of the image tower (default --lr)",
    "lr_text": "peak learning rate of the text tower (default --lr)",
    "layer_decay_image": "layer-wise lr decay in (0, 1] for the image tower: block i from the top gets lr * decay**i",
    "layer_decay_text": "layer-wise lr decay in (0, 1] for the text tower (embeddings count as the lowest block)",
    "wd": "weight decay (not applied to gains, biases, embeddings and the logit scale)",
    "warmup": "linear warm-up steps",
    "accum_freq": "contrastive gradient accumulation: update every N batches as one batch of N x batch size",
    "precision": "numeric precision",
    "device": "auto (cuda, then hpu, mps, cpu), cpu, cuda, hpu or mps",
    "save_every_n_steps": "also save a checkpoint every N optimizer steps",
    "resume": "checkpoint file to resume from, or 'latest' for the newest complete one of this run",
    "report_to": "'tensorboard' to also write TensorBoard scalars",
    "zeroshot_data": "ImageFolder-layout directory for zero-shot classification",
    "zeroshot_classnames": "JSON of class names: a list in folder order, {folder: name}, or either per language",
    "zeroshot_templates": "JSON of prompt templates with '{}' for the class name, a list or {language: list}",
    "zeroshot_languages": "comma-separated languages to evaluate (default: all in the files; en for --imagenet-val)",
    "imagenet_val": "ImageNet-1k validation set in ImageFolder layout (1000 wnid folders), zero-shot with the "
    "shipped class names: en, ar, zh, it, ja on all classes, Babel-ImageNet languages on their class subset",
    "plot": "write a PNG of the loss and accuracy curves to the run folder at the end",
}
CHOICES = {
    "dataset_type": ("auto", "webdataset", "csv", "synthetic"),
    "precision": PRECISION_CHOICES,
    "lr_scheduler": ("cosine", "const", "const-cooldown"),
    "image_resize_mode": ("shortest", "longest", "squash"),
    "opt": ("adamw",),
}
NARGS = {"image_mean": "+", "image_std": "+", "force_image_size": "+"}
# open_clip flags with no counterpart here: they fail with the reason instead of being ignored
UNSUPPORTED = {
    "imagenet-v2": "ImageNet-V2 evaluation is not available",
    "horovod": "Horovod is not supported: launch with torchrun or srun (DDP)",
    "torchscript": "TorchScript is not supported: use --torchcompile",
    "trace": "tracing is not supported: use --torchcompile",
    "remote-sync": "remote sync is not supported: sync the --logs folder with your own tooling",
    "remote-sync-frequency": "remote sync is not supported",
    "remote-sync-protocol": "remote sync is not supported",
    "distill-model": "distillation is not supported",
    "distill-pretrained": "distillation is not supported",
    "use-bnb-linear": "bitsandbytes linear layers are not supported",
    "copy-codebase": "copying the codebase is not supported",
    "wandb-notes": "Weights & Biases is not supported: use --report-to tensorboard",
    "wandb-project-name": "Weights & Biases is not supported: use --report-to tensorboard",
    "coca-caption-loss-weight": "CoCa models are not supported",
    "coca-contrastive-loss-weight": "CoCa models are not supported",
    "momentum": "only AdamW is supported (--opt adamw)",
    "pretrained-image": "timm ImageNet weights cannot be downloaded by the trainer; pass a --pretrained checkpoint",
    "force-custom-text": "open_mclip has one CLIP class for every text tower: drop this flag",
    "log-local": "every rank logs to the console; only rank 0 writes out.log",
}


class _Unsupported(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} is an open_clip flag open_mclip does not support: {UNSUPPORTED[self.dest]}")


class _KeyValues(argparse.Action):
    """`--aug-cfg scale='(0.8, 1.0)' color_jitter_prob=0.5` -> dict, values read as Python literals."""

    def __call__(self, parser, namespace, values, option_string=None):
        out = {}
        for item in values:
            key, sep, value = item.partition("=")
            if not sep:
                parser.error(f"{option_string} expects key=value pairs, got {item!r}")
            try:
                out[key] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                out[key] = value
        setattr(namespace, self.dest, out)


def _scalar_type(hint) -> type:
    """int for `int | None`, float for `float | None`..."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0]
    origin = typing.get_origin(hint)
    if origin is tuple:
        return typing.get_args(hint)[0]
    return hint if isinstance(hint, type) else str


def _add_field(group, f: dataclasses.Field, hint) -> None:
    flag = "--" + f.name.replace("_", "-")
    kwargs: dict = {"dest": f.name, "help": HELP.get(f.name, " "), "default": argparse.SUPPRESS}
    if f.name == "aug_cfg":
        kwargs.update(nargs="*", action=_KeyValues)
    elif _scalar_type(hint) is bool:
        kwargs["action"] = "store_true"
    else:
        kwargs["type"] = _scalar_type(hint)
        if f.name in NARGS:
            kwargs["nargs"] = NARGS[f.name]
        if f.name in CHOICES:
            kwargs["choices"] = CHOICES[f.name]
    group.add_argument(flag, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchrun -m training.main",
        description="Train or evaluate an open_mclip CLIP model. Flags follow open_clip's training flags.",
    )
    seen: set[str] = set()
    for group_field in dataclasses.fields(TrainConfig):
        cls = group_field.default_factory
        group = parser.add_argument_group(group_field.name, (cls.__doc__ or "").strip().split("\n")[0] or None)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name not in seen:  # a field in two groups (seed) has one flag that feeds both
                seen.add(f.name)
                _add_field(group, f, hints[f.name])
    unsupported = parser.add_argument_group("open_clip flags open_mclip does not support")
    for flag in UNSUPPORTED:
        unsupported.add_argument(f"--{flag}", dest=flag, nargs="?", action=_Unsupported, help=argparse.SUPPRESS)
    return parser


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """argv -> TrainConfig; every group receives the flags named like its fields."""
    values = vars(build_parser().parse_args(argv))
    groups = {}
    for group_field in dataclasses.fields(TrainConfig):
        cls = group_field.default_factory
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items() if k in names}
        if kwargs.get("force_image_size") is not None and len(kwargs["force_image_size"]) == 1:
            kwargs["force_image_size"] = kwargs["force_image_size"][0]
        groups[group_field.name] = cls(**kwargs)
    return TrainConfig(**groups)
