"""Class-name and prompt-template packs per language for zero-shot classification.

Two packs, both over ImageNet-1k's classes in their standard order (sorted WordNet ids, `imagenet_wnids()`):

- "imagenet" ships with the library (`zero_shot_data/imagenet.json`): all 1000 class names and templates in
  en, ar, zh, it and ja (from clip_benchmark; see `zero_shot_data/SOURCES.md`).
- "babel_imagenet" is Babel-ImageNet (Geigle et al.): 93 languages, each naming a subset of the 1000 classes,
  with NLLB-translated templates. Its labels carry the BabelNet Non-Commercial License, so the library does not
  ship them: they are read from an installed `clip-benchmark` package (`pip install --no-deps clip-benchmark`),
  or from `zero_shot_data/babel_imagenet.json` where a build chose to include it.

Templates hold `{}` where the class name goes.
"""

from __future__ import annotations

import importlib.util
import json
from functools import cache
from pathlib import Path
from typing import NamedTuple

_DATA_DIR = Path(__file__).parent / "zero_shot_data"
PACKS = ("imagenet", "babel_imagenet")
# Babel-ImageNet languages without NLLB prompts borrow the English templates of the "imagenet" pack
BABEL_TEMPLATE_FALLBACK = "en"


class ZeroShotPack(NamedTuple):
    """One language of a pack: class names, templates and, for partial packs, which of the pack's classes they name."""

    classnames: list[str]
    templates: list[str]
    class_indices: list[int] | None  # indices into the pack's full class list (ImageNet-1k order); None: all


def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def clip_benchmark_datasets_dir() -> Path | None:
    """The `clip_benchmark/datasets` folder of an installed clip-benchmark, found without importing it."""
    spec = importlib.util.find_spec("clip_benchmark")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets"
    return folder if (folder / "babel_imagenet.json").is_file() else None


def babel_pack_from_files(babel_file: Path, prompts_file: Path, fallback_templates: list[str]) -> dict:
    """Babel-ImageNet's `{LANG: [indices, names]}` and `{LANG: templates}` as a pack keyed by lowercase ISO code."""
    babel, prompts = _read(babel_file), _read(prompts_file)
    languages = {}
    for code in sorted(babel, key=str.lower):
        indices, names = babel[code]
        if len(indices) != len(names) or not all(0 <= i < 1000 for i in indices):
            raise ValueError(f"{babel_file}: {code} has {len(indices)} class indices (0-999) for {len(names)} names")
        languages[code.lower()] = {
            "class_indices": indices,
            "classnames": names,
            "templates": prompts.get(code, fallback_templates),
        }
    return {"num_classes": 1000, "languages": languages}


@cache
def _pack(pack: str) -> dict:
    if pack == "imagenet":
        return _read(_DATA_DIR / "imagenet.json")
    if pack == "babel_imagenet":
        if (_DATA_DIR / "babel_imagenet.json").is_file():
            return _read(_DATA_DIR / "babel_imagenet.json")
        source = clip_benchmark_datasets_dir()
        if source is None:
            raise ValueError(
                "the babel_imagenet pack is read from the clip-benchmark package, which is not installed: "
                "pip install --no-deps clip-benchmark==1.6.2 (its labels are under the BabelNet Non-Commercial "
                "License, so open_mclip does not ship them)"
            )
        english = _pack("imagenet")["languages"][BABEL_TEMPLATE_FALLBACK]["templates"]
        return babel_pack_from_files(source / "babel_imagenet.json", source / "nllb_dist13b_prompts.json", english)
    raise ValueError(f"unknown zero-shot pack {pack!r}: choose one of {', '.join(PACKS)}")


def list_zero_shot_packs() -> list[str]:
    """The packs that load here ("babel_imagenet" needs clip-benchmark installed unless a build ships it)."""
    babel = (_DATA_DIR / "babel_imagenet.json").is_file() or clip_benchmark_datasets_dir() is not None
    return [p for p in PACKS if p != "babel_imagenet" or babel]


def list_zero_shot_languages(pack: str = "imagenet") -> list[str]:
    """ISO 639-1 codes of the languages a pack has, sorted."""
    return sorted(_pack(pack)["languages"])


def load_zero_shot_pack(pack: str, lang: str) -> ZeroShotPack:
    """Class names, templates (`{}` for the class name) and class indices of one language of a pack."""
    languages = _pack(pack)["languages"]
    if lang not in languages:
        raise ValueError(f"the {pack} pack has no language {lang!r}; it has: {', '.join(sorted(languages))}")
    entry = languages[lang]
    indices = entry.get("class_indices")
    return ZeroShotPack(list(entry["classnames"]), list(entry["templates"]), list(indices) if indices else None)


def imagenet_wnids() -> list[str]:
    """ImageNet-1k's 1000 WordNet ids in class order (sorted): the folder names of an ImageFolder-layout val set."""
    return list(_pack("imagenet")["wnids"])
