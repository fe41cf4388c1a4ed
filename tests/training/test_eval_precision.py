"""Evaluation under every precision: validation (--val-data) and zero-shot (--zeroshot-data) place their inputs
through the same `Placement` as training, so 16-bit weights (bf16, fp16, pure_*) receive 16-bit images."""

from __future__ import annotations

import json
import math

import pytest

from open_mclip.precision import PRECISION_CHOICES
from training.main import main

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="module")
def zero_shot_files(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("zero_shot_files")
    (folder / "names.json").write_text(json.dumps(DIGITS))
    (folder / "templates.json").write_text(json.dumps(["a photo of the number {}."]))
    return ["--zeroshot-classnames", str(folder / "names.json"), "--zeroshot-templates", str(folder / "templates.json")]


def _evaluate(precision: str, logs, mnist_folder, zero_shot_files) -> dict:
    flags = "--dataset-type synthetic --synthetic-image-size 32 --val-num-samples 16 --batch-size 8 --model mclip-tiny"
    return main(
        [*flags.split(), *f"--workers 0 --device cpu --seed 0 --precision {precision}".split()]
        + ["--zeroshot-data", str(mnist_folder), *zero_shot_files, "--logs", str(logs), "--name", precision]
    )


@pytest.fixture(scope="module")
def fp32(tmp_path_factory, mnist_folder, zero_shot_files) -> dict:
    return _evaluate("fp32", tmp_path_factory.mktemp("fp32"), mnist_folder, zero_shot_files)


@pytest.mark.e2e
@pytest.mark.parametrize("precision", [p for p in PRECISION_CHOICES if p != "fp32"])
def test_evaluation_runs_under_every_precision(precision, tmp_path, mnist_folder, zero_shot_files, fp32):
    results = _evaluate(precision, tmp_path, mnist_folder, zero_shot_files)
    val, zero_shot = results["val"], results["zeroshot"]
    assert val["num_samples"] == 16 and zero_shot["num_images"] == 41
    # the same random weights in 16 bits: the loss moves by rounding only, accuracy by a few images at most
    assert math.isfinite(val["val_loss"]) and val["val_loss"] == pytest.approx(fp32["val"]["val_loss"], rel=0.02)
    assert abs(zero_shot["default_top1"] - fp32["zeroshot"]["default_top1"]) <= 3 / 41


def test_evaluation_frees_the_weight_casts_inference_kept():
    """Zero-shot and validation under bf16 autocast keep 16-bit copies of the weights (layers.autocast_weight); the
    evaluator frees them, so they do not sit beside the next epoch's training."""
    import torch

    from open_mclip import create_model
    from open_mclip.layers import drop_autocast_weights, kept_weights
    from training.config import EvalConfig
    from training.distributed import World
    from training.eval import Evaluator

    model = create_model("mclip-tiny").eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model.encode_text(torch.randint(1, 1000, (2, 77)))
    evaluator = Evaluator(
        EvalConfig(),
        plan=(),
        val=None,
        siglip=False,
        tokenizer=None,
        preprocess=None,
        placement=None,
        world=World(),
        logger=None,
        workers=0,
    )
    kept = kept_weights(model)
    assert kept > 0
    evaluator(model, epoch=1, final=False)
    assert drop_autocast_weights(model) == 0
