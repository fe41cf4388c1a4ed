"""Learning parity with open_clip_train 3.3.0: the same command line, initial weights and batches give the same loss
at every step (fp32, 1e-5 over 20 optimizer steps), the same learning rates and the same final weights.

Both trainers' real main() run in their own processes (learning_parity_driver.py) with only the data loading
replaced by one fixed list of real MNIST batches with captions in three languages: the model, the weight-decay
groups, AdamW and its defaults, the schedule, the loss, accumulation, clipping, locking and the logit-scale clamp
are each trainer's own. open_clip's losses and learning rates are read from its TensorBoard events, ours from
metrics.jsonl, the final weights from both trainers' last checkpoints.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

DRIVER = Path(__file__).with_name("learning_parity_driver.py")

# open_clip's schema. A ViT whose name does not say "vit": open_clip then takes the ResNet AdamW defaults
# (beta2 0.999, eps 1e-8), and so must we.
ARCHITECTURE = "parity-tiny"
CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 28, "patch_size": 7, "width": 32, "layers": 2, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
BATCH, STEPS_PER_EPOCH, EPOCHS = 8, 10, 2
# flags every case shares: a high lr and weight decay make a difference in decay or schedule visible within 20 steps
COMMON = f"--epochs {EPOCHS} --lr 1e-3 --wd 0.5 --warmup 5 --batch-size {BATCH}"
CASES = {
    "clip": "--lr-scheduler cosine",
    "siglip-lock-text-clipped": "--siglip --lock-text --lock-text-freeze-layer-norm --grad-clip-norm 1.0 "
    "--lr-scheduler const-cooldown --epochs-cooldown 1 --lr-cooldown-power 2",
    "clip-accum-lock-image-clipped": "--accum-freq 2 --lock-image --grad-clip-norm 1.0 --lr-scheduler cosine",
    "siglip-accum": "--siglip --accum-freq 2 --lr-scheduler cosine",
}
# the "clip" case starts above the clamp (ln 100): both trainers must clamp after the first step, not before it
START_LOGIT_SCALE = {"clip": math.log(100) + 0.5}
DIGITS = {
    "en": "zero one two three four five six seven eight nine".split(),
    "de": "null eins zwei drei vier fünf sechs sieben acht neun".split(),
    "fr": "zéro un deux trois quatre cinq six sept huit neuf".split(),
}
TEMPLATES = {"en": "a handwritten {}", "de": "eine handgeschriebene {}", "fr": "un {} écrit à la main"}


def _batches(mnist) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Real MNIST digits at 28 px (3 channels, normalised) with a caption per digit in en, de or fr."""
    from open_mclip.tokenizer import ClipTokenizer

    count = BATCH * STEPS_PER_EPOCH * 2  # enough for --accum-freq 2
    images, labels = mnist["train"]
    pixels = torch.from_numpy(images[:count]).float().div(255).sub(0.5).div(0.5)
    pixels = pixels[:, None].expand(-1, 3, -1, -1).contiguous()  # (count, 3, 28, 28)
    languages = [list(DIGITS)[i % 3] for i in range(count)]
    captions = [TEMPLATES[lang].format(DIGITS[lang][int(label)]) for lang, label in zip(languages, labels[:count])]
    tokens = ClipTokenizer(context_length=CONFIG["text_cfg"]["context_length"])(captions)
    return [(pixels[i : i + BATCH], tokens[i : i + BATCH]) for i in range(0, count, BATCH)]


def _initial_weights(path: Path, case: str) -> None:
    """One open_clip model's weights, the start of both trainers (--pretrained); SigLIP's as open_clip's main
    builds its model for --siglip (initial log scale ln 10, bias -10)."""
    import open_clip

    torch.manual_seed(0)
    kwargs = {"init_logit_scale": math.log(10), "init_logit_bias": -10.0} if "--siglip" in CASES[case] else {}
    state = open_clip.create_model(ARCHITECTURE, **kwargs).state_dict()
    if case in START_LOGIT_SCALE:
        state["logit_scale"].fill_(START_LOGIT_SCALE[case])
    torch.save(state, path)


def _argv(case: str, root: Path, trainer: str) -> list[str]:
    init = root / f"init_{case}.pt"
    line = (
        f"{COMMON} {CASES[case]} --model {ARCHITECTURE} --pretrained {init} --dataset-type synthetic "
        f"--precision fp32 --device cpu --workers 0 --log-every-n-steps 1 --report-to tensorboard "
        f"--logs {root / trainer} --name {case}"
    )
    return line.split()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mnist) -> Path:
    """Both trainers run every case, the two driver processes side by side; returns the folder of the runs."""
    import open_clip

    root = tmp_path_factory.mktemp("parity")
    (root / "configs").mkdir()
    (root / "configs" / f"{ARCHITECTURE}.json").write_text(json.dumps(CONFIG))
    open_clip.add_model_config(root / "configs")
    for case in CASES:
        _initial_weights(root / f"init_{case}.pt", case)
    torch.save(_batches(mnist), root / "batches.pt")
    processes = []
    for trainer in ("open_clip", "open_mclip"):
        plan = {"trainer": trainer, "config_dir": str(root / "configs"), "batches": str(root / "batches.pt")}
        plan["runs"] = [
            {"argv": _argv(case, root, trainer), "num_batches": STEPS_PER_EPOCH * _accum(case)} for case in CASES
        ]
        (root / f"{trainer}.json").write_text(json.dumps(plan))
        command = [sys.executable, str(DRIVER), str(root / f"{trainer}.json")]
        processes.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for process in processes:
        output, _ = process.communicate(timeout=900)
        assert process.returncode == 0, output[-4000:]
    return root


def _accum(case: str) -> int:
    return 2 if "--accum-freq 2" in CASES[case] else 1


def _open_clip_scalars(run: Path, tag: str) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    return [event.value for event in sorted(events.Scalars(tag), key=lambda e: e.step)]


def _our_rows(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if row["split"] == "train"]


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    from open_mclip.convert import from_open_clip

    checkpoint = torch.load(run / "checkpoints" / f"epoch_{EPOCHS}.pt", map_location="cpu", weights_only=False)
    return from_open_clip(checkpoint["state_dict"])


def _key_bias_removed(name: str, weight: torch.Tensor) -> torch.Tensor:
    """The weight without an attention's key bias (the middle third of in_proj_bias). Softmax ignores a shift that
    is the same for every key, so that bias gets no gradient but rounding noise, which AdamW turns into steps of
    about lr in either direction: it drifts differently in every run of either trainer and changes no output."""
    if not name.endswith("attn.in_proj_bias"):
        return weight
    width = weight.numel() // 3
    return torch.cat([weight[:width], weight[2 * width :]])


@pytest.mark.e2e
@pytest.mark.parametrize("case", list(CASES))
def test_same_losses_learning_rates_and_weights_step_by_step(runs, case):
    theirs, ours = runs / "open_clip" / case, runs / "open_mclip" / case
    their_losses = _open_clip_scalars(theirs, "train/loss")
    rows = _our_rows(ours)
    assert len(their_losses) == len(rows) == STEPS_PER_EPOCH * EPOCHS
    gaps = [abs(a - b["loss"]) for a, b in zip(their_losses, rows)]
    assert max(gaps) <= 1e-5, f"{case}: step {gaps.index(max(gaps))} loss differs by {max(gaps):.2e}: {gaps}"
    their_lrs = _open_clip_scalars(theirs, "train/lr")
    assert [row["lr"] for row in rows] == pytest.approx(their_lrs, rel=1e-6, abs=1e-12)
    their_scales = _open_clip_scalars(theirs, "train/scale")
    assert [row["logit_scale"] for row in rows] == pytest.approx(their_scales, rel=1e-5)

    their_weights, our_weights = _final_weights(theirs), _final_weights(ours)
    assert set(their_weights) == set(our_weights)
    for name, their_weight in their_weights.items():
        ours_kept, theirs_kept = _key_bias_removed(name, our_weights[name]), _key_bias_removed(name, their_weight)
        torch.testing.assert_close(ours_kept, theirs_kept, rtol=0, atol=1e-5, msg=name)


@pytest.mark.e2e
def test_the_clamp_case_starts_above_the_clamp_and_is_held_at_it(runs):
    """Guards the "clip" case: its first step uses a logit scale above 100, the second 100 exactly, so the losses
    compared above also compare where each trainer clamps (after the optimizer step, at ln 100)."""
    start = torch.load(runs / "init_clip.pt", weights_only=True)["logit_scale"].item()
    rows = _our_rows(runs / "open_mclip" / "clip")
    assert rows[0]["logit_scale"] == pytest.approx(math.exp(start), rel=1e-6) and math.exp(start) > 100
    assert rows[1]["logit_scale"] == pytest.approx(100.0, rel=1e-6)
