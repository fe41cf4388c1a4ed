"""What open_clip's --log-local and --copy-codebase put in the run folder: a log file on every node's first process
(`out-RANK`), and a copy of the code that runs from there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from training.codebase import copy_codebase
from training.main import main

SRC = Path(__file__).resolve().parents[2] / "src"
EVAL_ONLY = "--dataset-type synthetic --synthetic-image-size 32 --val-num-samples 8 --batch-size 8 --model mclip-tiny"
EVAL_ONLY += " --device cpu --precision fp32 --workers 0"


@pytest.mark.e2e
@pytest.mark.distributed
def test_log_local_writes_a_log_file_on_every_node(tmp_path, free_port):
    """Two processes as two nodes of one process each (both local rank 0): each writes out-RANK, as open_clip's
    --log-local does; none writes out.log."""
    port = str(free_port())
    processes = []
    for rank in (0, 1):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": "0", "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        command = [sys.executable, "-m", "training.main", *EVAL_ONLY.split(), "--log-local"]
        command += ["--logs", str(tmp_path), "--name", "nodes"]
        processes.append(
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    run = tmp_path / "nodes"
    assert sorted(p.name for p in run.glob("out*")) == ["out-0", "out-1"]
    for rank in (0, 1):
        lines = (run / f"out-{rank}").read_text().splitlines()
        assert lines and all(f"| rank {rank} |" in line for line in lines if " | rank " in line)
        assert f"rank {rank} of 2 on Device(cpu) (gloo)" in "\n".join(lines)


@pytest.mark.e2e
def test_copy_codebase_copies_code_that_runs(tmp_path):
    main([*EVAL_ONLY.split(), "--copy-codebase", "--logs", str(tmp_path), "--name", "run"])
    code = tmp_path / "run" / "code"
    for package in ("training", "open_mclip"):
        sources = sorted(p.relative_to(SRC) for p in _files(SRC / package) if _kept(p))
        copied = sorted(p.relative_to(code) for p in (code / package).rglob("*") if p.is_file())
        assert copied == sources and len(copied) > 20, package
        assert all((code / p).read_bytes() == (SRC / p).read_bytes() for p in copied)
    assert (code / "open_mclip" / "model_configs" / "mclip-tiny.json").is_file()  # package data travels too
    where = "import training.main, open_mclip; print(training.main.__file__); print(open_mclip.__file__)"
    env = {**os.environ, "PYTHONPATH": str(code)}
    shown = subprocess.run([sys.executable, "-c", where], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert shown.stdout.split() == [str(code / "training" / "main.py"), str(code / "open_mclip" / "__init__.py")]


def _files(folder: Path) -> list[Path]:
    """Every file under `folder`, through symbolic links (model_configs is one, in a checkout)."""
    return [Path(root) / name for root, _, names in os.walk(folder, followlinks=True) for name in names]


def _kept(path: Path) -> bool:
    return "__pycache__" not in path.parts and path.suffix != ".pyc"


def test_a_resumed_run_keeps_the_code_it_started_with(tmp_path):
    first = copy_codebase(tmp_path / "code")
    marker = first / "training" / "main.py"
    marker.write_text("# the code of the first start\n")
    assert copy_codebase(tmp_path / "code") == first and marker.read_text() == "# the code of the first start\n"
    assert not (tmp_path / "code.tmp").exists()
