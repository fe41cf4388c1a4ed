"""A resumed run ends with the uninterrupted run's weights, bitwise, with 2 loader workers: real MNIST digits as a CSV
and as shards (resampled or not, with accumulation), resumed in the middle of epoch 0, at the start of epoch 2 and in
its middle.

The uninterrupted run saves a checkpoint every 4 steps; a copy of one is resumed in a fresh run folder, as after a
kill. Patch dropout makes the main process draw random numbers too, so both streams are checked: the workers'
(shuffling, resampling, crops) and the main process's (dropout)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import webdataset as wds
from PIL import Image

from training.checkpoint import load
from training.main import main

DIGITS = 48
STEPS = 18  # 3 epochs of 6 optimizer steps
RESUME_FROM = {
    "the middle of epoch 0": "step_4.pt",
    "the start of epoch 2": "epoch_2.pt",
    "the middle of epoch 2": "step_16.pt",
}


@pytest.fixture(scope="module")
def digit_data(tmp_path_factory, digits, png) -> dict[str, Path]:
    """The first 48 MNIST test digits as PNG files listed in a TSV, and as 4 shards of 12."""
    images, labels = digits
    folder = tmp_path_factory.mktemp("digits")
    rows = ["filepath\ttitle"]
    for i in range(DIGITS):
        Image.fromarray(images[i]).save(folder / f"{i}.png")
        rows.append(f"{i}.png\ta handwritten {labels[i]}, sample {i}")
    (folder / "digits.tsv").write_text("\n".join(rows) + "\n")
    for s in range(4):
        with wds.TarWriter(str(folder / f"shard-{s}.tar")) as writer:
            for i in range(12 * s, 12 * s + 12):
                writer.write({"__key__": f"{i:04d}", "png": png(images[i]), "txt": f"a handwritten {labels[i]}, {i}"})
    (folder / "sizes.json").write_text(json.dumps({f"shard-{s}.tar": 12 for s in range(4)}))
    return {"csv": folder / "digits.tsv", "shards": folder / "shard-{0..3}.tar"}


def configurations(data: dict[str, Path]) -> dict[str, str]:
    """Each kind of data the trainer reads, 6 optimizer steps per epoch."""
    return {
        "csv": f"--train-data {data['csv']} --batch-size 8",
        "shards-accum": f"--train-data {data['shards']} --batch-size 4 --accum-freq 2",
        "shards-resampled": f"--train-data {data['shards']} --dataset-resampled --train-num-samples 48 --batch-size 8",
    }


def run(logs: Path, name: str, flags: str, *extra: str) -> dict[str, torch.Tensor]:
    """training.main for 3 epochs with 2 workers, checkpoints every 4 steps; the final weights."""
    common = "--model mclip-tiny --epochs 3 --workers 2 --precision fp32 --lr 1e-3 --warmup 2 --seed 3"
    common += " --force-patch-dropout 0.25 --save-every-n-steps 4 --log-every-n-steps 1"
    main([*flags.split(), *common.split(), "--logs", str(logs), "--name", name, *extra])
    final = load(logs / name / "checkpoints" / "epoch_3.pt")
    assert final["step"] == STEPS
    return final["state_dict"]


def assert_bitwise_equal(ours: dict[str, torch.Tensor], reference: dict[str, torch.Tensor], what: str) -> None:
    assert ours.keys() == reference.keys()
    differ = {k: (ours[k].float() - reference[k].float()).abs().max().item() for k in ours}
    differ = {k: v for k, v in differ.items() if not torch.equal(ours[k], reference[k])}
    assert not differ, f"{what}: {len(differ)} tensors differ, max |dw| {max(differ.values()):.3g}"


@pytest.mark.e2e
@pytest.mark.parametrize("kind", ["csv", "shards-accum", "shards-resampled"])
def test_resumed_run_ends_with_the_uninterrupted_weights(tmp_path, digit_data, kind, one_torch_thread):
    flags = configurations(digit_data)[kind]
    straight = run(tmp_path, "straight", flags)
    for when, name in RESUME_FROM.items():
        copy = tmp_path / f"copy-of-{name}"
        shutil.copy(tmp_path / "straight" / "checkpoints" / name, copy)
        resumed = run(tmp_path, f"resumed-{name}", flags, "--resume", str(copy))
        assert_bitwise_equal(resumed, straight, f"{kind} resumed at {when} from {name}")


@pytest.mark.e2e
def test_augmentation_does_not_depend_on_the_number_of_workers(tmp_path, digit_data, one_torch_thread):
    # each sample's crop is drawn from (seed, epoch, sample): a table read by 0 or 2 workers trains alike
    flags = configurations(digit_data)["csv"]
    assert_bitwise_equal(run(tmp_path, "w0", flags, "--workers", "0"), run(tmp_path, "w2", flags), "workers 0 vs 2")
