"""Image<->text retrieval recall: chunked ranks against a full-matrix reference, recall per caption language,
and language tags read from CSV columns and WebDataset .json fields through the loaders and training.main."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import webdataset as wds
from PIL import Image

from training.data import DataConfig, get_data
from training.eval.retrieval import language_recall, recall_metrics, retrieval_ranks, retrieval_table, validate
from training.main import main
from training.params import parse_args

LANGS = ["en", "de", "fr", ""]


# ------------------------------------------------------------------------------------------ the references


def reference_ranks(queries: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """The whole (N, N) similarity matrix; rank = candidates strictly more similar than the true one (by sorting)."""
    sims = queries @ candidates.T  # (N, N)
    true = sims.diagonal()  # (N,)
    ascending = sims.sort(dim=1).values
    return len(candidates) - torch.searchsorted(ascending, true[:, None].contiguous(), right=True)[:, 0]


def reference_recall(image_features: torch.Tensor, text_features: torch.Tensor) -> dict[str, float]:
    out = {}
    for name, ranks in (
        ("image_to_text", reference_ranks(image_features, text_features)),
        ("text_to_image", reference_ranks(text_features, image_features)),
    ):
        out.update({f"{name}_R@{k}": (ranks < k).double().mean().item() for k in (1, 5, 10)})
    return out


def integer_features(n: int, dim: int, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Small-integer features: every dot product is exact in float32, in any summation order, and ties abound."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(-2, 3, (n, dim), generator=g).float()
    texts = (images + torch.randint(-2, 3, (n, dim), generator=g)).float()  # related to their image, not equal
    texts[::7] = texts[0]  # repeated captions: exact ties among candidates
    return images, texts


# ---------------------------------------------------------------------------------------- ranks and recall


def test_ties_count_in_the_querys_favour():
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    candidates = torch.tensor([[1.0, 0.0], [2.0, 0.0], [1.0, 0.0]])
    # query 0: candidate 1 is strictly better (2 > 1), candidate 2 ties (1 = 1) and does not count
    # query 1: all similarities are 0: a three-way tie, rank 0; query 2: candidate 1 (2) beats its own (1)
    assert retrieval_ranks(queries, candidates, chunk=2).tolist() == [1, 0, 1]
    assert reference_ranks(queries, candidates).tolist() == [1, 0, 1]


@pytest.mark.parametrize("chunk", [1, 7, 64, 200, 5000])
def test_chunked_ranks_and_recall_equal_the_full_matrix(chunk):
    images, texts = integer_features(200, 16, seed=1)
    for queries, candidates in ((images, texts), (texts, images)):
        expected = reference_ranks(queries, candidates)
        assert torch.equal(retrieval_ranks(queries, candidates, chunk=chunk), expected)
    assert expected.max() > 10 and (expected == 0).float().mean() > 0.05  # not a trivial ranking
    got, want = recall_metrics(images, texts, chunk=chunk), reference_recall(images, texts)
    assert got.keys() == want.keys() and len(got) == 6
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-6), key
    with pytest.raises(ValueError, match="chunk=0"):
        retrieval_ranks(images, texts, chunk=0)


def test_recall_per_language_is_recall_within_each_language():
    images, texts = integer_features(90, 8, seed=2)
    langs = [LANGS[i % 4] if i % 11 else "pt-BR" for i in range(90)]
    got = language_recall(images, texts, langs, chunk=5)
    expected_keys = {
        f"{lang}_{d}_R@{k}"
        for lang in ("en", "de", "fr", "pt-BR")
        for d in ("image_to_text", "text_to_image")
        for k in (1, 5, 10)
    }
    expected_keys |= {f"{lang}_num_samples" for lang in ("en", "de", "fr", "pt-BR")}
    assert set(got) == expected_keys  # untagged pairs ("") get no bucket of their own
    for lang in ("en", "de", "fr", "pt-BR"):
        index = [i for i, tag in enumerate(langs) if tag == lang]
        assert got[f"{lang}_num_samples"] == len(index)
        for key, value in reference_recall(images[index], texts[index]).items():
            assert got[f"{lang}_{key}"] == pytest.approx(value, abs=1e-6), (lang, key)
    # the pool is the language's own pairs: ranking among all 90 pairs gives other (lower) recall
    assert got["en_image_to_text_R@1"] > reference_recall(images, texts)["image_to_text_R@1"]
    assert language_recall(images, texts, [""] * 90) == {}
    with pytest.raises(ValueError, match="3 language tags for 90 pairs"):
        language_recall(images, texts, ["en"] * 3)
    table = retrieval_table({"num_samples": 90, **recall_metrics(images, texts), **got})
    assert [line.split(" | ")[0].strip() for line in table.splitlines()[2:]] == ["all", "de", "en", "fr", "pt-BR"]


# ------------------------------------------------------------------------------------------ real-image data


class PixelModel(torch.nn.Module):
    """A stand-in CLIP whose caption of image i embeds near image i's pixels: recall is high but not perfect."""

    def __init__(self, digits, captions: list[str], *, tokenizer, preprocess) -> None:
        super().__init__()
        self.projection = torch.randn(3 * 28 * 28, 24)
        pixels = torch.stack([preprocess(Image.fromarray(d)) for d in digits[0][: len(captions)]]).flatten(1)
        clean = pixels @ self.projection  # (captions, 24)
        self.text_by_index = clean + clean.std() * torch.randn(len(pixels), 24)  # noise as large as the signal
        self.index = {tuple(tokens.tolist()): i for i, tokens in enumerate(tokenizer(captions))}

    def index_of(self, tokens: torch.Tensor) -> int:
        return self.index[tuple(tokens.tolist())]

    def forward(self, images: torch.Tensor, texts: torch.Tensor):
        image_features = images.flatten(1) @ self.projection  # (batch, 24)
        text_features = self.text_by_index[[self.index_of(t) for t in texts]]  # (batch, 24)
        normalize = torch.nn.functional.normalize
        return normalize(image_features, dim=1), normalize(text_features, dim=1), torch.tensor(10.0)


def test_webdataset_language_tags_reach_validate(tmp_path, digits, png, clip_tokenizer, preprocess, cpu_fp32):
    tokenizer = clip_tokenizer
    images, labels = digits
    captions = [f"digit {labels[i]} number {i}" for i in range(44)]
    shard = tmp_path / "val-000000.tar"
    expected = {}  # index -> language of every usable sample
    with wds.TarWriter(str(shard)) as writer:
        for i in range(40):
            sample = {"__key__": f"{i:04d}", "png": png(images[i]), "txt": captions[i]}
            if LANGS[i % 4]:
                sample["json"] = {"lang": LANGS[i % 4], "width": 28}
            elif i % 8 == 3:
                sample["json"] = {"width": 28}  # a json without the field: untagged
            expected[i] = LANGS[i % 4]
            writer.write(sample)
        for i, bad in ((40, 5), (41, ["en"]), (42, "en US"), (43, None)):  # a number, a list, a space, bad json
            meta = b"{not json" if bad is None else {"lang": bad}
            writer.write({"__key__": f"{i:04d}", "png": png(images[i]), "txt": captions[i], "json": meta})
    cfg = DataConfig(val_data=str(shard), batch_size=8, workers=1)
    info = get_data(cfg, preprocess_train=preprocess, preprocess_val=preprocess, tokenizer=tokenizer)["val"]
    model = PixelModel(digits, captions, tokenizer=tokenizer, preprocess=preprocess)
    seen = {}
    for batch_images, texts, langs in info.dataloader:
        assert all(isinstance(lang, str) for lang in langs) and len(langs) == len(batch_images) == len(texts)
        seen.update({model.index_of(t): lang for t, lang in zip(texts, langs)})
    assert seen == expected  # every good sample once, with its own tag
    assert info.skipped.by_reason() == {"bad_lang": 4}  # bad tags are skipped and counted, not fatal

    metrics = validate(model, info.dataloader, lambda *_: torch.tensor(0.0), placement=cpu_fp32)
    assert metrics["num_samples"] == 40
    pixels = torch.stack([preprocess(Image.fromarray(images[i])) for i in range(40)])
    image_features, text_features, _ = model(pixels, tokenizer(captions[:40]))
    for lang in ("en", "de", "fr"):
        index = [i for i in range(40) if expected[i] == lang]
        assert metrics[f"{lang}_num_samples"] == 10
        for key, value in reference_recall(image_features[index], text_features[index]).items():
            assert metrics[f"{lang}_{key}"] == pytest.approx(value, abs=1e-6), (lang, key)
    for key, value in reference_recall(image_features, text_features).items():
        assert metrics[key] == pytest.approx(value, abs=1e-6), key
    assert 0.1 < metrics["image_to_text_R@1"] < 0.9, "a stand-in model this noisy should be neither lost nor perfect"


def _digit_csv(folder: Path, digits, langs: list[str], *, lang_column: str = "lang") -> Path:
    """A TSV of MNIST digit PNGs (relative paths) with a caption and a language cell per row."""
    images, labels = digits
    words = {"en": "the digit", "de": "die Ziffer", "fr": "le chiffre", "": "digit"}
    rows = []
    for i, lang in enumerate(langs):
        Image.fromarray(images[i]).save(folder / f"{i}.png")
        rows.append((f"{i}.png", f"{words.get(lang, 'digit')} {labels[i]}, number {i}", lang))
    path = folder / "val.tsv"
    pd.DataFrame(rows, columns=["filepath", "title", lang_column]).to_csv(path, sep="\t", index=False)
    return path


@pytest.mark.e2e
def test_csv_val_set_reports_recall_per_language_through_training_main(tmp_path, digits):
    langs = ["en"] * 10 + ["de"] * 10 + ["fr"] * 8 + [""] * 6
    langs = [langs[(7 * i) % 34] for i in range(34)]  # interleaved, so every batch mixes languages
    csv = _digit_csv(tmp_path, digits, langs)
    flags = "--model mclip-tiny --batch-size 16 --workers 0 --precision fp32 --seed 1"
    results = main(["--val-data", str(csv), *flags.split(), "--logs", str(tmp_path), "--name", "eval"])
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())["val"]
    assert saved == pytest.approx(results["val"])
    assert saved["num_samples"] == 34
    assert {lang: saved[f"{lang}_num_samples"] for lang in ("en", "de", "fr")} == {"en": 10, "de": 10, "fr": 8}
    assert not any(key.startswith("_") for key in saved)  # untagged rows have no bucket of their own
    for lang in ("en", "de", "fr"):
        for direction in ("image_to_text", "text_to_image"):
            r1, r5, r10 = (saved[f"{lang}_{direction}_R@{k}"] for k in (1, 5, 10))
            assert 0 <= r1 <= r5 <= r10 == 1.0  # pools of <= 10 pairs: the true match is always in the top 10
    assert saved["image_to_text_R@10"] < 1.0  # among all 34 pairs it is not (an untrained model)
    log = (tmp_path / "eval" / "out.log").read_text()
    table = log.split("retrieval recall per language after epoch 0:\n")[1].splitlines()
    assert [row.split(" | ")[0].strip() for row in table[2:6]] == ["all", "de", "en", "fr"]
    assert f"{100 * saved['fr_text_to_image_R@5']:.1f}" in table[5]


def test_csv_language_column_bad_tags_and_training_batches(tmp_path, digits, clip_tokenizer, preprocess):
    tokenizer = clip_tokenizer
    langs = ["en", "de", "en US", "fr", " pt-BR ", "", "de", "42"]  # "en US": a space; "42": digits are allowed
    csv = _digit_csv(tmp_path, digits, langs, lang_column="language")
    cfg = DataConfig(val_data=str(csv), train_data=str(csv), val_lang_key="language", batch_size=4, workers=0)
    data = get_data(cfg, preprocess_train=preprocess, preprocess_val=preprocess, tokenizer=tokenizer)
    tags = [tag for _, _, batch_langs in data["val"].dataloader for tag in batch_langs]
    # the bad row 2 is counted and left out, as any bad validation row (no row is scored twice)
    assert tags == ["en", "de", "fr", "pt-BR", "", "de", "42"]
    assert data["val"].skipped.by_reason() == {"bad_lang": 1}
    assert all(len(batch) == 2 for batch in data["train"].dataloader)  # training batches stay (images, texts)
    assert data["train"].skipped.total == 0  # and training does not read the tags
    default = get_data(
        DataConfig(val_data=str(csv), batch_size=8, workers=0),
        preprocess_train=preprocess,
        preprocess_val=preprocess,
        tokenizer=tokenizer,
    )["val"]
    assert list(next(iter(default.dataloader))[2]) == [""] * 8  # no "lang" column: untagged
    assert parse_args(["--val-lang-key", "language"]).data.val_lang_key == "language"
    assert parse_args([]).data.val_lang_key == "lang"
    with pytest.raises(ValueError, match="val_lang_key=''"):
        DataConfig(val_lang_key="")


def test_retrieval_ranks_match_a_naive_ranking():
    torch.manual_seed(1)
    queries = torch.nn.functional.normalize(torch.randn(50, 8), dim=-1)
    candidates = torch.nn.functional.normalize(queries + 0.8 * torch.randn(50, 8), dim=-1)
    ranks = retrieval_ranks(queries, candidates, chunk=7)
    for i in range(50):
        order = sorted(range(50), key=lambda j: -float(queries[i] @ candidates[j]))
        assert ranks[i].item() == order.index(i)
