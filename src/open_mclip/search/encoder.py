"""The embedding side of search: a model, its tokenizer and its eval transform behind two calls, images and texts
in, L2-normalised float32 vectors out; text in any language, with the language hint NLLB-style tokenizers take."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..constants import HF_HUB_PREFIX, LOCAL_DIR_PREFIX
from ..factory import create_model_and_transforms, get_tokenizer
from ..tokenizer import HFTokenizer
from .model_spec import ModelSpec, canonical_weights, weights_sha256

log = logging.getLogger(__name__)

# ISO 639-1 codes -> FLORES-200 codes, the language tokens NLLB tokenizers prefix (a code like "hin_Deva" passes)
NLLB_CODES = {
    "af": "afr_Latn", "am": "amh_Ethi", "ar": "arb_Arab", "bg": "bul_Cyrl", "bn": "ben_Beng", "ca": "cat_Latn",
    "cs": "ces_Latn", "da": "dan_Latn", "de": "deu_Latn", "el": "ell_Grek", "en": "eng_Latn", "es": "spa_Latn",
    "et": "est_Latn", "fa": "pes_Arab", "fi": "fin_Latn", "fr": "fra_Latn", "he": "heb_Hebr", "hi": "hin_Deva",
    "hr": "hrv_Latn", "hu": "hun_Latn", "hy": "hye_Armn", "id": "ind_Latn", "it": "ita_Latn", "ja": "jpn_Jpan",
    "ka": "kat_Geor", "kk": "kaz_Cyrl", "ko": "kor_Hang", "lt": "lit_Latn", "lv": "lvs_Latn", "mr": "mar_Deva",
    "ms": "zsm_Latn", "nl": "nld_Latn", "no": "nob_Latn", "pl": "pol_Latn", "pt": "por_Latn", "ro": "ron_Latn",
    "ru": "rus_Cyrl", "sk": "slk_Latn", "sl": "slv_Latn", "sr": "srp_Cyrl", "sv": "swe_Latn", "sw": "swh_Latn",
    "ta": "tam_Taml", "te": "tel_Telu", "th": "tha_Thai", "tl": "tgl_Latn", "tr": "tur_Latn", "uk": "ukr_Cyrl",
    "ur": "urd_Arab", "vi": "vie_Latn", "zh": "zho_Hans", "zu": "zul_Latn",
}  # fmt: skip
_FLORES_CODE = re.compile(r"^[a-z]{3}_[A-Z][a-z]{3}$")


def language_token(lang: str) -> str:
    """The NLLB language code for an ISO 639-1 code or a FLORES-200 code ("hi" -> "hin_Deva")."""
    if _FLORES_CODE.match(lang):
        return lang
    code = NLLB_CODES.get(lang.lower().split("-")[0])
    if code is None:
        raise ValueError(
            f"unknown language {lang!r}: give an ISO 639-1 code ({', '.join(sorted(NLLB_CODES)[:8])}, ...) "
            "or a FLORES-200 code such as 'hin_Deva'"
        )
    return code


def takes_language(tokenizer: Any) -> bool:
    """Whether a tokenizer prefixes a source-language token (NLLB, M2M100, MBart); CLIP's BPE does not."""
    return isinstance(tokenizer, HFTokenizer) and hasattr(tokenizer.tokenizer, "src_lang")


class Encoder:
    """A CLIP model ready to embed: `encode_images(batch)` and `encode_texts(texts, lang=...)` give (n, dim)
    float32 L2-normalised NumPy arrays; `spec` is the identity an index records."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Callable[[Sequence[str]], torch.Tensor],
        preprocess: Callable[[Any], torch.Tensor],
        spec: ModelSpec,
        *,
        device: str | torch.device = "cpu",
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.spec = spec
        self.device = torch.device(device)

    @classmethod
    def load(
        cls,
        model: str,
        *,
        pretrained: str | None = None,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        tokenizer_kwargs: dict[str, Any] | None = None,
    ) -> Encoder:
        """Build the model with open_mclip's factory. Random weights are refused: a query could never rebuild them."""
        has_weights = pretrained or model.startswith((LOCAL_DIR_PREFIX, HF_HUB_PREFIX))
        if not has_weights:
            raise ValueError(
                f"model {model!r} without --pretrained has random weights, which a later query could not rebuild; "
                "pass --pretrained TAG|CHECKPOINT, or a 'local-dir:FOLDER' written by open_mclip.save_pretrained"
            )
        name, weights = canonical_weights(model, pretrained)
        net, _, preprocess = create_model_and_transforms(name, weights, precision=precision, device=device)
        tokenizer = get_tokenizer(name, **(tokenizer_kwargs or {}))
        spec = ModelSpec(name, weights, weights_sha256(name, weights), net.cfg.embed_dim, net.preprocess_cfg.to_dict())
        return cls(net, tokenizer, preprocess, spec, device=device)

    @classmethod
    def from_spec(cls, spec: ModelSpec, *, device: str | torch.device = "cpu", **kwargs: Any) -> Encoder:
        """The encoder an index records, rebuilt (the caller checks that its weights still hash the same)."""
        return cls.load(spec.name, pretrained=spec.pretrained, device=device, **kwargs)

    @torch.inference_mode()
    def encode_images(self, images: torch.Tensor) -> np.ndarray:
        """(batch, 3, height, width) preprocessed images -> (batch, dim) float32, L2-normalised."""
        features = self.model.encode_image(images.to(self.device), normalize=True)
        return features.float().cpu().numpy()

    def tokenize(self, texts: Sequence[str], *, lang: str | None = None) -> torch.Tensor:
        """Token ids (n, context); `lang` ("hi", "hin_Deva") selects the source language of a tokenizer that takes
        one (NLLB), and is not needed by the others (CLIP's BPE, XLM-R), which ignore it."""
        if lang and takes_language(self.tokenizer):
            self.tokenizer.set_language(language_token(lang))
        elif lang:
            log.debug("language hint %r ignored: %s takes no language", lang, type(self.tokenizer).__name__)
        return self.tokenizer(list(texts))

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str], *, lang: str | None = None) -> np.ndarray:
        """Texts in any script -> (n, dim) float32, L2-normalised (see `tokenize` for `lang`)."""
        features = self.model.encode_text(self.tokenize(texts, lang=lang).to(self.device), normalize=True)
        return features.float().cpu().numpy()

    def encode_pil(self, images: Sequence[Any]) -> np.ndarray:
        """PIL images -> (n, dim), through the model's eval transform."""
        return self.encode_images(torch.stack([self.preprocess(image) for image in images]))
