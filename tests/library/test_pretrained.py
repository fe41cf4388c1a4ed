"""The pretrained registry against open_clip's, and downloads from a local hub cache and a local HTTP server."""

from __future__ import annotations

import ast
import hashlib
import http.server
import json
import logging
import subprocess
import sys
import threading
from pathlib import Path

import open_clip
import open_clip.pretrained as oc_pretrained
import pytest

from open_mclip import pretrained as pt

# The architectures open_mclip ships (its model_configs/, open_clip's names where open_clip has them); the registry
# must hold exactly open_clip's tags for them
SCOPE = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "model_configs").glob("*.json"))

REPO = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"  # the hub repo of the registry entry ViT-B-32:laion2b_s34b_b79k


# ---------------------------------------------------------------------------------------------------------------
# Registry


def _open_clip_pairs() -> list[tuple[str, str]]:
    return [(model, tag) for model, tag in open_clip.list_pretrained() if model in SCOPE]


def test_pairs_and_order_match_open_clip():
    expected = _open_clip_pairs()
    assert len(expected) == 177  # open_clip 3.3.0's pairs for the architectures shipped today
    assert pt.list_pretrained() == expected
    assert pt.list_pretrained(as_str=True) == [f"{m}:{t}" for m, t in expected]
    assert pt.list_pretrained(as_str=True)[0] == "RN50:openai"


@pytest.mark.parametrize(("model", "tag"), _open_clip_pairs())
def test_entry_matches_open_clip(model, tag):
    ours = pt.get_pretrained_cfg(model, tag)
    theirs = oc_pretrained.get_pretrained_cfg(model, tag)
    for field in ("hf_hub", "url", "mean", "std", "interpolation", "resize_mode"):
        assert ours[field] == theirs[field], field
    assert ours.get("quick_gelu", False) == theirs.get("quick_gelu", False)
    assert ours == theirs  # nothing extra, nothing missing, mean/std as tuples


def test_tags_by_model_and_models_by_tag_match_open_clip():
    for model in SCOPE:
        assert pt.list_pretrained_tags_by_model(model) == oc_pretrained.list_pretrained_tags_by_model(model)
    for tag in ("openai", "laion400m_e31", "metaclip_fullcc", "v1", "dfn2b", "LAION2B-S34B-B88K"):
        theirs = [m for m in oc_pretrained.list_pretrained_models_by_tag(tag) if m in SCOPE]
        assert pt.list_pretrained_models_by_tag(tag) == theirs
    assert pt.list_pretrained_models_by_tag("openai")[:2] == ["RN50", "RN101"]
    assert pt.list_pretrained_tags_by_model("ViT-e-14") == []


def test_quickgelu_copies_carry_quick_gelu():
    assert pt.list_pretrained_tags_by_model("ViT-H-14-quickgelu") == ["metaclip_fullcc", "dfn5b"]
    assert pt.get_pretrained_cfg("ViT-H-14-quickgelu", "dfn5b")["resize_mode"] == "squash"
    assert all(pt.get_pretrained_cfg("RN50-quickgelu", t)["quick_gelu"] for t in ("openai", "yfcc15m", "cc12m"))
    assert "quick_gelu" not in pt.get_pretrained_cfg("ViT-H-14", "metaclip_altogether")


@pytest.mark.parametrize("tag", ["laion2b_s34b_b79k", "LAION2B_S34B_B79K", "laion2b-s34b-b79k", "Laion2B-s34B_b79K"])
def test_tag_lookup_ignores_case_and_dashes(tag):
    cfg = pt.get_pretrained_cfg("ViT-B-32", tag)
    assert cfg["hf_hub"] == f"{REPO}/"
    assert pt.is_pretrained_cfg("ViT-B-32", tag)


def test_cfg_is_a_copy():
    cfg = pt.get_pretrained_cfg("RN50", "openai")
    cfg["hf_hub"] = "changed"
    assert pt.get_pretrained_cfg("RN50", "openai")["hf_hub"] == "timm/resnet50_clip.openai/"


def test_unknown_model_suggests_close_names():
    with pytest.raises(ValueError, match="ViT-B-33") as info:
        pt.pretrained_cfg("ViT-B-33", "openai")
    assert "'ViT-B-32'" in str(info.value)
    with pytest.raises(ValueError, match="ViT-e-14"):  # an architecture with no registered weights
        pt.pretrained_cfg("ViT-e-14", "laion2b")


def test_unknown_tag_lists_existing_tags():
    with pytest.raises(ValueError) as info:
        pt.pretrained_cfg("RN50", "openia")
    message = str(info.value)
    assert "Did you mean 'openai'" in message
    assert "Available: openai, yfcc15m, cc12m." in message


def test_bad_argument_types():
    with pytest.raises(TypeError, match="strings"):
        pt.pretrained_cfg("RN50", None)


def test_close_matches_message():
    message = pt.close_matches_message("convnext_bse", ["convnext_base", "RN50"], "model config")
    assert message == "No model config named 'convnext_bse'. Did you mean 'convnext_base'?"
    message = pt.close_matches_message("zzz", ["a", "b"], "tag", list_all=True)
    assert message == "No tag named 'zzz'. Available: a, b."


def test_registry_json_notes_its_source():
    document = json.loads((Path(pt.__file__).parent / "pretrained.json").read_text(encoding="utf-8"))
    assert "open_clip" in document["_source"]["origin"] and document["_source"]["licence"].startswith("MIT")
    assert set(document["pretrained"]) <= set(SCOPE)


def test_nothing_loaded_at_import():
    source = Path(pt.__file__).read_text(encoding="utf-8")
    top_level = [node for node in ast.parse(source).body if isinstance(node, ast.Import | ast.ImportFrom)]
    modules = [alias.name for node in top_level if isinstance(node, ast.Import) for alias in node.names]
    modules += [node.module for node in top_level if isinstance(node, ast.ImportFrom)]
    assert not any(name.startswith(("huggingface_hub", "tqdm", "torch")) for name in modules), modules
    code = "import open_mclip.pretrained as p; assert p._registry.cache_info().currsize == 0"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------------------------
# Hugging Face hub, served from a local cache laid out as huggingface_hub writes it


def test_hub_prefers_safetensors(hub_cache, add_hub_repo):
    add_hub_repo(REPO, {pt.HF_SAFE_WEIGHTS_NAME: b"safe", pt.HF_WEIGHTS_NAME: b"pickle"})
    cfg = pt.get_pretrained_cfg("ViT-B-32", "laion2b_s34b_b79k")
    path = pt.download_pretrained(cfg, cache_dir=str(hub_cache))
    assert Path(path).name == pt.HF_SAFE_WEIGHTS_NAME and Path(path).read_bytes() == b"safe"
    assert path == oc_pretrained.download_pretrained(cfg, cache_dir=str(hub_cache))
    bin_path = pt.download_pretrained(cfg, cache_dir=str(hub_cache), prefer_safetensors=False)
    assert Path(bin_path).read_bytes() == b"pickle"


def test_hub_falls_back_to_bin(hub_cache, add_hub_repo):
    add_hub_repo(REPO, {pt.HF_WEIGHTS_NAME: b"pickle"})
    cfg = pt.get_pretrained_cfg("ViT-B-32", "laion2b_s34b_b79k")
    path = pt.download_pretrained(cfg, cache_dir=str(hub_cache))
    assert Path(path).name == pt.HF_WEIGHTS_NAME and Path(path).read_bytes() == b"pickle"
    assert path == oc_pretrained.download_pretrained(cfg, cache_dir=str(hub_cache))


def test_hub_named_file_and_its_safetensors_twin(hub_cache, add_hub_repo):
    add_hub_repo("org/vitamin", {"pytorch_model.bin": b"bin", "pytorch_model.safetensors": b"safe"})
    path = pt.download_pretrained({"hf_hub": "org/vitamin/pytorch_model.bin"}, cache_dir=str(hub_cache))
    assert Path(path).read_bytes() == b"safe"
    add_hub_repo("org/nested", {"sub/weights.pt": b"nested"})
    path = pt.download_pretrained({"hf_hub": "org/nested/sub/weights.pt"}, cache_dir=str(hub_cache))
    assert Path(path).read_bytes() == b"nested"


def test_hub_preferred_over_url(hub_cache, add_hub_repo):
    # openai entries carry both; the hub copy wins and the (unreachable) URL is never tried
    add_hub_repo("timm/vit_base_patch32_clip_224.openai", {pt.HF_WEIGHTS_NAME: b"openai"})
    path, cfg = pt.resolve_pretrained("ViT-B-32", "OpenAI", cache_dir=str(hub_cache))
    assert Path(path).read_bytes() == b"openai"
    assert cfg["quick_gelu"] is True and cfg["mean"] == open_clip.OPENAI_DATASET_MEAN


def test_missing_repo_is_a_clear_error(hub_cache, add_hub_repo):
    with pytest.raises(FileNotFoundError) as info:
        pt.download_from_hf("org/absent", cache_dir=str(hub_cache))
    message = str(info.value)
    assert "'org/absent'" in message and pt.HF_SAFE_WEIGHTS_NAME in message and pt.HF_WEIGHTS_NAME in message
    assert "HF_HUB_OFFLINE" in message


def test_resolve_hf_hub_returns_config_and_weights(hub_cache, add_hub_repo):
    config = {"model_cfg": open_clip.get_model_config("ViT-B-32"), "preprocess_cfg": {"mean": [0.5] * 3}}
    add_hub_repo(
        "org/my-clip",
        {pt.HF_CONFIG_NAME: json.dumps(config).encode(), pt.HF_SAFE_WEIGHTS_NAME: b"safe"},
    )
    parsed, weights = pt.resolve_hf_hub("hf-hub:org/my-clip", cache_dir=str(hub_cache))
    assert parsed == config
    assert Path(weights).read_bytes() == b"safe"
    with pytest.raises(FileNotFoundError, match="org/other"):
        pt.resolve_hf_hub("hf-hub:org/other", cache_dir=str(hub_cache))
    with pytest.raises(ValueError, match="org/repo"):
        pt.resolve_hf_hub("hf-hub:org", cache_dir=str(hub_cache))


def test_resolve_hf_hub_rejects_a_non_open_clip_config(hub_cache, add_hub_repo):
    add_hub_repo("org/not-clip", {pt.HF_CONFIG_NAME: b'{"architectures": ["BertModel"]}'})
    with pytest.raises(ValueError, match="model_cfg"):
        pt.resolve_hf_hub("hf-hub:org/not-clip", cache_dir=str(hub_cache))


def test_resolve_pretrained_file_and_errors(tmp_path):
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"x")
    assert pt.resolve_pretrained("ViT-e-14", str(weights)) == (str(weights), {})
    with pytest.raises(ValueError, match="Available: openai, yfcc15m, cc12m") as info:
        pt.resolve_pretrained("RN50", str(tmp_path / "missing.pt"))
    assert "not an existing file" in str(info.value)
    with pytest.raises(ValueError, match="tag or a file path"):
        pt.resolve_pretrained("RN50", "")


def test_split_hf_hub():
    assert pt.split_hf_hub("org/repo/") == ("org/repo", None)
    assert pt.split_hf_hub("org/repo") == ("org/repo", None)
    assert pt.split_hf_hub("org/repo/a/b.bin") == ("org/repo", "a/b.bin")
    with pytest.raises(ValueError, match="org/repo"):
        pt.split_hf_hub("repo-only")


# ---------------------------------------------------------------------------------------------------------------
# Plain URLs, served by a local HTTP server


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        super().do_GET()


@pytest.fixture
def web(tmp_path, monkeypatch):
    """A file server on 127.0.0.1 over ``tmp_path/www``; yields (root folder, base URL, request log)."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    root = tmp_path / "www"
    root.mkdir()
    handler = type("Handler", (_QuietHandler,), {"requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: handler(*a, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}", handler.requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


PAYLOAD = b"not really a ResNet, but bytes to hash" * 1000
SHA = hashlib.sha256(PAYLOAD).hexdigest()


def _serve(root: Path, relative: str, payload: bytes = PAYLOAD) -> None:
    (root / relative).parent.mkdir(parents=True, exist_ok=True)
    (root / relative).write_bytes(payload)


def test_url_download_checks_sha256(web, tmp_path):
    root, base, requests = web
    _serve(root, f"{SHA}/RN50.pt")
    cache = tmp_path / "cache"
    path = pt.download_url(f"{base}/{SHA}/RN50.pt", cache_dir=str(cache))
    assert path == str(cache / "RN50.pt") and Path(path).read_bytes() == PAYLOAD
    assert pt.download_url(f"{base}/{SHA}/RN50.pt", cache_dir=str(cache)) == path
    assert len(requests) == 1  # the verified cached copy is reused


def test_url_download_rejects_bad_sha256(web, tmp_path):
    root, base, _ = web
    wrong = "f" * 64
    _serve(root, f"{wrong}/RN50.pt")
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError, match=f"sha256 is {SHA}, not the expected {wrong}"):
        pt.download_url(f"{base}/{wrong}/RN50.pt", cache_dir=str(cache))
    assert list(cache.iterdir()) == []  # no partial or unverified file left behind


def test_url_download_replaces_corrupt_cached_file(web, tmp_path, caplog):
    root, base, requests = web
    _serve(root, f"{SHA}/RN50.pt")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "RN50.pt").write_bytes(b"truncated")
    with caplog.at_level(logging.WARNING, logger="open_mclip.pretrained"):
        path = pt.download_url(f"{base}/{SHA}/RN50.pt", cache_dir=str(cache))
    assert Path(path).read_bytes() == PAYLOAD and len(requests) == 1
    assert "does not match" in caplog.text


def test_url_download_release_style_hash_prefix(web, tmp_path):
    root, base, _ = web
    good = f"mlfoundations/v0.2-weights/rn50-quickgelu-yfcc15m-{SHA[:8]}.pt"
    bad = "mlfoundations/v0.2-weights/rn50-quickgelu-cc12m-00000000.pt"
    _serve(root, good)
    _serve(root, bad)
    assert Path(pt.download_url(f"{base}/{good}", cache_dir=str(tmp_path / "c"))).read_bytes() == PAYLOAD
    with pytest.raises(RuntimeError, match="sha256"):
        pt.download_url(f"{base}/{bad}", cache_dir=str(tmp_path / "c"))


def test_expected_sha256_of_registry_urls():
    openai = pt.get_pretrained_cfg("RN50", "openai")["url"]
    assert pt.expected_sha256(openai) == openai.split("/")[-2]
    assert pt.expected_sha256(pt.get_pretrained_cfg("RN50", "yfcc15m")["url"]) == "455df137"
    assert pt.expected_sha256(pt.get_pretrained_cfg("ViT-B-32", "metaclip_400m")["url"]) == ""


def test_download_pretrained_uses_url_when_asked(web, tmp_path):
    root, base, _ = web
    _serve(root, f"{SHA}/ViT-B-32.pt")
    cfg = {"url": f"{base}/{SHA}/ViT-B-32.pt", "hf_hub": "timm/unreachable/"}
    path = pt.download_pretrained(cfg, cache_dir=str(tmp_path / "c"), prefer_hf_hub=False)
    assert Path(path).read_bytes() == PAYLOAD
    with pytest.raises(ValueError, match="names no"):
        pt.download_pretrained({"mean": (0.5, 0.5, 0.5)})
    assert pt.download_pretrained({}) == "" == oc_pretrained.download_pretrained({})  # open_clip's empty entry
