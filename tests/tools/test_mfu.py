"""MFU in the benchmarks (bench/mfu.py): the FLOP count is the matrix work done, the peak is a real measurement, and
`bench.run --mfu` writes FLOP/s and an MFU between 0 and 1 for both sides. The cuda test runs the card-filling
ViT-B-16 step's path on a GPU (scripts/gpu_check.sh runs it)."""

from __future__ import annotations

import json

import pytest
import torch
from bench import mfu
from bench.harness import OURS, REFERENCE, SIDES
from bench.run import main


def test_flops_are_counted_for_products_forward_and_backward():
    a = torch.randn(16, 32, requires_grad=True)
    b = torch.randn(32, 8)
    assert mfu.count_flops(lambda: a @ b) == 2 * 16 * 32 * 8
    assert mfu.count_flops(lambda: (a @ b).sum().backward()) == 2 * (2 * 16 * 32 * 8)  # + grad of a (b is fixed)


def test_peak_is_the_best_of_measured_products():
    peak = mfu.matmul_peak("cpu", size=256, repeats=3)
    assert peak["dtype"] == "bfloat16" and peak["size"] == 256
    assert peak["flop_per_s"] == pytest.approx(2 * 256**3 / peak["best_s"])
    assert 1e8 < peak["flop_per_s"] < 1e14  # a CPU core does between 0.1 GFLOP/s and 100 TFLOP/s


def test_run_reports_flops_and_mfu_of_both_sides(tmp_path):
    out = tmp_path / "tiny.json"
    main(["--suite", "tiny", "--only", "clip loss", "--mfu", "--repeats", "1", "--no-memory", "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["peak"]["flop_per_s"] > 0
    (result,) = report["results"]
    batch, dim = 256, 512
    assert result["flops_executed"][OURS] >= 3 * 2 * batch * batch * dim  # logits forward, two products backward
    assert result["model_flops_per_call"] == result["flops_executed"][REFERENCE]
    for side in SIDES:
        assert 0 < result[side]["mfu"] < 1
        assert result[side]["flop_per_s"] == pytest.approx(result["model_flops_per_call"] / result[side]["median_s"])
    assert result[OURS]["mfu"] / result[REFERENCE]["mfu"] == pytest.approx(result["speed_ratio"])


def test_the_gpu_suite_has_a_card_filling_vit_b16_step_of_the_batch_asked():
    from bench.run import suite

    names = [case.name for case in suite("gpu", "cuda", fill_batch=384)]
    assert "train step ViT-B-16 b384 amp_bf16" in names


@pytest.mark.cuda
def test_vit_b16_bf16_step_mfu_on_the_gpu(tmp_path):
    out = tmp_path / "gpu.json"
    argv = ["--suite", "gpu", "--device", "cuda", "--only", "ViT-B-16 b64", "--fill-batch", "64", "--mfu"]
    main([*argv, "--repeats", "3", "--no-memory", "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["peak"]["flop_per_s"] > 1e13  # any recent NVIDIA GPU does more than 10 bf16 TFLOP/s
    (result,) = report["results"]
    assert result["model_flops_per_call"] > 64 * 3 * 17.5e9  # ViT-B-16 image tower alone: 17.5 GFLOPs per image
    for side in SIDES:
        assert 0 < result[side]["mfu"] < 1
