"""`python -m open_mclip`: score images against captions with any model, from the command line.

Without `--image` it draws a picture itself, so it runs on a fresh machine with no download; without
`--pretrained` the weights are random and the scores only show that everything is wired together.
"""

from __future__ import annotations

import argparse
import time

import torch
from PIL import Image, ImageDraw

from . import create_model_and_transforms, get_tokenizer, list_models, list_pretrained
from .transform import load_image

DEFAULT_CAPTIONS = [
    "a red circle on a white background",  # en
    "ein roter Kreis auf weißem Hintergrund",  # de
    "un cercle rouge sur fond blanc",  # fr
    "白い背景に赤い丸",  # ja
    "дом у озера",  # ru: a house by a lake
]


def _drawn_image() -> Image.Image:
    image = Image.new("RGB", (320, 240), "white")
    ImageDraw.Draw(image).ellipse((100, 60, 220, 180), fill=(220, 30, 30))
    return image


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m open_mclip", description=__doc__)
    parser.add_argument("--model", default="ViT-B-32", help="architecture name, hf-hub:org/repo or local-dir:PATH")
    parser.add_argument("--pretrained", default=None, help="registry tag or weights file (default: random weights)")
    parser.add_argument("--image", action="append", default=[], help="image file (repeatable)")
    parser.add_argument("--text", action="append", default=[], help="caption (repeatable)")
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args(argv)

    print(f"open_mclip: {len(list_models())} architectures, {len(list_pretrained())} pretrained weights known")
    start = time.perf_counter()
    model, _, preprocess = create_model_and_transforms(args.model, args.pretrained, cache_dir=args.cache_dir)
    model.eval()
    tokenizer = get_tokenizer(args.model, cache_dir=args.cache_dir)
    size = sum(p.numel() for p in model.parameters()) / 1e6
    elapsed = time.perf_counter() - start
    print(f"built {args.model} ({size:.1f} M parameters) in {elapsed:.1f} s; weights: {args.pretrained or 'random'}")
    images = [load_image(p) for p in args.image] or [_drawn_image()]
    names = args.image or ["<drawn red circle>"]
    captions = args.text or DEFAULT_CAPTIONS
    with torch.no_grad():
        start = time.perf_counter()
        logits, _ = model.get_logits(torch.stack([preprocess(i) for i in images]), tokenizer(captions))
        elapsed = time.perf_counter() - start
    probs = logits.softmax(dim=-1)  # (images, captions)
    for name, row in zip(names, probs):
        print(f"\n{name}:")
        for caption, p in sorted(zip(captions, row.tolist()), key=lambda item: -item[1]):
            print(f"  {p:6.1%}  {caption}")
    print(f"\nscored {len(images)} image(s) x {len(captions)} caption(s) in {elapsed * 1000:.0f} ms on the CPU")


if __name__ == "__main__":
    main()
