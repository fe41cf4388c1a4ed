"""`python -m open_mclip.search index | query | serve | info`: the command line over the search library.

index SOURCE --index PATH --model M [--pretrained P]    build, or bring up to date (the model is then optional)
query PATH "text" [--image FILE] [-k 10] [--lang hi] [--json | --paths]
serve PATH [--host 127.0.0.1] [--port 8000]
info PATH
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from .indexer import ANN_THRESHOLD, build_index
from .query import Filters, parse_date
from .searcher import SearchIndex, timed_search
from .sources import IMAGE_EXTENSIONS
from .store import CorruptIndexError

log = logging.getLogger("open_mclip.search")


def _model_args(parser: argparse.ArgumentParser, *, required_help: str) -> None:
    parser.add_argument("--model", default=None, help=f"model name or local-dir:FOLDER ({required_help})")
    parser.add_argument("--pretrained", default=None, help="pretrained tag or checkpoint file")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")


def _index_parser(sub: Any) -> None:
    p = sub.add_parser("index", help="index a folder, CSV/TSV or WebDataset shards, or bring an index up to date")
    p.add_argument("source", help="image folder (recursive), .csv/.tsv file, or shards ('shards/{000..009}.tar')")
    p.add_argument("--index", required=True, help="index folder (created)")
    _model_args(p, required_help="required for a new index; default: the one the index records")
    p.add_argument("--dtype", default="float16", choices=("float16", "float32"), help="stored embedding type")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--chunk-size", type=int, default=4096, help="rows per committed chunk (the resume granularity)")
    p.add_argument("--workers", type=int, default=2, help="data loader processes reading and preprocessing images")
    p.add_argument("--ext", default=",".join(IMAGE_EXTENSIONS), help="image file extensions for a folder")
    p.add_argument("--csv-img-key", default="filepath")
    p.add_argument("--csv-caption-key", default="title")
    p.add_argument("--csv-separator", default=None, help="default: tab for .tsv, comma otherwise")
    p.add_argument("--root", default=None, help="CSV/shards: the folder the stored paths are relative to")
    p.add_argument(
        "--ann-threshold", type=int, default=ANN_THRESHOLD, help="rows from which a faiss index is built (0: never)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar (a log line every 30 s instead)")
    p.add_argument("--json", action="store_true", help="print the run's statistics as JSON")


def _filter_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--glob", default=None, help="only paths matching this glob ('2024/*.jpg')")
    p.add_argument("--after", default=None, help="only files modified on or after this date (YYYY-MM-DD)")
    p.add_argument("--before", default=None, help="only files modified before this date")
    for name in ("min-width", "min-height", "max-width", "max-height"):
        p.add_argument(f"--{name}", type=int, default=None, help=f"image {name.replace('-', ' ')} in pixels")


def _query_parser(sub: Any) -> None:
    p = sub.add_parser("query", help="search an index")
    p.add_argument("index", help="index folder")
    p.add_argument("query", nargs="?", default="", help='text in any language, or "cat" + photo.jpg - "fruit"')
    p.add_argument("--image", default=None, help="an image file to add to the query")
    p.add_argument("--like", default=None, help="an indexed path: more like this")
    p.add_argument("-k", "--top", dest="k", type=int, default=10, help="results to show")
    p.add_argument("--lang", default=None, help="language of the text (hi, fr, hin_Deva) for tokenizers that take one")
    p.add_argument("--exact", action="store_true", help="exact search even where a faiss index exists")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="results as JSON")
    out.add_argument("-f", "--paths", action="store_true", help="file paths only, one per line (for pipes)")
    _model_args(p, required_help="default: the one the index records; another one is refused")
    _filter_args(p)


def _serve_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="a web page and JSON API over an index")
    p.add_argument("index", help="index folder")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    _model_args(p, required_help="default: the one the index records; another one is refused")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m open_mclip.search", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _index_parser(sub)
    _query_parser(sub)
    _serve_parser(sub)
    info = sub.add_parser("info", help="what an index holds (JSON)")
    info.add_argument("index")
    return parser.parse_args(argv)


def filters_from_args(args: argparse.Namespace) -> Filters:
    return Filters(
        path_glob=args.glob,
        modified_after=parse_date(args.after, name="--after"),
        modified_before=parse_date(args.before, name="--before"),
        min_width=args.min_width,
        min_height=args.min_height,
        max_width=args.max_width,
        max_height=args.max_height,
    )


def run_index(args: argparse.Namespace) -> int:
    stats = build_index(
        args.source,
        args.index,
        model=args.model,
        pretrained=args.pretrained,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        chunk_size=args.chunk_size,
        workers=args.workers,
        progress=not args.no_progress,
        ann_threshold=args.ann_threshold or None,
        extensions=[e for e in args.ext.split(",") if e.strip()],
        csv_img_key=args.csv_img_key,
        csv_caption_key=args.csv_caption_key or None,
        csv_separator=args.csv_separator,
        root=args.root,
    )
    if args.json:
        print(json.dumps(stats.to_dict(), ensure_ascii=False, indent=1))
    else:
        print(stats.summary())
        for key, reason in stats.skipped:
            print(f"skipped {key}: {reason}", file=sys.stderr)
    return 0


def run_query(args: argparse.Namespace) -> int:
    index = SearchIndex(
        args.index,
        model=args.model,
        pretrained=args.pretrained,
        device=args.device,
        approximate=not args.exact and "auto",
    )
    results, ms = timed_search(
        index,
        query=args.query,
        k=args.k,
        lang=args.lang,
        image=args.image,
        like=args.like,
        filters=filters_from_args(args),
    )
    if args.json:
        payload = {"query": args.query, "took_ms": round(ms, 2), "approximate": index.approximate}
        print(json.dumps({**payload, "results": [r.to_dict() for r in results]}, ensure_ascii=False, indent=1))
    elif args.paths:
        print("\n".join(r.file for r in results))
    else:
        for r in results:
            print(f"{r.score:.4f}  {r.file}")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from .server import serve  # FastAPI and uvicorn only when serving

    index = SearchIndex(args.index, model=args.model, pretrained=args.pretrained, device=args.device)
    serve(index, host=args.host, port=args.port)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    level = logging.WARNING if args.command in ("query", "info") else logging.INFO  # query: only problems logged
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    commands = {"index": run_index, "query": run_query, "serve": run_serve}
    try:
        if args.command == "info":
            print(json.dumps(SearchIndex(args.index).info(), ensure_ascii=False, indent=1))
            return 0
        return commands[args.command](args)
    except (ValueError, FileNotFoundError, KeyError, CorruptIndexError, RuntimeError, ImportError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {message}", file=sys.stderr)
        return 2
