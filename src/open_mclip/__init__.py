"""open_mclip: CLIP-style contrastive image-text models, multilingual first, open_clip compatible."""

from .config import ModelConfig, ModifiedResNetConfig, TextTransformerConfig, TimmConfig, ViTConfig
from .convert import from_open_clip, load_checkpoint, to_open_clip
from .factory import create_model, create_model_and_transforms, create_model_from_pretrained, get_tokenizer
from .model import CLIP
from .pretrained import (
    get_pretrained_cfg,
    list_pretrained,
    list_pretrained_models_by_tag,
    list_pretrained_tags_by_model,
)
from .registry import add_model_config, get_model_config, list_models
from .tokenizer import ClipTokenizer, HFTokenizer, tokenize
from .transform import AugmentationConfig, PreprocessConfig, image_transform
from .zero_shot import build_zero_shot_classifier
from .zero_shot_packs import imagenet_wnids, list_zero_shot_languages, list_zero_shot_packs, load_zero_shot_pack

__version__ = "0.1.0"

__all__ = [
    "AugmentationConfig",
    "CLIP",
    "ClipTokenizer",
    "HFTokenizer",
    "ModelConfig",
    "ModifiedResNetConfig",
    "PreprocessConfig",
    "TextTransformerConfig",
    "TimmConfig",
    "ViTConfig",
    "add_model_config",
    "build_zero_shot_classifier",
    "create_model",
    "create_model_and_transforms",
    "create_model_from_pretrained",
    "from_open_clip",
    "get_model_config",
    "get_pretrained_cfg",
    "get_tokenizer",
    "image_transform",
    "imagenet_wnids",
    "list_models",
    "list_pretrained",
    "list_pretrained_models_by_tag",
    "list_pretrained_tags_by_model",
    "list_zero_shot_languages",
    "list_zero_shot_packs",
    "load_checkpoint",
    "load_zero_shot_pack",
    "to_open_clip",
    "tokenize",
]
