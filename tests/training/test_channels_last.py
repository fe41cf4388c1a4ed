"""Channels-last ResNet image towers in the trainer: on by default where the device gains from it (the CPU here),
the same training as the NCHW layout, checkpoints in the ordinary layout, resumes exact.

The layout has one trap this file pins down: torch's fused AdamW on the CPU reads a parameter and its moments as if
they had the same strides, so moments loaded from a checkpoint (contiguous) into a channels-last parameter would
give wrong updates without any error, unless `Stepper.load_state_dict` re-lays them."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch

from open_mclip.precision import Precision
from training.checkpoint import load
from training.devices import Device
from training.main import main
from training.stepper import Stepper, match_param_layouts

CL = torch.channels_last


def _conv_steps(param: torch.nn.Parameter, grads: list[torch.Tensor], *, state: dict | None = None):
    """Fused AdamW steps on one parameter through a Stepper (its optimizer state loaded from `state` first)."""
    stepper = Stepper(
        torch.optim.AdamW([param], lr=0.1, weight_decay=0.1, fused=True),
        device=Device(),
        precision=Precision.parse("fp32"),
        grad_clip_norm=None,
    )
    if state is not None:
        stepper.load_state_dict({"optimizer": state, "scaler": None})
    for grad in grads:
        param.grad = torch.empty_like(param).copy_(grad)  # in the parameter's layout, as autograd gives it
        stepper.step()
    return stepper


def test_moments_loaded_into_a_channels_last_parameter_take_its_layout():
    torch.manual_seed(0)
    start, grads = torch.randn(8, 4, 3, 3), [torch.randn(8, 4, 3, 3) for _ in range(4)]
    plain = torch.nn.Parameter(start.clone())
    saved = _conv_steps(plain, grads[:2]).state_dict()["optimizer"]  # as a checkpoint holds it: contiguous
    _conv_steps(plain, grads[2:], state=copy.deepcopy(saved))
    nhwc = torch.nn.Parameter(start.clone())
    _conv_steps(nhwc, grads[:2])
    nhwc.data = nhwc.data.contiguous(memory_format=CL)  # as set_channels_last lays out a conv weight
    stepper = _conv_steps(nhwc, grads[2:], state=saved)
    assert stepper.optimizer.state[nhwc]["exp_avg"].is_contiguous(memory_format=CL)
    torch.testing.assert_close(nhwc.data, plain.data, atol=1e-6, rtol=0)
    assert (nhwc.data - start).abs().max() > 0.1  # the steps moved the weights


def test_layouts_left_alone_when_they_already_match():
    param = torch.nn.Parameter(torch.randn(4, 2, 3, 3).contiguous(memory_format=CL))
    optimizer = torch.optim.AdamW([param])
    moment = torch.zeros_like(param)
    optimizer.state[param] = {"exp_avg": moment, "step": torch.tensor(1.0)}
    match_param_layouts(optimizer)
    assert optimizer.state[param]["exp_avg"] is moment


@pytest.fixture(scope="module")
def table(tmp_path_factory, digit_csv) -> Path:
    return digit_csv(tmp_path_factory.mktemp("digits"), 24)


def _train(logs: Path, name: str, csv: Path, *extra: str) -> dict[str, torch.Tensor]:
    flags = f"--model mclip-tiny-rn --train-data {csv} --batch-size 8 --epochs 2 --workers 0 --precision fp32"
    flags += " --lr 1e-4 --warmup 1 --seed 1 --save-every-n-steps 2 --log-every-n-steps 1 --device cpu"
    main([*flags.split(), "--logs", str(logs), "--name", name, *extra])
    return load(logs / name / "checkpoints" / "epoch_2.pt")["state_dict"]


@pytest.mark.e2e
def test_resnet_runs_channels_last_by_default_and_resumes_exactly(tmp_path, table, one_torch_thread):
    straight = _train(tmp_path, "straight", table)
    assert "ModifiedResNet image tower in channels-last layout" in (tmp_path / "straight" / "out.log").read_text()
    convs = [k for k, v in straight.items() if v.dim() == 4]
    assert convs and all(straight[k].is_contiguous() for k in convs)  # checkpoints in the ordinary layout
    copy = tmp_path / "step_2.pt"
    shutil.copy(tmp_path / "straight" / "checkpoints" / "step_2.pt", copy)
    resumed = _train(tmp_path, "resumed", table, "--resume", str(copy))
    differ = [k for k in straight if not torch.equal(straight[k], resumed[k])]
    assert not differ, f"{len(differ)} tensors differ after the resume, e.g. {differ[:3]}"
    _train(tmp_path, "nchw", table, "--no-channels-last")
    assert "channels-last" not in (tmp_path / "nchw" / "out.log").read_text()
    # the same training to float rounding: every step's loss (weights say less: AdamW lifts a rounding-sized
    # gradient of a near-zero element to a full lr-sized step), and the losses moved far more than the tolerance
    nhwc_losses, nchw_losses = _losses(tmp_path / "straight"), _losses(tmp_path / "nchw")
    assert len(nhwc_losses) == len(nchw_losses) == 6
    assert nchw_losses[0] == pytest.approx(nhwc_losses[0], abs=1e-5)  # the first forward: the same weights
    assert nchw_losses == pytest.approx(nhwc_losses, rel=1e-3)
    assert max(abs(a - b) for a, b in zip(nhwc_losses, nhwc_losses[1:])) > 1e-2


def _losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [row["loss"] for row in rows if row.get("split") == "train"]


def test_channels_last_flag_is_refused_for_a_vision_transformer(tmp_path, tiny_synthetic):
    with pytest.raises(ValueError, match="--channels-last: the VisionTransformer image tower has no convolution"):
        main([*tiny_synthetic(), "--channels-last", "--logs", str(tmp_path), "--name", "vit"])
