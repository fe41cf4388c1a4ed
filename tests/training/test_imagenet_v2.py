"""--imagenet-v2: ImageNet-V2 zero-shot with the ImageNet class names, scored as --imagenet-val scores, in the layouts
people have it in (open_clip's folder holding ImageNetV2-matched-frequency/, ImageNet-V2's class-index folders
0..999, or 1000 wnid folders), and equal to what open_clip_train's own zero-shot code computes on the same images.

Real photos (scikit-image, scikit-learn) are placed in class folders chosen from a fixed random model's own ranking,
so that top-1 and top-5 are neither 0 nor 1 and a wrong label mapping (folders sorted as text: 0, 1, 10, 100...)
would change them. One prompt template per class keeps the 1000-class classifier fast on a CPU.
"""

from __future__ import annotations

import argparse
import json
import types

import pytest
import torch
from torch.utils.data import DataLoader

import open_mclip
import training.eval.zero_shot as zero_shot_module
from open_mclip.zero_shot import build_zero_shot_classifier
from open_mclip.zero_shot_packs import imagenet_wnids, load_zero_shot_pack
from training.config import EvalConfig
from training.distributed import World
from training.eval.zero_shot import IMAGENET_V2_FOLDER, ImageFolder, imagenet_v2_classes, zero_shot, zero_shot_plan
from training.main import main

HITS = {"top1": 2, "top5": 4}  # of the 6 photos: 2 in their top-1 class, 2 more in a class of their top 5


@pytest.fixture(autouse=True)
def one_template(monkeypatch):
    """ImageNet's English pack with its first template only (open_clip's first template too: 'a bad photo of a')."""
    real = zero_shot_module.load_zero_shot_pack
    monkeypatch.setattr(
        zero_shot_module,
        "load_zero_shot_pack",
        lambda pack, lang: real(pack, lang)._replace(templates=["a bad photo of a {}."]),
    )


@pytest.fixture(scope="module")
def model_name(tmp_path_factory) -> str:
    """A small CLIP with fixed random weights, as a local-dir: model (its config and weights in a folder)."""
    folder = tmp_path_factory.mktemp("model")
    vision = {"type": "vit", "image_size": 32, "patch_size": 16, "width": 32, "layers": 1, "head_width": 16}
    text = {"type": "transformer", "context_length": 16, "width": 32, "heads": 2, "layers": 1}
    config = {"model_cfg": {"embed_dim": 32, "vision": vision, "text": text}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    name = f"local-dir:{folder}"
    torch.manual_seed(0)
    torch.save(open_mclip.create_model(name).state_dict(), folder / "open_clip_pytorch_model.bin")
    return name


@pytest.fixture(scope="module")
def classes_of_photos(model_name, photos) -> list[int]:
    """An ImageNet class index per photo: the model's top-1 for two, its third choice for two, a class outside its
    top 5 for the rest."""
    model, _, preprocess = open_mclip.create_model_and_transforms(model_name)
    pack = load_zero_shot_pack("imagenet", "en")
    tokenizer = open_mclip.get_tokenizer(model_name)
    with torch.no_grad():
        classifier = build_zero_shot_classifier(model, tokenizer, pack.classnames, ["a bad photo of a {}."])
        features = model.encode_image(torch.stack([preprocess(p) for p in photos]), normalize=True)
    ranked = (features @ classifier).argsort(dim=1, descending=True)  # (photos, 1000)
    return [int(ranked[i, 0 if i < 2 else 2 if i < 4 else 500]) for i in range(len(photos))]


@pytest.fixture(scope="module")
def layouts(tmp_path_factory, photos, classes_of_photos) -> dict[str, str]:
    """The same photos in the three layouts --imagenet-v2 reads (the wnid one is also --imagenet-val's)."""
    wnids = imagenet_wnids()
    roots = {name: tmp_path_factory.mktemp(name) for name in ("wnids", "numbered", "open_clip")}
    folders = {
        "wnids": (roots["wnids"], wnids),
        "numbered": (roots["numbered"], [str(i) for i in range(1000)]),
        "open_clip": (roots["open_clip"] / IMAGENET_V2_FOLDER, [str(i) for i in range(1000)]),
    }
    for root, names in folders.values():
        for name in names:
            (root / name).mkdir(parents=True)
        for i, (photo, index) in enumerate(zip(photos, classes_of_photos)):
            photo.save(root / names[index] / f"{i}.jpeg")
    assert len(photos) == 6
    return {name: str(root) for name, root in roots.items()}


def _ours(root: str, model_name: str, cpu_fp32) -> dict:
    model, _, preprocess = open_mclip.create_model_and_transforms(model_name)
    plan = zero_shot_plan(EvalConfig(imagenet_v2=root))
    tokenizer = open_mclip.get_tokenizer(model_name)
    return zero_shot(
        model, plan, tokenizer=tokenizer, preprocess=preprocess, placement=cpu_fp32, world=World(), workers=0
    )


@pytest.mark.parametrize("layout", ["wnids", "numbered", "open_clip"])
def test_every_layout_gives_the_same_labels_and_scores(layout, layouts, model_name, cpu_fp32, classes_of_photos):
    root, classes = imagenet_v2_classes(layouts[layout])
    assert len(classes) == 1000 and (classes[281] == "281") is (layout != "wnids")
    labels = sorted(label for _, label in ImageFolder(root, None, classes=classes).samples)
    assert labels == sorted(classes_of_photos)  # the class index, not the position of "281" among sorted text
    results = _ours(layouts[layout], model_name, cpu_fp32)["imagenet-v2"]
    assert results == {"en_top1": HITS["top1"] / 6, "en_top5": HITS["top5"] / 6, "num_images": 6}


def test_imagenet_v2_equals_open_clips_zero_shot_eval(layouts, model_name, monkeypatch, cpu_fp32):
    """open_clip_train.zero_shot.zero_shot_eval on the same model and images (its loader yields what
    imagenetv2_pytorch's dataset yields: the image and int(folder name)). Its classifier, loop and logits are
    open_clip's; its `accuracy` helper fails under NumPy 2.4 (float() of a 1-element array), so hit counting is
    the three lines of `_hits` below."""
    from open_clip_train import zero_shot as open_clip_zero_shot

    def _hits(logits, target, topk=(1,)):
        top = logits.topk(max(topk), dim=1).indices == target[:, None]  # (batch, k)
        return [float(top[:, :k].any(dim=1).sum()) for k in topk]

    monkeypatch.setattr(open_clip_zero_shot, "OPENAI_IMAGENET_TEMPLATES", [lambda c: f"a bad photo of a {c}."])
    monkeypatch.setattr(open_clip_zero_shot, "accuracy", _hits)
    model, _, preprocess = open_mclip.create_model_and_transforms(model_name)
    root, classes = imagenet_v2_classes(layouts["open_clip"])
    loader = DataLoader(ImageFolder(root, preprocess, classes=classes), batch_size=4)
    args = argparse.Namespace(zeroshot_frequency=1, epochs=1, distributed=False, horovod=False, device="cpu")
    args.precision, args.batch_size = "fp32", 4
    data = {"imagenet-v2": types.SimpleNamespace(dataloader=loader)}
    theirs = open_clip_zero_shot.zero_shot_eval(model, data, 1, args, tokenizer=open_mclip.get_tokenizer(model_name))
    ours = _ours(layouts["open_clip"], model_name, cpu_fp32)["imagenet-v2"]
    assert theirs["imagenetv2-zeroshot-val-top1"] == pytest.approx(ours["en_top1"]) == HITS["top1"] / 6
    assert theirs["imagenetv2-zeroshot-val-top5"] == pytest.approx(ours["en_top5"]) == HITS["top5"] / 6


@pytest.mark.e2e
def test_imagenet_v2_scores_what_imagenet_val_scores_on_the_same_images(tmp_path, layouts, model_name):
    flags = f"--model {model_name} --device cpu --precision fp32 --workers 0"
    flags += f" --imagenet-val {layouts['wnids']} --imagenet-v2 {layouts['open_clip']} --zeroshot-frequency 1"
    results = main([*flags.split(), "--logs", str(tmp_path), "--name", "eval"])
    assert results["imagenet-v2"] == results["imagenet"] == {"en_top1": 2 / 6, "en_top5": 4 / 6, "num_images": 6}
    assert "zero-shot accuracy (imagenet-v2) after epoch 0" in (tmp_path / "eval" / "out.log").read_text()


def test_a_folder_that_is_no_imagenet_v2_says_which_layouts_are_read(tmp_path):
    numbered = tmp_path / "numbered"
    for i in [*range(998), 1000]:
        (numbered / str(i)).mkdir(parents=True)
    with pytest.raises(ValueError, match=r"is not ImageNet-V2's layout .*: class folders missing: 998, 999; beyond "):
        imagenet_v2_classes(str(numbered))
    (tmp_path / "cats").mkdir()
    message = r"--imagenet-v2 .* is not ImageNet-1k .*, nor ImageNet-V2's class folders 0 \.\.\. 999, nor a folder "
    with pytest.raises(ValueError, match=message + "holding ImageNetV2-matched-frequency/: 2 folders are not"):
        imagenet_v2_classes(str(tmp_path))
    with pytest.raises(ValueError, match="--imagenet-v2 /no/such is not a folder"):
        zero_shot_plan(EvalConfig(imagenet_v2="/no/such"))
