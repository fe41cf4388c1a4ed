"""The two trainers side by side: `open_clip_train.main` and our `training.main` on the same data and flags.

Both read one CSV of real photos (JPEG files, captions in 8 languages) with the same model, batch size, precision,
workers and learning rate; both log every step. The runs alternate (theirs, ours, ours, theirs, ...), and each run's
steady-state throughput is the median of its per-step samples/s after the first `--skip` steps (start-up, first
data-loader fill). This measures what the benchmarks of bench.run leave out: data loading and the loop itself.

    python -m bench.trainers --model ViT-S-32 --batch-size 32 --steps 12 --rounds 2

`--model-config FILE` trains an architecture of an open_clip-schema JSON instead (both trainers load it as a
`local-dir:` model); a Hugging Face text tower given as `text_cfg.hf_random` (a transformers config) is written as a
folder of seeded random weights, so that both trainers start from the same text weights, with the real XLM-R
tokenizer beside it. The tiny-XLM-R recipe of docs/multilingual.md, 40 steps of batch 128:

    python -m bench.trainers --model-config bench/configs/mnist-xlmr-tiny.json --batch-size 128 --steps 40 \
        --skip 5 --rounds 3 --threads 1 --image-size 28 --flags "--lr 1e-3 --wd 0.1 --beta2 0.98 --eps 1e-6"

`--shards DIR` trains on the MNIST shards of scripts/make_mnist_shards.py instead (every training sample, written
out as a CSV of PNG files, `--epochs` of them) and measures accuracy as well as speed: each run saves its last
epoch's checkpoint, and one evaluator, ours, computes every checkpoint's zero-shot top-1 on DIR/test in each
language of DIR/templates.json (ours loads open_clip_train's checkpoints unchanged). Round i runs both trainers with
`--seed i`, so that the rounds show how far accuracy moves with the seed. The whole recipe of docs/multilingual.md,
same command line:

    python -m bench.trainers --model-config bench/configs/mnist-xlmr-tiny.json --shards data/mnist-demo \
        --epochs 3 --batch-size 128 --skip 5 --rounds 2 --threads 1 \
        --flags "--lr 1e-3 --wd 0.1 --warmup 100 --beta2 0.98 --eps 1e-6"
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.cases import CAPTIONS, _xlmr_folder, real_photos
from bench.harness import OURS, REFERENCE, SIDES, machine

MODULES = {REFERENCE: "open_clip_train.main", OURS: "training.main"}
_OPEN_CLIP_RATE = re.compile(r"Batch \(t\): [\d.]+, ([\d.]+)/s, ")
_OPEN_CLIP_LOSS = re.compile(r"Contrastive_loss: ([\d.]+) ")


def write_csv(folder: Path, rows: int, *, image_size: int | None = None) -> Path:
    """A tab-separated file of `rows` (JPEG path, caption) pairs over the real photos, saved at their own size or,
    with `image_size`, resized to that square (MNIST's 28 px for the multilingual recipe, so that decoding does not
    hide the step)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, photo in enumerate(real_photos(8)):
        path = folder / f"photo{index}.jpg"
        (photo if image_size is None else photo.resize((image_size, image_size))).save(path, quality=90)
        paths.append(path)
    lines = ["filepath\ttitle"]
    lines += [f"{paths[i % len(paths)]}\t{CAPTIONS[i % len(CAPTIONS)]} {i}" for i in range(rows)]
    table = folder / "train.csv"
    table.write_text("\n".join(lines) + "\n")
    return table


def write_model(folder: Path, config_file: Path) -> str:
    """A `local-dir:` model folder for both trainers from an open_clip-schema config; `text_cfg.hf_random` becomes
    a transformers folder of random weights (seed 0) and the real XLM-R tokenizer.json goes beside the config."""
    import torch
    import transformers

    cfg = json.loads(config_file.read_text())
    cfg.pop("_comment", None)
    text = cfg.get("text_cfg", {})
    folder.mkdir(parents=True, exist_ok=True)
    if "hf_random" in text:
        hf = transformers.AutoConfig.for_model(**text.pop("hf_random"))
        torch.manual_seed(0)
        transformers.AutoModel.from_config(hf, add_pooling_layer=False).save_pretrained(folder / "text")
        text["hf_model_name"] = str(folder / "text")
        shutil.copy(_xlmr_folder() / "tokenizer.json", folder / "tokenizer.json")  # local-dir: tokenizers read here
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}, indent=1))
    return f"local-dir:{folder}"


def shard_csv(shards: Path, folder: Path) -> Path:
    """The training samples of a shard folder (`shards`/train/*.tar of scripts/make_mnist_shards.py) as image files
    and a tab-separated file of (path, caption) rows, in shard order. Both trainers then read the same CSV:
    open_clip_train's webdataset loader fails on the end-of-shard markers of webdataset 1.x (KeyError 'fname')."""
    import tarfile

    tars = sorted((shards / "train").glob("*.tar"))
    if not tars:
        raise FileNotFoundError(f"no {shards}/train/*.tar: write the shards with scripts/make_mnist_shards.py")
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["filepath\ttitle"]
    for tar in tars:
        with tarfile.open(tar) as archive:
            members = {m.name: m for m in archive.getmembers() if m.isfile()}
            for name in sorted(members):
                stem, _, ext = name.rpartition(".")
                if ext != "png" or f"{stem}.txt" not in members:
                    continue
                caption = archive.extractfile(members[f"{stem}.txt"]).read().decode()
                if any(c in caption for c in '\t\n\r"'):
                    raise ValueError(f"{tar}: the caption of {stem} holds a tab, newline or quote; a CSV row cannot")
                image = folder / f"{tar.stem}-{Path(name).name}"
                image.write_bytes(archive.extractfile(members[name]).read())
                lines.append(f"{image}\t{caption}")
    table = folder / "train.csv"
    table.write_text("\n".join(lines) + "\n")
    return table


def command(side: str, *, table: Path, logs: Path, name: str, args: argparse.Namespace) -> list[str]:
    """The same command line for both trainers (open_clip's flag names are ours too); `--flags` come last. With
    `--shards` the run saves its last epoch's checkpoint."""
    save = 0 if args.shards is None else args.epochs
    flags = (
        "--dataset-type csv --csv-img-key filepath --csv-caption-key title "
        f"--batch-size {args.batch_size} --epochs {args.epochs} --lr 1e-4 --warmup 2 --workers {args.workers} "
        f"--precision {args.precision} --device {args.device} --save-frequency {save} --log-every-n-steps 1 "
        f"--seed {args.seed}"
    )
    paths = ["--model", args.model, "--train-data", str(table), "--logs", str(logs), "--name", name]  # may hold spaces
    return [sys.executable, "-m", MODULES[side], *flags.split(), *paths, *shlex.split(args.flags)]


def zero_shot(checkpoint: Path, *, model_dir: Path, shards: Path, scratch: Path, env: dict) -> dict[str, float]:
    """Zero-shot top-1 per language of one trainer's checkpoint, by our evaluator: the weights go into a copy of
    the model folder (as its open_clip_pytorch_model.bin) that `training.main` evaluates on `shards`/test."""
    import torch

    from training.checkpoint import load  # names the file and the damage of one that does not read

    state = load(checkpoint)["state_dict"]
    folder = scratch / f"eval-{checkpoint.parent.parent.name}"
    shutil.copytree(model_dir, folder)
    torch.save({k.removeprefix("module."): v for k, v in state.items()}, folder / "open_clip_pytorch_model.bin")
    languages = list(json.loads((shards / "templates.json").read_text()))
    argv = [
        sys.executable, "-m", MODULES[OURS], "--model", f"local-dir:{folder}", "--device", "cpu", "--workers", "1",
        "--zeroshot-data", str(shards / "test"), "--zeroshot-classnames", str(shards / "classnames.json"),
        "--zeroshot-templates", str(shards / "templates.json"), "--zeroshot-languages", ",".join(languages),
        "--logs", str(scratch / "eval-logs"), "--name", folder.name,
    ]  # fmt: skip
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"evaluating {checkpoint} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    results = json.loads((scratch / "eval-logs" / folder.name / "results.json").read_text())["zeroshot"]
    return {language: results[f"{language}_top1"] for language in languages}


def step_log(side: str, run_dir: Path) -> tuple[list[float], list[float]]:
    """Per-step samples/s and loss from a finished run's own log."""
    if side == REFERENCE:
        text = (run_dir / "out.log").read_text()
        return [float(m) for m in _OPEN_CLIP_RATE.findall(text)], [float(m) for m in _OPEN_CLIP_LOSS.findall(text)]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [row for row in rows if row.get("split") == "train"]
    return [row["samples_per_s"] for row in rows], [row["loss"] for row in rows]


def run_once(side: str, *, table: Path, logs: Path, name: str, args: argparse.Namespace) -> dict:
    """Train with one trainer: its per-step throughput and loss, the command's wall time and, with `--shards`, the
    zero-shot top-1 per language of its last checkpoint."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if args.threads is not None:
        env["OMP_NUM_THREADS"] = str(args.threads)
    argv = command(side, table=table, logs=logs, name=name, args=args)
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{MODULES[side]} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    rates, losses = step_log(side, logs / name)
    if args.shards is None and len(rates) != args.steps:
        raise RuntimeError(f"{MODULES[side]} logged {len(rates)} steps, expected {args.steps}")
    if len(rates) <= args.skip:
        raise RuntimeError(f"{MODULES[side]} logged {len(rates)} steps, no more than --skip {args.skip}")
    run = {"rates": rates, "losses": losses, "wall_s": wall}
    if args.shards is not None:
        checkpoint = logs / name / "checkpoints" / f"epoch_{args.epochs}.pt"
        run["zero_shot_top1"] = zero_shot(checkpoint, model_dir=args.model_dir, shards=args.shards,
                                          scratch=logs.parent, env=env)  # fmt: skip
    return run


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-S-32")
    parser.add_argument("--model-config", type=Path, default=None, help="an open_clip-schema JSON instead of --model")
    parser.add_argument("--flags", default="", help='more training flags for both trainers (e.g. "--lr 1e-3")')
    parser.add_argument("--image-size", type=int, default=None, help="resize the photos to this square (px)")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of both trainers (default: unset)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=12, help="training steps per run of the CSV (default: 12)")
    parser.add_argument(
        "--shards",
        type=Path,
        default=None,
        help="train on the MNIST shards in this folder (scripts/make_mnist_shards.py) instead of a "
        "CSV of photos, and zero-shot evaluate each run's last checkpoint (needs --model-config)",
    )
    parser.add_argument("--epochs", type=int, default=1, help="epochs per run (default: 1)")
    parser.add_argument("--skip", type=int, default=3, help="first steps of each run left out (default: 3)")
    parser.add_argument("--rounds", type=int, default=2, help="runs per trainer, alternating (default: 2)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the results")
    args = parser.parse_args(argv)
    if args.shards is None and args.skip >= args.steps:
        parser.error(f"--skip {args.skip} leaves no step of --steps {args.steps} to measure")
    if args.shards is not None and args.model_config is None:
        parser.error("--shards needs --model-config: the zero-shot evaluation loads each checkpoint into its folder")

    runs: dict[str, list[dict]] = {side: [] for side in SIDES}
    label = args.model_config.stem if args.model_config is not None else args.model
    label += f", photos at {args.image_size} px" if args.image_size is not None else ""
    with tempfile.TemporaryDirectory(prefix="bench-trainers-") as scratch:
        if args.model_config is not None:
            args.model_dir = Path(scratch) / "model"
            args.model = write_model(args.model_dir, args.model_config)
        if args.shards is None:
            table = write_csv(Path(scratch) / "data", args.steps * args.batch_size, image_size=args.image_size)
        else:
            table = shard_csv(args.shards, Path(scratch) / "data")
        for round_index in range(args.rounds):
            order = SIDES if round_index % 2 == 0 else tuple(reversed(SIDES))
            for side in order:
                name = f"{side}-{round_index}"
                args.seed = round_index if args.shards is not None else 0
                runs[side].append(run_once(side, table=table, logs=Path(scratch) / "logs", name=name, args=args))
                median = statistics.median(runs[side][-1]["rates"][args.skip :])
                wall = runs[side][-1]["wall_s"]
                accuracy = runs[side][-1].get("zero_shot_top1")
                accuracy = f", zero-shot top-1 {statistics.mean(accuracy.values()):.4f}" if accuracy else ""
                print(f"{side} round {round_index}: {median:.2f} samples/s, {wall:.1f} s{accuracy}", flush=True)
    per_s = {side: statistics.median([r for run in runs[side] for r in run["rates"][args.skip :]]) for side in SIDES}
    wall_s = {side: statistics.median([run["wall_s"] for run in runs[side]]) for side in SIDES}
    source = "CSV of JPEGs" if args.shards is None else f"{args.epochs} epoch(s) of {args.shards}/train as a CSV"
    result = {
        "case": f"trainer {label} b{args.batch_size} {args.precision}, {args.workers} worker(s), {source}",
        "flags": args.flags,
        "threads": args.threads,
        "steps": len(runs[OURS][0]["rates"]),
        "skip": args.skip,
        "rounds": args.rounds,
        "runs": {side: [run["rates"] for run in runs[side]] for side in SIDES},
        "losses": {side: [run["losses"] for run in runs[side]] for side in SIDES},
        "wall_s": {side: [run["wall_s"] for run in runs[side]] for side in SIDES},
        REFERENCE: {"per_s": per_s[REFERENCE], "wall_s": wall_s[REFERENCE]},
        OURS: {"per_s": per_s[OURS], "wall_s": wall_s[OURS]},
        "speed_ratio": per_s[OURS] / per_s[REFERENCE],
        "wall_ratio": wall_s[REFERENCE] / wall_s[OURS],
    }
    if args.shards is not None:  # the mean over languages of each run's zero-shot top-1, and every language's
        result["zero_shot_top1"] = {side: [run["zero_shot_top1"] for run in runs[side]] for side in SIDES}
        for side in SIDES:
            result[side]["zero_shot_top1"] = statistics.mean(
                statistics.mean(run["zero_shot_top1"].values()) for run in runs[side]
            )
    speeds = f"open_clip {per_s[REFERENCE]:.2f}/s, open_mclip {per_s[OURS]:.2f}/s"
    walls = f"wall time ratio {result['wall_ratio']:.2f}"
    print(f"{result['case']}: {speeds}, speed ratio {result['speed_ratio']:.2f}, {walls}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps({"machine": machine(args.device), "command": sys.argv, "result": result}, indent=1)
        )
    return result


if __name__ == "__main__":
    main()
