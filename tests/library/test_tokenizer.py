"""open_mclip.tokenizer against open_clip 3.3.0: identical ids on a real multilingual corpus plus edge cases."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
import torch
from xlmr_support import XLMR_DIR, XLMR_FILE, needs_xlmr

from open_mclip import tokenizer as tok_mod
from open_mclip.tokenizer import ClipTokenizer, HFTokenizer, tokenize

open_clip = pytest.importorskip("open_clip")

SITE = Path(open_clip.__file__).resolve().parent.parent
BENCH = SITE / "clip_benchmark" / "datasets"

# Handwritten cases, by category: what CLIP's cleaning, regex and byte-level BPE must all get right.
EDGE_CASES: dict[str, list[str]] = {
    "empty": ["", " ", "   \t\n  ", "\u3000", "\u00a0\u2003\u2009", "\n\n"],
    "html": [
        "&amp;amp;",
        "&amp;amp;amp; three deep",
        "<b>&amp;amp; ftfy leaves entities alone next to a tag</b>",
        "Tom &amp; Jerry",
        "it&#39;s a dog",
        "&lt;b&gt;bold&lt;/b&gt;",
        "&quot;quoted&quot; text",
        "a&nbsp;b",
        "&#x1F600; smile",
        "&amp;lt;p&amp;gt; twice escaped",
        "AT&T &copy; 2024 &euro;5",
        "&unknownentity; &#99999999;",
    ],
    "mojibake": [
        "Ã©tÃ©",
        "cafÃ© au lait",
        "â€™s dog",
        "Iâ€™m here â€” ok â€œquotedâ€\x9d",
        "Ã¼ber MÃ¼nchen",
        "ðŸ˜€ happy",
        "ÐŸÑ€Ð¸Ð²ÐµÑ‚",
        "æ—¥æœ¬èªž",
    ],
    "emoji": [
        "😀",
        "👩‍👩‍👧‍👦 family",
        "🇺🇸🇯🇵🇩🇪 flags",
        "👍🏽👍🏿 thumbs",
        "🏳️‍🌈 rainbow flag",
        "❤️ love",
        "a🐶b🐱c",
        "🤷‍♀️ shrug",
        "👨🏾‍💻 coder",
        "🧑‍🤝‍🧑",
        "🔥🔥🔥🔥🔥🔥🔥🔥🔥🔥",
        "☕️ coffee ☀ sun",
    ],
    "digits": [
        "1234567890",
        "3.14159",
        "٣٤٥ ارقام",
        "१२३ संख्या",
        "①②③ ¼ ½ ²³",
        "2023-11-22T10:00:00Z",
        "10,000,000 people",
        "Ⅻ roman",
        "０１２ fullwidth",
    ],
    "url": [
        "https://example.com/path?q=1&x=2#frag",
        "www.example.org/index.html",
        "user.name+tag@example.com",
        "http://xn--fsq.com/日本",
        "ftp://files.example.net/a_b-c~d.tar.gz",
    ],
    "punctuation": [
        "!!!???...",
        "--- *** ###",
        "«quoted» „test“ ‚single‘",
        "()[]{}<>",
        "¿Qué? ¡Sí!",
        "。、「こんにちは」",
        "a_b_c snake_case_name",
        "@#$%^&*+=|\\/~`",
        "dog.cat,bird;fish:horse",
        "''''\"\"\"",
    ],
    "contractions": ["it's", "I'LL GO", "they've", "We'd", "She'S", "can't won't", "rock 'n' roll"],
    "special_tokens": [
        "<start_of_text>",
        "<end_of_text> trailing",
        "<START_OF_TEXT> upper",
        "<start_of_text><end_of_text>",
        "a<end_of_text>b",
    ],
    "case": ["HELLO World", "ǅemal title case", "İstanbul ISTANBUL", "ß STRASSE", "ΣΊΣΥΦΟΣ ΟΔΟΣ", "McDonald's"],
    "unicode": [
        "e\u0301te\u0301",
        "A\u030a",
        "tab\there",
        "nul\x00char",
        "\ufeffBOM",
        "zero\u200bwidth",
        "rtl\u200fmark",
        "soft\u00adhyphen",
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math",
        "ｆｕｌｌｗｉｄｔｈ",
        "ﬁne ligature",
        "Москва Moscow モスクワ 莫斯科",
    ],
    "long": [
        "a " * 100,
        "supercalifragilisticexpialidocious" * 10,
        "antidisestablishmentarianism",
        "x" * 300,
        "东京塔的照片" * 30,
        "a photo of a dog, " * 20,
    ],
}


def _read_json(name: str) -> dict:
    return json.loads((BENCH / name).read_text(encoding="utf-8"))


def build_corpus() -> list[tuple[str, str]]:
    """(tag, text) pairs, deterministic: real class names and prompts from clip_benchmark, then edge cases."""
    babel = _read_json("babel_imagenet.json")  # {lang: [class ids, class names]}
    nllb = _read_json("nllb_dist13b_prompts.json")  # {lang: ["... {} ..."]}
    corpus = []
    for lang in sorted(babel):
        names = babel[lang][1]
        corpus += [(lang, names[i * len(names) // 3]) for i in range(3)]
    for lang in sorted(nllb):
        prompts, names = nllb[lang], babel.get(lang, [[], ["?"]])[1]
        for i in range(2):
            corpus.append((lang, prompts[i * 7 % len(prompts)].replace("{}", names[(i * 11) % len(names)])))
        corpus.append((lang, " ".join(p.replace("{}", names[0]) for p in prompts[:40])))  # longer than 77 tokens
    for lang in ("en", "ar", "cn", "it", "jp"):
        names = _read_json(f"{lang}_classnames.json")["imagenet1k"]
        templates = _read_json(f"{lang}_zeroshot_classification_templates.json")["imagenet1k"]
        corpus += [(lang, templates[i].replace("{c}", names[i * 97])) for i in range(6)]
    for category, texts in EDGE_CASES.items():
        corpus += [(category, text) for text in texts]
    return corpus


@pytest.fixture(scope="module")
def corpus() -> list[tuple[str, str]]:
    return build_corpus()


@pytest.fixture(scope="module")
def texts(corpus) -> list[str]:
    return [text for _, text in corpus]


@pytest.fixture(scope="module")
def ours() -> ClipTokenizer:
    return ClipTokenizer()


@pytest.fixture(scope="module")
def ref():
    return open_clip.tokenizer.SimpleTokenizer()


# ------------------------------------------------------------------------------------------------ the corpus
SCRIPTS = {  # Unicode character-name prefix -> how many corpus strings must use it
    "LATIN": 100,
    "CYRILLIC": 10,
    "GREEK": 3,
    "ARABIC": 10,
    "HEBREW": 3,
    "DEVANAGARI": 5,
    "BENGALI": 3,
    "TAMIL": 3,
    "THAI": 3,
    "CJK UNIFIED": 10,
    "HANGUL": 3,
    "HIRAGANA": 3,
    "KATAKANA": 3,
    "GEORGIAN": 3,
    "ARMENIAN": 3,
    "ETHIOPIC": 3,
    "GUJARATI": 3,
    "SINHALA": 3,
    "KHMER": 3,
    "MYANMAR": 3,
}


def _scripts_of(text: str) -> set[str]:
    names = {unicodedata.name(ch, "") for ch in text}
    return {script for script in SCRIPTS for name in names if name.startswith(script)}


def test_corpus_is_large_multilingual_and_covers_edge_cases(corpus, texts):
    assert len(corpus) >= 500
    languages = {tag for tag, _ in corpus if tag not in EDGE_CASES}
    assert len(languages) >= 80
    counts = dict.fromkeys(SCRIPTS, 0)
    for text in texts:
        for script in _scripts_of(text):
            counts[script] += 1
    assert {s: n for s, n in counts.items() if n < SCRIPTS[s]} == {}
    assert "" in texts and "   \t\n  " in texts
    assert any("\u200d" in t for t in texts) and any("🏽" in t for t in texts) and any("🇩🇪" in t for t in texts)


# ------------------------------------------------------------------------------------------------ CLIP BPE
def test_vocab_file_is_open_clips():
    shipped = Path(tok_mod.__file__).with_name("bpe_simple_vocab_16e6.txt.gz").read_bytes()
    assert shipped == Path(open_clip.tokenizer.default_bpe()).read_bytes()


def test_special_ids_and_vocab_size_match_open_clip(ours, ref):
    ids = (ours.vocab_size, ours.sot_token_id, ours.eot_token_id)
    assert ids == (ref.vocab_size, ref.sot_token_id, ref.eot_token_id)
    assert (ours.vocab_size, ours.sot_token_id, ours.eot_token_id, ours.pad_token_id) == (49408, 49406, 49407, 0)
    assert ours.context_length == 77


def test_encode_matches_open_clip_on_corpus(ours, ref, texts):
    mismatches = [text for text in texts if ours.encode(text) != ref.encode(text)]
    assert mismatches == []


def test_batch_ids_match_open_clip_and_tokenize(ours, ref, texts):
    expected = ref(texts)
    got = ours(texts)
    assert got.dtype == torch.long and got.shape == (len(texts), 77)
    assert torch.equal(got, expected)
    assert torch.equal(tokenize(texts), open_clip.tokenize(texts))
    truncated = got[:, -1] != 0
    assert truncated.sum() >= 50  # the corpus really exercises truncation
    assert (got[truncated, -1] == ours.eot_token_id).all()


@pytest.mark.parametrize("context_length", [1, 2, 16, 64])
def test_other_context_lengths_match_open_clip(ours, ref, texts, context_length):
    got = ours(texts, context_length=context_length)
    assert got.shape == (len(texts), context_length)
    assert torch.equal(got, ref(texts, context_length=context_length))
    assert torch.equal(tokenize(texts, context_length), open_clip.tokenize(texts, context_length))


def test_instance_context_length_is_the_default(texts):
    short = ClipTokenizer(context_length=16)
    assert torch.equal(short(texts[:50]), open_clip.tokenizer.SimpleTokenizer(context_length=16)(texts[:50]))


def test_batching_matches_single_calls(ours, texts):
    subset = texts[::7]
    batch = ours(subset)
    rows = torch.cat([ours(text) for text in subset])
    assert torch.equal(batch, rows)
    assert ours("a dog").shape == (1, 77)
    assert torch.equal(ours(("a dog", "a cat")), ours(["a dog", "a cat"]))
    assert ours([]).shape == (0, 77)


@pytest.mark.parametrize("clean", ["whitespace", "canonicalize"])
def test_clean_options_match_open_clip(texts, clean):
    ours = ClipTokenizer(clean=clean)
    ref = open_clip.tokenizer.SimpleTokenizer(clean=clean)
    assert torch.equal(ours(texts), ref(texts))
    assert not torch.equal(ours(["A Dog's_Life!"]), ClipTokenizer()(["A Dog's_Life!"]))


def test_decode_matches_open_clip(ours, ref, texts):
    for text in texts:
        ids = ours.encode(text)
        assert ours.decode(ids) == ref.decode(ids)
    row = ours("a dog")[0]
    assert ours.decode(row[:4]) == "<start_of_text>a dog <end_of_text>"


def test_decode_encode_round_trip_on_ascii(ours, texts):
    ascii_texts = [t for t in texts if t.isascii() and t.strip()]
    assert len(ascii_texts) >= 50
    for text in ascii_texts:
        cleaned = tok_mod.get_clean_fn("lower")(text)
        assert ours.decode(ours.encode(text)).replace(" ", "") == cleaned.replace(" ", "")
    assert ours.decode(ours.encode("A photo of a  Dog")) == "a photo of a dog "


def test_pickled_tokenizer_gives_the_same_ids(texts):
    tokenizer = ClipTokenizer(context_length=32, clean="whitespace")
    tokenizer(texts[:20])  # warm the word cache, which must not stop pickling
    clone = pickle.loads(pickle.dumps(tokenizer))
    assert (clone.context_length, clone.clean) == (32, "whitespace")
    assert torch.equal(clone(texts), tokenizer(texts))


def test_bad_inputs_raise_clear_errors(ours):
    with pytest.raises(ValueError, match="context_length=0"):
        ours("a dog", context_length=0)
    with pytest.raises(ValueError, match="context_length"):
        ClipTokenizer(context_length=-3)
    with pytest.raises(ValueError, match="clean='upper'"):
        ClipTokenizer(clean="upper")
    with pytest.raises(TypeError, match="int"):
        ours(123)
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        ours(["ok", None])
    with pytest.raises(ValueError, match="49408"):
        ours.decode([1, 49408])
    with pytest.raises(ValueError, match="-1"):
        ours.decode([-1])
    with pytest.raises(ValueError, match="shape"):
        ours.decode(torch.zeros(2, 3, dtype=torch.long))


def test_import_does_no_work_and_needs_no_torchvision():
    code = (
        "import sys; sys.modules['torchvision'] = None; sys.modules['timm'] = None\n"
        "from open_mclip import tokenizer as t\n"
        "assert t._load_bpe_vocab.cache_info().currsize == 0, 'vocabulary read at import'\n"
        "assert t._default_tokenizer.cache_info().currsize == 0\n"
        "print(t.tokenize('a dog')[0, :4].tolist())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[49406, 320, 1929, 49407]"


# ------------------------------------------------------------------------------------------------ Hugging Face


@pytest.fixture(scope="module")
def ref_hf():
    """open_clip's HFTokenizer on the real XLM-R tokenizer, loaded offline from its local folder."""
    pytest.importorskip("transformers")
    return open_clip.tokenizer.HFTokenizer(str(XLMR_DIR), tokenizer_type="xlm-roberta")


@pytest.fixture(scope="module")
def hf_texts(corpus) -> list[str]:
    picked = [text for tag, text in corpus if tag not in EDGE_CASES][::2]
    return picked + [text for tag, text in corpus if tag in ("html", "mojibake", "emoji", "empty", "long")]


@needs_xlmr
@pytest.mark.parametrize("context_length", [77, 16])
@pytest.mark.parametrize("clean", ["whitespace", "lower", "canonicalize"])
def test_hf_ids_match_open_clip(ref_hf, hf_texts, context_length, clean):
    ours = HFTokenizer.from_tokenizer(ref_hf.tokenizer, context_length=context_length, clean=clean)
    ref_hf.clean_fn = open_clip.tokenizer.get_clean_fn(clean)
    try:
        expected = ref_hf(hf_texts, context_length=context_length)
    finally:
        ref_hf.clean_fn = open_clip.tokenizer.get_clean_fn("whitespace")
    got = ours(hf_texts)
    assert got.shape == (len(hf_texts), context_length)
    assert torch.equal(got, expected)


@needs_xlmr
def test_hf_padding_truncation_and_sep_stripping(ref_hf, hf_texts):
    xlmr = ref_hf.tokenizer
    ours = HFTokenizer.from_tokenizer(xlmr, context_length=16)
    ids = ours(["Hello world!", "ein Hund " * 40])
    assert ids[0].tolist() == [0, 35378, 8999, 38, 2] + [xlmr.pad_token_id] * 11
    assert ids[1, 0] == xlmr.bos_token_id and ids[1, -1] == xlmr.sep_token_id and (ids[1] != xlmr.pad_token_id).all()
    assert ours([]).shape == (0, 16) and ours("x", context_length=8).shape == (1, 8)
    stripped = HFTokenizer.from_tokenizer(xlmr, strip_sep_token=True)
    ref_hf.strip_sep_token = True
    try:
        expected = ref_hf(hf_texts)
    finally:
        ref_hf.strip_sep_token = False
    assert torch.equal(stripped(hf_texts), expected)
    assert not (stripped(hf_texts) == xlmr.sep_token_id).any()


@needs_xlmr
def test_hf_constructor_passes_tokenizer_file_through(ref_hf, hf_texts):
    ours = HFTokenizer(str(XLMR_DIR), tokenizer_file=str(XLMR_FILE), tokenizer_type="xlm-roberta", context_length=32)
    assert ours.vocab_size == 250002 and ours.pad_token_id == 1
    assert torch.equal(ours(hf_texts), ref_hf(hf_texts, context_length=32))
    with pytest.raises(ValueError, match="tokenizer_type"):  # a bare tokenizer.json does not know its pad token
        HFTokenizer(str(XLMR_DIR))


def test_hf_missing_transformers_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"pip install 'open_mclip\[hf\]'"):
        HFTokenizer("xlm-roberta-base")


def test_hf_from_tokenizer_rejects_names():
    with pytest.raises(TypeError, match="HFTokenizer"):
        HFTokenizer.from_tokenizer("xlm-roberta-base")


@pytest.fixture(scope="module")
def nllb_dir(tmp_path_factory) -> Path:
    """A real NLLB tokenizer (its 200 language codes, a toy word vocabulary) saved where AutoTokenizer finds it."""
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("nllb")
    transformers.NllbTokenizer().save_pretrained(str(folder))
    return folder


def test_hf_set_language_selects_the_language_token(nllb_dir):
    ours = HFTokenizer(str(nllb_dir), language="fra_Latn", context_length=6)
    nllb = ours.tokenizer
    fra, deu = nllb.convert_tokens_to_ids("fra_Latn"), nllb.convert_tokens_to_ids("deu_Latn")
    assert ours("hello")[0, 0] == fra
    ours.set_language("deu_Latn")
    assert ours("hello")[0, 0] == deu and nllb.src_lang == "deu_Latn"
    # open_clip only calls set_src_lang_special_tokens, which transformers 5 undoes on the next call
    ref = open_clip.tokenizer.HFTokenizer(str(nllb_dir), language="fra_Latn", context_length=6)
    assert ref("hello")[0, 0] == nllb.convert_tokens_to_ids("eng_Latn")
    with pytest.raises(ValueError, match="xx_Fake"):
        ours.set_language("xx_Fake")
    assert ours("hello")[0, 0] == deu  # a bad code leaves the language as it was


@needs_xlmr
def test_hf_set_language_on_a_tokenizer_without_languages(ref_hf):
    with pytest.raises(ValueError, match="no source language"):
        HFTokenizer.from_tokenizer(ref_hf.tokenizer).set_language("fra_Latn")


@needs_xlmr
def test_lone_tokenizer_file_never_asks_the_hub(monkeypatch):
    """With `tokenizer_file`, hub name lookups are off even when the hub is reachable in principle: an offline
    machine (no HF_HUB_OFFLINE set) would otherwise retry the network for every tokenizer it builds."""
    import huggingface_hub.constants
    import transformers.utils.hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(transformers.utils.hub, "is_offline_mode", lambda: False, raising=False)
    calls = []
    real = transformers.AutoTokenizer.from_pretrained

    def spy(name, **kwargs):
        calls.append(kwargs)
        return real(name, **kwargs)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", spy)
    tokenizer = HFTokenizer("xlm-roberta-base", tokenizer_file=str(XLMR_FILE), tokenizer_type="xlm-roberta")
    assert calls[0]["local_files_only"] is True
    assert tokenizer(["Hello world!"])[0, :5].tolist() == [0, 35378, 8999, 38, 2]
