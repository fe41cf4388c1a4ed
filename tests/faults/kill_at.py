"""Run training.main and SIGKILL it the Nth time it reaches SITE (a helper of tests/faults).

Usage: python tests/faults/kill_at.py SITE N [training.main flags]      one run (also as torchrun's script)
       python tests/faults/kill_at.py --plan PLAN.json REPORT.json [flags]  one forked run per (site, N) of the plan,
           each resuming where the last was killed; REPORT.json gets each run's fate and the checkpoint
           `--resume latest` would pick after it (forking from one process that imported torch saves the imports)
Sites: "batch" (a batch placed on the device, before its step), "step" (the optimizer has updated the weights, the
loop has not yet counted the step), "save" (half a checkpoint written to its temporary file), "rename" (a checkpoint
complete in its temporary file, not yet renamed), "index" (a checkpoint renamed, its index.json not yet updated).
With KILL_RANK set only that rank dies; with KILL_STAMP set, the time of the kill is written there first.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import time

import torch

SITES = ("batch", "step", "save", "rename", "index")


def die() -> None:
    if os.environ.get("KILL_STAMP"):
        with open(os.environ["KILL_STAMP"], "w") as stamp:
            stamp.write(repr(time.time()))
    os.kill(os.getpid(), signal.SIGKILL)


def arm(site: str, at: int) -> None:
    """Patch the code the site names so that its `at`-th call kills the process."""
    from training import placement, stepper

    calls = [0]

    def reached() -> bool:
        calls[0] += 1
        return calls[0] == at

    if site == "batch":
        real_batch = placement.Placement.batch

        def batch(self, *args, **kwargs):
            if reached():
                die()
            return real_batch(self, *args, **kwargs)

        placement.Placement.batch = batch
    elif site == "step":
        real_step = stepper.Stepper.step

        def step(self):
            real_step(self)
            if reached():
                die()

        stepper.Stepper.step = step
    elif site == "save":
        real_save = torch.save

        def save(obj, f, *args, **kwargs):
            if not isinstance(f, (str, os.PathLike)) and reached():
                buffer = io.BytesIO()
                real_save(obj, buffer, *args, **kwargs)
                f.write(buffer.getvalue()[: buffer.tell() // 2])  # half a checkpoint reaches the disk
                f.flush()
                die()
            return real_save(obj, f, *args, **kwargs)

        torch.save = save
    elif site in ("rename", "index"):
        real_replace = os.replace

        def replace(src, dst, *args, **kwargs):
            is_site = str(dst).endswith(".pt") if site == "rename" else str(dst).endswith("index.json")
            if is_site and reached():
                die()
            return real_replace(src, dst, *args, **kwargs)

        os.replace = replace
    else:
        raise SystemExit(f"unknown site {site!r}: use one of {', '.join(SITES)}")


def _picked(flags: list[str]) -> dict:
    """What --resume latest would pick in the run folder the flags name, and whether it reads and is finite."""
    from training.checkpoint import latest_checkpoint, load, model_state, non_finite

    folder = os.path.join(flags[flags.index("--logs") + 1], flags[flags.index("--name") + 1], "checkpoints")
    latest = latest_checkpoint(folder)
    if latest is None:
        return {"picked": None}
    saved = load(latest)
    return {"picked": latest.name, "step": saved["step"], "non_finite": non_finite(model_state(saved))}


def run_plan(plan: list[tuple[str, int]], report: str, flags: list[str]) -> None:
    """Fork one run per kill of the plan; a run that ends before its site ends the plan."""
    from training.main import main

    fates = []
    for site, at in plan:
        pid = os.fork()
        if pid == 0:
            arm(site, at)
            main(flags)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        fates.append({"site": site, "at": at, "killed": killed, "exit": os.waitstatus_to_exitcode(status)})
        fates[-1].update(_picked(flags))
        if not killed:
            break
    with open(report, "w") as out:
        json.dump(fates, out, indent=1)


if __name__ == "__main__":
    torch.set_num_threads(1)  # before any work (forked children) and as the uninterrupted run in the test
    args = sys.argv[1:]
    args = args[1:] if args[:1] == ["--"] else args  # torchrun passes on the "--" that keeps its parser off the flags
    if args[0] == "--plan":
        with open(args[1]) as f:
            run_plan([tuple(step) for step in json.load(f)], args[2], args[3:])
        sys.exit(0)
    if os.environ.get("KILL_RANK", os.environ.get("RANK", "0")) == os.environ.get("RANK", "0"):
        arm(args[0], int(args[1]))
    from training.main import main

    main(args[2:])
