"""The search demo: index the MNIST test digits (image files written by scripts/make_mnist_shards.py) with the model
the embedded demo trained, search them by number word in 9 languages, and report precision@10 per language.

    bash scripts/mnist_demo.sh --save-frequency 3      # trains mclip-mnist, keeps logs/<run>/checkpoints/epoch_3.pt
    python scripts/mnist_search_demo.py --checkpoint logs/<run>/checkpoints/epoch_3.pt \
        --digits data/mnist-demo/test --index data/mnist-search [--out results.json]

A result counts as relevant when its folder (the ImageFolder label) is the digit the word names. The headline
queries are "sept" (fr), "семь" (ru), "सात" (hi) and "七" (zh); the mean is over the ten number words of each
language (the zero-shot class names in src/training/demo_data/mnist_zero_shot.json).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEADLINE = {"fr": "sept", "ru": "семь", "hi": "सात", "zh": "七"}


def precision_at_10(index, text: str, digit: int, *, lang: str) -> float:
    results = index.search(text, k=10, lang=lang)
    return sum(r.path.split("/")[0] == str(digit) for r in results) / 10


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="the demo's checkpoint (logs/<run>/checkpoints/epoch_3.pt)")
    parser.add_argument("--digits", type=Path, default=REPO / "data" / "mnist-demo" / "test")
    parser.add_argument("--index", type=Path, default=REPO / "data" / "mnist-search")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from open_mclip.search import SearchIndex, build_index

    stats = build_index(args.digits, args.index, model="mclip-mnist", pretrained=args.checkpoint, workers=2)
    index = SearchIndex(args.index)
    words = {
        lang: entry["classnames"]
        for lang, entry in json.loads((REPO / "src/training/demo_data/mnist_zero_shot.json").read_text()).items()
        if not lang.startswith("_")
    }
    start = time.perf_counter()
    rows = {}
    for lang, names in words.items():
        per_digit = [precision_at_10(index, name, digit, lang=lang) for digit, name in enumerate(names)]
        rows[lang] = {"mean_p10": sum(per_digit) / 10, "per_digit": per_digit}
        if lang in HEADLINE:
            rows[lang]["query"] = HEADLINE[lang]
            rows[lang]["p10"] = precision_at_10(index, HEADLINE[lang], 7, lang=lang)
    queries = sum(10 + (lang in HEADLINE) for lang in words)
    print(f"{stats.total} digits indexed; {queries} queries in {time.perf_counter() - start:.2f} s")
    print("| language | query | precision@10 | mean precision@10 over the 10 number words |")
    print("|---|---|---|---|")
    for lang, row in rows.items():
        query = f"{row['query']}" if "query" in row else ""
        p10 = f"{row['p10']:.1f}" if "p10" in row else ""
        print(f"| {lang} | {query} | {p10} | {row['mean_p10']:.2f} |")
    if args.out:
        args.out.write_text(json.dumps({"index": stats.to_dict(), "precision": rows}, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
