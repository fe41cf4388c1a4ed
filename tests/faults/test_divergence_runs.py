"""Divergence on real MNIST shards: `--lr 1e6` (fp32, pure_bf16) stops the run with a message naming the steps and
the last good checkpoint and exit status 3, leaves only finite checkpoints, and `--resume latest` continues from that
one; a NaN loss at one step is skipped and counted and the run goes on; under amp the grad scaler's skips are reported
and stop the run (the issue's failure 1: before, each of these ran on, exited 0 and wrote NaN weights)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

import training.main
from training.checkpoint import load, model_state, non_finite
from training.divergence import DIVERGED_EXIT_CODE, TrainingDiverged
from training.main import main


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _checkpoints_are_finite(run: Path) -> list[str]:
    names = sorted(p.name for p in (run / "checkpoints").glob("*.pt"))
    for name in names:
        assert not non_finite(model_state(load(run / "checkpoints" / name))), name
    assert not list((run / "checkpoints").glob("*.tmp"))
    return names


@pytest.mark.e2e
@pytest.mark.parametrize("precision", ["fp32", "pure_bf16"])
def test_lr_1e6_stops_the_run_naming_the_steps_and_leaves_only_finite_checkpoints(
    tmp_path, train_flags, precision, one_torch_thread
):
    extra = f"--precision {precision} --lr 1e6 --save-every-n-steps 1 --save-most-recent --delete-previous-checkpoint"
    with pytest.raises(TrainingDiverged) as stop:
        main(train_flags(logs=tmp_path, name="run", extra=extra))
    assert stop.value.code == DIVERGED_EXIT_CODE
    run = tmp_path / "run"
    rows = [r for r in _rows(run) if r["split"] == "train"]
    first_bad = next(r["step"] for r in rows if r["nonfinite_steps"])
    assert rows[-1]["step"] == first_bad + 2 and rows[-1]["nonfinite_steps_total"] == 3
    assert f"steps {first_bad} to {first_bad + 2} (3 in a row)" in str(stop.value)
    good = run / "checkpoints" / f"step_{first_bad - 1}.pt"
    assert f"The last good checkpoint is {good} (step {first_bad - 1})" in str(stop.value)
    assert _checkpoints_are_finite(run) == [good.name]  # nothing written after the first non-finite step


@pytest.mark.e2e
def test_resume_latest_after_a_divergence_continues_from_the_last_good_checkpoint(
    tmp_path, train_flags, one_torch_thread
):
    keep = "--save-every-n-steps 2 --save-most-recent --delete-previous-checkpoint"
    main(train_flags(logs=tmp_path, name="run", extra=f"--epochs 1 {keep}"))  # a good epoch: 8 steps
    with pytest.raises(TrainingDiverged) as stop:  # then the learning rate is raised far too high
        main(train_flags(logs=tmp_path, name="run", extra=f"--resume latest --lr 1e12 {keep}"))
    run, message = tmp_path / "run", str(stop.value)
    good = int(re.search(r"\(step (\d+)\): resume from it", message).group(1))  # the last good checkpoint
    first_bad = int(re.search(r"steps (\d+) to \d+ \(3 in a row\)", message).group(1))
    # at lr 1e12 the first step is already non-finite (at 1e6 two more finite steps can ruin the weights, and the
    # checkpoint of step 10 would then be "good" but not worth resuming)
    assert good == 8 < first_bad
    names = _checkpoints_are_finite(run)
    steps = {load(run / "checkpoints" / name)["step"] for name in names}
    assert max(steps) == good and all(step < first_bad for step in steps)  # nothing of the diverged steps
    results = main(train_flags(logs=tmp_path, name="run", extra=f"--resume latest {keep}"))
    assert f"step {good}" in (run / "out.log").read_text().rsplit("resumed from", 1)[1].splitlines()[0]
    assert results["train"]["step"] == 16 and results["train"]["nonfinite_steps_total"] == 0
    final = load(run / "checkpoints" / "epoch_2.pt")
    assert final["step"] == 16 and not non_finite(model_state(final))


@pytest.mark.e2e
def test_a_nan_loss_at_one_step_is_skipped_and_counted_and_the_run_goes_on(
    tmp_path, train_flags, monkeypatch, one_torch_thread
):
    real_loss = training.main.training_loss

    def poisoned(*args, **kwargs):
        loss_fn, calls = real_loss(*args, **kwargs), []

        def loss(*inputs):
            calls.append(1)
            value = loss_fn(*inputs)
            return value * float("nan") if len(calls) == 5 else value  # step 5's loss

        return loss

    monkeypatch.setattr(training.main, "training_loss", poisoned)
    results = main(train_flags(logs=tmp_path, name="run", extra="--save-every-n-steps 1"))
    run = tmp_path / "run"
    assert json.loads((run / "results.json").read_text())["train"]["nonfinite_steps_total"] == 1
    assert results["train"]["step"] == 16 and torch.isfinite(torch.tensor(results["train"]["loss"]))
    rows = {r["step"]: r for r in _rows(run) if r["split"] == "train"}
    assert [s for s, r in rows.items() if r["nonfinite_steps"]] == [5]
    names = _checkpoints_are_finite(run)
    assert "step_5.pt" not in names and "step_4.pt" in names and "step_6.pt" in names  # none right after the skip
    saved = {name: load(run / "checkpoints" / name)["nonfinite_totals"]["nonfinite_steps"] for name in names}
    assert saved["step_4.pt"] == 0 and saved["step_6.pt"] == saved["epoch_2.pt"] == 1
    # a run resumed after the skip keeps counting from the checkpoint's total (without the poison this time)
    monkeypatch.undo()
    shutil.copy(run / "checkpoints" / "step_6.pt", tmp_path / "step_6.pt")
    resumed = main(train_flags(logs=tmp_path, name="resumed", extra=f"--resume {tmp_path / 'step_6.pt'}"))
    assert resumed["train"]["step"] == 16 and resumed["train"]["nonfinite_steps_total"] == 1


@pytest.mark.e2e
def test_amp_with_an_absurd_lr_reports_the_scaler_skips_and_exits_3(tmp_path, train_flags, one_torch_thread):
    flags = train_flags(logs=tmp_path, name="run", extra="--precision amp --lr 1e6 --save-every-n-steps 2")
    with pytest.raises(SystemExit) as stop:
        main(flags)
    # a SystemExit with an int status: `python -m training.main` prints no traceback and exits 3
    assert stop.value.code == DIVERGED_EXIT_CODE and isinstance(stop.value, TrainingDiverged)
    log = (tmp_path / "run" / "out.log").read_text().splitlines()
    assert any("WARNING | step " in line and "the grad scaler skipped 1 step(s) since the last" in line for line in log)
    assert "ERROR | training diverged: the grad scaler skipped steps" in log[-1]
    rows = [r for r in _rows(tmp_path / "run") if r["split"] == "train"]
    assert rows[-1]["scaler_skipped_total"] >= 3 and all("scaler_skipped_steps" in r for r in rows)
    _checkpoints_are_finite(tmp_path / "run")
