"""Where one training step's time goes: forward with the loss, backward, gradient clipping, the optimizer step and
zeroing, for torch's dense AdamW and for our row-sparse AdamW (src/training/sparse_rows.py), in alternating steps
on two copies of one model with the same batch. The model is an open_clip-schema JSON (bench/configs), built by
open_mclip; the batch is real multilingual captions through the model's own tokenizer and random images.

    python -m bench.step_split --model-config bench/configs/mnist-xlmr-tiny.json --batch-size 128 --steps 12
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.cases import CAPTIONS
from bench.harness import machine
from bench.trainers import write_model

PARTS = ("forward", "backward", "clip", "optimizer", "zero_grad")


def timed_step(model, optimizer, images, texts, loss_fn, *, clip: bool) -> dict[str, float]:
    """One step, each part's wall time in ms."""
    marks = [time.perf_counter()]
    image_features, text_features, logit_scale = model(images, texts)[:3]
    loss = loss_fn(image_features, text_features, logit_scale)
    marks.append(time.perf_counter())
    loss.backward()
    marks.append(time.perf_counter())
    if clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    marks.append(time.perf_counter())
    optimizer.step()
    marks.append(time.perf_counter())
    optimizer.zero_grad(set_to_none=True)
    marks.append(time.perf_counter())
    return {part: (b - a) * 1e3 for part, a, b in zip(PARTS, marks, marks[1:])}


def optimizers(model, *, tokens_per_step: int) -> dict[str, tuple[torch.nn.Module, torch.optim.Optimizer]]:
    """The recipe's AdamW (lr 1e-3, wd 0.1, betas 0.9/0.98, eps 1e-6) on two copies: torch's and row-sparse."""
    from training.optim import param_groups
    from training.sparse_rows import RowSparseAdamW, row_sparse_parameters

    hp = {"lr": 1e-3, "betas": (0.9, 0.98), "eps": 1e-6}
    dense_model, sparse_model = copy.deepcopy(model), copy.deepcopy(model)
    tables = row_sparse_parameters(sparse_model, tokens_per_step=tokens_per_step)
    return {
        "dense AdamW": (dense_model, torch.optim.AdamW(param_groups(dense_model, weight_decay=0.1), **hp)),
        "row-sparse AdamW": (
            sparse_model,
            RowSparseAdamW(param_groups(sparse_model, weight_decay=0.1), row_params=tables, **hp),
        ),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-config", type=Path, default=Path("bench/configs/mnist-xlmr-tiny.json"))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=12, help="steps per optimizer, alternating (default: 12)")
    parser.add_argument("--skip", type=int, default=2, help="first steps left out (default: 2)")
    parser.add_argument("--clip", action="store_true", help="clip the gradient norm (--grad-clip-norm 1)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    import open_mclip
    from open_mclip.loss import create_loss

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-step-split-") as scratch:
        name = write_model(Path(scratch) / "model", args.model_config)
        torch.manual_seed(0)
        model, tokenizer = open_mclip.create_model(name), open_mclip.get_tokenizer(name)
    texts = tokenizer([f"{CAPTIONS[i % len(CAPTIONS)]} {i}" for i in range(args.batch_size)])
    images = torch.randn(args.batch_size, 3, *model.visual.image_size)
    built = optimizers(model, tokens_per_step=texts.numel())
    times = {label: {part: [] for part in PARTS} for label in built}
    loss_fn = create_loss("clip")
    for step in range(args.steps):
        for label, (copy_, optimizer) in built.items() if step % 2 == 0 else reversed(built.items()):
            for part, ms in timed_step(copy_, optimizer, images, texts, loss_fn, clip=args.clip).items():
                if step >= args.skip:
                    times[label][part].append(ms)
    medians = {label: {part: statistics.median(v) for part, v in parts.items()} for label, parts in times.items()}
    for label, parts in medians.items():
        total = sum(parts.values())
        split = ", ".join(f"{part} {ms:.1f} ms ({100 * ms / total:.0f} %)" for part, ms in parts.items())
        print(f"{label}: {total:.1f} ms per step: {split}")
    result = {"batch_size": args.batch_size, "steps": args.steps, "skip": args.skip, "clip": args.clip}
    result |= {"median_ms": medians, "times_ms": times}
    if args.out is not None:
        args.out.write_text(json.dumps({"machine": machine("cpu"), "command": sys.argv, "result": result}, indent=1))
    return result


if __name__ == "__main__":
    main()
