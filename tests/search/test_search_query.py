"""open_mclip.search queries: the expression grammar, weighted text + image combinations, filters on path, date
and size, the language hint reaching an NLLB tokenizer, faiss against exact search, and the command line."""

from __future__ import annotations

import datetime as dt
import json
import os

import numpy as np
import pytest
from search_support import write_digits, write_photos

from open_mclip.search import Encoder, Filters, SearchIndex, Term, build_index, language_token, parse_query
from open_mclip.search.cli import main, parse_args

QUIET = {"progress": False}


@pytest.fixture(scope="module")
def encoder(tiny_model_dir):
    return Encoder.load(tiny_model_dir)


@pytest.fixture(scope="module")
def photo_index(tmp_path_factory, photos, encoder):
    """The real photos in a/ and b/, photo i modified on 2020-01-(i+1), indexed."""
    root = tmp_path_factory.mktemp("photo-index")
    paths = write_photos(root / "photos", photos)
    for i, path in enumerate(paths):
        stamp = dt.datetime(2020, 1, i + 1, 12).timestamp()
        os.utime(path, (stamp, stamp))
    build_index(root / "photos", root / "idx", encoder=encoder, **QUIET)
    return root


def test_parse_query_expressions(tmp_path):
    photo = tmp_path / "cat photo.jpg"
    photo.write_bytes(b"x")
    exists = os.path.isfile
    assert parse_query("a cat on a mat") == [Term("text", "a cat on a mat")]
    assert parse_query("well-known t-shirt") == [Term("text", "well-known t-shirt")]  # no operator without spaces
    terms = parse_query(f'"cat" + {photo} - "fruit"', exists=exists)
    assert terms == [Term("text", "cat"), Term("image", str(photo)), Term("text", "fruit", -1.0)]
    assert parse_query('2*"red car" - 0.5:night') == [Term("text", "red car", 2.0), Term("text", "night", -0.5)]
    assert parse_query("«семь» + 「七」") == [Term("text", "семь"), Term("text", "七")]
    assert parse_query('"a + b"') == [Term("text", "a + b")]  # operators inside quotes are text
    assert parse_query(f'"{photo}"', exists=exists) == [Term("text", str(photo))]  # quoted: a text, not the file
    for bad, message in (("", "empty"), ('"cat', "unclosed quote"), ('"cat" + - "dog"', "two operators")):
        with pytest.raises(ValueError, match=message):
            parse_query(bad)


def test_weighted_combination_is_the_normalised_sum(photo_index, photos, encoder):
    index = SearchIndex(photo_index / "idx", encoder=encoder)
    photo = photo_index / "photos" / "a" / "photo0.jpg"
    got = index.query_vector(f'"a cat" + 0.5*{photo} - "fruit"')
    parts = np.stack(
        [
            encoder.encode_texts(["a cat"])[0],
            index.encoder.encode_pil([photos[0]])[0],
            encoder.encode_texts(["fruit"])[0],
        ]
    )
    want = np.array([1.0, 0.5, -1.0]) @ parts
    np.testing.assert_allclose(got, want / np.linalg.norm(want), atol=1e-3)  # JPEG on disk vs the photo in memory
    image_only = index.search(str(photo), k=1)  # an unquoted image path: search by image; finds itself
    assert image_only[0].path == "a/photo0.jpg" and image_only[0].score == pytest.approx(1.0, abs=2e-2)
    like = index.search(like="a/photo0.jpg", k=3)  # more like this: the stored vector, the image itself left out
    assert "a/photo0.jpg" not in [r.path for r in like] and len(like) == 3


def test_filters_on_path_date_and_size(photo_index, photos, encoder):
    index = SearchIndex(photo_index / "idx", encoder=encoder)
    everything = {r.path for r in index.search("anything", k=50)}
    assert len(everything) == len(photos)
    in_a = {r.path for r in index.search("anything", k=50, filters=Filters(path_glob="a/*"))}
    assert in_a == {p for p in everything if p.startswith("a/")}
    after = Filters(modified_after=dt.datetime(2020, 1, 3).timestamp())
    assert {r.path for r in index.search("anything", k=50, filters=after)} == {
        f"{'a' if i % 2 == 0 else 'b'}/photo{i}.jpg" for i in range(2, len(photos))
    }
    wide = {f"{'a' if i % 2 == 0 else 'b'}/photo{i}.jpg" for i, p in enumerate(photos) if p.size[0] >= 600}
    assert 0 < len(wide) < len(photos)
    assert {r.path for r in index.search("anything", k=50, filters=Filters(min_width=600))} == wide
    nothing = Filters(path_glob="a/*", max_height=10)
    assert index.search("anything", k=5, filters=nothing) == []


def test_language_hint_reaches_an_nllb_tokenizer(tmp_path, tiny_model_dir, photos):
    transformers = pytest.importorskip("transformers")
    from open_mclip import HFTokenizer

    transformers.NllbTokenizer().save_pretrained(str(tmp_path / "nllb"))
    nllb = HFTokenizer(str(tmp_path / "nllb"), context_length=77)
    base = Encoder.load(tiny_model_dir)
    encoder = Encoder(base.model, nllb, base.preprocess, base.spec)
    ids = lambda code: nllb.tokenizer.convert_tokens_to_ids(code)  # noqa: E731
    assert encoder.tokenize(["bonjour"], lang="fr")[0, 0] == ids("fra_Latn")
    assert encoder.tokenize(["नमस्ते"], lang="hi")[0, 0] == ids("hin_Deva")
    assert encoder.tokenize(["你好"], lang="zho_Hant")[0, 0] == ids("zho_Hant")
    with pytest.raises(ValueError, match="unknown language 'xx'"):
        encoder.tokenize(["?"], lang="xx")
    assert language_token("pt-BR") == "por_Latn"

    write_photos(tmp_path / "photos", photos[:2])
    build_index(tmp_path / "photos", tmp_path / "idx", encoder=encoder, **QUIET)
    index = SearchIndex(tmp_path / "idx", encoder=encoder)
    fr, hi = index.query_vector("bonjour", lang="fr"), index.query_vector("bonjour", lang="hi")
    assert not np.allclose(fr, hi), "the hint changes the tokens, so the query vector"
    np.testing.assert_allclose(fr, encoder.encode_texts(["bonjour"], lang="fr")[0], atol=1e-6)
    clip = base.tokenize(["sept"], lang="fr")  # CLIP's BPE takes no language: the hint changes nothing
    assert clip.tolist() == base.tokenize(["sept"]).tolist()


def test_faiss_above_the_threshold_reports_recall_against_exact(tmp_path, mnist, encoder):
    pytest.importorskip("faiss")
    images, labels = mnist["test"]
    write_digits(tmp_path / "digits", images[:800], labels[:800])
    build_index(tmp_path / "digits", tmp_path / "idx", encoder=encoder, ann_threshold=500, **QUIET)
    manifest = json.loads((tmp_path / "idx" / "index.json").read_text())
    ann = manifest["ann"]
    assert ann["kind"] == "faiss" and ann["rows"] == 800 and (tmp_path / "idx" / "ann" / "faiss.index").is_file()
    assert ann["recall_at_10"] >= 0.95 or ann["nprobe"] == int(ann["factory"][3:].split(",")[0])
    approx = SearchIndex(tmp_path / "idx", encoder=encoder)
    exact = SearchIndex(tmp_path / "idx", encoder=encoder, approximate=False)
    assert approx.approximate and not exact.approximate
    overlap = []
    for digit in range(10):
        vector = approx.entries.embeddings[digit * 7]
        a, e = {r.row for r in approx.rank(vector, k=10)}, {r.row for r in exact.rank(vector, k=10)}
        overlap.append(len(a & e) / 10)
    assert np.mean(overlap) >= 0.8
    for path in sorted((tmp_path / "digits").rglob("*.png"))[:400]:
        path.unlink()
    build_index(tmp_path / "digits", tmp_path / "idx", encoder=encoder, ann_threshold=500, **QUIET)
    assert json.loads((tmp_path / "idx" / "index.json").read_text())["ann"] is None  # below the threshold again
    assert not (tmp_path / "idx" / "ann" / "faiss.index").exists()


def test_command_line_query_outputs_and_refusals(photo_index, tiny_model_dir, other_model_dir, capsys):
    idx = str(photo_index / "idx")
    assert main(["query", idx, "a cat", "-k", "3", "--json", "--lang", "en"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert len(payload["results"]) == 3 and payload["approximate"] is False
    assert payload["results"][0]["score"] >= payload["results"][1]["score"]
    assert main(["query", idx, "a cat", "-k", "2", "--paths", "--glob", "b/*"]) == 0
    lines = capsys.readouterr().out.split()
    assert len(lines) == 2 and all(os.path.isfile(p) and "/b/" in p for p in lines)
    assert main(["query", idx, "a cat", "--model", other_model_dir]) == 2
    err = capsys.readouterr().err
    assert tiny_model_dir in err and other_model_dir in err, err
    assert main(["query", idx, "a cat", "--after", "yesterday"]) == 2
    assert "--after='yesterday' is not a date" in capsys.readouterr().err
    assert main(["index", str(photo_index / "photos"), "--index", str(photo_index / "new-idx")]) == 2
    assert "name the model with --model" in capsys.readouterr().err
    assert parse_args(["serve", idx]).host == "127.0.0.1"
