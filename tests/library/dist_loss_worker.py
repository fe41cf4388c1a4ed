"""One rank of the distributed loss test (tests/library/test_loss_distributed.py), run by torchrun on the CPU (gloo).

Reads the global batch from `<dir>/inputs.pt`, takes this rank's contiguous shard of rows, and for every case in
CASES computes the loss with open_mclip and with open_clip, backpropagates, and writes the loss and the gradients of
this rank's leaves (its feature shard, its copy of logit_scale and logit_bias) to `<dir>/rank<r>.pt`.
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import torch
import torch.distributed as dist

from open_mclip.loss import create_loss

# case name -> create_loss options; the same options build open_clip's loss
CASES: dict[str, dict] = {
    "clip_local_gather_with_grad": {"kind": "clip", "local_loss": True, "gather_with_grad": True},
    "clip_default": {"kind": "clip", "local_loss": False, "gather_with_grad": False},
    "clip_gather_with_grad": {"kind": "clip", "local_loss": False, "gather_with_grad": True},
    "clip_local": {"kind": "clip", "local_loss": True, "gather_with_grad": False},
    "siglip_bidir": {"kind": "siglip", "siglip_dist_impl": "bidir"},
    "siglip_shift": {"kind": "siglip", "siglip_dist_impl": "shift"},
    "siglip_reduce": {"kind": "siglip", "siglip_dist_impl": "reduce"},
    "siglip_gather": {"kind": "siglip", "siglip_dist_impl": "gather"},
}


def open_clip_loss_module() -> ModuleType:
    """open_clip's loss.py alone: importing the open_clip package would pull in torchvision and cost seconds."""
    package = importlib.util.find_spec("open_clip")
    path = Path(package.submodule_search_locations[0]) / "loss.py"
    spec = importlib.util.spec_from_file_location("open_clip_loss_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def open_clip_loss(reference: ModuleType, options: dict, *, rank: int, world_size: int) -> torch.nn.Module:
    if options["kind"] == "clip":
        return reference.ClipLoss(
            local_loss=options["local_loss"],
            gather_with_grad=options["gather_with_grad"],
            cache_labels=True,
            rank=rank,
            world_size=world_size,
        )
    return reference.SigLipLoss(rank=rank, world_size=world_size, dist_impl=options["siglip_dist_impl"])


def run_case(loss_fn: torch.nn.Module, shard: dict[str, torch.Tensor], *, siglip: bool) -> dict[str, torch.Tensor]:
    """Loss and gradients of this rank's leaves for one loss module."""
    image = shard["image"].clone().requires_grad_(True)
    text = shard["text"].clone().requires_grad_(True)
    scale = shard["logit_scale"].clone().requires_grad_(True)
    bias = shard["logit_bias"].clone().requires_grad_(True)
    loss = loss_fn(image, text, scale, bias) if siglip else loss_fn(image, text, scale)
    loss.backward()
    result = {"loss": loss.detach(), "image_grad": image.grad, "text_grad": text.grad, "scale_grad": scale.grad}
    if siglip:
        result["bias_grad"] = bias.grad
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, required=True, help="folder holding inputs.pt; results go there too")
    args = parser.parse_args()
    faulthandler.enable()  # a crash inside a collective then shows the Python stack in the test's failure
    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    inputs = torch.load(args.dir / "inputs.pt", weights_only=True)
    per_rank = inputs["image"].shape[0] // world_size
    rows = slice(rank * per_rank, (rank + 1) * per_rank)
    shard = {**inputs, "image": inputs["image"][rows], "text": inputs["text"][rows]}
    reference = open_clip_loss_module()
    results = {}
    for name, options in CASES.items():
        siglip = options["kind"] == "siglip"
        ours = create_loss(rank=rank, world_size=world_size, **options)
        theirs = open_clip_loss(reference, options, rank=rank, world_size=world_size)
        results[name] = {
            "ours": run_case(ours, shard, siglip=siglip),
            "open_clip": run_case(theirs, shard, siglip=siglip),
        }
    torch.save(results, args.dir / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()
    # Every result is on disk. Skip interpreter teardown: there gloo's threads occasionally abort the process
    # (SIGABRT, "terminate called without an active exception", about 1 run in 40 on torch 2.15 here).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
