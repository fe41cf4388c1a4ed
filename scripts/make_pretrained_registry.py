"""Regenerate ``src/open_mclip/pretrained.json`` from the installed open_clip's pretrained table.

Dev-time only: run ``python scripts/make_pretrained_registry.py`` with open_clip_torch 3.3.0 installed. The output is
data copied from open_clip (MIT licence), restricted to the architectures open_mclip ships (model_configs/*.json),
in open_clip's order.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "model_configs"


def shipped_architectures(configs: Path = CONFIGS) -> tuple[str, ...]:
    """The architectures open_mclip ships (its model_configs/*.json), so registry and configs cannot drift apart.

    Ones without pretrained tags in open_clip (ViT-S-32, our own tiny configs) simply get no entry.
    """
    return tuple(sorted(path.stem for path in configs.glob("*.json")))


DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "src" / "open_mclip" / "pretrained.json"


def source_note(version: str) -> dict[str, str]:
    """The provenance block stored under ``_source`` in the JSON."""
    return {
        "origin": f"open_clip_torch {version}, open_clip/pretrained.py (_PRETRAINED, including the -quickgelu copies)",
        "repository": "https://github.com/mlfoundations/open_clip",
        "licence": "MIT, Copyright (c) 2012-2021 Gabriel Ilharco, Mitchell Wortsman, Nicholas Carlini, Rohan Taori, "
        "Achal Dave, Vaishaal Shankar, John Miller, Hongseok Namkoong, Hannaneh Hajishirzi, Ali Farhadi, "
        "Ludwig Schmidt",
        "generator": "scripts/make_pretrained_registry.py",
    }


def collect_entries(table: dict[str, dict[str, dict]], *, architectures: tuple[str, ...]) -> dict[str, dict]:
    """Keep open_clip's entries for ``architectures``, in open_clip's order, as JSON-ready values."""
    wanted = set(architectures)
    entries: dict[str, dict] = {}
    for model, tags in table.items():
        if model not in wanted or not tags:
            continue
        entries[model] = {tag: _jsonable(cfg) for tag, cfg in tags.items()}
    return entries


def _jsonable(cfg: dict) -> dict:
    """One tag's config with tuples turned into lists (JSON has no tuples)."""
    return {key: list(value) if isinstance(value, tuple) else value for key, value in cfg.items()}


def render(document: dict) -> str:
    """Indented JSON with short number lists kept on one line, so each entry reads at a glance."""
    text = json.dumps(document, indent=2, ensure_ascii=False)
    number_list = re.compile(r"\[\s*(-?[\d.eE+-]+(?:,\s*-?[\d.eE+-]+)*)\s*\]")
    return number_list.sub(lambda m: "[" + ", ".join(part.strip() for part in m.group(1).split(",")) + "]", text) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where to write the registry JSON")
    args = parser.parse_args()

    import open_clip
    from open_clip.pretrained import _PRETRAINED

    document = {
        "_source": source_note(open_clip.__version__),
        "pretrained": collect_entries(_PRETRAINED, architectures=shipped_architectures()),
    }
    args.output.write_text(render(document), encoding="utf-8")
    count = sum(len(tags) for tags in document["pretrained"].values())
    print(f"wrote {count} (architecture, tag) entries for {len(document['pretrained'])} architectures to {args.output}")


if __name__ == "__main__":
    main()
