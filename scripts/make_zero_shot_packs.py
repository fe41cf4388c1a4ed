"""Regenerate src/open_mclip/zero_shot_data/ (the zero-shot class-name and template packs) from clip-benchmark.

Dev-time only: needs `pip install --no-deps clip-benchmark==1.6.2` (MIT licence). Reads its JSON files in
`clip_benchmark/datasets/` without importing the package (it imports torchvision):
- `{en,ar,cn,it,jp}_classnames.json` and `..._zeroshot_classification_templates.json` (key "imagenet1k"),
- `builder.py`'s `all_imagenet_wordnet_ids` (ImageNet-1k's 1000 WordNet ids in class order),
and with --include-babel also `babel_imagenet.json` and `nllb_dist13b_prompts.json` (Babel-ImageNet: labels under
the BabelNet Non-Commercial License, which is why the default build leaves them out; see zero_shot_data/SOURCES.md).

clip_benchmark's language codes cn and jp become the ISO 639-1 codes zh and ja; `{c}` in templates becomes `{}`.
Usage: python scripts/make_zero_shot_packs.py [--include-babel] [--out DIR]
"""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

from open_mclip.zero_shot_packs import babel_pack_from_files, clip_benchmark_datasets_dir

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "src" / "open_mclip" / "zero_shot_data"
VERSION = "clip-benchmark==1.6.2"
LANGUAGES = {"en": "en", "ar": "ar", "zh": "cn", "it": "it", "ja": "jp"}  # ISO 639-1 -> clip_benchmark's file prefix


def imagenet_wnids(source: Path) -> list[str]:
    """The `all_imagenet_wordnet_ids` list literal in clip_benchmark's builder.py, read without running it."""
    for node in ast.walk(ast.parse((source / "builder.py").read_text(encoding="utf-8"))):
        names = [getattr(t, "id", "") for t in node.targets] if isinstance(node, ast.Assign) else []
        if "all_imagenet_wordnet_ids" in names:
            wnids = ast.literal_eval(node.value)
            if len(wnids) != 1000 or wnids != sorted(wnids):
                raise ValueError(f"{source / 'builder.py'}: expected 1000 sorted wnids, got {len(wnids)}")
            return wnids
    raise ValueError(f"{source / 'builder.py'} has no all_imagenet_wordnet_ids")


def imagenet_pack(source: Path) -> dict:
    languages = {}
    for iso, prefix in LANGUAGES.items():
        names = json.loads((source / f"{prefix}_classnames.json").read_text(encoding="utf-8"))["imagenet1k"]
        file = source / f"{prefix}_zeroshot_classification_templates.json"
        templates = json.loads(file.read_text(encoding="utf-8"))["imagenet1k"]
        if len(names) != 1000:
            raise ValueError(f"{prefix}_classnames.json: expected 1000 ImageNet class names, got {len(names)}")
        languages[iso] = {"classnames": names, "templates": [t.replace("{c}", "{}") for t in templates]}
    return {"source": f"{VERSION}, clip_benchmark/datasets/", "wnids": imagenet_wnids(source), "languages": languages}


def compact_json(pack: dict) -> str:
    """One line per list: small files that still diff per language."""

    def lines(obj: dict, indent: str) -> list[str]:
        out = []
        for key, value in obj.items():
            if isinstance(value, dict):
                text = "{\n" + ",\n".join(lines(value, indent + "  ")) + f"\n{indent}}}"
            else:
                text = json.dumps(value, ensure_ascii=False)
            out.append(f"{indent}{json.dumps(key)}: {text}")
        return out

    return "{\n" + ",\n".join(lines(pack, "  ")) + "\n}\n"


def write_packs(out: Path, *, include_babel: bool = False) -> list[Path]:
    source = clip_benchmark_datasets_dir()
    if source is None:
        raise SystemExit(f"clip-benchmark is not installed: pip install --no-deps {VERSION}")
    imagenet = imagenet_pack(source)
    packs = {"imagenet.json": imagenet}
    if include_babel:
        english = imagenet["languages"]["en"]["templates"]
        babel = babel_pack_from_files(source / "babel_imagenet.json", source / "nllb_dist13b_prompts.json", english)
        packs["babel_imagenet.json"] = {"source": f"{VERSION}, clip_benchmark/datasets/", **babel}
    out.mkdir(parents=True, exist_ok=True)
    for name, pack in packs.items():
        (out / name).write_text(compact_json(pack), encoding="utf-8")
    return [out / name for name in packs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help="output folder (default: the library's zero_shot_data)")
    parser.add_argument("--include-babel", action="store_true", help="also write Babel-ImageNet (non-commercial)")
    args = parser.parse_args()
    for path in write_packs(args.out, include_babel=args.include_babel):
        print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
