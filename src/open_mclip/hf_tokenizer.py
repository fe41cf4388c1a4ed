"""A Hugging Face tokenizer behind the CLIP tokenizer's call: the same cleaning, padding and truncation, the same
ids as open_clip's ``HFTokenizer``; ``transformers`` is imported when one is built."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from .constants import DEFAULT_CONTEXT_LENGTH
from .extras import import_extra
from .text_cleaning import as_batch, check_context_length, get_clean_fn


class HFTokenizer:
    """A Hugging Face tokenizer behind ClipTokenizer's call: clean, tokenize, pad and truncate to context_length.

    Build it from a hub name or local folder (``HFTokenizer("xlm-roberta-base")``, open_clip's signature; extra
    keywords go to ``AutoTokenizer.from_pretrained``, e.g. ``tokenizer_file=..., tokenizer_type="xlm-roberta"`` to
    use a lone ``tokenizer.json`` offline), or wrap a ready tokenizer with :meth:`from_tokenizer`.
    """

    def __init__(
        self,
        tokenizer_name: str,
        context_length: int | None = DEFAULT_CONTEXT_LENGTH,
        clean: str = "whitespace",
        strip_sep_token: bool = False,
        language: str | None = None,
        cache_dir: str | None = None,
        tokenizer_mode: str | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(tokenizer_name, (str, Path)):
            raise TypeError(
                f"tokenizer_name must be a hub name or folder, got {type(tokenizer_name).__name__}; "
                "wrap a ready tokenizer object with HFTokenizer.from_tokenizer(tokenizer)"
            )
        if tokenizer_mode:
            raise ValueError(
                f"tokenizer_mode={tokenizer_mode!r} (open_clip's CLIPS post-processing) is not supported; "
                "use tokenizer_mode=None"
            )
        if kwargs.get("tokenizer_file"):  # a lone tokenizer.json: nothing to fetch from the hub
            kwargs.setdefault("local_files_only", True)
        if cache_dir is not None:
            kwargs["cache_dir"] = cache_dir
        auto_tokenizer = import_extra("transformers", extra="hf", needed_for="HFTokenizer").AutoTokenizer
        tokenizer = auto_tokenizer.from_pretrained(str(tokenizer_name), **kwargs)
        self._setup(
            tokenizer,
            context_length=context_length or DEFAULT_CONTEXT_LENGTH,
            clean=clean,
            strip_sep_token=strip_sep_token,
            language=language,
        )

    @classmethod
    def from_tokenizer(
        cls,
        tokenizer: Any,
        *,
        context_length: int = DEFAULT_CONTEXT_LENGTH,
        clean: str = "whitespace",
        strip_sep_token: bool = False,
        language: str | None = None,
    ) -> HFTokenizer:
        """Wrap an already built Hugging Face tokenizer object (no loading, no hub)."""
        if not callable(tokenizer) or isinstance(tokenizer, (str, Path)):
            raise TypeError(
                f"from_tokenizer takes a Hugging Face tokenizer object, got {type(tokenizer).__name__}; "
                "pass a hub name or folder to HFTokenizer(...) instead"
            )
        self = cls.__new__(cls)
        self._setup(
            tokenizer, context_length=context_length, clean=clean, strip_sep_token=strip_sep_token, language=language
        )
        return self

    def _setup(
        self, tokenizer: Any, *, context_length: int, clean: str, strip_sep_token: bool, language: str | None
    ) -> None:
        self.tokenizer = tokenizer
        self.context_length = check_context_length(context_length)
        self.clean = clean
        self._clean_fn = get_clean_fn(clean)
        if getattr(tokenizer, "pad_token_id", None) is None:
            raise ValueError(
                f"{type(tokenizer).__name__} has no padding token, so it cannot pad to context_length; a bare "
                "tokenizer.json needs tokenizer_type=... (the model type, e.g. 'xlm-roberta') to get its special tokens"
            )
        if strip_sep_token and getattr(tokenizer, "sep_token_id", None) is None:
            raise ValueError(f"strip_sep_token=True but {type(tokenizer).__name__} has no separator token")
        self.strip_sep_token = strip_sep_token
        if language is not None:
            self.set_language(language)

    def __repr__(self) -> str:
        name = getattr(self.tokenizer, "name_or_path", "") or type(self.tokenizer).__name__
        return f"HFTokenizer({name!r}, context_length={self.context_length}, clean={self.clean!r})"

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    @property
    def pad_token_id(self) -> int | None:
        return self.tokenizer.pad_token_id

    def save_pretrained(self, dest: str | Path) -> None:
        """Write the wrapped tokenizer's files to ``dest`` (a folder ``HFTokenizer(dest)`` loads again)."""
        self.tokenizer.save_pretrained(str(dest))

    def set_language(self, code: str) -> None:
        """Select the source language of a multilingual tokenizer that prefixes a language token (NLLB: "fra_Latn").

        Sets ``src_lang`` itself: recent transformers re-apply ``src_lang`` on every call, so only calling
        ``set_src_lang_special_tokens`` (what open_clip does) is silently undone.
        """
        tokenizer = self.tokenizer
        setter = getattr(tokenizer, "set_src_lang_special_tokens", None)
        if not callable(setter) and not hasattr(tokenizer, "src_lang"):
            raise ValueError(
                f"set_language({code!r}): {type(tokenizer).__name__} has no source language; "
                "only NLLB/M2M100/MBart-style tokenizers take one"
            )
        previous = getattr(tokenizer, "src_lang", None)
        self._apply_language(code, setter)
        unknown = getattr(tokenizer, "unk_token_id", None)
        if unknown is not None and getattr(tokenizer, "cur_lang_code", None) == unknown:
            if previous is not None:
                self._apply_language(previous, setter)
            raise ValueError(
                f"language code {code!r} is not in the tokenizer's vocabulary (NLLB codes look like 'fra_Latn')"
            )

    def _apply_language(self, code: str, setter: Callable[[str], None] | None) -> None:
        if hasattr(self.tokenizer, "src_lang"):
            self.tokenizer.src_lang = code
        if callable(setter):
            setter(code)

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.LongTensor:
        """Ids of a text or batch as a (batch, context_length) tensor, padded with the tokenizer's pad id."""
        batch = as_batch(texts)
        length = self.context_length if context_length is None else check_context_length(context_length)
        if not batch:
            return torch.zeros((0, length), dtype=torch.long)
        cleaned = [self._clean_fn(text) for text in batch]
        encoded = self.tokenizer(cleaned, return_tensors="pt", max_length=length, padding="max_length", truncation=True)
        ids = encoded["input_ids"]  # (batch, context_length)
        if self.strip_sep_token:  # some text towers pool at the last real token and must not see the separator
            ids = ids.masked_fill(ids == self.tokenizer.sep_token_id, 0)
        return ids
