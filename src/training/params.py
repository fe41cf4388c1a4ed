"""The command line: the only place that sees argv. Flags follow open_clip v3.3's names and meanings and are
generated from the `TrainConfig` dataclasses (flag `--foo-bar` is field `foo_bar`, its help, choices, nargs and
valid range in the field's metadata: see `config.flag`), grouped by theme in `--help`.

Every value is checked here, before anything is built: each numeric flag against its range (the groups'
`__post_init__`), flags that only mean something beside another (`NEEDS`), and what the chosen architecture's
config decides cheaply (locking rules per tower type, timm weights). A check that fails ends the program as
argparse does, with a message that names the flag, the value and what to do instead.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import types
import typing
from collections.abc import Callable

from open_mclip.config import HFTextConfig, ModelConfig, ModifiedResNetConfig, TextTransformerConfig, TimmConfig
from open_mclip.constants import HF_HUB_PREFIX, LOCAL_DIR_PREFIX

from .config import TrainConfig
from .flags import option

# open_clip flags with no counterpart here: they fail with the reason instead of being ignored
UNSUPPORTED = {
    "horovod": "Horovod is not supported: launch with torchrun or srun (DDP)",
    "torchscript": "TorchScript is not supported: use --torchcompile",
    "trace": "tracing is not supported: use --torchcompile",
    "distill-model": "distillation is not supported",
    "distill-pretrained": "distillation is not supported",
    "use-bnb-linear": "bitsandbytes linear layers are not supported",
    "coca-caption-loss-weight": "CoCa models are not supported",
    "coca-contrastive-loss-weight": "CoCa models are not supported",
    "momentum": "momentum is for timm optimizers (--opt timm/...), which are not supported: only AdamW (--opt adamw)",
}
# flags of open_clip's main branch (after 3.3) whose meaning differs from ours: refused rather than misread
_MAIN_DECAY = (
    "open_clip's main branch counts layer-wise decay by its lock groups, where a ViT's ln_post and a text "
    "Transformer's ln_final decay with the top block; here they keep the full rate with the head"
)
OPEN_CLIP_MAIN = {
    "image-layer-decay": f"{_MAIN_DECAY}: use --layer-decay-image",
    "visual-layer-decay": f"{_MAIN_DECAY}: use --layer-decay-image",
    "text-layer-decay": f"{_MAIN_DECAY}: use --layer-decay-text",
}

# flag -> (whether it has an effect in this configuration, what it needs): given without effect, it is refused
NEEDS: dict[str, tuple[Callable[[TrainConfig], bool], str]] = {
    "epochs_cooldown": (lambda c: c.schedule.lr_scheduler == "const-cooldown", "--lr-scheduler const-cooldown"),
    "lr_cooldown_end": (lambda c: c.schedule.lr_scheduler == "const-cooldown", "--lr-scheduler const-cooldown"),
    "lr_cooldown_power": (lambda c: c.schedule.lr_scheduler == "const-cooldown", "--lr-scheduler const-cooldown"),
    "loss_dist_impl": (lambda c: c.loss.siglip, "--siglip (only the SigLIP loss has distributed variants)"),
    "lock_image_unlocked_groups": (lambda c: c.lock.lock_image, "--lock-image"),
    "lock_image_unlocked_blocks": (lambda c: c.lock.lock_image, "--lock-image"),
    "lock_image_freeze_bn_stats": (lambda c: c.lock.lock_image, "--lock-image"),
    "lock_text_unlocked_layers": (lambda c: c.lock.lock_text, "--lock-text"),
    "lock_text_unlocked_blocks": (lambda c: c.lock.lock_text, "--lock-text"),
    "lock_text_freeze_layer_norm": (lambda c: c.lock.lock_text, "--lock-text"),
    "pretrained_image": (
        lambda c: not c.model.pretrained,
        "no --pretrained (a CLIP checkpoint brings its own weights)",
    ),
    "synthetic_image_size": (lambda c: c.data.dataset_type == "synthetic", "--dataset-type synthetic"),
    "zeroshot_languages": (
        lambda c: bool(c.eval.zeroshot_data or c.eval.imagenet_val or c.eval.imagenet_v2),
        "--zeroshot-data, --imagenet-val or --imagenet-v2",
    ),
}


class _Refused(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        reason = UNSUPPORTED.get(self.dest) or OPEN_CLIP_MAIN[self.dest]
        parser.error(f"{option_string} is an open_clip flag open_mclip does not support: {reason}")


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
    meta = f.metadata
    kwargs: dict = {"dest": f.name, "help": meta["help"], "default": argparse.SUPPRESS}
    scalar = _scalar_type(hint)
    if scalar is dict:
        kwargs.update(nargs="*", action=_KeyValues)
    elif scalar is bool:  # a default of True or None (decided later) needs a way to say no: --no-drop-last
        kwargs["action"] = "store_true" if f.default is False else argparse.BooleanOptionalAction
    else:
        kwargs["type"] = scalar
        if meta["nargs"] is not None:
            kwargs["nargs"] = meta["nargs"]
        if meta["choices"] is not None:
            kwargs["choices"] = meta["choices"]
    group.add_argument(option(f.name), **kwargs)


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
    for flag in (*UNSUPPORTED, *OPEN_CLIP_MAIN):
        unsupported.add_argument(f"--{flag}", dest=flag, nargs="?", action=_Refused, help=argparse.SUPPRESS)
    return parser


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """argv -> TrainConfig; every group receives the flags named like its fields, and every value is checked."""
    parser = build_parser()
    values = vars(parser.parse_args(argv))
    try:
        cfg = _build(values)
        check_combinations(cfg, given=set(values))
        check_against_model(cfg)
    except ValueError as err:
        parser.error(str(err))
    return cfg


def _build(values: dict) -> TrainConfig:
    groups = {}
    for group_field in dataclasses.fields(TrainConfig):
        cls = group_field.default_factory
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items() if k in names}
        if kwargs.get("force_image_size") is not None and len(kwargs["force_image_size"]) == 1:
            kwargs["force_image_size"] = kwargs["force_image_size"][0]
        groups[group_field.name] = cls(**kwargs)
    return TrainConfig(**groups)


def check_combinations(cfg: TrainConfig, *, given: set[str]) -> None:
    """Flags that contradict each other, or were given where they do nothing (`NEEDS`)."""
    for name, (has_effect, needs) in NEEDS.items():
        if name in given and not has_effect(cfg):
            raise ValueError(f"{option(name)} has no effect without {needs}: drop it or add that")
    schedule, lock = cfg.schedule, cfg.lock
    if schedule.lr_scheduler == "const-cooldown":
        if schedule.epochs_cooldown is None:
            raise ValueError("--lr-scheduler const-cooldown needs --epochs-cooldown N (the epochs of the cool-down)")
        if schedule.epochs_cooldown > schedule.epochs:
            raise ValueError(
                f"--epochs-cooldown {schedule.epochs_cooldown} is invalid: the cool-down cannot be longer than the "
                f"run (--epochs {schedule.epochs}); use an int in [1, {schedule.epochs}]"
            )
    for tower, counted_name in (("image", "lock_image_unlocked_groups"), ("text", "lock_text_unlocked_layers")):
        uniform, counted = getattr(lock, f"lock_{tower}_unlocked_blocks"), getattr(lock, counted_name)
        if uniform is not None and counted:
            raise ValueError(
                f"{option(counted_name)} {counted} (open_clip's groups) and --lock-{tower}-unlocked-blocks {uniform} "
                "(our uniform blocks) count differently: give one of them"
            )


def architecture(name: str) -> ModelConfig | None:
    """The architecture config of `--model`, read without building anything: a registered name or a `local-dir:`
    folder's config file. None for `hf-hub:` names (their config is on the hub: the checks wait for the build)."""
    from open_mclip import model_config
    from open_mclip.factory import HF_CONFIG_NAME, read_local_dir

    if name.startswith(HF_HUB_PREFIX):
        return None
    if name.startswith(LOCAL_DIR_PREFIX):
        folder = name[len(LOCAL_DIR_PREFIX) :]
        return ModelConfig.from_dict(read_local_dir(folder)["model_cfg"], source=f"{folder}/{HF_CONFIG_NAME}")
    try:
        return model_config(name.replace("/", "-"))  # open_clip accepts "ViT-B/32"
    except ValueError as err:  # an unknown name: the message lists the closest ones
        raise ValueError(f"--model {name}: {err}") from err


def check_against_model(cfg: TrainConfig) -> None:
    """What the architecture decides: open_clip's lock rules per tower type and timm's pretrained weights."""
    arch = architecture(cfg.model.model)
    if arch is None:
        return
    lock, vision, text = cfg.lock, arch.vision, arch.text
    uniform = "--lock-{}-unlocked-blocks N (our uniform rule)"
    if lock.lock_image and lock.lock_image_unlocked_blocks is None:
        if isinstance(vision, ModifiedResNetConfig) and lock.lock_image_unlocked_groups:
            raise ValueError(
                f"--lock-image-unlocked-groups {lock.lock_image_unlocked_groups}: open_clip locks a ModifiedResNet "
                f"image tower only whole (0); {uniform.format('image')} keeps its top N stages trainable"
            )
    if lock.lock_text and lock.lock_text_unlocked_blocks is None:
        if isinstance(text, TextTransformerConfig) and not lock.lock_text_freeze_layer_norm:
            raise ValueError(
                f"--lock-text on {cfg.model.model}'s Transformer text tower needs --lock-text-freeze-layer-norm: "
                "open_clip locks its LayerNorms like its other weights and refuses to leave them trainable; "
                f"or use {uniform.format('text')}"
            )
        if not isinstance(text, (TextTransformerConfig, HFTextConfig)):
            raise ValueError(f"--lock-text: open_clip has no lock rule for a {text.type} text tower")
    if cfg.model.pretrained_image and not isinstance(vision, TimmConfig):
        raise ValueError(
            f"--pretrained-image: {cfg.model.model}'s image tower is a {vision.type} tower; only timm image towers "
            "have pretrained ImageNet weights to start from (open_clip silently ignores the flag for the others)"
        )
