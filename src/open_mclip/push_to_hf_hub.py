"""Model folders in open_clip's format, written atomically, and pushed to the Hugging Face hub.

`save_pretrained(model, folder)` writes what open_clip's `save_for_hf` writes: `open_clip_config.json`
(`{"model_cfg": <open_clip's schema>, "preprocess_cfg": ...}`), the weights in open_clip's key layout
(`open_clip_model.safetensors` and/or `open_clip_pytorch_model.bin`) and a Hugging Face tokenizer's files, so
`open_clip.create_model_and_transforms("local-dir:FOLDER")` loads it strictly. open_clip's own names
(`save_config_for_hf`, `save_for_hf`, `push_to_hf_hub`, `push_pretrained_to_hf_hub`, `generate_readme`) keep its
parameters and defaults and are thin layers over it. The hub is reached only through `huggingface_hub`
(`create_repo`, `file_exists`, `upload_folder`), imported when a push runs.

Run as `python -m open_mclip.push_to_hf_hub --model NAME --pretrained TAG_OR_FILE --repo-id ORG/NAME`.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from .constants import HF_CONFIG_NAME, HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME
from .convert import to_open_clip
from .open_clip_schema import open_clip_layout, to_open_clip_config
from .transform import PreprocessConfig

log = logging.getLogger(__name__)

__all__ = [
    "generate_readme",
    "push_pretrained_to_hf_hub",
    "push_to_hf_hub",
    "save_config_for_hf",
    "save_for_hf",
    "save_pretrained",
]

# open_clip's safe_serialization: True -> safetensors, False -> torch pickle, "both" -> both
_WEIGHT_FILES = {
    True: (HF_SAFE_WEIGHTS_NAME,),
    False: (HF_WEIGHTS_NAME,),
    "both": (HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME),
}


# ------------------------------------------------------------------------------------------ atomic writing


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """`write(temporary path)` in the same folder, then rename onto `path`: `path` is whole or absent, never half."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")  # a loader's *.safetensors glob skips it
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    _write_atomically(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2), encoding="utf-8"))


# ------------------------------------------------------------------------------------------------ contents


def _hub_preprocess_cfg(model: torch.nn.Module) -> dict[str, Any]:
    """The `preprocess_cfg` open_clip's `save_config_for_hf` writes (mean, std, interpolation, resize_mode), plus
    `fill_color` when it is not 0 (open_clip reads it too)."""
    pp = getattr(model, "preprocess_cfg", None)
    if not isinstance(pp, PreprocessConfig):  # a model built without the factory: its config's preprocessing
        pp = PreprocessConfig().merged(**getattr(model.cfg, "preprocess", {}))
    out: dict[str, Any] = {
        "mean": list(pp.mean),
        "std": list(pp.std),
        "interpolation": pp.interpolation,
        "resize_mode": pp.resize_mode,
    }
    if pp.fill_color:
        out["fill_color"] = pp.fill_color
    default = PreprocessConfig()
    for name in ("rgb_conversion", "background_color"):  # our options: open_clip's loader skips unknown keys
        if getattr(pp, name) != getattr(default, name):
            value = getattr(pp, name)
            out[name] = list(value) if isinstance(value, tuple) else value
    return out


def _hub_config(model: torch.nn.Module, model_config: dict[str, Any] | None) -> dict[str, Any]:
    model_cfg = to_open_clip_config(model.cfg) if model_config is None else copy.deepcopy(model_config)
    return {"model_cfg": model_cfg, "preprocess_cfg": _hub_preprocess_cfg(model)}


def _export_tensors(model: torch.nn.Module, layout: str) -> dict[str, torch.Tensor]:
    """The state dict in open_clip's `layout`, on the CPU, contiguous, no two entries sharing memory (safetensors
    refuses shared tensors; open_clip reads each key as its own tensor)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, tensor in to_open_clip(model.state_dict(), layout=layout).items():
        tensor = tensor.detach().cpu()
        storage = tensor.untyped_storage().data_ptr()
        if storage in seen and tensor.numel():
            tensor = tensor.clone()
        seen.add(storage)
        out[key] = tensor.contiguous()
    return out


def _write_weights(folder: Path, tensors: dict[str, torch.Tensor], names: Sequence[str]) -> None:
    for name in names:
        if name.endswith(".safetensors"):
            from safetensors.torch import save_file

            _write_atomically(folder / name, lambda tmp: save_file(tensors, str(tmp)))
        else:
            _write_atomically(folder / name, lambda tmp: torch.save(tensors, tmp))
    for stale in set(_WEIGHT_FILES["both"]) - set(names):  # an older save's other format would not match these
        (folder / stale).unlink(missing_ok=True)


def _check_tokenizer(model_cfg: dict[str, Any], tokenizer: Any) -> None:
    """open_clip's `get_tokenizer("local-dir:...")` reads a Hugging Face tokenizer from the folder itself."""
    name = (model_cfg.get("text_cfg") or {}).get("hf_tokenizer_name")
    if name and not hasattr(tokenizer, "save_pretrained"):
        raise ValueError(
            f"this model's text tower uses the Hugging Face tokenizer {name!r}, and open_clip's get_tokenizer reads "
            "it from the saved folder: pass its tokenizer (e.g. tokenizer=open_mclip.get_tokenizer(model_name)), "
            f"got {type(tokenizer).__name__}"
        )


def _write_tokenizer(folder: Path, tokenizer: Any) -> None:
    """The tokenizer's files, each renamed into `folder` once whole."""
    staging = folder / f".tokenizer.{uuid.uuid4().hex[:12]}.tmp"
    staging.mkdir()
    try:
        tokenizer.save_pretrained(str(staging))
        for path in sorted(staging.iterdir()):
            if not path.is_file():
                raise ValueError(f"{type(tokenizer).__name__}.save_pretrained wrote a folder {path.name!r}, not files")
            _fsync(path)
            os.replace(path, folder / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------- ours


def save_pretrained(
    model: torch.nn.Module,
    folder: str | os.PathLike,
    *,
    tokenizer: Any = None,
    safe_serialization: bool | str = True,
    model_config: dict[str, Any] | None = None,
    skip_weights: bool = False,
) -> Path:
    """Write `model` as an open_clip model folder: config, weights in open_clip's key layout, tokenizer files.

    `safe_serialization` as open_clip's: True writes `open_clip_model.safetensors`, False
    `open_clip_pytorch_model.bin`, "both" both (a weights file of the other name left by an earlier save is
    removed). `model_config` (open_clip's schema) defaults to `to_open_clip_config(model.cfg)`; the weights take the
    layout it makes open_clip build (CustomTextCLIP or CLIP). A Hugging Face `tokenizer` (one with
    `save_pretrained`) has its files written beside them; a model whose config names one needs it passed.

    Every file is written under a temporary name and renamed; an existing `open_clip_config.json` is removed
    first and the new one lands last, so an interrupted save leaves a folder that no loader takes for a model.
    Returns the folder.
    """
    if safe_serialization not in _WEIGHT_FILES:
        raise ValueError(f"safe_serialization={safe_serialization!r} must be True, False or 'both'")
    config = _hub_config(model, model_config)
    _check_tokenizer(config["model_cfg"], tokenizer)
    tensors = None if skip_weights else _export_tensors(model, open_clip_layout(config["model_cfg"]))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / HF_CONFIG_NAME).unlink(missing_ok=True)  # the folder is not a model until the new config lands
    if tensors is not None:
        _write_weights(folder, tensors, _WEIGHT_FILES[safe_serialization])
    if hasattr(tokenizer, "save_pretrained"):
        _write_tokenizer(folder, tokenizer)
    _write_json(folder / HF_CONFIG_NAME, config)
    return folder


# ---------------------------------------------------------------------------------------- open_clip's names


def save_config_for_hf(model: torch.nn.Module, config_path: str | os.PathLike, model_config: dict | None) -> None:
    """open_clip's: write `{"model_cfg": model_config, "preprocess_cfg": ...}` to `config_path` (atomically).
    `model_config=None` writes `to_open_clip_config(model.cfg)` (open_clip would write null, which no loader reads)."""
    _write_json(Path(config_path), _hub_config(model, model_config))


def save_for_hf(
    model: torch.nn.Module,
    tokenizer: Any,
    model_config: dict | None,
    save_directory: str | os.PathLike,
    safe_serialization: bool | str = "both",
    skip_weights: bool = False,
) -> None:
    """open_clip's: `save_pretrained` with open_clip's positional order and its default of both weight formats.
    A CLIP-BPE tokenizer (no `save_pretrained`) writes no files; open_clip's `get_tokenizer` needs none for it."""
    save_pretrained(
        model,
        save_directory,
        tokenizer=tokenizer,
        safe_serialization=safe_serialization,
        model_config=model_config,
        skip_weights=skip_weights,
    )


def _import_hub() -> Any:
    try:
        import huggingface_hub
    except ImportError as err:
        raise ImportError("pushing to the hub needs huggingface_hub: `pip install huggingface_hub`") from err
    return huggingface_hub


def push_to_hf_hub(
    model: torch.nn.Module,
    tokenizer: Any,
    model_config: dict | None,
    repo_id: str,
    commit_message: str = "Add model",
    token: str | None = None,
    revision: str | None = None,
    private: bool = False,
    create_pr: bool = False,
    model_card: dict | None = None,
    safe_serialization: bool | str = "both",
):
    """open_clip's: create the repo if needed, save the model folder (`save_for_hf`) with a README generated from
    `model_card` when the repo has none, and upload it in one commit; returns `upload_folder`'s commit info.

    Differences, on purpose: `token` also reaches the README check and the upload (open_clip passes it only to
    `create_repo`); a CLIP-BPE tokenizer uploads no tokenizer files (open_clip fetches and uploads
    openai/clip-vit-large-patch14's, which its own `get_tokenizer` never reads for such a config).
    """
    hub = _import_hub()
    repo_url = hub.create_repo(repo_id, token=token, private=private, exist_ok=True)
    repo_id = getattr(repo_url, "repo_id", None) or repo_id  # owner/name, also when the owner was implicit
    has_readme = hub.file_exists(repo_id, "README.md", revision=revision, token=token)
    with tempfile.TemporaryDirectory() as tmp:
        save_for_hf(model, tokenizer, model_config, tmp, safe_serialization=safe_serialization)
        if not has_readme:
            readme = generate_readme(model_card or {}, repo_id.split("/")[-1])
            (Path(tmp) / "README.md").write_text(readme, encoding="utf-8")
        return hub.upload_folder(
            repo_id=repo_id,
            folder_path=tmp,
            revision=revision,
            create_pr=create_pr,
            commit_message=commit_message,
            token=token,
        )


def push_pretrained_to_hf_hub(
    model_name: str,
    pretrained: str,
    repo_id: str,
    precision: str = "fp32",
    image_mean: tuple[float, ...] | None = None,
    image_std: tuple[float, ...] | None = None,
    image_interpolation: str | None = None,
    image_resize_mode: str | None = None,
    commit_message: str = "Add model",
    token: str | None = None,
    revision: str | None = None,
    private: bool = False,
    create_pr: bool = False,
    model_card: dict | None = None,
    hf_tokenizer_self: bool = False,
    **kwargs: Any,
):
    """open_clip's: build `model_name` with `pretrained` weights (`create_model_from_pretrained`) and push it.

    The config pushed is the built model's own (`to_open_clip_config(model.cfg)`), so QuickGELU of OpenAI weights
    and `kwargs` overrides travel without open_clip's special case. `hf_tokenizer_self` points the config's
    `hf_tokenizer_name` at `repo_id`.
    """
    from .factory import create_model_from_pretrained, get_tokenizer  # the factory sits above this module

    image_options = {
        key: value
        for key, value in (
            ("image_mean", image_mean),
            ("image_std", image_std),
            ("image_interpolation", image_interpolation),
            ("image_resize_mode", image_resize_mode),
        )
        if value is not None
    }
    model = create_model_from_pretrained(
        model_name, pretrained=pretrained, precision=precision, return_transform=False, **image_options, **kwargs
    )
    model_config = to_open_clip_config(model.cfg)
    if hf_tokenizer_self:
        model_config["text_cfg"]["hf_tokenizer_name"] = repo_id
    return push_to_hf_hub(
        model=model,
        tokenizer=get_tokenizer(model_name),
        model_config=model_config,
        repo_id=repo_id,
        commit_message=commit_message,
        token=token,
        revision=revision,
        private=private,
        create_pr=create_pr,
        model_card=model_card,
        safe_serialization="both",
    )


def _card_details(details: dict[str, Any]) -> list[str]:
    lines = ["", "## Model Details"]
    for key, value in details.items():
        if isinstance(value, (list, tuple)):
            lines += [f"- **{key}:**", *(f"  - {item}" for item in value)]
        elif isinstance(value, dict):
            lines += [f"- **{key}:**", *(f"  - {k}: {v}" for k, v in value.items())]
        else:
            lines.append(f"- **{key}:** {value}")
    return lines


def generate_readme(model_card: dict, model_name: str) -> str:
    """open_clip's model-card README text: YAML front matter (tags, library_name open_clip, pipeline tag, license,
    dataset), then description, details, usage, comparison and citations from `model_card` (not modified)."""
    card = dict(model_card)
    tags = card.pop("tags", ("clip",))
    pipeline_tag = card.pop("pipeline_tag", "zero-shot-image-classification")
    lines = ["---"]
    if tags:
        lines += ["tags:", *(f"- {tag}" for tag in tags)]
    lines += ["library_name: open_clip", f"pipeline_tag: {pipeline_tag}", f"license: {card.get('license', 'mit')}"]
    details = card.get("details", {})
    if "Dataset" in details:
        lines += ["datasets:", f"- {details['Dataset'].lower()}"]
    lines += ["---", f"# Model card for {model_name}"]
    if "description" in card:
        lines += ["", card["description"]]
    if "details" in card:
        lines += _card_details(details)
    for key, title in (("usage", "Model Usage"), ("comparison", "Model Comparison")):
        if key in card:
            lines += ["", f"## {title}", card[key]]
    if "citation" in card:
        citations = card["citation"] if isinstance(card["citation"], (list, tuple)) else [card["citation"]]
        lines += ["", "## Citation", *(f"```bibtex\n{c}\n```" for c in citations)]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m open_mclip.push_to_hf_hub`: open_clip's command line for `push_pretrained_to_hf_hub`."""
    parser = argparse.ArgumentParser(description="Push a pretrained model to the Hugging Face hub")
    parser.add_argument("--model", required=True, help="architecture name, e.g. ViT-B-32")
    parser.add_argument("--pretrained", required=True, help="pretrained tag or weights file")
    parser.add_argument("--repo-id", required=True, help="destination repo, e.g. 'organization/model_id'")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--image-mean", type=float, nargs="+", default=None, metavar="MEAN")
    parser.add_argument("--image-std", type=float, nargs="+", default=None, metavar="STD")
    parser.add_argument("--image-interpolation", default=None, choices=["bicubic", "bilinear", "random"])
    parser.add_argument("--image-resize-mode", default=None, choices=["shortest", "longest", "squash"])
    parser.add_argument("--hf-tokenizer-self", action="store_true", help="point hf_tokenizer_name at the repo")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    log.info("pushing %s with weights %s to %s", args.model, args.pretrained, args.repo_id)
    push_pretrained_to_hf_hub(
        args.model,
        args.pretrained,
        args.repo_id,
        precision=args.precision,
        image_mean=args.image_mean,
        image_std=args.image_std,
        image_interpolation=args.image_interpolation,
        image_resize_mode=args.image_resize_mode,
        hf_tokenizer_self=args.hf_tokenizer_self,
    )
    log.info("%s pushed to %s", args.model, args.repo_id)


if __name__ == "__main__":
    main()
