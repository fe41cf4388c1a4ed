"""The command line: an open_clip command line parses into the config groups, every open_clip flag is ours (with
open_clip's default and choices) or refused with a reason, and every flag documents itself in --help."""

from __future__ import annotations

import argparse
import dataclasses
import shlex

import pytest

from open_mclip.precision import PRECISION_CHOICES
from training.config import TrainConfig
from training.params import UNSUPPORTED, build_parser, parse_args

# where we differ from open_clip 3.3 on purpose
OUR_DEFAULTS = {"--device": "auto"}  # open_clip: "cuda"; ours picks cuda, then hpu, mps, cpu
OUR_CHOICES = {"--image-interpolation": ("bicubic", "bilinear", "nearest")}  # open_clip: bicubic, bilinear, random


def test_open_clip_command_line_parses_into_groups():
    line = (
        "--train-data /d/{000..009}.tar::/e/{0..3}.tar --train-data-upsampling-factors 1::2 --train-num-samples 1000 "
        "--dataset-resampled --batch-size 32 --model ViT-B-32 --pretrained laion2b_s34b_b79k --lr 1e-3 --wd 0.1 "
        "--warmup 100 --epochs 3 --precision amp_bf16 --local-loss --gather-with-grad --lock-image "
        "--lock-image-unlocked-groups 2 --accum-freq 4 --grad-clip-norm 1.0 --seed 7 --save-frequency 2 "
        "--resume latest --report-to tensorboard --force-image-size 256 --image-mean 0.5 0.5 0.5 "
        "--aug-cfg scale='(0.8, 1.0)' color_jitter_prob=0.5"
    )
    cfg = parse_args(shlex.split(line))
    assert cfg.data.train_data == "/d/{000..009}.tar::/e/{0..3}.tar" and cfg.data.batch_size == 32
    assert cfg.model.model == "ViT-B-32" and cfg.model.force_image_size == 256
    assert cfg.model.image_mean == (0.5, 0.5, 0.5)
    assert cfg.model.aug_cfg == {"scale": (0.8, 1.0), "color_jitter_prob": 0.5}
    assert cfg.optim.lr == 1e-3 and cfg.optim.accum_freq == 4 and cfg.optim.grad_clip_norm == 1.0
    assert cfg.system.precision == "amp_bf16" and cfg.system.seed == 7 and cfg.data.seed == 7
    assert cfg.loss.local_loss and cfg.loss.gather_with_grad and cfg.lock.lock_image_unlocked_groups == 2
    assert cfg.checkpoint.resume == "latest" and cfg.checkpoint.save_frequency == 2
    assert parse_args([]) == TrainConfig()  # no flag: the dataclass defaults
    assert parse_args(["--no-drop-last"]).data.drop_last is False  # a flag that defaults to on can be turned off


def _open_clip_parser() -> argparse.ArgumentParser:
    """open_clip_train's real parser (its parse_args builds it inside and parses at once)."""
    from open_clip_train import params

    built = {}
    real = argparse.ArgumentParser.parse_args

    def keep(self, args=None, namespace=None):
        built["parser"] = self
        return real(self, args, namespace)

    argparse.ArgumentParser.parse_args = keep
    try:
        params.parse_args([])
    finally:
        argparse.ArgumentParser.parse_args = real
    return built["parser"]


def test_every_open_clip_flag_is_ours_with_its_default_and_choices_or_refused():
    ours = {flag: action for action in build_parser()._actions for flag in action.option_strings}
    defaults = {}
    for group in dataclasses.fields(TrainConfig):
        defaults.update(dataclasses.asdict(getattr(TrainConfig(), group.name)))
    for action in _open_clip_parser()._actions:
        for flag in action.option_strings:
            if flag in ("-h", "--help"):
                continue
            assert flag in ours, f"open_clip's {flag} is neither a flag here nor refused with a reason"
            if flag[2:] in UNSUPPORTED:
                continue
            default = tuple(action.default) if isinstance(action.default, list) else action.default
            assert defaults[action.dest] == OUR_DEFAULTS.get(flag, default), flag
            if action.choices is not None:
                assert set(ours[flag].choices) == set(OUR_CHOICES.get(flag, action.choices)), flag


@pytest.mark.parametrize("flag", ["--horovod", "--torchscript", "--distill-model x", "--use-bnb-linear x"])
def test_unsupported_open_clip_flags_fail_clearly(flag, capsys):
    with pytest.raises(SystemExit):
        parse_args(flag.split())
    assert "open_clip flag open_mclip does not support" in capsys.readouterr().err


def test_every_flag_has_help_and_the_groups_say_what_they_hold():
    parser = build_parser()
    flags = [a for a in parser._actions if a.option_strings and a.help != argparse.SUPPRESS]
    assert len(flags) > 80
    empty = [a.option_strings[0] for a in flags if not (a.help or "").strip()]
    assert not empty, f"flags without help: {empty}"
    titles = {g.title: g.description for g in parser._action_groups}
    for group in dataclasses.fields(TrainConfig):
        description = titles[group.name]
        assert description and "(" not in description.split(":")[0], (group.name, description)  # a sentence
    text = parser.format_help()
    assert "--lr-text LR_TEXT" in text and "peak learning rate of the text tower" in text


def test_choices_come_from_the_tables_they_name():
    actions = {a.dest: a for a in build_parser()._actions}
    assert tuple(actions["precision"].choices) == PRECISION_CHOICES  # open_mclip.precision's one table
    with pytest.raises(SystemExit):
        parse_args(["--precision", "fp8"])
