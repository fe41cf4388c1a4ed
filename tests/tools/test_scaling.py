"""The scaling curves (bench/scaling.py): both sides compute the same thing at every kind of work, the distributed
loss equals the single-process loss on the full batch, a size that would not fit is skipped with its reason, and
the report draws what the JSON holds. Tiny sizes: no timing is asserted."""

from __future__ import annotations

import json

import pytest
import torch
import torch.distributed as dist
from bench import cases, scaling, scaling_cases, scaling_dist, scaling_report
from bench.harness import OURS, REFERENCE, SIDES


def test_zero_shot_sides_agree_and_the_check_sees_other_weights():
    calls = scaling_cases.zero_shot(sides=SIDES, classes=12, templates=2, images=200)
    reference = calls[REFERENCE]()
    scaling._same_scores(reference, calls[OURS]())
    assert reference[-1] >= reference[-2] > 0  # top-5 hits at least top-1 hits; random features still hit some
    net = calls[OURS].args[0]  # the partial's model: weights a little off the reference's must be told apart
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(0.1 * parameter.abs().mean() * torch.randn(parameter.shape, generator=generator))
    with pytest.raises(AssertionError):
        scaling._same_scores(reference, calls[OURS]())


def test_retrieval_recall_is_the_same_and_neither_zero_nor_one():
    calls = scaling_cases.retrieval(sides=SIDES, pairs=300, dim=64, noise=2.0)
    reference = calls[REFERENCE]()
    cases.same(reference, calls[OURS]())
    assert 0 < reference[0] < 1 and torch.all(reference[:3].diff() >= 0)  # R@1 <= R@5 <= R@10


@pytest.fixture
def one_rank_group(free_port):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_the_distributed_check_refuses_gradients_off_the_single_process_ones(one_rank_group):
    from open_mclip.loss import ClipLoss

    image, text = scaling_dist.features(64, 32)
    loss, image_grad, text_grad = scaling_dist._step(ClipLoss(), image, text)
    scaling_dist.check_against_single_process((loss, image_grad, text_grad), image, text)
    with pytest.raises(AssertionError, match="single-process"):
        scaling_dist.check_against_single_process((loss, image_grad * 1.01, text_grad), image, text)


@pytest.mark.distributed  # two spawned gloo ranks
def test_gather_with_grad_over_two_processes_times_both_sides_after_checking_them():
    measured = scaling_dist.distributed_loss(batch=128, sides=SIDES, dim=32, repeats=2, warmup=0, memory=False)
    for side in SIDES:
        assert len(measured[side]["seconds"]) == 2 and min(measured[side]["seconds"]) > 0


def fake_measure(sweep, size, sides, *, device, repeats):
    """Peak MiB of size^2 / 1000 for open_clip and size / 10 for ours; open_clip twice as slow."""
    peaks = {REFERENCE: size**2 / 1000, OURS: size / 10}
    return {
        side: {"seconds": [1.0], "median_s": 2.0 if side == REFERENCE else 1.0, "peak_extra_mib": peaks[side]}
        for side in sides
    }


def test_a_size_predicted_past_the_budget_is_skipped_with_its_reason(monkeypatch):
    monkeypatch.setattr(scaling, "_measure", fake_measure)
    sweep = scaling.SWEEPS["retrieval"]  # open_clip grows as size^2, ours as size
    rows = scaling.run_sweep(sweep, sizes=(100, 1000, 10_000), device="cpu", repeats=1, budget_gib=2)
    first, second, third = rows
    assert first["speed_ratio"] == 2.0 and first["memory_ratio"] == pytest.approx(10 / 10)
    assert second["method"] == "alternating"  # open_clip: predicted 10 MiB x 100 = 1000 MiB -> 1000 measured
    assert "exceeds the" not in json.dumps(second)
    assert "predicted 97.7 GiB" in third[REFERENCE]["skipped"] and third[OURS]["peak_extra_mib"] == 1000
    assert third["method"] == "alone, one call" and "speed_ratio" not in third


def test_the_report_tables_and_plots_what_was_measured(monkeypatch, tmp_path):
    monkeypatch.setattr(scaling, "_measure", fake_measure)
    out = tmp_path / "scaling-retrieval.json"
    scaling.main(["retrieval", "--sizes", "100,1000", "--budget-gib", "2", "--out", str(out)])
    # a later run adds a size: the sizes before it stay, and they predict its memory
    report = scaling.main(["retrieval", "--sizes", "10000", "--budget-gib", "2", "--out", str(out), "--append"])
    assert [row["size"] for row in report["rows"]] == [100, 1000, 10_000] and len(report["commands"]) == 2
    text = scaling_report.main(["--results", str(tmp_path), "--png", str(tmp_path / "scaling.png")])
    assert "| 100 | 2 | 1 | 2.00 | 10 | 10 | 1.00 |" in text
    assert "| 10,000 | not run | 1 | - | not run | 1000 | - |" in text and "open_clip at 10,000: predicted" in text
    assert (tmp_path / "scaling.png").read_bytes()[:4] == b"\x89PNG"
