"""Typed model configuration: one dataclass per tower type, a `ModelConfig` holding two towers.

Configs are data (DESIGN.md section 2): JSON files parse into these dataclasses and every unknown key is an
error naming the key and the file. Each tower config declares its `type`; the tower builders live in
`open_mclip.towers`. open_clip's own config schema (``vision_cfg``/``text_cfg``) converts through
`ModelConfig.from_open_clip_dict`, so open_clip's JSON files load unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .constants import DEFAULT_CONTEXT_LENGTH, HF_POOLER_ALIASES, INIT_LOGIT_SCALE

ACTIVATIONS = ("gelu", "quick_gelu")


def _from_dict(cls: type, data: dict[str, Any], source: str) -> Any:
    """Build dataclass `cls` from `data`, rejecting keys the dataclass does not have."""
    if not isinstance(data, dict):
        raise TypeError(f"{source}: expected a JSON object for {cls.__name__}, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(
            f"{source}: unknown key(s) {unknown} for {cls.__name__} (type {getattr(cls, 'type', '?')!r}); "
            f"valid keys: {sorted(names)}"
        )
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    obj = cls(**values)
    obj.validate(source)
    return obj


def _optional_bool(value: Any, where: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"{where}={value!r} must be true, false or null")
    return value


def _check_choice(source: str, name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{source}: {name}={value!r} is not one of {list(choices)}")


@dataclass
class TowerConfig:
    """Base of every tower config; `type` names the builder in `open_mclip.towers`."""

    type: ClassVar[str] = ""
    always_written: ClassVar[tuple[str, ...]] = ()  # the architecture's defining numbers, written even if default

    def validate(self, source: str) -> None:
        """Raise ValueError naming `source` when a field has a value the builder cannot use."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict, `type` first; optional features at their default are left out."""
        out: dict[str, Any] = {"type": self.type}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if f.name in self.always_written or value != default:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass
class ViTConfig(TowerConfig):
    """Vision Transformer: patch embedding, class token, learned positions, pre-norm blocks, projection."""

    type: ClassVar[str] = "vit"
    always_written = ("image_size", "patch_size", "width", "layers", "head_width", "mlp_ratio")
    image_size: int | tuple[int, int] = 224
    patch_size: int | tuple[int, int] = 16
    width: int = 768
    layers: int = 12
    head_width: int = 64
    mlp_ratio: float = 4.0
    act: str = "gelu"
    ls_init_value: float | None = None
    patch_dropout: float = 0.0
    no_ln_pre: bool = False
    pool_type: str = "tok"  # tok: class token | avg: mean of patch tokens
    final_ln_after_pool: bool = False
    attentional_pool: bool = False
    attn_pooler_queries: int = 256
    attn_pooler_heads: int = 8
    norm_eps: float = 1e-5

    def validate(self, source: str) -> None:
        _check_choice(source, "act", self.act, ACTIVATIONS)
        _check_choice(source, "pool_type", self.pool_type, ("tok", "avg"))
        if self.width % self.head_width:
            raise ValueError(f"{source}: width {self.width} is not a multiple of head_width {self.head_width}")
        if not 0.0 <= self.patch_dropout < 1.0:
            raise ValueError(f"{source}: patch_dropout={self.patch_dropout} must be in [0, 1)")


@dataclass
class ModifiedResNetConfig(TowerConfig):
    """OpenAI's ModifiedResNet: 3-conv stem, anti-aliased strided bottlenecks, attention pooling."""

    type: ClassVar[str] = "modified_resnet"
    always_written = ("image_size", "layers", "width", "head_width")
    image_size: int = 224
    layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    width: int = 64
    head_width: int = 64

    def validate(self, source: str) -> None:
        if len(self.layers) != 4:
            raise ValueError(f"{source}: modified_resnet needs 4 stage depths in layers, got {list(self.layers)}")
        if self.image_size % 32:
            raise ValueError(f"{source}: modified_resnet image_size {self.image_size} must be a multiple of 32")


@dataclass
class TimmConfig(TowerConfig):
    """Any timm image model as trunk, with pooling and a projection head (needs `pip install timm`)."""

    type: ClassVar[str] = "timm"
    always_written = ("model_name", "image_size", "pool", "proj")
    model_name: str = ""
    image_size: int | tuple[int, int] = 224
    pretrained: bool = False
    pool: str = "avg"  # avg | token | abs_attn | rot_attn | "" (trunk default)
    proj: str = "linear"  # linear | mlp | "" (the trunk's classifier, sized embed_dim) | none (trunk features as is)
    proj_bias: bool = False
    drop: float = 0.0
    drop_path: float | None = None
    patch_dropout: float = 0.0

    def validate(self, source: str) -> None:
        if not self.model_name:
            raise ValueError(f"{source}: a timm tower needs model_name (e.g. 'convnext_base')")
        if self.proj is None:  # open_clip's configs write null for "the trunk's classifier"
            self.proj = ""
        _check_choice(source, "proj", self.proj, ("linear", "mlp", "none", ""))


@dataclass
class TextTransformerConfig(TowerConfig):
    """Causal text Transformer over CLIP BPE tokens, pooled at the end-of-text token."""

    type: ClassVar[str] = "transformer"
    always_written = ("context_length", "vocab_size", "width", "heads", "layers")
    context_length: int = DEFAULT_CONTEXT_LENGTH
    vocab_size: int = 49408
    width: int = 512
    heads: int = 8
    layers: int = 12
    mlp_ratio: float = 4.0
    act: str = "gelu"
    ls_init_value: float | None = None
    causal: bool = True
    pad_id: int = 0
    eos_id: int = 2
    pool_type: str = "argmax"  # argmax: highest id (CLIP's EOT) | eos | first | last
    proj_type: str = "linear"  # linear | none
    proj_bias: bool = False
    norm_eps: float = 1e-5
    tokenizer: str = "clip"  # "clip" (our BPE) or a Hugging Face tokenizer name / folder
    tokenizer_kwargs: dict = field(default_factory=dict)

    def validate(self, source: str) -> None:
        _check_choice(source, "act", self.act, ACTIVATIONS)
        _check_choice(source, "pool_type", self.pool_type, ("argmax", "eos", "first", "last"))
        _check_choice(source, "proj_type", self.proj_type, ("linear", "none"))
        if self.width % self.heads:
            raise ValueError(f"{source}: text width {self.width} is not a multiple of heads {self.heads}")


HF_POOLERS = ("mean", "max", "cls", "cls_last_hidden_state", "pooler_output")
HF_PROJECTIONS = ("none", "linear", "mlp", "residual_mlp")


@dataclass
class HFTextConfig(TowerConfig):
    """A Hugging Face transformers encoder (BERT, RoBERTa, XLM-R, mT5, NLLB...) pooled and projected.

    `model_name` is a hub name or local folder. `model_type` (e.g. "xlm-roberta") instead builds a randomly
    initialised model from `AutoConfig.for_model(model_type, **model_kwargs)` with no hub access (needs
    `pretrained=False`). `tokenizer` defaults to `model_name`. Poolers: "mean"/"max" over real tokens,
    "cls_last_hidden_state" (first token), "pooler_output" (the model's own pooling layer), "cls" (open_clip's
    `cls_pooler`: the pooling layer where the model has one, else the first token). Projections: "none",
    "linear", "mlp" (open_clip's two-layer GELU head), "residual_mlp" (a linear map then `proj_layers` residual
    GELU blocks sharing one LayerNorm, as in the Habana-trained multilingual CLIP).
    """

    type: ClassVar[str] = "hf"
    always_written = ("pooler_type", "proj_type")
    model_name: str = ""
    model_type: str = ""
    pretrained: bool = True
    pooler_type: str = "mean"
    proj_type: str = "mlp"
    proj_layers: int = 1
    proj_bias: bool = False
    proj_dropout: float = 0.0
    context_length: int = DEFAULT_CONTEXT_LENGTH
    tokenizer: str = ""  # a Hugging Face tokenizer name or folder; empty: model_name
    tokenizer_kwargs: dict = field(default_factory=dict)
    model_kwargs: dict = field(default_factory=dict)  # overrides for the Hugging Face model config

    def __post_init__(self) -> None:
        self.pooler_type = HF_POOLER_ALIASES.get(self.pooler_type, self.pooler_type)
        if self.proj_type is None:  # open_clip's hf_proj_type=None: no projection
            self.proj_type = "none"

    @property
    def tokenizer_name(self) -> str:
        """The tokenizer to load: `tokenizer`, else `model_name`."""
        name = self.tokenizer or self.model_name
        if not name:
            raise ValueError(
                f"this hf text tower (model_type={self.model_type!r}) names no tokenizer; set 'tokenizer' to a "
                "Hugging Face tokenizer name or folder, e.g. 'xlm-roberta-base'"
            )
        return name

    def validate(self, source: str) -> None:
        if bool(self.model_name) == bool(self.model_type):
            raise ValueError(
                f"{source}: an hf text tower needs exactly one of model_name (hub name or folder) and model_type "
                f"(build from config); got model_name={self.model_name!r}, model_type={self.model_type!r}"
            )
        if self.model_type and self.pretrained:
            raise ValueError(f"{source}: model_type={self.model_type!r} builds random weights; set pretrained=false")
        _check_choice(source, "pooler_type", self.pooler_type, HF_POOLERS + tuple(HF_POOLER_ALIASES))
        _check_choice(source, "proj_type", self.proj_type, HF_PROJECTIONS)
        if self.proj_layers < 1 or (self.proj_layers != 1 and self.proj_type != "residual_mlp"):
            raise ValueError(
                f"{source}: proj_layers={self.proj_layers} needs proj_type 'residual_mlp' (and must be >= 1); "
                f"proj_type {self.proj_type!r} has a fixed depth"
            )
        if self.proj_dropout and self.proj_type != "residual_mlp":
            raise ValueError(f"{source}: proj_dropout={self.proj_dropout} is only used by proj_type 'residual_mlp'")
        if not 0.0 <= self.proj_dropout < 1.0:
            raise ValueError(f"{source}: proj_dropout={self.proj_dropout} must be in [0, 1)")


VISION_TYPES: dict[str, type[TowerConfig]] = {c.type: c for c in (ViTConfig, ModifiedResNetConfig, TimmConfig)}
TEXT_TYPES: dict[str, type[TowerConfig]] = {c.type: c for c in (TextTransformerConfig, HFTextConfig)}


def tower_from_dict(data: dict[str, Any], *, kinds: dict[str, type[TowerConfig]], source: str) -> TowerConfig:
    """Parse a tower config dict whose `type` picks the dataclass from `kinds`."""
    if not isinstance(data, dict) or "type" not in data:
        raise ValueError(f"{source}: tower config needs a 'type' (one of {sorted(kinds)})")
    data = dict(data)
    kind = data.pop("type")
    if kind not in kinds:
        raise ValueError(f"{source}: unknown tower type {kind!r}; known types: {sorted(kinds)}")
    return _from_dict(kinds[kind], data, source)


@dataclass
class ModelConfig:
    """A two-tower CLIP architecture: image tower, text tower, shared embedding width, logit scale/bias."""

    embed_dim: int
    vision: TowerConfig
    text: TowerConfig
    init_logit_scale: float = INIT_LOGIT_SCALE
    init_logit_bias: float | None = None
    preprocess: dict = field(default_factory=dict)  # PreprocessConfig overrides (mean, std, resize_mode, ...)
    # open_clip's model class for this architecture, kept so that configs round-trip through open_clip's schema;
    # it only decides the key layout of exports (our CLIP is one class). None: open_clip's usual choice
    # (`open_clip_custom_text`: CustomTextCLIP for Hugging Face text towers and for SigLIP-style models with a logit
    # bias, CLIP otherwise); True/False only where it differs from that (an equal value is stored as None).
    custom_text: bool | None = None

    def __post_init__(self) -> None:
        if self.custom_text is not None and self.custom_text == self.open_clip_custom_text_default:
            self.custom_text = None
        if self.custom_text is False and isinstance(self.text, HFTextConfig):
            raise ValueError(
                "custom_text=False is impossible with a Hugging Face text tower: open_clip builds such models as "
                "CustomTextCLIP (text tower under 'text.') only"
            )

    @property
    def open_clip_custom_text_default(self) -> bool:
        """open_clip's usual class choice: CustomTextCLIP for Hugging Face text towers and logit-bias models."""
        return isinstance(self.text, HFTextConfig) or self.init_logit_bias is not None

    @property
    def open_clip_custom_text(self) -> bool:
        """True where open_clip builds this architecture as CustomTextCLIP (text weights under `text.`)."""
        return self.open_clip_custom_text_default if self.custom_text is None else self.custom_text

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "<dict>") -> ModelConfig:
        """Parse our schema, or open_clip's (detected by its `vision_cfg`/`text_cfg` keys)."""
        if not isinstance(data, dict):
            raise TypeError(f"{source}: a model config must be a JSON object, got {type(data).__name__}")
        if "vision_cfg" in data or "text_cfg" in data:
            return cls.from_open_clip_dict(data, source=source)
        data = {k: v for k, v in data.items() if not k.startswith("_")}  # "_source"/"_comment" notes
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown} in model config; valid keys: {sorted(names)}")
        for required in ("embed_dim", "vision", "text"):
            if required not in data:
                raise ValueError(f"{source}: model config is missing {required!r}")
        return cls(
            embed_dim=int(data["embed_dim"]),
            vision=tower_from_dict(data["vision"], kinds=VISION_TYPES, source=f"{source} [vision]"),
            text=tower_from_dict(data["text"], kinds=TEXT_TYPES, source=f"{source} [text]"),
            init_logit_scale=float(data.get("init_logit_scale", INIT_LOGIT_SCALE)),
            init_logit_bias=data.get("init_logit_bias"),
            preprocess=dict(data.get("preprocess", {})),
            custom_text=_optional_bool(data.get("custom_text"), f"{source}: custom_text"),
        )

    @classmethod
    def from_open_clip_dict(cls, data: dict[str, Any], *, source: str = "<dict>") -> ModelConfig:
        """Convert open_clip's config schema (as in its model_configs/*.json) to ours."""
        from .open_clip_schema import convert_open_clip_config  # kept apart: it is a translation table

        return cls.from_dict(convert_open_clip_config(data, source=source), source=source)

    def to_dict(self) -> dict[str, Any]:
        """Our JSON schema; `ModelConfig.from_dict(cfg.to_dict())` round-trips."""
        out: dict[str, Any] = {
            "embed_dim": self.embed_dim,
            "vision": self.vision.to_dict(),
            "text": self.text.to_dict(),
        }
        if not math.isclose(self.init_logit_scale, INIT_LOGIT_SCALE):
            out["init_logit_scale"] = self.init_logit_scale
        if self.init_logit_bias is not None:
            out["init_logit_bias"] = self.init_logit_bias
        if self.preprocess:
            out["preprocess"] = dict(self.preprocess)
        if self.custom_text is not None:
            out["custom_text"] = self.custom_text
        return out

    def replace(self, *, vision: dict[str, Any] | None = None, text: dict[str, Any] | None = None) -> ModelConfig:
        """A copy with some tower fields changed, e.g. `cfg.replace(vision={"image_size": 336})`."""
        new = dataclasses.replace(self, preprocess=dict(self.preprocess))
        for name, changes in (("vision", vision), ("text", text)):
            tower = getattr(self, name)
            if changes:
                valid = {f.name for f in dataclasses.fields(tower)}
                unknown = sorted(set(changes) - valid)
                if unknown:
                    raise ValueError(f"cannot set {unknown} on a {tower.type!r} {name} tower; valid: {sorted(valid)}")
                tower = dataclasses.replace(tower, **changes)
                tower.validate(f"{name} override")
            setattr(new, name, tower)
        return new
