"""Trainer collaborators in isolation: command line, precision, devices, optimizer groups, schedules,
contrastive accumulation, retrieval ranks and zero-shot set selection."""

from __future__ import annotations

import copy
import json
import shlex

import pytest
import torch

import open_mclip
from open_mclip.loss import ClipLoss
from open_mclip.precision import Precision
from training.accumulation import accumulated_backward
from training.config import ScheduleArgs
from training.devices import available_devices, get_device
from training.evaluate import retrieval_ranks
from training.optim import no_decay_names, param_groups
from training.params import build_parser, parse_args
from training.scheduler import lr_factor
from training.zero_shot_eval import ZeroShotSet, zero_shot_sets


def test_open_clip_command_line_parses_into_groups():
    cfg = parse_args(
        shlex.split(
            "--train-data /d/{000..009}.tar::/e/{0..3}.tar --train-data-upsampling-factors 1::2 "
            "--train-num-samples 1000 "
            "--dataset-resampled --batch-size 32 --model ViT-B-32 --pretrained laion2b_s34b_b79k --lr 1e-3 --wd 0.1 "
            "--warmup 100 --epochs 3 --precision amp_bf16 --local-loss --gather-with-grad --lock-image "
            "--lock-image-unlocked-groups 2 --accum-freq 4 --grad-clip-norm 1.0 --seed 7 --save-frequency 2 "
            "--resume latest --report-to tensorboard --force-image-size 256 --image-mean 0.5 0.5 0.5 "
            "--aug-cfg scale='(0.8, 1.0)' color_jitter_prob=0.5"
        )
    )
    assert cfg.data.train_data == "/d/{000..009}.tar::/e/{0..3}.tar" and cfg.data.batch_size == 32
    assert cfg.model.model == "ViT-B-32" and cfg.model.force_image_size == 256
    assert cfg.model.image_mean == (0.5, 0.5, 0.5) and cfg.model.aug_cfg == {
        "scale": (0.8, 1.0),
        "color_jitter_prob": 0.5,
    }
    assert cfg.optim.lr == 1e-3 and cfg.optim.accum_freq == 4 and cfg.optim.grad_clip_norm == 1.0
    assert cfg.system.precision == "amp_bf16" and cfg.system.seed == 7 and cfg.data.seed == 7
    assert cfg.loss.local_loss and cfg.loss.gather_with_grad and cfg.lock.lock_image_unlocked_groups == 2
    assert cfg.checkpoint.resume == "latest" and cfg.checkpoint.save_frequency == 2
    assert parse_args([]).optim.wd == 0.2  # open_clip's defaults


@pytest.mark.parametrize("flag", ["--horovod", "--torchscript", "--remote-sync s3://x", "--wandb-project-name p"])
def test_unsupported_open_clip_flags_fail_clearly(flag, capsys):
    with pytest.raises(SystemExit):
        parse_args(flag.split())
    assert "open_clip flag open_mclip does not support" in capsys.readouterr().err


def test_help_groups_flags_by_theme():
    text = build_parser().format_help()
    for group in ("data:", "model:", "optim:", "schedule:", "checkpoint:", "eval:", "logging:"):
        assert group in text


def test_precision_modes():
    assert Precision.parse("amp").needs_scaler and Precision.parse("amp").autocast_dtype == torch.float16
    assert not Precision.parse("amp_bfloat16").needs_scaler
    assert Precision.parse("pure_bf16").input_dtype == torch.bfloat16
    with pytest.raises(ValueError, match="fp8"):
        Precision.parse("fp8")


def test_unavailable_device_names_the_ones_that_exist():
    assert "cpu" in available_devices()
    if "cuda" not in available_devices():
        with pytest.raises(ValueError, match=r"--device cuda .* not available here; available: \['cpu'\]"):
            get_device("cuda")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        get_device("tpu")
    assert get_device("cpu").dist_backend == "gloo"


def test_no_weight_decay_on_gains_biases_embeddings_and_scale():
    model = open_mclip.CLIP(open_mclip.get_model_config("mclip-tiny"))
    skip = no_decay_names(model)
    for name in ("logit_scale", "text.token_embedding.weight", "text.positional_embedding",
                 "visual.class_embedding", "visual.positional_embedding", "visual.ln_pre.weight",
                 "visual.transformer.resblocks.0.attn.in_proj_bias"):  # fmt: skip
        assert name in skip, name
    assert "visual.transformer.resblocks.0.attn.in_proj_weight" not in skip
    groups = param_groups(model, weight_decay=0.2)
    assert groups[0]["weight_decay"] == 0.0 and groups[1]["weight_decay"] == 0.2
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_schedules_match_open_clip():
    from open_clip_train.scheduler import const_lr, const_lr_cooldown, cosine_lr

    class _Opt:
        param_groups = [{"lr": 0.0}]

    total, warmup = 100, 10
    for name, ref in (
        ("cosine", cosine_lr(_Opt, 0.1, warmup, total)),
        ("const", const_lr(_Opt, 0.1, warmup, total)),
        ("const-cooldown", const_lr_cooldown(_Opt, 0.1, warmup, total, 30, 1.5, 0.01)),
    ):
        cfg = ScheduleArgs(warmup=warmup, lr_scheduler=name, lr_cooldown_power=1.5, lr_cooldown_end=0.01)
        for step in range(total):
            expected = ref(step)
            ours = lr_factor(step, cfg=cfg, total_steps=total, cooldown_steps=30, base_lr=0.1)
            assert ours == pytest.approx(expected, abs=1e-12), (name, step)


def test_accumulation_gives_the_update_of_the_whole_batch():
    """--accum-freq 4 with batch B gives the gradients, and so the update, of one batch of 4B (to 1e-5).

    SGD shows the update: Adam's first step is lr * sign(grad), which turns float noise on parameters whose true
    gradient is zero (the key bias of attention) into full-size steps of either sign."""
    torch.manual_seed(0)
    base = open_mclip.CLIP(open_mclip.get_model_config("mclip-tiny")).train()
    images = torch.randn(16, 3, 32, 32)
    texts = torch.randint(1, 49000, (16, 77))
    texts[:, 9] = 49407
    loss_fn = ClipLoss()

    whole = copy.deepcopy(base)
    opt_whole = torch.optim.SGD(whole.parameters(), lr=0.1)
    loss_whole = loss_fn(*whole(images, texts))
    loss_whole.backward()
    opt_whole.step()

    accum = copy.deepcopy(base)
    opt_accum = torch.optim.SGD(accum.parameters(), lr=0.1)
    micro = [(images[i : i + 4], texts[i : i + 4]) for i in range(0, 16, 4)]
    loss_accum = accumulated_backward(
        accum, micro, loss_fn, autocast=lambda: torch.autocast("cpu", enabled=False), backward=torch.Tensor.backward
    )
    grads = {n: p.grad.clone() for n, p in accum.named_parameters()}
    opt_accum.step()

    assert loss_accum.item() == pytest.approx(loss_whole.item(), abs=1e-5)
    for name, param in whole.named_parameters():
        torch.testing.assert_close(grads[name], param.grad, atol=1e-5, rtol=1e-4, msg=name)
    for (name, a), b in zip(whole.named_parameters(), accum.parameters()):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0, msg=name)


def test_retrieval_ranks_match_a_naive_ranking():
    torch.manual_seed(1)
    queries = torch.nn.functional.normalize(torch.randn(50, 8), dim=-1)
    candidates = torch.nn.functional.normalize(queries + 0.8 * torch.randn(50, 8), dim=-1)
    ranks = retrieval_ranks(queries, candidates, chunk=7)
    for i in range(50):
        order = sorted(range(50), key=lambda j: -float(queries[i] @ candidates[j]))
        assert ranks[i].item() == order.index(i)


def test_zero_shot_languages_are_checked(tmp_path):
    names, templates = tmp_path / "names.json", tmp_path / "templates.json"
    names.write_text(json.dumps({"en": ["zero", "one"], "ja": ["ゼロ", "いち"]}))
    templates.write_text(json.dumps({"en": ["a photo of {}"], "ja": ["{}の写真"]}))
    sets = zero_shot_sets(str(names), str(templates), "ja", folders=["0", "1"])
    assert sets == {"ja": ZeroShotSet(["ゼロ", "いち"], ["{}の写真"])}
    with pytest.raises(ValueError, match="--zeroshot-languages xx not found; the files have: en, ja"):
        zero_shot_sets(str(names), str(templates), "en,xx", folders=["0", "1"])
