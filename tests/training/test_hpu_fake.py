"""The HPU backend without a Gaudi card: the real trainer runs against a fake Habana bridge (tests/fake_habana)
that computes on the CPU and records, in order, every call the trainer makes into it.

Each run is a subprocess with the fake on PYTHONPATH, so its torch patches never reach this test process.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import open_mclip
from training.checkpoint import load, model_state
from training.optim import param_groups

FAKE = Path(__file__).parent / "fake_habana"
HPU = "--device hpu --precision amp_bf16 --grad-clip-norm 1.0 --log-every-n-steps 2 --seed 0".split()
AUTOCAST = {"call": "autocast", "device_type": "hpu", "dtype": "bfloat16"}


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PT_HPU_LAZY_MODE", "RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join([str(FAKE), env.get("PYTHONPATH", "")])
    env.update(OMP_NUM_THREADS="1", FAKE_HABANA_LOG=str(tmp_path / "calls"), **extra)
    return env


def _calls(tmp_path: Path, rank: int = 0) -> list[dict]:
    lines = (tmp_path / f"calls.rank{rank}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def base(tiny_synthetic) -> list[str]:
    """4 optimizer steps on the (fake) HPU under bf16 autocast, with clipping, logged every 2 steps."""
    return [*tiny_synthetic(), *HPU]


def _train(tmp_path: Path, base: list[str], *extra: str, **env: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "training.main", *base, *extra, "--logs", str(tmp_path), "--name", "run"]
    return subprocess.run(cmd, env=_env(tmp_path, **env), capture_output=True, text=True, timeout=300)


def _expected(*, steps: int, log_every: int, lazy: bool, world_size: int = 1) -> list[str]:
    """The calls a run must make, in order. Lazy mode flushes the graph after backward, after the optimizer step
    and before metrics are read (mark_step, then synchronize, then the memory statistics)."""
    flush = ["mark_step"] if lazy else []
    calls = ["import_hccl", "hccl_process_group"] if world_size > 1 else []
    # seeded before the model is built (same weights on every rank), after it (per rank) and per epoch
    calls += ["manual_seed", "manual_seed", "FusedAdamW", "manual_seed"]
    for step in range(1, steps + 1):
        clip = ["FusedClipNorm", "FusedClipNorm.clip_norm"] if step == 1 else ["FusedClipNorm.clip_norm"]
        calls += ["autocast", "backward", *flush, *clip, "FusedAdamW.step", *flush]
        if step % log_every == 0 or step == steps:
            calls += [*flush, "synchronize", "memory_stats"]
    return calls


def _train_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["split"] == "train"]


@pytest.fixture(scope="module")
def lazy_run(tmp_path_factory, base):
    tmp_path = tmp_path_factory.mktemp("hpu_lazy")
    result = _train(tmp_path, base)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return tmp_path, result


@pytest.mark.e2e
def test_lazy_mode_calls_the_bridge_in_the_exact_order(lazy_run):
    tmp_path, result = lazy_run
    calls = _calls(tmp_path)
    # The whole log is compared, position by position: a mark_step dropped (say, the one after backward) or
    # moved (say, after metrics are read instead of before) shifts or changes this list and fails the test.
    assert [c["call"] for c in calls] == _expected(steps=4, log_every=2, lazy=True)
    assert all(c == AUTOCAST for c in calls if c["call"] == "autocast")  # bf16 autocast on device type hpu
    adamw = next(c for c in calls if c["call"] == "FusedAdamW")
    assert adamw["lr"] == 5e-4 and adamw["groups"] == 2  # Habana's fused AdamW, with decay / no-decay groups
    assert next(c for c in calls if c["call"] == "FusedClipNorm")["max_norm"] == 1.0
    assert "on HpuDevice(cpu, lazy mode) (hccl)" in result.stdout  # the collective backend is hccl


@pytest.mark.e2e
def test_lazy_run_logs_metrics_and_its_checkpoint_loads_on_cpu(lazy_run):
    tmp_path, _ = lazy_run
    rows = _train_rows(tmp_path / "run")
    assert [r["step"] for r in rows] == [2, 4]
    assert all(math.isfinite(r["loss"]) for r in rows)
    assert all(r["max_memory_gb"] == 1.5 for r in rows)  # the fake bridge's memory_stats()["MaxInUse"]

    saved = load(tmp_path / "run" / "checkpoints" / "epoch_1.pt")
    assert saved["scaler"] is None  # no GradScaler on HPU
    last_seed = [c["seed"] for c in _calls(tmp_path) if c["call"] == "manual_seed"][-1]
    assert torch.equal(saved["rng"]["device"]["hpu"], torch.full((4,), last_seed))  # the HPU generator is saved too
    assert saved["step"] == 4 and saved["config"]["system"]["device"] == "hpu"
    model = open_mclip.create_model("mclip-tiny")
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(model_state(saved))  # strict: every key present, none extra (saved in open_clip's layout)
    assert all(v.device.type == "cpu" for v in model.state_dict().values())
    assert any(not torch.equal(initial[k], v) for k, v in model.state_dict().items()), "training changed nothing"
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay=0.2))
    optimizer.load_state_dict(saved["optimizer"])  # FusedAdamW's state restores into torch's AdamW on the CPU
    assert len(optimizer.state) == sum(len(g["params"]) for g in optimizer.param_groups)
    model.eval()
    with torch.no_grad():
        image_features, text_features, scale = model(torch.rand(2, 3, 32, 32), torch.randint(0, 49408, (2, 77)))[:3]
    assert torch.isfinite(image_features).all() and torch.isfinite(text_features).all()


@pytest.mark.e2e
def test_eager_mode_never_calls_mark_step(tmp_path, base):
    result = _train(tmp_path, base, PT_HPU_LAZY_MODE="0")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    names = [c["call"] for c in _calls(tmp_path)]
    assert "mark_step" not in names
    assert names == _expected(steps=4, log_every=2, lazy=False)
    assert "on HpuDevice(cpu, eager mode) (hccl)" in result.stdout


@pytest.mark.e2e
def test_fp16_on_hpu_fails_clearly(tmp_path, base):
    result = _train(tmp_path, base, "--precision", "amp")
    assert result.returncode != 0
    assert "ValueError: --precision amp uses float16, which the HPU backend does not support" in result.stderr
    assert "amp_bf16" in result.stderr.splitlines()[-1]
    assert "FusedAdamW.step" not in [c["call"] for c in _calls(tmp_path)]  # it stopped before training


# without hpex (6 s) in CI only
@pytest.mark.parametrize(
    "hpex", [True, pytest.param(False, marks=pytest.mark.slow)], ids=["fused-lazy", "no-hpex-eager"]
)
def test_device_directly(tmp_path, hpex):
    """HpuDevice outside the loop: imports on set-up only, fp16 refused everywhere, Habana's fused optimizer and
    clipping when the bridge ships them and torch's otherwise; torch.compile only in eager mode."""
    cmd = [sys.executable, str(FAKE / "probe_hpu_device.py"), *([] if hpex else ["--no-hpex"])]
    env = _env(tmp_path, PT_HPU_LAZY_MODE="1" if hpex else "0")
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.splitlines()[-1])
    assert out["auto"] == "HpuDevice"  # no CUDA here: auto takes hpu before mps and cpu
    assert "use --device hpu" in out["index_error"]
    assert out["before_setup"] == {"torch_device": "hpu", "bridge_loaded": False}  # nothing imported before setup
    assert out["after_setup"] == {"torch_device": "cpu", "lazy": hpex, "hccl_loaded": False}  # one process: no hccl
    for name, message in out["fp16_errors"].items():
        assert message.startswith(f"--precision {name} uses float16") and "amp_bf16" in message
    assert out["fp16_scaler_error"] and out["bf16_scaler"] == "None"
    clip = out["clip"]
    assert clip["returned"] == pytest.approx(clip["expected"]) and clip["after"] == pytest.approx(0.5, rel=1e-5)
    assert out["memory_stats"] == {"max_memory_gb": 1.5}
    if hpex:
        assert out["compile_backend"] == "--torchcompile on HPU needs eager mode: run with PT_HPU_LAZY_MODE=0"
        assert out["optimizer"] == "habana_frameworks.torch.hpex.optimizers.FusedAdamW"
        assert out["calls"] == ["FusedAdamW", "backward", "FusedClipNorm", "FusedClipNorm.clip_norm", "memory_stats"]
    else:
        assert out["compile_backend"] == "hpu_backend"
        assert out["optimizer"] == "torch.optim.adamw.AdamW"
        assert out["calls"] == ["backward", "memory_stats"]


@pytest.mark.e2e
@pytest.mark.distributed
def test_two_processes_use_hccl(tmp_path, base, torchrun):
    cmd = torchrun(*base, "--log-every-n-steps", "1", "--logs", str(tmp_path), "--name", "ddp")
    result = subprocess.run(cmd, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for rank in (0, 1):
        calls = _calls(tmp_path, rank)
        assert [c["call"] for c in calls] == _expected(steps=2, log_every=1, lazy=True, world_size=2)
        assert calls[0] == {"call": "import_hccl", "world_size": "2", "rank": str(rank), "local_rank": str(rank)}
        assert calls[1] == {"call": "hccl_process_group", "rank": rank, "world_size": 2}
        assert f"rank {rank} of 2 on HpuDevice(cpu, lazy mode) (hccl)" in result.stdout
    assert [r["step"] for r in _train_rows(tmp_path / "ddp")] == [1, 2]  # 64 samples / (2 ranks x 16) per step


def test_srun_without_torchrun_gives_the_bridge_slurm_ranks(tmp_path):
    """One SLURM task per card: hccl is imported with WORLD_SIZE, RANK and LOCAL_RANK taken from SLURM's variables."""
    code = "import json; from training.devices import get_device; get_device('hpu').setup(1); "
    code += "from habana_frameworks.fake_log import CALLS; print(json.dumps(CALLS))"
    env = _env(tmp_path, SLURM_NTASKS="16", SLURM_PROCID="9", SLURM_LOCALID="1")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout) == [{"call": "import_hccl", "world_size": "16", "rank": "9", "local_rank": "1"}]
