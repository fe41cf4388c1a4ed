"""Text tokenizers: OpenAI CLIP's byte-level BPE, and (from hf_tokenizer) a Hugging Face tokenizer behind the same
call.

Both turn a string or a batch of strings into a zero-padded ``(batch, context_length)`` LongTensor holding exactly
the ids that open_clip 3.3.0 gives for the same input, so checkpoints trained with open_clip see the same tokens.
"""

from __future__ import annotations

import array
import gzip
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import regex
import torch

from .constants import DEFAULT_CONTEXT_LENGTH
from .hf_tokenizer import HFTokenizer
from .text_cleaning import as_batch, canonicalize_text, check_context_length, get_clean_fn

__all__ = [
    "DEFAULT_CONTEXT_LENGTH",
    "ClipTokenizer",
    "HFTokenizer",
    "SimpleTokenizer",
    "decode",
    "canonicalize_text",
    "get_clean_fn",
    "tokenize",
]


SOT_TOKEN = "<start_of_text>"
EOT_TOKEN = "<end_of_text>"
_SPECIAL_TOKENS = (SOT_TOKEN, EOT_TOKEN)
_NUM_MERGES = 49152 - 256 - 2  # CLIP keeps 48,894 merges: 2 x 256 byte symbols + merges + 2 specials = 49,408 ids
_WORD_SUFFIX = "</w>"  # marks the last symbol of a word, so "dog" at a word end differs from "dog" inside "dogma"
_WORD_CACHE_SIZE = 2**18
_DEFAULT_VOCAB = Path(__file__).with_name("bpe_simple_vocab_16e6.txt.gz")


# ----------------------------------------------------------------------------------------------- BPE tables
@lru_cache(maxsize=1)
def _byte_to_char() -> dict[int, str]:
    """A reversible map from the 256 byte values to printable characters, so BPE never sees control codes.

    Printable Latin-1 bytes stand for themselves; the other 68 bytes take the characters from U+0100 on, in
    byte order. Dict order matters: it is the order of the first 256 vocabulary ids.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {byte: chr(byte) for byte in printable}
    spare = 0
    for byte in range(256):
        if byte not in table:
            table[byte] = chr(256 + spare)
            spare += 1
    return table


@dataclass(frozen=True)
class _BpeVocab:
    """Read-only tables of one merges file, shared by every tokenizer built from it."""

    encoder: dict[str, int]  # symbol -> id
    decoder: list[str]  # id -> symbol
    ranks: dict[tuple[str, str], int]  # merge pair -> priority (lower merges first)
    to_symbols: dict[int, str]  # str.translate table: Latin-1 char of a byte -> its printable symbol
    to_bytes: dict[int, int]  # str.translate table: printable symbol -> Latin-1 char of its byte


@lru_cache(maxsize=4)
def _load_bpe_vocab(path: str, specials: tuple[str, ...] = _SPECIAL_TOKENS) -> _BpeVocab:
    """Parse a CLIP merges file (gzip text: a header line, then one "a b" merge per line); `specials` take the
    last ids, in order."""
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : _NUM_MERGES + 1]]
    if len(merges) != _NUM_MERGES or any(len(pair) != 2 for pair in merges):
        raise ValueError(f"{path} is not a CLIP BPE merges file: need {_NUM_MERGES} 'a b' lines after the header")
    byte_symbols = list(_byte_to_char().values())
    symbols = byte_symbols + [s + _WORD_SUFFIX for s in byte_symbols] + ["".join(p) for p in merges]
    symbols += specials
    return _BpeVocab(
        encoder={symbol: index for index, symbol in enumerate(symbols)},
        decoder=symbols,
        ranks={pair: rank for rank, pair in enumerate(merges)},
        to_symbols={byte: char for byte, char in _byte_to_char().items()},
        to_bytes={ord(char): byte for byte, char in _byte_to_char().items()},
    )


@lru_cache(maxsize=4)
def _word_pattern(specials: tuple[str, ...] = _SPECIAL_TOKENS) -> regex.Pattern:
    """CLIP's pre-tokenisation: special tokens, English contractions, letter runs, single digits, other runs."""
    alternatives = "|".join(regex.escape(token) for token in specials)
    return regex.compile(
        alternatives + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
        regex.IGNORECASE,
    )


def _merge_symbols(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply BPE to one byte-encoded word: repeatedly fuse every occurrence of the best-ranked adjacent pair."""
    symbols = [*word[:-1], word[-1] + _WORD_SUFFIX]
    while len(symbols) > 1:
        best, best_rank = None, _NUM_MERGES
        for pair in zip(symbols, symbols[1:]):
            rank = ranks.get(pair, _NUM_MERGES)
            if rank < best_rank:
                best, best_rank = pair, rank
        if best is None:
            break
        first, second = best
        fused: list[str] = []
        index, count = 0, len(symbols)
        while index < count:  # left to right, non-overlapping: "a a a" with (a, a) gives "aa a"
            if index + 1 < count and symbols[index] == first and symbols[index + 1] == second:
                fused.append(first + second)
                index += 2
            else:
                fused.append(symbols[index])
                index += 1
        symbols = fused
    return symbols


# ----------------------------------------------------------------------------------------------- CLIP BPE
class ClipTokenizer:
    """OpenAI CLIP's byte-level BPE tokenizer; gives the ids of open_clip's ``SimpleTokenizer`` exactly.

    Texts are cleaned (ftfy, HTML unescape, whitespace; then lowercased for ``clean="lower"``), split into
    words by CLIP's regex, and each word is BPE-encoded once and cached. Id 0 doubles as padding, as in CLIP.
    """

    def __init__(
        self,
        *,
        vocab_path: str | Path | None = None,
        context_length: int = DEFAULT_CONTEXT_LENGTH,
        clean: str = "lower",
        additional_special_tokens: Sequence[str] = (),
    ) -> None:
        self.context_length = check_context_length(context_length)
        self.clean = clean
        self.vocab_path = str(vocab_path) if vocab_path is not None else str(_DEFAULT_VOCAB)
        self.special_tokens = (*_SPECIAL_TOKENS, *additional_special_tokens)  # they take the last ids, in order
        self._clean_fn = get_clean_fn(clean)
        self._vocab = _load_bpe_vocab(self.vocab_path, self.special_tokens)
        self._pattern = _word_pattern(self.special_tokens)
        # per instance, so a tokenizer's memory goes with it; bounded, so a long training run cannot grow it forever
        self._word_ids = lru_cache(maxsize=_WORD_CACHE_SIZE)(self._encode_word)

    def __repr__(self) -> str:
        return f"ClipTokenizer(context_length={self.context_length}, clean={self.clean!r})"

    def __getstate__(self) -> dict[str, Any]:
        # data-loader workers receive a pickled tokenizer: send the settings, rebuild tables and cache there
        extra = self.special_tokens[len(_SPECIAL_TOKENS) :]
        settings = {"vocab_path": self.vocab_path, "context_length": self.context_length, "clean": self.clean}
        return {**settings, "additional_special_tokens": extra}

    def __setstate__(self, state: dict[str, Any]) -> None:
        ClipTokenizer.__init__(self, **state)

    @property
    def vocab_size(self) -> int:
        return len(self._vocab.decoder)

    @property
    def sot_token_id(self) -> int:
        return self._vocab.encoder[SOT_TOKEN]

    @property
    def eot_token_id(self) -> int:
        return self._vocab.encoder[EOT_TOKEN]

    @property
    def pad_token_id(self) -> int:
        return 0

    def _encode_word(self, word: str) -> tuple[int, ...]:
        encoder = self._vocab.encoder
        symbols = word.encode("utf-8").decode("latin-1").translate(self._vocab.to_symbols)
        if symbols in self.special_tokens:  # only the exact lowercase spelling is special, as in CLIP
            return (encoder[symbols],)
        return tuple(encoder[symbol] for symbol in _merge_symbols(symbols, self._vocab.ranks))

    def encode(self, text: str) -> list[int]:
        """Ids of one text after cleaning, without start/end tokens and without truncation."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__} ({text!r})")
        ids: list[int] = []
        for word in self._pattern.findall(self._clean_fn(text)):
            ids.extend(self._word_ids(word))
        return ids

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of a 1-D run of ids; word ends become spaces, so "a dog." decodes as "a dog . "."""
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise ValueError(f"decode takes one row of ids, got a tensor of shape {tuple(ids.shape)}")
            ids = ids.tolist()
        decoder = self._vocab.decoder
        try:
            ids = [operator.index(i) for i in ids]  # ints and NumPy integers, never floats
        except TypeError:
            raise TypeError(f"decode takes integer ids, got {ids!r}") from None
        bad = [i for i in ids if not 0 <= i < len(decoder)]
        if bad:
            raise ValueError(f"ids {bad[:5]} are not in the CLIP vocabulary (0..{len(decoder) - 1})")
        symbols = "".join(decoder[i] for i in ids)
        raw = symbols.translate(self._vocab.to_bytes).encode("latin-1")
        return raw.decode("utf-8", errors="replace").replace(_WORD_SUFFIX, " ")

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.LongTensor:
        """Ids of a text or batch as a (batch, context_length) tensor, zero padded.

        A text that does not fit is cut to ``context_length`` ids and its last id replaced by the end token, so
        the text tower always finds an end token to pool at.
        """
        batch = as_batch(texts)
        length = self.context_length if context_length is None else check_context_length(context_length)
        sot, eot = self.sot_token_id, self.eot_token_id
        flat, lengths = array.array("q"), []  # the rows unpadded, end to end: one C copy into the tensor below
        for text in batch:
            ids = [sot, *self.encode(text), eot]
            if len(ids) > length:
                ids = ids[:length]
                ids[-1] = eot
            flat.extend(ids)
            lengths.append(len(ids))
        out = torch.zeros((len(batch), length), dtype=torch.long)  # (batch, context_length), 0 pads
        if flat:
            real = torch.arange(length) < torch.tensor(lengths).unsqueeze(1)  # (batch, context_length)
            out[real] = torch.frombuffer(flat, dtype=torch.long)  # row-major, as the rows were appended
        return out


class SimpleTokenizer(ClipTokenizer):
    """open_clip's name and constructor for the CLIP BPE tokenizer, with the attributes code written for it reads
    (`encoder`, `decoder`, `byte_encoder`, `all_special_ids`, `bpe`, ...). `reduction_mask` (CLIPA's token
    dropping when training) is not implemented and is refused."""

    def __init__(
        self,
        bpe_path: str | Path | None = None,
        additional_special_tokens: Sequence[str] | None = None,
        context_length: int | None = DEFAULT_CONTEXT_LENGTH,
        clean: str = "lower",
        reduction_mask: str = "",
    ) -> None:
        if reduction_mask:
            raise ValueError(
                f"reduction_mask={reduction_mask!r} (CLIPA's training-time token dropping) is not supported; "
                "use reduction_mask='' (plain truncation)"
            )
        super().__init__(
            vocab_path=bpe_path,
            context_length=context_length or DEFAULT_CONTEXT_LENGTH,
            clean=clean,
            additional_special_tokens=additional_special_tokens or (),
        )

    encoder = property(lambda self: self._vocab.encoder)  # symbol -> id
    decoder = property(lambda self: dict(enumerate(self._vocab.decoder)))  # id -> symbol
    bpe_ranks = property(lambda self: self._vocab.ranks)
    byte_encoder = property(lambda self: _byte_to_char())  # byte value -> printable symbol
    byte_decoder = property(lambda self: {v: k for k, v in _byte_to_char().items()})
    all_special_ids = property(lambda self: [self._vocab.encoder[t] for t in self.special_tokens])

    def bpe(self, token: str) -> str:
        """The BPE symbols of one byte-encoded word, space separated (open_clip's `SimpleTokenizer.bpe`)."""
        if token in self.special_tokens:
            return token
        return " ".join(_merge_symbols(token, self._vocab.ranks))


@lru_cache(maxsize=1)
def _default_tokenizer() -> SimpleTokenizer:
    return SimpleTokenizer()


def tokenize(texts: str | Sequence[str], context_length: int = DEFAULT_CONTEXT_LENGTH) -> torch.LongTensor:
    """CLIP BPE ids of ``texts`` with a shared default tokenizer (built on first use), like ``open_clip.tokenize``."""
    return _default_tokenizer()(texts, context_length=context_length)


def decode(output_ids: torch.Tensor) -> str:
    """Text of one row of CLIP BPE ids with the shared default tokenizer, like ``open_clip.decode``."""
    return _default_tokenizer().decode(output_ids.cpu())


def __getattr__(name: str) -> Any:
    # open_clip builds `tokenizer._tokenizer` at import; here it is built when first asked for
    # (`from open_mclip.tokenizer import _tokenizer` works), so importing the library reads no vocabulary
    if name == "_tokenizer":
        return _default_tokenizer()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
