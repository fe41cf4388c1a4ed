"""open_clip flags whose meaning here differed from open_clip 3.3.0's (or that were refused), each beside open_clip's
real code where it has any: evaluation frequencies, LiT locking per tower type, SigLIP's start, timm's pretrained
weights, --force-custom-text, --cache-dir for the tokenizer, 'random' interpolation, the default run name."""

from __future__ import annotations

import argparse
import copy
import json
import math
import re

import numpy as np
import open_clip
import pytest
import torch

import open_mclip
from open_mclip.open_clip_schema import to_open_clip_config
from training import main as main_module
from training.devices import get_device
from training.distributed import World
from training.eval.evaluator import due
from training.main import build_model, main
from training.params import parse_args

CPU = ["--device", "cpu", "--precision", "fp32", "--workers", "0"]


def _build(line: str):
    model, _, preprocess = build_model(parse_args([*line.split(), *CPU]), get_device("cpu"), World())
    return model, preprocess


def _open_clip_twin(model_name: str, **kwargs):
    """open_clip's own CLIP for one of our architectures (through its open_clip config); `kwargs` as open_clip's
    trainer passes them to create_model."""
    return open_clip.model.CLIP(**copy.deepcopy(to_open_clip_config(open_mclip.model_config(model_name))), **kwargs)


def _trainable(model) -> set[str]:
    """Trainable parameters by their name in our layout (open_clip's names are translated)."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return set(open_mclip.from_open_clip(dict.fromkeys(names, torch.zeros(0))))


# ------------------------------------------------------------------------------------------- --*-frequency
class _Due(Exception):
    """Raised where open_clip's evaluate() goes past its frequency checks and starts evaluating."""


class _Refuses:
    def __init__(self, what: str):
        self.what = what

    def __getattr__(self, name):
        raise _Due(self.what)


def _open_clip_evaluates(split: str, *, frequency: int, epoch: int, epochs: int) -> bool:
    """Whether open_clip_train's evaluate() validates ("val") or runs zero-shot ("imagenet-val") after `epoch`."""
    from open_clip_train.train import evaluate

    args = argparse.Namespace(
        rank=0, device="cpu", precision="fp32", distributed=False, horovod=False, epochs=epochs, model="RN50"
    )
    args.val_frequency = args.zeroshot_frequency = frequency
    model = torch.nn.Module()
    model.encode_text = lambda *a, **k: (_ for _ in ()).throw(_Due("zero-shot"))  # the classifier's first step
    try:
        evaluate(model, {split: _Refuses(split)}, epoch, args, tokenizer=lambda texts: torch.zeros(len(texts), 77))
    except _Due:
        return True
    return False


def test_evaluation_frequencies_follow_open_clips_rule():
    """Our `due` against open_clip's evaluate() itself, for every frequency, epoch and run length up to 4."""
    for split in ("val", "imagenet-val"):
        for epochs in range(1, 5):
            for frequency in range(0, 4):
                for epoch in range(0, epochs + 1):  # 0: an evaluation-only run
                    theirs = _open_clip_evaluates(split, frequency=frequency, epoch=epoch, epochs=epochs)
                    ours = due(frequency, epoch=epoch, final=epoch in (0, epochs))
                    assert ours == theirs, (split, frequency, epoch, epochs)


def _zero_shot_files(tmp_path, mnist_folder) -> list[str]:
    names = tmp_path / "names.json"
    names.write_text(json.dumps([f"the digit {d}" for d in range(10)]))
    templates = tmp_path / "templates.json"
    templates.write_text(json.dumps(["a photo of {}."]))
    return [f"--zeroshot-data={mnist_folder}", f"--zeroshot-classnames={names}", f"--zeroshot-templates={templates}"]


@pytest.mark.e2e
def test_frequency_zero_never_evaluates(tmp_path, mnist_folder, tiny_synthetic):
    """open_clip: --val-frequency 0 and --zeroshot-frequency 0 evaluate never, not even after the last epoch (we
    evaluated every epoch); a frequency of 2 in a 3-epoch run evaluates after epochs 2 and 3."""
    base = [*tiny_synthetic(samples=16, epochs=3), "--val-num-samples", "8", *CPU, "--save-frequency", "0"]
    base += [*_zero_shot_files(tmp_path, mnist_folder), "--logs", str(tmp_path)]
    results = main([*base, "--val-frequency", "0", "--zeroshot-frequency", "0", "--name", "never"])
    assert "val" not in results and "zeroshot" not in results and results["train"]["step"] == 3
    rows = [json.loads(line) for line in (tmp_path / "never" / "metrics.jsonl").read_text().splitlines()]
    assert {row["split"] for row in rows} == {"train"}
    main([*base, "--val-frequency", "2", "--zeroshot-frequency", "1", "--name", "some"])
    rows = [json.loads(line) for line in (tmp_path / "some" / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows if row["split"] == "val"] == [2, 3]
    assert [row["epoch"] for row in rows if row["split"] == "zeroshot"] == [1, 2, 3]


# ------------------------------------------------------------------------------------------------- locking
@pytest.mark.parametrize("groups", [0, 1, 2, 3, 4, 6])
def test_image_tower_locks_as_open_clips_trainer(groups):
    """--lock-image-unlocked-groups K is open_clip's lock_image_tower(K) (its ViT projection is a group of its own:
    K=1 unlocked one block more here before); our uniform count is --lock-image-unlocked-blocks."""
    ours, _ = _build(f"--model mclip-tiny --lock-image --lock-image-unlocked-groups {groups}")
    ref = _open_clip_twin("mclip-tiny")
    ref.lock_image_tower(unlocked_groups=groups)
    assert _trainable(ours) == _trainable(ref)
    uniform, _ = _build(f"--model mclip-tiny --lock-image --lock-image-unlocked-blocks {groups}")
    expected = open_mclip.create_model("mclip-tiny")
    expected.visual.lock(groups)  # what --lock-image-unlocked-groups meant here before
    assert _trainable(uniform) == _trainable(expected)


@pytest.mark.parametrize("layers", [0, 1, 2, 3, 5])
def test_text_tower_locks_as_open_clips_trainer(layers):
    """--lock-text --lock-text-freeze-layer-norm --lock-text-unlocked-layers K is open_clip's lock_text_tower(K);
    without --lock-text-freeze-layer-norm open_clip stops (it cannot leave a Transformer's LayerNorms trainable)."""
    flags = f"--model mclip-tiny --lock-text --lock-text-freeze-layer-norm --lock-text-unlocked-layers {layers}"
    ours, _ = _build(flags)
    ref = _open_clip_twin("mclip-tiny")
    ref.lock_text_tower(unlocked_layers=layers, freeze_layer_norm=True)
    assert _trainable(ours) == _trainable(ref)
    with pytest.raises(AssertionError, match="Unfreezing LayerNorm is not supported"):
        _open_clip_twin("mclip-tiny").lock_text_tower(unlocked_layers=layers, freeze_layer_norm=False)
    uniform, _ = _build(f"--model mclip-tiny --lock-text --lock-text-unlocked-blocks {layers}")
    expected = open_mclip.create_model("mclip-tiny")
    expected.text.lock(layers)  # what --lock-text-unlocked-layers meant here before
    assert _trainable(uniform) == _trainable(expected)


def test_resnet_lock_keeps_batchnorm_statistics():
    """--lock-image --lock-image-freeze-bn-stats on a ModifiedResNet: open_clip's frozen parameters, and BatchNorm
    statistics that training forward passes leave alone (they move without the flag)."""
    ref = _open_clip_twin("mclip-tiny-rn")
    ref.lock_image_tower(unlocked_groups=0, freeze_bn_stats=True)
    images = torch.randn(4, 3, 64, 64)
    for freeze in (True, False):
        model, _ = _build("--model mclip-tiny-rn --lock-image" + (" --lock-image-freeze-bn-stats" * freeze))
        assert _trainable(model) == _trainable(ref)
        before = model.visual.bn1.running_mean.clone()
        model.train()
        model.encode_image(images)
        assert torch.equal(model.visual.bn1.running_mean, before) is freeze


# -------------------------------------------------------------------------------------------------- SigLIP
def test_siglip_starts_as_open_clip_and_trains_a_model_without_a_bias(tmp_path, tiny_synthetic):
    """open_clip's trainer builds a --siglip model with init_logit_scale=ln 10 and init_logit_bias=-10; mclip-tiny
    has no logit bias of its own, which made the SigLIP loss fail at the first step here."""
    ours, _ = _build("--model mclip-tiny --siglip")
    ref = _open_clip_twin("mclip-tiny", init_logit_scale=np.log(10), init_logit_bias=-10)
    assert ours.logit_scale.item() == ref.logit_scale.item() == pytest.approx(math.log(10))
    assert ours.logit_bias.item() == ref.logit_bias.item() == -10.0
    results = main([*tiny_synthetic(samples=32), *CPU, "--siglip", "--logs", str(tmp_path), "--name", "siglip"])
    assert results["train"]["step"] == 2 and math.isfinite(results["train"]["loss"])


def test_siglip_from_clip_weights_starts_with_open_clips_zero_bias(tmp_path):
    """CLIP weights (no logit_bias) under --siglip: open_clip's load_checkpoint gives the bias 0; so do we."""
    path = tmp_path / "clip.pt"
    torch.save(open_mclip.to_open_clip(open_mclip.create_model("mclip-tiny").state_dict()), path)  # its layout
    ours, _ = _build(f"--model mclip-tiny --siglip --pretrained {path}")
    ref = _open_clip_twin("mclip-tiny", init_logit_scale=np.log(10), init_logit_bias=-10)
    open_clip.load_checkpoint(ref, str(path))
    assert ours.logit_bias.item() == ref.logit_bias.item() == 0.0
    assert ours.logit_scale.item() == pytest.approx(ref.logit_scale.item())


# --------------------------------------------------------------------------------------------- model flags
def test_pretrained_image_asks_timm_for_its_weights(tmp_path, hub_cache, add_hub_repo, monkeypatch):
    """--pretrained-image: a timm image tower starts from timm's pretrained weights (here a hub cache holding
    timm's resnet18 file), as open_clip builds the same model."""
    import huggingface_hub.constants
    import safetensors.torch
    import timm

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub_cache))
    torch.manual_seed(1)
    weights = timm.create_model("resnet18").state_dict()  # stands for timm's ImageNet weights: other numbers
    add_hub_repo("timm/resnet18.a1_in1k", {"model.safetensors": safetensors.torch.save(weights)})
    folder = tmp_path / "timm-clip"
    folder.mkdir()
    vision = {"timm_model_name": "resnet18", "timm_pool": "avg", "timm_proj": "linear", "image_size": 64}
    text = {"context_length": 16, "width": 32, "heads": 2, "layers": 1}
    cfg = {"model_cfg": {"embed_dim": 16, "vision_cfg": vision, "text_cfg": text}, "preprocess_cfg": {}}
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    ours, _ = _build(f"--model local-dir:{folder} --pretrained-image")
    ref = open_clip.create_model(f"local-dir:{folder}", pretrained_image=True)
    trunk = {k: v for k, v in weights.items() if not k.startswith("fc.")}
    for name, value in trunk.items():
        assert torch.equal(ours.visual.trunk.state_dict()[name], value), name
        assert torch.equal(ref.visual.trunk.state_dict()[name], value), name
    fresh, _ = _build(f"--model local-dir:{folder}")
    assert not torch.equal(fresh.visual.trunk.conv1.weight, weights["conv1.weight"])


@pytest.mark.e2e
def test_force_custom_text_checkpoint_loads_in_custom_text_clip(tmp_path, tiny_synthetic):
    """--force-custom-text (refused before): one model class here; the checkpoint loads into open_clip's
    CustomTextCLIP, which then encodes as our trained model does."""
    main([*tiny_synthetic(samples=32), *CPU, "--force-custom-text", "--logs", str(tmp_path), "--name", "ct"])
    path = tmp_path / "ct" / "checkpoints" / "epoch_1.pt"
    ref = open_clip.model.CustomTextCLIP(**to_open_clip_config(open_mclip.model_config("mclip-tiny")))
    open_clip.load_checkpoint(ref, str(path))
    ours = open_mclip.create_model("mclip-tiny", pretrained=str(path))
    texts = open_mclip.get_tokenizer("mclip-tiny")(["a photo of a cat", "ein Hund"])
    images = torch.randn(2, 3, 32, 32)
    ours.eval(), ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours.encode_text(texts), ref.encode_text(texts), atol=1e-5, rtol=0)
        torch.testing.assert_close(ours.encode_image(images), ref.encode_image(images), atol=1e-5, rtol=0)


def test_cache_dir_also_finds_the_tokenizer(tmp_path, hub_cache, add_hub_repo):
    """open_clip's trainer hands --cache-dir to the tokenizer too: an hf-hub: model held only in that cache
    evaluates (before, the tokenizer looked in the default cache and found nothing)."""
    import safetensors.torch

    cfg = {"model_cfg": to_open_clip_config(open_mclip.model_config("mclip-tiny")), "preprocess_cfg": {}}
    weights = open_mclip.to_open_clip(open_mclip.create_model("mclip-tiny").state_dict())
    payload = safetensors.torch.save({k: v.contiguous() for k, v in weights.items()})
    files = {"open_clip_config.json": json.dumps(cfg).encode(), "open_clip_model.safetensors": payload}
    add_hub_repo("someone/tiny-clip", files)
    flags = ["--model", "hf-hub:someone/tiny-clip", "--cache-dir", str(hub_cache), "--dataset-type", "synthetic"]
    flags += ["--synthetic-image-size", "32", "--val-num-samples", "8", "--batch-size", "8", *CPU]
    results = main([*flags, "--logs", str(tmp_path), "--name", "hub"])
    assert results["val"]["num_samples"] == 8


def test_random_interpolation_resizes_bicubic(photos):
    """--image-interpolation random (refused before): open_clip resizes bicubic with it unless timm augments."""
    _, random = _build("--model mclip-tiny --image-interpolation random")
    _, bicubic = _build("--model mclip-tiny --image-interpolation bicubic")
    ref = open_clip.transform.image_transform(32, is_train=False, interpolation="random")
    for photo in photos[:3]:
        assert torch.equal(random(photo), bicubic(photo))
        torch.testing.assert_close(random(photo), ref(photo), atol=1e-5, rtol=0)


def test_default_run_name_is_open_clips(tmp_path):
    """open_clip names a run DATE-model_M-lr_LR-b_B-j_J-p_P with the learning rate it uses (5e-4 by default)."""
    cfg = parse_args(["--model", "ViT-B/32", "--batch-size", "8", "--workers", "3", "--logs", str(tmp_path), *CPU[:2]])
    run = main_module.setup(cfg)
    run.logger.close()
    assert re.fullmatch(r"\d{4}_\d\d_\d\d-\d\d_\d\d_\d\d-model_ViT-B-32-lr_0.0005-b_8-j_3-p_amp", run.folder.name)
