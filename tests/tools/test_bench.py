"""The benchmark harness (bench/): both sides must compute the same thing before they are timed, the ratios are
what the timings say, and the memory probe measures what a call really allocates. No timing is asserted here."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest
import torch
from bench import cases
from bench.harness import OURS, REFERENCE, SIDES, Case, build, peak_memory, run_case, table
from bench.run import main
from PIL import Image

# a CLIP both libraries build from the same open_clip config dict
TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def allocate(*, sides: tuple[str, ...], mib: int) -> dict:
    """A builder whose call holds `mib` MiB (written, so resident) at its peak, then frees it."""

    def call() -> int:
        block = torch.ones(mib * 2**20 // 4, dtype=torch.float32)
        return int(block.numel())

    return {side: call for side in sides}


def test_train_step_sides_agree_and_ratio_is_the_timings():
    case = Case("tiny train", "bench.cases:train_step", {"config": TINY, "batch_size": 8}, 8, check=cases.close_fp32)
    result = run_case(case, device="cpu", repeats=3, memory=False)
    for side in SIDES:
        assert len(result[side]["seconds"]) == 3 and min(result[side]["seconds"]) > 0
        assert result[side]["per_s"] == pytest.approx(8 / sorted(result[side]["seconds"])[1])
    assert result["speed_ratio"] == pytest.approx(result[OURS]["per_s"] / result[REFERENCE]["per_s"])
    assert "memory_ratio" not in result
    assert "tiny train" in table([result])


@pytest.mark.parametrize("precision", ["fp32", "amp_bf16"])
def test_check_fails_for_a_model_with_other_weights(precision):
    """Weights a little off the reference's: the fingerprint check must tell them apart, under autocast's looser
    tolerance too."""
    kwargs = {"config": TINY, "batch_size": 8, "precision": precision}
    check = cases.close_fp32 if precision == "fp32" else cases.close_autocast
    shared = cases.train_step(sides=SIDES, **kwargs)
    reference = shared[REFERENCE]()
    check(reference, shared[OURS]())
    other = cases.train_step(sides=SIDES, **kwargs)[OURS]
    net = other.args[0]  # the partial's model
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(0.1 * parameter.abs().mean() * torch.randn(parameter.shape, generator=generator))
    with pytest.raises(AssertionError):
        check(reference, other())


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_loss_sides_agree_in_loss_and_gradients(kind):
    calls = cases.contrastive_loss(sides=SIDES, kind=kind, batch_size=256, dim=64)
    reference, ours = calls[REFERENCE](), calls[OURS]()
    cases.close_fp32(reference, ours)
    # each call starts from fresh leaves: a second call gives the same gradients, not accumulated ones
    cases.close_fp32(reference, calls[REFERENCE]())
    assert reference[1:].abs().max() > 1e-5  # the fingerprint holds real gradients


@pytest.mark.parametrize("tokenizer", ["clip", pytest.param("xlmr", marks=pytest.mark.slow)])  # xlmr: 7 s
def test_tokenizers_give_identical_ids_on_real_multilingual_text(tokenizer):
    try:
        calls = cases.tokenize(sides=SIDES, tokenizer=tokenizer, count=300)
    except FileNotFoundError as error:  # the XLM-R tokenizer comes from a data package of the test environment
        pytest.skip(str(error))
    reference, ours = calls[REFERENCE](), calls[OURS]()
    cases.same(reference, ours)
    assert reference.shape == (300, 77)
    changed = ours.clone()
    changed[0, 1] += 1
    with pytest.raises(AssertionError, match="1 of"):
        cases.same(reference, changed)


def test_bench_texts_cover_every_language():
    texts = cases._bench_texts(500)
    assert len(texts) == 500
    assert any("\u3040" <= c <= "\u30ff" for t in texts for c in t)  # Japanese kana
    assert any("\u0600" <= c <= "\u06ff" for t in texts for c in t)  # Arabic


@pytest.mark.parametrize("train", [False, True])
def test_preprocessing_sides_agree_on_real_photos(train):
    calls = cases.preprocess(sides=SIDES, size=64, train=train, count=4)
    reference = calls[REFERENCE]()
    cases.close_fp32(reference, calls[OURS]())
    assert reference.shape == (4, 3, 64, 64)


def test_peak_memory_measures_what_a_call_allocates():
    case = Case("allocate", "test_bench:allocate", {"mib": 64})
    mib = peak_memory(case, OURS, device="cpu") / 2**20
    assert 60 <= mib <= 80, mib


@pytest.mark.slow  # a spawned child that imports torch and open_clip: 8 s
def test_peak_memory_of_the_loss_covers_its_logits():
    batch = 1024
    case = Case("clip loss", "bench.cases:contrastive_loss", {"kind": "clip", "batch_size": batch, "dim": 64})
    mib = peak_memory(case, OURS, device="cpu") / 2**20
    logits_mib = batch * batch * 4 / 2**20
    assert logits_mib <= mib <= 8 * logits_mib, mib


@pytest.mark.slow  # a spawned child that imports torch and open_clip: 11 s
def test_a_failing_child_is_reported_not_awaited():
    case = Case("bad", "bench.cases:contrastive_loss", {"kind": "triplet"})
    with pytest.raises(RuntimeError, match="kind 'triplet'"):
        peak_memory(case, OURS, device="cpu")


def only_ours(*, sides: tuple[str, ...]) -> dict:
    """A builder that ignores the sides asked for."""
    return {OURS: lambda: 0}


def test_builder_must_build_every_side_asked():
    assert set(build(Case("ours", "test_bench:only_ours"), (OURS,))) == {OURS}
    with pytest.raises(AssertionError, match=r"no callable for \['open_clip'\]"):
        build(Case("both", "test_bench:only_ours"), SIDES)


def test_run_writes_results_and_machine(tmp_path):
    out = tmp_path / "results.json"
    results = main(["--only", "tokenize CLIP", "--repeats", "1", "--no-memory", "--out", str(out)])
    report = json.loads(out.read_text())
    assert [r["case"] for r in report["results"]] == [r["case"] for r in results] == ["tokenize CLIP BPE, 5 languages"]
    assert report["machine"]["device"] == "cpu" and report["machine"]["cores"] >= 1
    assert report["results"][0]["speed_ratio"] > 0


def test_run_rejects_a_filter_that_matches_nothing():
    with pytest.raises(SystemExit):
        main(["--only", "no such case", "--no-memory"])


@pytest.mark.e2e
def test_trainers_run_the_same_command_line_and_log_every_step(tmp_path):
    """open_clip's trainer and ours take one command line (CSV of real JPEGs) and both log each step's rate."""
    from bench.trainers import main as trainers_main

    out = tmp_path / "trainers.json"
    result = trainers_main(["--batch-size", "4", "--steps", "3", "--skip", "1", "--rounds", "1", "--out", str(out)])
    for side in SIDES:
        assert len(result["runs"][side]) == 1 and len(result["runs"][side][0]) == 3
        assert all(rate > 0 for rate in result["runs"][side][0])
        assert result[side]["per_s"] == pytest.approx(statistics.median(result["runs"][side][0][1:]))
    assert result["speed_ratio"] == pytest.approx(result[OURS]["per_s"] / result[REFERENCE]["per_s"])
    assert json.loads(out.read_text())["result"]["speed_ratio"] == pytest.approx(result["speed_ratio"])


def test_shards_become_one_csv_both_trainers_read(tmp_path, digits, png):
    import pandas
    import webdataset as wds
    from bench.trainers import shard_csv

    images, labels = digits
    (tmp_path / "shards" / "train").mkdir(parents=True)
    for shard in range(2):
        with wds.TarWriter(str(tmp_path / "shards" / "train" / f"shard-{shard:06d}.tar")) as writer:
            for i in range(3 * shard, 3 * shard + 3):
                writer.write(
                    {"__key__": f"train{i:06d}", "png": png(images[i]), "txt": f"a {labels[i]}", "json": b"{}"}
                )
    table = shard_csv(tmp_path / "shards", tmp_path / "csv")
    rows = pandas.read_csv(table, sep="\t")  # as both trainers read it
    assert rows["title"].tolist() == [f"a {labels[i]}" for i in range(6)]
    first = Image.open(rows["filepath"][0])
    assert np.array_equal(np.asarray(first), images[0])  # the shard's own PNG bytes
    with wds.TarWriter(str(tmp_path / "shards" / "train" / "shard-000002.tar")) as writer:
        writer.write({"__key__": "bad", "png": png(images[0]), "txt": "a\ttab"})
    with pytest.raises(ValueError, match="holds a tab, newline or quote"):
        shard_csv(tmp_path / "shards", tmp_path / "csv2")


def test_trainers_shards_need_a_model_config():
    from bench.trainers import main as trainers_main

    with pytest.raises(SystemExit):
        trainers_main(["--shards", "data/mnist-demo"])


def test_trainers_refuse_to_skip_every_step():
    from bench.trainers import main as trainers_main

    with pytest.raises(SystemExit):
        trainers_main(["--steps", "3", "--skip", "3"])


def die(*, sides: tuple[str, ...]) -> dict:
    """A builder whose call kills its process outright, as the kernel's out-of-memory killer would."""
    import os

    return {side: lambda: os._exit(9) for side in sides}


@pytest.mark.slow  # a spawned child that imports torch: 5 s
def test_a_child_that_dies_outright_is_reported():
    with pytest.raises(RuntimeError, match=r"the process died \(9\)"):
        peak_memory(Case("die", "test_bench:die"), OURS, device="cpu")
