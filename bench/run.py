"""Run the side-by-side benchmarks against open_clip and write the ratios.

    python -m bench.run                         # the CPU suite, on the CPU
    python -m bench.run --suite gpu --device cuda --mfu   # MFU against the measured bf16 peak (bench/mfu.py)
    python -m bench.run --suite tiny --mfu                # the GPU code path at tiny sizes, on the CPU
    python -m bench.run --only loss --repeats 3 --no-memory

Prints a Markdown table and writes every timing, the machine and the command to `--out` (JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from bench import cases, mfu
from bench.harness import REFERENCE, Case, machine, run_case, table

_MODELS = "bench.cases"
_FP32 = cases.close_fp32


def _check(precision: str):
    return cases.close_fp32 if precision == "fp32" else cases.close_autocast


def _train(
    model: str,
    batch_size: int,
    precision: str,
    device: str,
    *,
    padding_free: bool = True,
    trainers: bool = False,
    nchw: bool = False,
) -> Case:
    """A training step case; a ResNet of ours is channels-last where our trainer lays it out so, unless `nchw`."""
    kwargs = {"model": model, "batch_size": batch_size, "precision": precision, "device": device}
    variant = ("" if padding_free else ", ours at full length") + (", each trainer's AdamW" if trainers else "")
    variant += ", ours NCHW" if nchw else ""
    return Case(
        name=f"train step {model} b{batch_size} {precision}{variant}",
        builder=f"{_MODELS}:train_step",
        kwargs={
            **kwargs,
            "padding_free": padding_free,
            "trainer_optimizers": trainers,
            **({"channels_last": False} if nchw else {}),
        },
        items=batch_size,
        check=_check(precision),
    )


def _encode_text(model: str, batch_size: int, precision: str, device: str, *, padding_free: bool = True) -> Case:
    kwargs = {"model": model, "batch_size": batch_size, "precision": precision, "device": device}
    return Case(
        name=f"encode texts {model} b{batch_size} {precision}" + ("" if padding_free else ", ours at full length"),
        builder=f"{_MODELS}:encode_texts",
        kwargs={**kwargs, "padding_free": padding_free},
        items=batch_size,
        unit="texts",
        check=_check(precision),
    )


def _encode(model: str, batch_size: int, precision: str, device: str) -> Case:
    return Case(
        name=f"encode images {model} b{batch_size} {precision}",
        builder=f"{_MODELS}:encode_images",
        kwargs={"model": model, "batch_size": batch_size, "precision": precision, "device": device},
        items=batch_size,
        unit="images",
        check=_check(precision),
    )


def _loss(kind: str, batch_size: int, device: str) -> Case:
    return Case(
        name=f"{kind} loss fwd+bwd b{batch_size} d512",
        builder=f"{_MODELS}:contrastive_loss",
        kwargs={"kind": kind, "batch_size": batch_size, "device": device},
        items=batch_size,
        check=cases.close_fp32,
    )


def _host_cases() -> list[Case]:
    """Work that runs on the host whatever the device: tokenizing and preprocessing."""
    tokenize, preprocess, decode = f"{_MODELS}:tokenize", f"{_MODELS}:preprocess", f"{_MODELS}:decode_preprocess"
    return [
        Case(
            "tokenize CLIP BPE, 5 languages", tokenize, {"tokenizer": "clip", "count": 4000}, 4000, "texts", cases.same
        ),
        Case("tokenize XLM-R, 5 languages", tokenize, {"tokenizer": "xlmr", "count": 4000}, 4000, "texts", cases.same),
        Case("preprocess eval 224 px, real photos", preprocess, {"size": 224, "train": False}, 16, "images", _FP32),
        Case("preprocess train 224 px, real photos", preprocess, {"size": 224, "train": True}, 16, "images", _FP32),
        Case("decode+preprocess eval 224 px, real JPEGs", decode, {"size": 224}, 12, "images", _FP32),
        Case("decode+preprocess train 224 px, real JPEGs", decode, {"size": 224, "train": True}, 12, "images", _FP32),
        Case(
            "decode+preprocess eval 224 px, real JPEGs, ours --image-draft",
            decode,
            {"size": 224, "draft": True},
            12,
            "images",
            cases.close_drafted,
        ),
    ]


def _tiny_cases(device: str) -> list[Case]:
    """The gpu suite's kinds of work at sizes a CPU runs in seconds (mclip-tiny's shape): for tests of the path."""
    from bench.scaling_cases import TINY

    train = f"{_MODELS}:train_step"
    return [
        Case(
            "train step tiny b8 amp_bf16",
            train,
            {"config": TINY, "batch_size": 8, "precision": "amp_bf16", "device": device},
            8,
            check=cases.close_autocast,
        ),
        _loss("clip", 256, device),
    ]


def suite(name: str, device: str, *, fill_batch: int = 512) -> list[Case]:
    """The cases of a suite: `cpu` is sized for a small CPU machine, `gpu` for one modern GPU (`fill_batch`: the
    batch of the ViT-B-16 bf16 step meant to fill the card), `tiny` is the gpu suite's work at tiny sizes."""
    if name == "tiny":
        return _tiny_cases(device)
    if name == "cpu":
        return [
            _train("ViT-B-32", 32, "fp32", device),
            _train("ViT-B-32", 32, "amp_bf16", device),
            _train("ViT-B-32", 32, "amp_bf16", device, padding_free=False),
            _train("ViT-B-32", 32, "fp32", device, trainers=True),
            _train("ViT-B-32", 32, "amp_bf16", device, trainers=True),
            _train("RN50", 16, "fp32", device),
            _train("RN50", 16, "amp_bf16", device),
            _train("RN50", 16, "fp32", device, nchw=True),
            _encode("ViT-B-32", 64, "fp32", device),
            _encode("ViT-B-32", 64, "amp_bf16", device),
            _encode_text("ViT-B-32", 64, "fp32", device),
            _encode_text("ViT-B-32", 64, "amp_bf16", device),
            _encode_text("ViT-B-32", 64, "fp32", device, padding_free=False),
            _loss("clip", 8192, device),
            _loss("siglip", 4096, device),
            *_host_cases(),
        ]
    if name == "gpu":
        return [
            _train("ViT-B-32", 256, "fp32", device),
            _train("ViT-B-32", 256, "amp", device),
            _train("ViT-B-32", 256, "amp_bf16", device),
            _train("ViT-B-16", 128, "amp_bf16", device),
            _train("ViT-B-16", fill_batch, "amp_bf16", device),
            _train("ViT-L-14", 64, "amp_bf16", device),
            _train("RN50", 128, "amp_bf16", device),
            _train("RN50", 128, "amp_bf16", device, nchw=True),
            _encode("ViT-L-14", 256, "amp_bf16", device),
            _encode_text("ViT-L-14", 1024, "amp_bf16", device),
            _loss("clip", 32768, device),
            _loss("siglip", 16384, device),
            *_host_cases(),
        ]
    raise ValueError(f"suite {name!r} is not 'cpu' or 'gpu'")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="cpu", choices=("cpu", "gpu", "tiny"))
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ... (default: cpu)")
    parser.add_argument("--only", default="", help="run only the cases whose name contains this text")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per side (default: 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per side first (default: 1)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--mfu", action="store_true", help="count FLOPs, measure the bf16 peak, report MFU")
    parser.add_argument(
        "--fill-batch", type=int, default=512, help="gpu suite: batch of the ViT-B-16 card-filling step"
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the results")
    args = parser.parse_args(argv)

    torch.device(args.device)  # a bad name fails here, before any model is built
    selected = [case for case in suite(args.suite, args.device, fill_batch=args.fill_batch) if args.only in case.name]
    if not selected:
        parser.error(f"--only {args.only!r} matches no case of the {args.suite} suite")
    peak = mfu.matmul_peak(args.device) if args.mfu else None
    results = []
    for case in selected:
        started = time.perf_counter()
        timing = {"warmup": args.warmup, "repeats": args.repeats, "memory": not args.no_memory}
        result = run_case(case, device=args.device, **timing)
        counted = mfu.case_flops(case) if peak is not None else {}
        if counted.get(REFERENCE):  # host work (tokenizing, preprocessing) has no matrix FLOPs: no MFU
            mfu.add_mfu(result, counted, peak)
        result["wall_s"] = time.perf_counter() - started
        results.append(result)
        print(f"{case.name}: speed ratio {result['speed_ratio']:.2f} ({result['wall_s']:.0f} s)", flush=True)
        if args.out is not None:  # after every case: a run stopped by a time limit keeps what it measured
            args.out.parent.mkdir(parents=True, exist_ok=True)
            report = {"machine": machine(args.device), "command": sys.argv, "peak": peak, "results": results}
            args.out.write_text(json.dumps(report, indent=1))
    print(table(results))
    if peak is not None:
        print(f"bf16 matmul peak: {peak['flop_per_s'] / 1e12:.2f} TFLOP/s ({peak['size']}^2, best of 5)")
        print(mfu.mfu_table(results))
    return results


if __name__ == "__main__":
    main()
