"""Regenerate ``src/open_mclip/pretrained.json`` from the installed open_clip's pretrained table.

Dev-time only: run ``python scripts/make_pretrained_registry.py`` with open_clip_torch 3.3.0 installed. The output is
data copied from open_clip (MIT licence), restricted to the architectures open_mclip implements, in open_clip's order.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

# Architectures open_mclip implements, spelled as open_clip spells them. Ones without pretrained tags are kept here
# so that a future open_clip release that adds tags for them is picked up.
ARCHITECTURES = (
    "ViT-B-32",
    "ViT-B-32-quickgelu",
    "ViT-B-16",
    "ViT-B-16-quickgelu",
    "ViT-B-16-plus-240",
    "ViT-L-14",
    "ViT-L-14-quickgelu",
    "ViT-L-14-336",
    "ViT-L-14-336-quickgelu",
    "ViT-H-14",
    "ViT-H-14-quickgelu",
    "ViT-g-14",
    "ViT-bigG-14",
    "ViT-bigG-14-quickgelu",
    "ViT-e-14",
    "RN50",
    "RN50-quickgelu",
    "RN101",
    "RN101-quickgelu",
    "RN50x4",
    "RN50x4-quickgelu",
    "RN50x16",
    "RN50x16-quickgelu",
    "RN50x64",
    "RN50x64-quickgelu",
    "convnext_base",
    "xlm-roberta-base-ViT-B-32",
    "xlm-roberta-large-ViT-H-14",
    "roberta-ViT-B-32",
    "mt5-base-ViT-B-16",
    "mt5-xl-ViT-H-14",
    "nllb-clip-base",
    "nllb-clip-large",
    "ViT-B-32-256",
    "ViT-B-16-plus",
    "ViT-B-32-plus-256",
    "ViT-L-14-280",
    "ViT-L-16",
    "ViT-L-16-320",
    "ViT-H-16",
    "ViT-H-14-378",
    "ViT-H-14-378-quickgelu",
    "ViT-S-32-alt",
    "ViT-S-16-alt",
    "ViT-M-32-alt",
    "ViT-M-16-alt",
    "ViT-L-14-CLIPA",
    "ViT-L-14-CLIPA-336",
    "ViT-H-14-CLIPA",
    "ViT-H-14-CLIPA-336",
    "ViT-bigG-14-CLIPA",
    "ViT-bigG-14-CLIPA-336",
    "ViT-L-14-worldwide",
    "ViT-L-14-worldwide-quickgelu",
    "ViT-H-14-worldwide",
    "ViT-H-14-worldwide-quickgelu",
    "ViT-H-14-worldwide-378",
    "ViT-bigG-14-worldwide",
    "ViT-bigG-14-worldwide-378",
    "ViT-B-16-SigLIP",
    "ViT-B-16-SigLIP-256",
    "ViT-B-16-SigLIP-384",
    "ViT-B-16-SigLIP-512",
    "ViT-B-16-SigLIP-i18n-256",
    "ViT-L-16-SigLIP-256",
    "ViT-L-16-SigLIP-384",
    "ViT-SO400M-14-SigLIP",
    "ViT-SO400M-14-SigLIP-378",
    "ViT-SO400M-14-SigLIP-384",
    "ViT-SO400M-16-SigLIP-i18n-256",
)

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
        "pretrained": collect_entries(_PRETRAINED, architectures=ARCHITECTURES),
    }
    args.output.write_text(render(document), encoding="utf-8")
    count = sum(len(tags) for tags in document["pretrained"].values())
    print(f"wrote {count} (architecture, tag) entries for {len(document['pretrained'])} architectures to {args.output}")


if __name__ == "__main__":
    main()
