"""open_mclip: CLIP-style contrastive image-text models, multilingual first, open_clip compatible.

Every public name of open_clip 3.3's package exists here with open_clip's signature (docs/migrating.md has the
table); open_mclip's own typed API sits beside it (`ModelConfig`, `model_config`, `PreprocessConfig`, the packs).
"""

from typing import Any

from .as_open_clip import install_as_open_clip
from .config import ModelConfig, ModifiedResNetConfig, TextTransformerConfig, TimmConfig, ViTConfig
from .constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from .convert import from_open_clip, load_checkpoint, to_open_clip
from .factory import (
    create_loss,
    create_model,
    create_model_and_transforms,
    create_model_from_pretrained,
    get_model_config,
    get_tokenizer,
)
from .loss import ClipLoss, CoCaLoss, DistillClipLoss, SigLipLoss
from .model import (
    CLIP,
    CLIPTextCfg,
    CLIPVisionCfg,
    CoCa,
    CustomTextCLIP,
    convert_weights_to_fp16,
    convert_weights_to_lp,
    get_cast_dtype,
    get_input_dtype,
    get_model_preprocess_cfg,
    get_model_tokenize_cfg,
    set_model_preprocess_cfg,
    trace_model,
)
from .openai import list_openai_models, load_openai_model
from .pretrained import (
    download_pretrained,
    download_pretrained_from_url,
    get_pretrained_cfg,
    get_pretrained_url,
    is_pretrained_cfg,
    list_pretrained,
    list_pretrained_models_by_tag,
    list_pretrained_tags_by_model,
)
from .push_to_hf_hub import push_pretrained_to_hf_hub, push_to_hf_hub, save_pretrained
from .registry import add_model_config, list_models, model_config
from .tokenizer import ClipTokenizer, HFTokenizer, SimpleTokenizer, decode, tokenize
from .transform import AugmentationCfg, AugmentationConfig, PreprocessConfig, image_transform
from .version import __version__
from .zero_shot import build_zero_shot_classifier, build_zero_shot_classifier_legacy
from .zero_shot_packs import imagenet_wnids, list_zero_shot_languages, list_zero_shot_packs, load_zero_shot_pack

_METADATA = ("IMAGENET_CLASSNAMES", "OPENAI_IMAGENET_TEMPLATES", "SIMPLE_IMAGENET_TEMPLATES")


def __getattr__(name: str) -> Any:
    # the ImageNet metadata is read from the shipped pack when first asked for, not at import
    if name in _METADATA:
        from . import zero_shot_metadata

        return getattr(zero_shot_metadata, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    # open_clip 3.3's public names
    "AugmentationCfg",
    "CLIP",
    "CLIPTextCfg",
    "CLIPVisionCfg",
    "ClipLoss",
    "CoCa",
    "CoCaLoss",
    "CustomTextCLIP",
    "DistillClipLoss",
    *_METADATA,
    "OPENAI_DATASET_MEAN",
    "OPENAI_DATASET_STD",
    "SimpleTokenizer",
    "__version__",
    "add_model_config",
    "build_zero_shot_classifier",
    "build_zero_shot_classifier_legacy",
    "convert_weights_to_fp16",
    "convert_weights_to_lp",
    "create_loss",
    "create_model",
    "create_model_and_transforms",
    "create_model_from_pretrained",
    "decode",
    "download_pretrained",
    "download_pretrained_from_url",
    "get_cast_dtype",
    "get_input_dtype",
    "get_model_config",
    "get_model_preprocess_cfg",
    "get_model_tokenize_cfg",
    "get_pretrained_cfg",
    "get_pretrained_url",
    "get_tokenizer",
    "image_transform",
    "is_pretrained_cfg",
    "list_models",
    "list_openai_models",
    "list_pretrained",
    "list_pretrained_models_by_tag",
    "list_pretrained_tags_by_model",
    "load_checkpoint",
    "load_openai_model",
    "push_pretrained_to_hf_hub",
    "push_to_hf_hub",
    "set_model_preprocess_cfg",
    "tokenize",
    "trace_model",
    # open_mclip's own
    "AugmentationConfig",
    "ClipTokenizer",
    "HFTokenizer",
    "ModelConfig",
    "ModifiedResNetConfig",
    "PreprocessConfig",
    "SigLipLoss",
    "TextTransformerConfig",
    "TimmConfig",
    "ViTConfig",
    "from_open_clip",
    "imagenet_wnids",
    "install_as_open_clip",
    "list_zero_shot_languages",
    "list_zero_shot_packs",
    "load_zero_shot_pack",
    "model_config",
    "save_pretrained",
    "to_open_clip",
]
