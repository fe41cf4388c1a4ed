"""Every flag is checked when it is parsed, before anything is built: each numeric flag against the range declared
with it (a table generated from the config dataclasses, so a new numeric flag without a range fails here), flags
that mean nothing without another, and what the architecture's config decides. Each refusal names the flag, the
value and what would be valid."""

from __future__ import annotations

import dataclasses
import json
import typing

import pytest

from training.config import TrainConfig
from training.flags import Range, option
from training.main import main
from training.params import _scalar_type, parse_args

# flags a numeric flag needs beside it to have an effect (see params.NEEDS) or to be valid at all
CONTEXT = {
    "epochs_cooldown": "--lr-scheduler const-cooldown",
    "lr_cooldown_end": "--lr-scheduler const-cooldown --epochs-cooldown 1",
    "lr_cooldown_power": "--lr-scheduler const-cooldown --epochs-cooldown 1",
    "synthetic_image_size": "--dataset-type synthetic",
    "lock_image_unlocked_groups": "--model ViT-B-32 --lock-image",
    "lock_image_unlocked_blocks": "--model ViT-B-32 --lock-image",
    "lock_text_unlocked_layers": "--model ViT-B-32 --lock-text --lock-text-freeze-layer-norm",
    "lock_text_unlocked_blocks": "--model ViT-B-32 --lock-text",
}


def numeric_fields() -> dict[str, dataclasses.Field]:
    """Every int or float field of every config group (optional and list fields included), by name."""
    out = {}
    for group in dataclasses.fields(TrainConfig):
        hints = typing.get_type_hints(group.default_factory)
        for f in dataclasses.fields(group.default_factory):
            if _scalar_type(hints[f.name]) in (int, float):
                out[f.name] = f
    return out


def _values(valid: Range) -> tuple[list[float], list[float]]:
    """(values inside the range, values outside it), at its ends."""
    step = 1 if valid.integer else 0.5
    good, bad = [], [float("nan"), float("inf")] if not valid.integer else []
    if valid.low is not None:
        good.append(valid.low + step if valid.low_open else valid.low)
        bad.append(valid.low if valid.low_open else valid.low - step)
    if valid.high is not None:
        good.append(valid.high - step / 10 if valid.high_open else valid.high)
        bad.append(valid.high if valid.high_open else valid.high + step)
    if valid.low is None and valid.high is None:
        good.append(0.5)
    return good, bad


def _show(value: float, integer: bool) -> str:
    return str(int(value)) if integer else repr(float(value))


def test_every_numeric_flag_declares_its_valid_range():
    fields = numeric_fields()
    assert len(fields) >= 30 and {"grad_clip_norm", "epochs", "accum_freq", "force_context_length"} <= set(fields)
    missing = [option(name) for name, f in fields.items() if not isinstance(f.metadata.get("valid"), Range)]
    assert not missing, f"numeric flags without a valid range (flag(..., valid=...)): {missing}"
    for name, f in fields.items():
        hint = typing.get_type_hints(type(getattr(TrainConfig(), _group_of(name))))[name]
        assert f.metadata["valid"].integer == (_scalar_type(hint) is int), name  # an int flag has an int range


def _group_of(name: str) -> str:
    return next(
        g.name
        for g in dataclasses.fields(TrainConfig)
        if name in {f.name for f in dataclasses.fields(g.default_factory)}
    )


@pytest.mark.parametrize("name", sorted(numeric_fields()))
def test_numeric_flags_refuse_values_outside_their_range(name, capsys):
    valid = numeric_fields()[name].metadata["valid"]
    context = CONTEXT.get(name, "").split()
    good, bad = _values(valid)
    for value in good:
        cfg = parse_args([*context, option(name), _show(value, valid.integer)])
        parsed = getattr(getattr(cfg, _group_of(name)), name)
        assert parsed == pytest.approx(value) or parsed == (pytest.approx(value),), (name, value)
    for value in bad:
        with pytest.raises(SystemExit):
            parse_args([*context, option(name), _show(value, valid.integer)])
        message = capsys.readouterr().err.strip().splitlines()[-1]
        assert f"{option(name)} {_show(value, valid.integer)} is invalid" in message and f"use {valid}" in message


REFUSED = {  # command line -> what the message must say
    # issue 13's list: each of these ran (or crashed after the model and data were built) before
    "--grad-clip-norm -1": "--grad-clip-norm -1.0 is invalid (grad_clip_norm=-1.0): use a number > 0",
    "--epochs 0": "--epochs 0 is invalid (epochs=0): use an int >= 1",
    "--accum-freq -2": "--accum-freq -2 is invalid (accum_freq=-2): use an int >= 1",
    "--accum-freq 0": "--accum-freq 0 is invalid (accum_freq=0): use an int >= 1",
    "--wd -0.1": "--wd -0.1 is invalid (wd=-0.1): use a number >= 0",
    "--warmup -10": "--warmup -10 is invalid (warmup=-10): use an int >= 0",
    "--save-every-n-steps -1": "--save-every-n-steps -1 is invalid (save_every_n_steps=-1): use an int >= 1",
    "--log-every-n-steps 0": "--log-every-n-steps 0 is invalid (log_every_n_steps=0): use an int >= 1",
    "--force-context-length 0": "--force-context-length 0 is invalid (force_context_length=0): use an int >= 1",
    # values open_clip accepts and we cannot honour
    "--opt timm/lamb": "--opt timm/lamb is not supported: timm's optimizers are not available here",
    "--report-to tensorboard,mlflow": "--report-to 'tensorboard,mlflow': unknown mlflow; use tensorboard, wandb",
    "--logs None": "--logs None: open_clip's 'store no logs' (which still writes out.log",
    "--aug-cfg use_timm=True": "--aug-cfg {'use_timm': True}: timm augmentation is not supported",
    "--aug-cfg sclae=(0.5,1.0)": "--aug-cfg {'sclae': (0.5, 1.0)}: unknown key 'sclae'",
    # combinations
    "--lr-scheduler const-cooldown": "--lr-scheduler const-cooldown needs --epochs-cooldown N",
    "--lr-scheduler const-cooldown --epochs-cooldown 3 --epochs 2": "--epochs-cooldown 3 is invalid: the cool-down "
    "cannot be longer than the run (--epochs 2); use an int in [1, 2]",
    "--epochs-cooldown 2": "--epochs-cooldown has no effect without --lr-scheduler const-cooldown",
    "--loss-dist-impl shift": "--loss-dist-impl has no effect without --siglip",
    "--lock-image-unlocked-groups 1": "--lock-image-unlocked-groups has no effect without --lock-image",
    "--lock-text-freeze-layer-norm": "--lock-text-freeze-layer-norm has no effect without --lock-text",
    "--zeroshot-languages en,de": "--zeroshot-languages has no effect without --zeroshot-data, --imagenet-val or",
    "--model ViT-B-32 --lock-image --lock-image-unlocked-groups 1 --lock-image-unlocked-blocks 2": (
        "--lock-image-unlocked-groups 1 (open_clip's groups) and --lock-image-unlocked-blocks 2 (our uniform blocks)"
    ),
    # what the architecture decides
    "--model ViT-B-32 --lock-text": "--lock-text on ViT-B-32's Transformer text tower needs "
    "--lock-text-freeze-layer-norm: open_clip locks its LayerNorms like its other weights",
    "--model RN50 --lock-image --lock-image-unlocked-groups 1": "--lock-image-unlocked-groups 1: open_clip locks a "
    "ModifiedResNet image tower only whole (0); --lock-image-unlocked-blocks N",
    "--model ViT-B-32 --pretrained-image": "--pretrained-image: ViT-B-32's image tower is a vit tower; only timm",
    "--model ViT-B-16-SigLIP --pretrained webli --pretrained-image": "--pretrained-image has no effect without no "
    "--pretrained",
    "--model ViT-B-33": "--model ViT-B-33: No model named 'ViT-B-33'. Did you mean 'ViT-B-32'",
    "--force-image-size 224 224 3": "--force-image-size 224 224 3: give one side, or height and width",
    "--image-std 0.2 0.3": "--image-std 0.2 0.3: give one value, or one per RGB channel",
}


@pytest.mark.parametrize("line", list(REFUSED))
def test_refusals_name_the_flag_and_the_reason(line, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(line.split())
    assert exit_info.value.code == 2  # argparse's usage error
    assert REFUSED[line] in capsys.readouterr().err


def test_a_bad_flag_stops_the_run_before_anything_is_built(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--dataset-type", "synthetic", "--accum-freq", "0", "--logs", str(tmp_path), "--name", "run"])
    assert "--accum-freq 0 is invalid" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # no run folder, no model, no data


def _local_dir(folder, text: dict) -> str:
    """A local-dir: model folder with an open_clip_config.json (no weights: it would start from random ones)."""
    folder.mkdir()
    vision = {"image_size": 32, "patch_size": 16, "width": 32, "layers": 2, "head_width": 16}
    cfg = {"model_cfg": {"embed_dim": 16, "vision_cfg": vision, "text_cfg": text}, "preprocess_cfg": {}}
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    return f"local-dir:{folder}"


def test_a_local_dir_model_is_checked_through_its_config_file(tmp_path, capsys):
    model = _local_dir(tmp_path / "m", {"context_length": 16, "width": 32, "heads": 2, "layers": 2})
    assert parse_args(["--model", model, "--lock-text", "--lock-text-freeze-layer-norm"]).lock.lock_text
    with pytest.raises(SystemExit):
        parse_args(["--model", model, "--lock-text"])
    assert "Transformer text tower needs --lock-text-freeze-layer-norm" in capsys.readouterr().err
    (tmp_path / "m" / "open_clip_config.json").write_text("{not json")
    with pytest.raises(SystemExit):
        parse_args(["--model", model])
    assert "open_clip_config.json is not valid JSON" in capsys.readouterr().err


def test_a_hub_model_waits_for_its_build_to_be_checked():
    """An hf-hub: config lives on the hub: parsing reads nothing (the library checks the same rules at build)."""
    cfg = parse_args(["--model", "hf-hub:org/not-fetched", "--lock-text"])
    assert cfg.lock.lock_text and cfg.model.model == "hf-hub:org/not-fetched"
