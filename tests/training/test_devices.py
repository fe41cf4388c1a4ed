"""Devices: clear errors for missing hardware, the auto preference, the CPU device's contract, no device branches
outside devices.py, and short real runs on CUDA and Gaudi where that hardware exists (skipped elsewhere)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from open_mclip.precision import Precision
from training.devices import DEVICES, CudaDevice, Device, HpuDevice, MpsDevice, available_devices, get_device
from training.distributed import World
from training.main import main
from training.params import parse_args
from training.stepper import Stepper

SRC = Path(__file__).resolve().parents[2] / "src"
# the grep of the HPU issue; a test for the "meta" device (deferred initialisation, not hardware) is no branch
# a device name compared, or any `.type` compared with a variable; `.type` against another literal is a tower or
# tensor kind ("timm", "meta"), not a device decision
DEVICE_COMPARISON = re.compile(r"""(==|!=)\s*['"](cuda|hpu|mps|cpu)['"]|\.type\s*(==|!=)\s*(?!\s*['"])""")
LOG_EVERY_2 = ["--log-every-n-steps", "2"]  # 4 steps: logged at steps 2 and 4


def test_auto_prefers_cuda_then_hpu_then_mps_then_cpu(monkeypatch):
    assert list(DEVICES) == ["cuda", "hpu", "mps", "cpu"]
    assert type(get_device("auto")) is DEVICES[available_devices()[0]]
    for cls in (CudaDevice, HpuDevice, MpsDevice):
        monkeypatch.setattr(cls, "available", classmethod(lambda cls: False))
    assert type(get_device("auto")) is Device
    monkeypatch.setattr(MpsDevice, "available", classmethod(lambda cls: True))
    assert type(get_device("auto")) is MpsDevice
    monkeypatch.setattr(HpuDevice, "available", classmethod(lambda cls: True))
    hpu = get_device("auto")
    assert type(hpu) is HpuDevice and hpu.torch_device == torch.device("hpu")  # chosen, nothing imported yet
    monkeypatch.setattr(CudaDevice, "available", classmethod(lambda cls: True))
    assert type(get_device("auto")) is CudaDevice


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_cuda_names_the_devices_that_exist(tmp_path, tiny_synthetic):
    here = available_devices()
    message = f"--device cuda was asked for but is not available here; available: {here}"
    with pytest.raises(ValueError, match=re.escape(message)):
        get_device("cuda")
    with pytest.raises(ValueError, match=re.escape(f"available: {here}")):
        main(["--device", "cuda", *tiny_synthetic(), "--logs", str(tmp_path), "--name", "nocuda"])
    assert not (tmp_path / "nocuda").exists()  # it failed before creating anything


def test_hpu_without_the_habana_bridge_fails_clearly():
    if HpuDevice.available():
        pytest.skip("habana_frameworks is installed here")
    with pytest.raises(ValueError, match=r"--device hpu was asked for but is not available here; available: \["):
        get_device("hpu")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        get_device("tpu")


def test_no_device_type_comparisons_outside_devices_py():
    assert DEVICE_COMPARISON.search('if device.type == "cuda":')  # the pattern does catch a device branch
    assert DEVICE_COMPARISON.search("if args.device != 'hpu':")
    assert DEVICE_COMPARISON.search("x.device.type == kind") and not DEVICE_COMPARISON.search('t.device.type == "meta"')
    assert not DEVICE_COMPARISON.search('if vision.type == "timm":')  # a tower type, in the library
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if path == SRC / "training" / "devices.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if DEVICE_COMPARISON.search(line):
                offenders.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert not offenders, "device decisions belong in training/devices.py:\n" + "\n".join(offenders)


def test_cpu_device_contract():
    device = get_device("cpu")
    assert (device.type, device.dist_backend, device.torch_device) == ("cpu", "gloo", torch.device("cpu"))
    assert isinstance(device.grad_scaler(Precision.parse("amp")), torch.amp.GradScaler)
    assert device.grad_scaler(Precision.parse("amp_bf16")) is None
    with device.autocast(Precision.parse("amp_bf16")):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with device.autocast(Precision.parse("fp32")):
        assert not torch.is_autocast_enabled("cpu")
    device.mark_step()  # no-ops on the CPU
    device.synchronize()
    assert device.memory_stats() == {} and device.compile_backend == "inductor"
    layer = torch.nn.Linear(5, 4)
    layer(torch.linspace(-1, 1, 10).reshape(2, 5)).pow(2).sum().backward()
    grads = [p.grad.clone() for p in layer.parameters()]
    norm = device.clip_grad_norm(layer.parameters(), 0.1)
    assert norm == pytest.approx(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())
    assert torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in layer.parameters()])) == pytest.approx(0.1)


def test_stepper_clips_through_the_device():
    class Recording(Device):
        def __init__(self):
            super().__init__()
            self.calls = []

        def mark_step(self):
            self.calls.append("mark_step")

        def clip_grad_norm(self, params, max_norm):
            self.calls.append(("clip", len(list(params)), max_norm))
            return torch.tensor(0.0)

    device, layer = Recording(), torch.nn.Linear(3, 2)
    optimizer, fp32 = torch.optim.SGD(layer.parameters(), lr=0.1), Precision.parse("fp32")
    stepper = Stepper(optimizer, device=device, precision=fp32, grad_clip_norm=2.0)
    stepper.backward(layer(torch.ones(1, 3)).sum())
    stepper.step()
    assert device.calls == ["mark_step", ("clip", 2, 2.0), "mark_step"]
    assert all(p.grad is None for p in layer.parameters())


def _check_run(run_dir: Path) -> None:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train] == [2, 4]
    assert all(math.isfinite(r["loss"]) and r["max_memory_gb"] > 0 for r in train)


@pytest.mark.e2e
@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["amp", "amp_bf16"])
def test_real_cuda_training_run(tmp_path, precision, tiny_synthetic):
    flags = [*tiny_synthetic(), *LOG_EVERY_2, "--precision", precision]
    main(["--device", "cuda", *flags, "--logs", str(tmp_path), "--name", precision])
    _check_run(tmp_path / precision)


@pytest.mark.e2e
@pytest.mark.hpu
@pytest.mark.parametrize("lazy", ["1", "0"], ids=["lazy", "eager"])
def test_real_gaudi_training_run(tmp_path, lazy, tiny_synthetic):
    # a subprocess per mode: the Habana bridge reads PT_HPU_LAZY_MODE when it is first imported
    flags = [*tiny_synthetic(), *LOG_EVERY_2, *"--device hpu --precision amp_bf16 --grad-clip-norm 1.0".split()]
    command = [sys.executable, "-m", "training.main", *flags, "--logs", str(tmp_path), "--name", "gaudi"]
    env = {**os.environ, "PT_HPU_LAZY_MODE": lazy}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "on HpuDevice(hpu, " in result.stdout
    _check_run(tmp_path / "gaudi")


def test_accelerator_generators_travel_in_checkpoints(monkeypatch):
    """CUDA's generator state is saved with the CPU's and restored on resume (dropout on the GPU draws from it);
    a checkpoint from another device type restores the CPU state and leaves the accelerator's alone."""
    from training.rng import rng_state, set_rng_state

    generator = {"state": torch.arange(8, dtype=torch.uint8)}
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device=None: generator["state"].clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device=None: generator.update(state=state.clone()))
    device = CudaDevice()  # built, not set up: nothing here touches CUDA but the patched generator calls
    torch.manual_seed(1)
    saved = rng_state(device)
    expected_cpu_draw = torch.rand(3)
    generator["state"] = torch.zeros(8, dtype=torch.uint8)
    set_rng_state(saved, device)
    assert torch.equal(generator["state"], torch.arange(8, dtype=torch.uint8))
    assert torch.equal(torch.rand(3), expected_cpu_draw)

    from_cpu = rng_state(get_device("cpu"))
    assert from_cpu["device"] == {}
    set_rng_state(from_cpu, device)  # a CPU checkpoint resumed on a GPU: nothing to restore there
    assert torch.equal(generator["state"], torch.arange(8, dtype=torch.uint8))


def test_unavailable_device_names_the_ones_that_exist():
    assert "cpu" in available_devices()
    if "cuda" not in available_devices():
        with pytest.raises(ValueError, match=r"--device cuda .* not available here; available: \['cpu'\]"):
            get_device("cuda")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        get_device("tpu")
    assert get_device("cpu").dist_backend == "gloo"


def test_the_device_decides_how_the_text_tower_cuts_padding():
    """Length groups (any shape) by default; on HPU one cut per batch rounded up to 16 positions, so lazy mode
    compiles at most 5 text shapes for a 77-token context."""
    from training.main import build_model

    cfg = parse_args(["--model", "mclip-tiny", "--precision", "fp32"])
    model, _, _ = build_model(cfg, get_device("cpu"), World())
    assert (model.text.padding_free, model.text.padding_multiple, model.text.padding_group_width) == (True, 1, 16)
    assert HpuDevice().text_padding == {"multiple": 16, "group_width": None}

    class StaticShapes(Device):  # the CPU with HPU's rule, as the fake bridge has no tensors to run the model on
        text_padding = HpuDevice.text_padding

    model, _, _ = build_model(cfg, StaticShapes(), World())
    assert (model.text.padding_free, model.text.padding_multiple, model.text.padding_group_width) == (True, 16, None)
    needed = torch.tensor([3, 20, 40, 5])
    assert model.text.length_groups(needed, 77) == [(None, 48)]  # one shape: the longest row, rounded up
