"""The command line against open_clip 3.3.0's real parser: every one of its flags is in `OPEN_CLIP_FLAGS` with its
status here, accepted with open_clip's default, type, nargs and choices where the status says so, or refused with a
message that names the flag and the reason; `docs/migrating.md` holds the same table (checked row by row), and every
flag whose meaning differed before names the test that shows its behaviour now.

Statuses: same (every value open_clip accepts means the same here), extended (that, plus more), differs (accepted,
with a documented difference), partial (some values as open_clip's, the others refused with the reason), refused.
Flags another part of issue 12 is building keep their current status; flip their rows when that work lands.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import re
import shlex
from pathlib import Path

import pytest

from open_mclip.precision import PRECISION_CHOICES
from training.config import TrainConfig
from training.params import OPEN_CLIP_MAIN, UNSUPPORTED, build_parser, parse_args

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"

# flag -> (status, what it does here). The docs/migrating.md table has these rows, in this order.
OPEN_CLIP_FLAGS = {
    "--train-data": ("same", "CSV/TSV or WebDataset shards, `::` between sources"),
    "--train-data-upsampling-factors": ("same", "needs `--dataset-resampled`"),
    "--val-data": ("same", ""),
    "--train-num-samples": ("same", "an int >= 1"),
    "--val-num-samples": ("same", "an int >= 1"),
    "--dataset-type": ("same", ""),
    "--dataset-resampled": ("same", ""),
    "--csv-separator": ("same", ""),
    "--csv-img-key": ("same", ""),
    "--csv-caption-key": ("same", ""),
    "--imagenet-val": ("same", "the 1000 wnid folders are checked at start-up; results under `imagenet` (`en_top1`)"),
    "--imagenet-v2": ("same", "open_clip's folder, ImageNet-V2's 0..999 folders or wnid folders; `imagenet-v2`"),
    "--cache-dir": ("same", "for the weights and, as in open_clip, the tokenizer"),
    "--logs": ("partial", "a folder; `None` (open_clip: skip checkpoints and TensorBoard) is refused"),
    "--log-local": ("same", "`out-RANK` on every node's first process"),
    "--name": ("same", "default `DATE-model_M-lr_LR-b_B-j_J-p_P`, as open_clip's"),
    "--workers": ("same", ""),
    "--batch-size": ("same", "an int >= 1"),
    "--epochs": ("same", "an int >= 1"),
    "--epochs-cooldown": ("same", "in [1, --epochs]; only with `--lr-scheduler const-cooldown`"),
    "--lr": ("same", "a number >= 0 (default 5e-4)"),
    "--beta1": ("same", "in [0, 1)"),
    "--beta2": ("same", "in [0, 1); default 0.98 when the model name has 'vit' (our `mclip-*`: a ViT image tower)"),
    "--eps": ("same", "a number > 0; default 1e-6 when the model name has 'vit', as `--beta2`"),
    "--wd": ("same", "a number >= 0"),
    "--momentum": ("refused", "only for timm optimizers, which are refused"),
    "--warmup": ("same", "an int >= 0"),
    "--opt": ("partial", "`adamw`; `timm/...` refused with the reason"),
    "--use-bn-sync": ("same", "SyncBatchNorm under DDP"),
    "--skip-scheduler": ("same", ""),
    "--lr-scheduler": ("same", "cosine, const, const-cooldown, checked at parse time"),
    "--lr-cooldown-end": ("same", "a number >= 0; only with const-cooldown"),
    "--lr-cooldown-power": ("same", "a number > 0; only with const-cooldown"),
    "--save-frequency": ("differs", "0 saves no final `epoch_N.pt` either (open_clip does)"),
    "--save-most-recent": ("same", "written atomically"),
    "--zeroshot-frequency": ("same", "0: never; also for `--zeroshot-data`"),
    "--val-frequency": ("same", "0: never"),
    "--resume": ("extended", "also open_clip_train's checkpoints and fsspec URLs; `latest` here or at the remote"),
    "--precision": ("same", "fp16 and pure_fp16 train without a grad scaler, as open_clip's"),
    "--model": ("same", "an unknown name is refused at parse time with the closest names"),
    "--pretrained": ("same", ""),
    "--pretrained-image": ("same", "timm image towers; refused for other towers and beside `--pretrained`"),
    "--lock-image": ("same", ""),
    "--lock-image-unlocked-groups": ("same", "open_clip's groups per tower type; ours: `--lock-image-unlocked-blocks`"),
    "--lock-image-freeze-bn-stats": ("same", ""),
    "--image-mean": ("same", "1 or 3 values"),
    "--image-std": ("same", "1 or 3 values > 0"),
    "--image-interpolation": ("extended", "also `nearest`"),
    "--image-resize-mode": ("same", ""),
    "--aug-cfg": ("partial", "checked at parse time; timm augmentation (`use_timm`, `re_prob`, `re_count`) refused"),
    "--grad-checkpointing": ("same", "a tower without it is refused at start-up (open_clip ignores it)"),
    "--local-loss": ("same", ""),
    "--gather-with-grad": ("same", ""),
    "--force-context-length": ("same", "an int >= 1"),
    "--force-image-size": ("same", "1 or 2 ints >= 1"),
    "--force-quick-gelu": ("same", ""),
    "--force-patch-dropout": ("same", "in [0, 1)"),
    "--force-custom-text": ("same", "accepted: one model class serves both of open_clip's layouts"),
    "--torchscript": ("refused", "use `--torchcompile`"),
    "--torchcompile": ("same", ""),
    "--trace": ("refused", "use `--torchcompile`"),
    "--accum-freq": ("same", "an int >= 1"),
    "--device": ("differs", "default `auto` (cuda, hpu, mps, cpu); an absent device is an error, not a CPU fallback"),
    "--dist-url": ("same", ""),
    "--dist-backend": ("same", "default: the device's"),
    "--report-to": ("same", "`tensorboard`, `wandb`, both or `all`; an unknown name is refused"),
    "--wandb-notes": ("same", ""),
    "--wandb-project-name": ("same", "a resumed run continues its W&B run"),
    "--debug": ("same", ""),
    "--copy-codebase": ("same", "copies `training` and `open_mclip` to `RUN/code`"),
    "--horovod": ("refused", "use torchrun or srun"),
    "--ddp-static-graph": ("same", ""),
    "--no-set-device-rank": ("same", ""),
    "--seed": ("same", "an int >= 0"),
    "--grad-clip-norm": ("same", "a number > 0"),
    "--lock-text": ("same", "open_clip's rule: a Transformer text tower needs `--lock-text-freeze-layer-norm`"),
    "--lock-text-unlocked-layers": ("same", "open_clip's groups; ours: `--lock-text-unlocked-blocks`"),
    "--lock-text-freeze-layer-norm": ("same", ""),
    "--log-every-n-steps": ("same", "an int >= 1"),
    "--coca-caption-loss-weight": ("refused", "no CoCa models"),
    "--coca-contrastive-loss-weight": ("refused", "no CoCa models"),
    "--remote-sync": ("same", "any fsspec URL, copied in the background; `--resume latest` looks there too"),
    "--remote-sync-frequency": ("same", "seconds, an int >= 1"),
    "--remote-sync-protocol": ("differs", "`s3` is fsspec's s3 filesystem (the `s3` extra), not the aws CLI"),
    "--delete-previous-checkpoint": (
        "differs",
        "only after a newer, finite checkpoint is written (open_clip deletes `epoch_{N-1}.pt` even when it saved none)",
    ),
    "--distill-model": ("refused", "no distillation"),
    "--distill-pretrained": ("refused", "no distillation"),
    "--use-bnb-linear": ("refused", "no bitsandbytes"),
    "--siglip": ("same", "a fresh model starts at logit scale ln 10 and bias -10, as open_clip's trainer builds it"),
    "--loss-dist-impl": ("same", "bidir, shift, reduce, gather; only with `--siglip`"),
}
# flags whose meaning here differed from open_clip's before issue 12, and the test that shows their behaviour now
BEHAVIOUR_TESTS = {
    "--imagenet-v2": "test_imagenet_v2.py::test_imagenet_v2_scores_what_imagenet_val_scores_on_the_same_images",
    "--cache-dir": "test_open_clip_flags.py::test_cache_dir_also_finds_the_tokenizer",
    "--logs": "test_flag_validation.py::test_refusals_name_the_flag_and_the_reason",
    "--log-local": "test_run_folder.py::test_log_local_writes_a_log_file_on_every_node",
    "--name": "test_open_clip_flags.py::test_default_run_name_is_open_clips",
    "--opt": "test_flag_validation.py::test_refusals_name_the_flag_and_the_reason",
    "--use-bn-sync": "test_wrap.py::test_two_ranks_wrap_in_ddp_and_sync_batchnorm_on_request",
    "--zeroshot-frequency": "test_open_clip_flags.py::test_evaluation_frequencies_follow_open_clips_rule",
    "--val-frequency": "test_open_clip_flags.py::test_frequency_zero_never_evaluates",
    "--pretrained-image": "test_open_clip_flags.py::test_pretrained_image_asks_timm_for_its_weights",
    "--lock-image-unlocked-groups": "test_open_clip_flags.py::test_image_tower_locks_as_open_clips_trainer",
    "--image-interpolation": "test_open_clip_flags.py::test_random_interpolation_resizes_bicubic",
    "--aug-cfg": "test_flag_validation.py::test_refusals_name_the_flag_and_the_reason",
    "--force-custom-text": "test_open_clip_flags.py::test_force_custom_text_checkpoint_loads_in_custom_text_clip",
    "--report-to": "test_wandb.py::test_metrics_reach_wandb_at_their_steps_and_a_resumed_run_continues_it",
    "--resume": "test_open_clip_checkpoints.py::test_an_open_clip_train_checkpoint_resumes_here_as_in_open_clip_train",
    "--remote-sync": "test_remote_sync.py::test_a_run_continues_from_its_remote_copy_on_a_machine_without_it",
    "--copy-codebase": "test_run_folder.py::test_copy_codebase_copies_code_that_runs",
    "--no-set-device-rank": "test_wrap.py::test_the_device_index_follows_the_local_rank_unless_told_not_to",
    "--lock-text": "test_open_clip_flags.py::test_text_tower_locks_as_open_clips_trainer",
    "--lock-text-unlocked-layers": "test_open_clip_flags.py::test_text_tower_locks_as_open_clips_trainer",
    "--lock-text-freeze-layer-norm": "test_open_clip_flags.py::test_text_tower_locks_as_open_clips_trainer",
    "--siglip": "test_open_clip_flags.py::test_siglip_starts_as_open_clip_and_trains_a_model_without_a_bias",
}
STATUSES = ("same", "extended", "differs", "partial", "refused")
# our choices where open_clip's parser has none but its code accepts exactly these (or fails later)
CHOICES_OPEN_CLIP_CHECKS_LATER = {"--lr-scheduler", "--loss-dist-impl"}


@functools.cache
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


def _flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {flag: a for a in parser._actions for flag in a.option_strings if flag not in ("-h", "--help")}


def _defaults() -> dict:
    out = {}
    for group in dataclasses.fields(TrainConfig):
        out.update(dataclasses.asdict(getattr(TrainConfig(), group.name)))
    return out


def _kind(action: argparse.Action) -> str:
    """How a flag reads its value: store_true, or the type's name (with nargs)."""
    if action.nargs == 0:
        return "store_true"
    kind = action.type.__name__ if action.type is not None else "str"
    return kind + (f"[{action.nargs}]" if action.nargs not in (None, "?") else "")


def test_the_table_holds_every_open_clip_flag_once():
    theirs = _flags(_open_clip_parser())
    assert len(theirs) == 90 and list(OPEN_CLIP_FLAGS) == list(theirs)  # same flags, open_clip's order
    assert {status for status, _ in OPEN_CLIP_FLAGS.values()} <= set(STATUSES)
    refused = {flag for flag, (status, _) in OPEN_CLIP_FLAGS.items() if status == "refused"}
    assert refused == {f"--{name}" for name in UNSUPPORTED}


@pytest.mark.parametrize("flag", [f for f, (status, _) in OPEN_CLIP_FLAGS.items() if status != "refused"])
def test_accepted_flags_have_open_clips_default_type_and_choices(flag):
    theirs, ours = _flags(_open_clip_parser())[flag], _flags(build_parser())[flag]
    default = tuple(theirs.default) if isinstance(theirs.default, list) else theirs.default
    status = OPEN_CLIP_FLAGS[flag][0]
    if flag == "--device":  # the documented difference: auto picks cuda first, where there is one
        assert (default, _defaults()["device"]) == ("cuda", "auto")
    else:
        assert _defaults()[theirs.dest] == default
    if flag != "--aug-cfg":  # key=value pairs both sides, through their own actions
        assert _kind(ours) == _kind(theirs)
    if theirs.choices is not None and status != "extended":
        assert set(ours.choices) == set(theirs.choices)
    elif theirs.choices is not None:
        assert set(ours.choices) > set(theirs.choices)
    elif ours.choices is not None:
        assert flag in CHOICES_OPEN_CLIP_CHECKS_LATER


@pytest.mark.parametrize("flag", [f for f, (status, _) in OPEN_CLIP_FLAGS.items() if status == "refused"])
def test_refused_flags_name_the_flag_and_the_reason(flag, capsys):
    action = _flags(_open_clip_parser())[flag]
    argv = [flag] if action.nargs == 0 else [flag, "1"]
    with pytest.raises(SystemExit):
        parse_args(argv)
    message = capsys.readouterr().err.strip().splitlines()[-1]
    reason = UNSUPPORTED[flag[2:]]
    assert message.endswith(f"{flag} is an open_clip flag open_mclip does not support: {reason}")
    assert len(reason) > 20


@pytest.mark.parametrize("flag", [f"--{name}" for name in OPEN_CLIP_MAIN])
def test_open_clip_main_layer_decay_names_are_refused_with_the_difference(flag, capsys):
    with pytest.raises(SystemExit):
        parse_args([flag, "0.7"])
    message = capsys.readouterr().err
    assert f"{flag} is an open_clip flag" in message and "ln_post" in message and "--layer-decay-" in message


def test_every_flag_that_differed_has_a_behaviour_test():
    for flag, where in BEHAVIOUR_TESTS.items():
        assert flag in OPEN_CLIP_FLAGS and OPEN_CLIP_FLAGS[flag][0] != "refused", flag
        path, name = where.split("::")
        source = (TESTS / "training" / path).read_text()
        assert re.search(rf"^def {name}\(", source, re.M), f"{flag}: no test {where}"


def markdown_table() -> str:
    """The rows docs/migrating.md must hold (paste this when the table above changes)."""
    rows = ["| open_clip 3.3.0 flag | status | here |", "|---|---|---|"]
    rows += [f"| `{flag}` | {status} | {note} |" for flag, (status, note) in OPEN_CLIP_FLAGS.items()]
    return "\n".join(rows)


def test_docs_hold_the_same_table():
    docs = (ROOT / "docs" / "migrating.md").read_text(encoding="utf-8")
    assert markdown_table() in docs, "docs/migrating.md's flag table is out of date; paste test_params.markdown_table()"


def test_open_clip_command_line_parses_into_groups():
    line = (
        "--train-data /d/{000..009}.tar::/e/{0..3}.tar --train-data-upsampling-factors 1::2 --train-num-samples 1000 "
        "--dataset-resampled --batch-size 32 --model ViT-B-32 --pretrained laion2b_s34b_b79k --lr 1e-3 --wd 0.1 "
        "--warmup 100 --epochs 3 --precision amp_bf16 --local-loss --gather-with-grad --lock-image "
        "--lock-image-unlocked-groups 2 --accum-freq 4 --grad-clip-norm 1.0 --seed 7 --save-frequency 2 "
        "--resume latest --report-to tensorboard --force-image-size 256 --image-mean 0.5 0.5 0.5 "
        "--aug-cfg scale='(0.8, 1.0)' color_jitter_prob=0.5 color_jitter='(0.4, 0.4, 0.4, 0.1)' --force-custom-text "
        "--log-local --imagenet-v2 /data/imagenetv2 --copy-codebase"
    )
    cfg = parse_args(shlex.split(line))
    assert cfg.data.train_data == "/d/{000..009}.tar::/e/{0..3}.tar" and cfg.data.batch_size == 32
    assert cfg.model.model == "ViT-B-32" and cfg.model.force_image_size == 256
    assert cfg.model.image_mean == (0.5, 0.5, 0.5) and cfg.model.force_custom_text
    assert cfg.model.aug_cfg == {"scale": (0.8, 1.0), "color_jitter_prob": 0.5, "color_jitter": (0.4, 0.4, 0.4, 0.1)}
    assert cfg.optim.lr == 1e-3 and cfg.optim.accum_freq == 4 and cfg.optim.grad_clip_norm == 1.0
    assert cfg.system.precision == "amp_bf16" and cfg.system.seed == 7 and cfg.data.seed == 7
    assert cfg.loss.local_loss and cfg.loss.gather_with_grad and cfg.lock.lock_image_unlocked_groups == 2
    assert cfg.checkpoint.resume == "latest" and cfg.checkpoint.save_frequency == 2
    assert cfg.logging.log_local and cfg.logging.copy_codebase and cfg.eval.imagenet_v2 == "/data/imagenetv2"
    assert parse_args([]) == TrainConfig()  # no flag: the dataclass defaults
    assert parse_args(["--no-drop-last"]).data.drop_last is False  # a flag that defaults to on can be turned off


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


def test_our_siglip_distributed_variants_are_open_clips():
    """--loss-dist-impl: open_clip's parser takes any string and its SigLipLoss refuses unknown ones later."""
    from open_clip.loss import SigLipLoss

    for impl in _flags(build_parser())["--loss-dist-impl"].choices:
        SigLipLoss(dist_impl=impl)  # accepted by open_clip's loss
    with pytest.raises(AssertionError):
        SigLipLoss(dist_impl="ring")
