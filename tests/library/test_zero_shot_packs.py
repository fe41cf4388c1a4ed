"""The shipped zero-shot packs: ImageNet class names and templates per language, Babel-ImageNet subsets, and the
generator script that writes them from clip-benchmark."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from open_mclip.zero_shot_packs import (
    _DATA_DIR,
    clip_benchmark_datasets_dir,
    imagenet_wnids,
    list_zero_shot_languages,
    list_zero_shot_packs,
    load_zero_shot_pack,
)

REPO = Path(__file__).resolve().parents[2]
needs_clip_benchmark = pytest.mark.skipif(
    clip_benchmark_datasets_dir() is None, reason="needs clip-benchmark (pip install --no-deps clip-benchmark==1.6.2)"
)


def _generator():
    spec = importlib.util.spec_from_file_location("make_zero_shot_packs", REPO / "scripts" / "make_zero_shot_packs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_templates(templates: list[str], where: str) -> None:
    assert templates, where
    for template in templates:
        assert template.count("{}") == 1, f"{where}: {template!r}"
        assert "{c}" not in template and "Zz9" in template.format("Zz9"), f"{where}: {template!r}"


def test_imagenet_pack_has_1000_names_and_format_templates_in_every_language():
    assert list_zero_shot_languages() == ["ar", "en", "it", "ja", "zh"]
    for lang in list_zero_shot_languages("imagenet"):
        names, templates, indices = load_zero_shot_pack("imagenet", lang)
        assert len(names) == 1000 and indices is None, lang
        assert all(isinstance(n, str) and n.strip() for n in names), lang
        _check_templates(templates, f"imagenet/{lang}")
    # class order is ImageNet's: index 1 is the goldfish, 281 the tabby cat, in every language
    assert [load_zero_shot_pack("imagenet", "en").classnames[i] for i in (1, 281)] == ["goldfish", "tabby cat"]
    assert load_zero_shot_pack("imagenet", "ja").classnames[1] == "金魚"
    assert load_zero_shot_pack("imagenet", "zh").classnames[1] == "金鱼"


def test_imagenet_wnids_are_the_1000_sorted_synsets():
    wnids = imagenet_wnids()
    assert len(set(wnids)) == 1000 and wnids == sorted(wnids)
    assert wnids[0] == "n01440764" and wnids[1] == "n01443537" and wnids[-1] == "n15075141"
    timm_list = Path(importlib.util.find_spec("timm").origin).parent / "data" / "_info" / "imagenet_synsets.txt"
    if timm_list.is_file():  # an independent copy of the list
        assert timm_list.read_text().split() == wnids


def test_unknown_language_and_pack_list_what_exists():
    with pytest.raises(ValueError, match="no language 'de'; it has: ar, en, it, ja, zh"):
        load_zero_shot_pack("imagenet", "de")
    with pytest.raises(ValueError, match="pack 'imagenet21k': choose one of imagenet, babel_imagenet"):
        load_zero_shot_pack("imagenet21k", "en")


def test_loaded_lists_are_copies():
    names = load_zero_shot_pack("imagenet", "en").classnames
    names[0] = "changed"
    assert load_zero_shot_pack("imagenet", "en").classnames[0] != "changed"


@needs_clip_benchmark
def test_babel_subsets_align_indices_and_names():
    assert "babel_imagenet" in list_zero_shot_packs()
    languages = list_zero_shot_languages("babel_imagenet")
    assert len(languages) == 93 and all(lang == lang.lower() and len(lang) == 2 for lang in languages)
    english = load_zero_shot_pack("imagenet", "en").templates
    for lang in languages:
        names, templates, indices = load_zero_shot_pack("babel_imagenet", lang)
        assert len(names) == len(indices) > 0, lang
        assert len(set(indices)) == len(indices) and all(0 <= i < 1000 for i in indices), lang
        _check_templates(templates, f"babel_imagenet/{lang}")
        assert (templates == english) == (lang in {"br", "fy", "la"}), lang  # no NLLB prompts: English fallback
    names, _, indices = load_zero_shot_pack("babel_imagenet", "de")
    assert dict(zip(indices, names))[1] == "Goldfisch"
    assert load_zero_shot_pack("babel_imagenet", "en").class_indices == list(range(1000))
    assert len(load_zero_shot_pack("babel_imagenet", "om").classnames) == 18


@needs_clip_benchmark
def test_generator_reproduces_the_shipped_files(tmp_path):
    generator = _generator()
    written = generator.write_packs(tmp_path, include_babel=True)
    assert [p.name for p in written] == ["imagenet.json", "babel_imagenet.json"]
    assert (tmp_path / "imagenet.json").read_bytes() == (_DATA_DIR / "imagenet.json").read_bytes()
    assert not (_DATA_DIR / "babel_imagenet.json").exists()  # non-commercial labels stay out of the MIT package
    babel = json.loads((tmp_path / "babel_imagenet.json").read_text(encoding="utf-8"))
    for lang in ("de", "br", "om"):  # the opt-in file holds what the loader reads from clip-benchmark
        entry = babel["languages"][lang]
        assert tuple(load_zero_shot_pack("babel_imagenet", lang)) == (
            entry["classnames"],
            entry["templates"],
            entry["class_indices"],
        )


def test_a_built_wheel_holds_the_packs_and_demo_data(tmp_path):
    """A non-editable build: package_data must name the data files, or an installed package lacks them."""
    source = tmp_path / "src_tree"
    source.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), "."]
    result = subprocess.run(cmd, cwd=source, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    names = set(zipfile.ZipFile(next(tmp_path.glob("open_mclip-*.whl"))).namelist())
    expected = {
        "open_mclip/zero_shot_data/imagenet.json",
        "open_mclip/zero_shot_data/SOURCES.md",
        "training/demo_data/mnist_zero_shot.json",
        "training/demo_data/mnist_captions.json",
    }
    assert expected <= names
