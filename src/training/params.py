"""The command line: the only place that sees argv. Flags follow open_clip v3.3's names and meanings and are
generated from the `TrainConfig` dataclasses (flag `--foo-bar` is field `foo_bar`, its help, choices and nargs in
the field's metadata: see `config.flag`), grouped by theme in `--help`.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import types
import typing

from .config import TrainConfig

# open_clip flags with no counterpart here: they fail with the reason instead of being ignored
UNSUPPORTED = {
    "imagenet-v2": "ImageNet-V2 evaluation is not available",
    "horovod": "Horovod is not supported: launch with torchrun or srun (DDP)",
    "torchscript": "TorchScript is not supported: use --torchcompile",
    "trace": "tracing is not supported: use --torchcompile",
    "distill-model": "distillation is not supported",
    "distill-pretrained": "distillation is not supported",
    "use-bnb-linear": "bitsandbytes linear layers are not supported",
    "copy-codebase": "copying the codebase is not supported",
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
    meta = f.metadata
    kwargs: dict = {"dest": f.name, "help": meta["help"], "default": argparse.SUPPRESS}
    scalar = _scalar_type(hint)
    if scalar is dict:
        kwargs.update(nargs="*", action=_KeyValues)
    elif scalar is bool:  # a default of True needs a way to turn it off: --no-drop-last
        kwargs["action"] = argparse.BooleanOptionalAction if f.default else "store_true"
    else:
        kwargs["type"] = scalar
        if meta["nargs"] is not None:
            kwargs["nargs"] = meta["nargs"]
        if meta["choices"] is not None:
            kwargs["choices"] = meta["choices"]
    group.add_argument(flag, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchrun -m training.main",
        description="Train or evaluate an open_mclip CLIP model. Flags follow open_clip's training flags.",
    )
    seen: set[str] = set()
    for group_field in dataclasses.fields(TrainConfig):
        cls = group_field.default_factory
        group = parser.add_argument_group(group_field.name, cls.__doc__.strip().split("\n")[0])
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
