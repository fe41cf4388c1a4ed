"""Pretrained weights: the (architecture, tag) registry, and fetching weights from the Hugging Face hub or a URL.

The registry data (``pretrained.json``) is copied from open_clip 3.3.0 for the architectures open_mclip implements;
``scripts/make_pretrained_registry.py`` regenerates it. Nothing is read or fetched until a function asks for it.
"""

from __future__ import annotations

import copy
import difflib
import functools
import hashlib
import json
import logging
import os
import re
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from .constants import HF_CONFIG_NAME, HF_HUB_PREFIX, HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

logger = logging.getLogger(__name__)

URL_CACHE_DIR = "~/.cache/clip"  # open_clip's cache for URL downloads, so files already fetched by it are reused

_TUPLE_FIELDS = ("mean", "std")
_SHA256_DIR = re.compile(r"[0-9a-f]{64}")
_SHA256_PREFIX = re.compile(r"[0-9a-f]{8,64}")
_CHUNK = 1 << 20


# ---------------------------------------------------------------------------------------------------------------
# Registry


@functools.lru_cache(maxsize=1)
def _registry() -> dict[str, dict[str, dict[str, Any]]]:
    """The parsed registry, {architecture: {tag: cfg}} in open_clip's order; read once, on first use."""
    text = resources.files(__package__).joinpath("pretrained.json").read_text(encoding="utf-8")
    return json.loads(text)["pretrained"]


def _clean_tag(tag: str) -> str:
    """Normalise a tag the way open_clip does: lower case, '-' read as '_'."""
    return tag.lower().replace("-", "_")


def close_matches_message(name: str, choices: Iterable[str], what: str, *, list_all: bool = False) -> str:
    """An error message for an unknown ``name``: the closest ``choices`` and, with ``list_all``, every choice.

    ``what`` names the kind of thing, e.g. ``close_matches_message("ViT-B-33", models, "model config")`` gives
    "No model config named 'ViT-B-33'. Did you mean 'ViT-B-32'?".
    """
    choices = list(choices)
    message = f"No {what} named {name!r}."
    close = difflib.get_close_matches(name, choices, n=5, cutoff=0.6)
    if close:
        message += f" Did you mean {', '.join(repr(c) for c in close)}?"
    if list_all:
        message += f" Available: {', '.join(choices) if choices else '(none)'}."
    return message


def list_pretrained(as_str: bool = False) -> list[tuple[str, str]] | list[str]:
    """Every (architecture, tag) with pretrained weights, in open_clip's order; ``as_str`` gives 'arch:tag'."""
    pairs = [(model, tag) for model, tags in _registry().items() for tag in tags]
    if as_str:
        return [f"{model}:{tag}" for model, tag in pairs]
    return pairs


def list_pretrained_tags_by_model(model: str) -> list[str]:
    """The pretrained tags of ``model`` (empty for an architecture without registered weights)."""
    return list(_registry().get(model, {}))


def list_pretrained_models_by_tag(tag: str) -> list[str]:
    """The architectures that have pretrained weights under ``tag`` (matched as open_clip matches tags)."""
    cleaned = _clean_tag(tag)
    return [model for model, tags in _registry().items() if cleaned in tags]


def is_pretrained_cfg(model: str, tag: str) -> bool:
    """Whether ``tag`` names registered weights for ``model``."""
    return _clean_tag(tag) in _registry().get(model, {})


def pretrained_cfg(model: str, tag: str) -> dict[str, Any]:
    """A copy of the registry entry for (model, tag): hub location, url, preprocessing, quick_gelu.

    Tags match case-insensitively with '-' and '_' equal. Unknown names raise ``ValueError`` with suggestions.
    """
    if not isinstance(model, str) or not isinstance(tag, str):
        raise TypeError(f"model and tag must be strings, got {model!r} and {tag!r}")
    registry = _registry()
    if model not in registry:
        message = close_matches_message(model, registry, "model with pretrained weights")
        raise ValueError(f"{message} list_pretrained() gives every (model, tag) pair.")
    tags = registry[model]
    cleaned = _clean_tag(tag)
    if cleaned not in tags:
        raise ValueError(close_matches_message(cleaned, tags, f"pretrained tag for {model}", list_all=True))
    cfg = copy.deepcopy(tags[cleaned])
    for field in _TUPLE_FIELDS:
        if field in cfg:
            cfg[field] = tuple(cfg[field])  # open_clip keeps mean/std as tuples
    return cfg


def get_pretrained_cfg(model: str, tag: str) -> dict[str, Any]:
    """open_clip's lookup: the registry entry for (model, tag), or ``{}`` when there is none (``pretrained_cfg``
    raises with suggestions instead)."""
    return pretrained_cfg(model, tag) if is_pretrained_cfg(model, tag) else {}


def get_pretrained_url(model: str, tag: str) -> str:
    """The plain download URL of (model, tag), or '' when it has none (most weights are on the hub)."""
    return get_pretrained_cfg(model, tag).get("url", "")


# ---------------------------------------------------------------------------------------------------------------
# Hugging Face hub


def split_hf_hub(location: str) -> tuple[str, str | None]:
    """Split 'org/repo/' or 'org/repo/path/file' into (repo id, file name or None for the default weights)."""
    parts = location.strip("/").split("/")
    if len(parts) < 2 or not all(parts[:2]):
        raise ValueError(f"Hub location {location!r} is not of the form 'org/repo' or 'org/repo/filename'")
    filename = "/".join(parts[2:]) or None
    return f"{parts[0]}/{parts[1]}", filename


def _safetensors_alternatives(filename: str) -> Iterator[str]:
    """The safetensors names worth trying before ``filename`` (same rule as open_clip)."""
    if filename == HF_WEIGHTS_NAME:
        yield HF_SAFE_WEIGHTS_NAME
    elif filename.endswith((".bin", ".pth")):
        yield filename[:-4] + ".safetensors"


def download_from_hf(
    repo_id: str,
    *,
    filename: str | None = None,
    cache_dir: str | None = None,
    prefer_safetensors: bool = True,
    revision: str | None = None,
) -> str:
    """Fetch one file of a hub repo (default: the open_clip weights), trying a safetensors twin first.

    Returns the local path. Raises ``FileNotFoundError`` naming the repo and the files tried when none can be had.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    filename = filename or HF_WEIGHTS_NAME
    candidates = [*(_safetensors_alternatives(filename) if prefer_safetensors else ()), filename]
    last_error: Exception | None = None
    for candidate in candidates:
        try:
            path = hf_hub_download(
                repo_id=repo_id,
                filename=candidate,
                revision=revision,
                cache_dir=cache_dir,
                library_name="open_mclip",
            )
        except EntryNotFoundError as error:  # also the offline "not in the local cache" error
            logger.debug("%s not available from %s: %s", candidate, repo_id, error)
            last_error = error
            continue
        except (RepositoryNotFoundError, RevisionNotFoundError) as error:
            raise FileNotFoundError(
                f"Hugging Face hub repo {repo_id!r} not found or not accessible: {error}"
            ) from error
        logger.info("Using %s from hub repo %s", candidate, repo_id)
        return path
    raise FileNotFoundError(
        f"Could not get {' or '.join(candidates)} from Hugging Face hub repo {repo_id!r} "
        f"(cache_dir={cache_dir!r}). Check the repo id; offline (HF_HUB_OFFLINE=1) the file must already be in "
        f"the hub cache. Last error: {last_error}"
    ) from last_error


def _hub_repo(name: str) -> str:
    """The repo id of a model named 'hf-hub:org/repo' (or 'org/repo')."""
    repo_id, filename = split_hf_hub(name.removeprefix(HF_HUB_PREFIX))
    if filename is not None:
        raise ValueError(f"{name!r} names a file; give the repo only, as 'hf-hub:{repo_id}'")
    return repo_id


def hf_hub_config(name: str, *, cache_dir: str | None = None) -> dict[str, Any]:
    """The parsed open_clip_config.json of a model named 'hf-hub:org/repo'."""
    repo_id = _hub_repo(name)
    config_path = download_from_hf(repo_id, filename=HF_CONFIG_NAME, cache_dir=cache_dir, prefer_safetensors=False)
    try:
        with open(config_path, encoding="utf-8") as handle:
            config = json.load(handle)
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_path} (from hub repo {repo_id!r}) is not valid JSON: {err}") from err
    if not isinstance(config, dict) or "model_cfg" not in config:
        raise ValueError(f"{config_path} (from hub repo {repo_id!r}) has no 'model_cfg'; it is not an open_clip config")
    return config


def resolve_hf_hub(name: str, *, cache_dir: str | None = None) -> tuple[dict[str, Any], str]:
    """For a model named 'hf-hub:org/repo': its parsed open_clip_config.json and the path of its weights."""
    config = hf_hub_config(name, cache_dir=cache_dir)
    return config, download_from_hf(_hub_repo(name), cache_dir=cache_dir)


# ---------------------------------------------------------------------------------------------------------------
# Plain URLs


def expected_sha256(url: str) -> str:
    """The sha256 (or its prefix) a download URL promises, or '' when it promises none.

    OpenAI's URLs put the full hash in the folder before the file name; open_clip's GitHub releases end the file
    stem with '-<hash prefix>'.
    """
    parts = urllib.parse.urlparse(url).path.split("/")
    if len(parts) >= 2 and _SHA256_DIR.fullmatch(parts[-2]):
        return parts[-2]
    if "mlfoundations" in url:
        suffix = os.path.splitext(parts[-1])[0].rsplit("-", 1)[-1]
        if _SHA256_PREFIX.fullmatch(suffix):
            return suffix
    return ""


def _sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_url(url: str, *, cache_dir: str | None = None, timeout: float = 60.0) -> str:
    """Download ``url`` into ``cache_dir`` (default ~/.cache/clip) and check the sha256 the URL promises.

    A cached file with the right hash is reused. The file appears under its final name only once verified.
    """
    folder = Path(cache_dir or URL_CACHE_DIR).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    filename = os.path.basename(urllib.parse.urlparse(url).path)
    if not filename:
        raise ValueError(f"URL {url!r} has no file name to save the download under")
    target = folder / filename
    expected = expected_sha256(url)
    if target.exists() and not target.is_file():
        raise FileExistsError(f"{target} exists and is not a regular file; move it away to download {url}")
    if target.is_file():
        if not expected or _sha256_of(target).startswith(expected):
            return str(target)
        logger.warning("%s exists but its sha256 does not match %s; downloading again", target, expected)
    _fetch_verified(url, target=target, expected=expected, timeout=timeout)
    return str(target)


def _fetch_verified(url: str, *, target: Path, expected: str, timeout: float) -> None:
    """Stream ``url`` to a temporary file beside ``target``, hashing as it goes; rename it only if the hash fits."""
    from tqdm import tqdm

    digest = hashlib.sha256()
    handle, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as output, urllib.request.urlopen(url, timeout=timeout) as source:
            total = int(source.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=target.name, disable=None) as progress:
                for chunk in iter(lambda: source.read(_CHUNK), b""):
                    output.write(chunk)
                    digest.update(chunk)
                    progress.update(len(chunk))
        actual = digest.hexdigest()
        if expected and not actual.startswith(expected):
            raise RuntimeError(f"Downloaded {url} but its sha256 is {actual}, not the expected {expected}")
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.remove(tmp_name)


# ---------------------------------------------------------------------------------------------------------------
# Putting it together


def download_pretrained(
    cfg: dict[str, Any],
    prefer_hf_hub: bool = True,
    cache_dir: str | None = None,
    *,
    prefer_safetensors: bool = True,
) -> str:
    """Fetch the weights a registry entry points at and return their local path ('' for an empty entry, as open_clip).

    A 'file' entry is returned as is; the hub location is used before the URL (as in open_clip) unless
    ``prefer_hf_hub`` is false.
    """
    if not cfg:
        return ""
    if cfg.get("file"):
        return str(cfg["file"])
    hub, url = cfg.get("hf_hub", ""), cfg.get("url", "")
    if hub and (prefer_hf_hub or not url):
        repo_id, filename = split_hf_hub(hub)
        return download_from_hf(repo_id, filename=filename, cache_dir=cache_dir, prefer_safetensors=prefer_safetensors)
    if url:
        return download_url(url, cache_dir=cache_dir)
    raise ValueError(f"Pretrained cfg {cfg!r} names no 'hf_hub', 'url' or 'file' to load weights from")


def resolve_pretrained(model: str, pretrained: str, *, cache_dir: str | None = None) -> tuple[str, dict[str, Any]]:
    """Turn ``pretrained`` (a tag of ``model`` or a local file) into (weights path, registry cfg or {}).

    A registered tag wins over a file of the same name, as in open_clip; otherwise an existing file is used as is.
    """
    if not pretrained:
        raise ValueError(f"pretrained must be a tag or a file path, got {pretrained!r}")
    if is_pretrained_cfg(model, pretrained):
        cfg = pretrained_cfg(model, pretrained)
        return download_pretrained(cfg, cache_dir=cache_dir), cfg
    if os.path.isfile(pretrained):
        return pretrained, {}
    tags = list_pretrained_tags_by_model(model)
    if tags:
        message = close_matches_message(_clean_tag(pretrained), tags, f"pretrained tag for {model}", list_all=True)
    else:
        message = close_matches_message(model, _registry(), "model with pretrained weights")
    raise ValueError(f"{message} {pretrained!r} is not an existing file either.")


# ---------------------------------------------------------------------------------------------------------------
# open_clip's names for the helpers above


def download_pretrained_from_url(url: str, cache_dir: str | None = None) -> str:
    """open_clip's name for :func:`download_url` (same cache folder and sha256 rule)."""
    return download_url(url, cache_dir=cache_dir)


def download_pretrained_from_hf(
    model_id: str, filename: str | None = None, revision: str | None = None, cache_dir: str | None = None
) -> str:
    """open_clip's name for :func:`download_from_hf` (a safetensors twin is preferred)."""
    return download_from_hf(model_id, filename=filename, revision=revision, cache_dir=cache_dir)


def has_hf_hub(necessary: bool = False) -> bool:
    """Whether huggingface_hub is importable (a dependency of open_mclip, so normally True)."""
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        if necessary:
            raise RuntimeError("this needs the Hugging Face hub client: pip install huggingface_hub") from None
        return False
    return True
