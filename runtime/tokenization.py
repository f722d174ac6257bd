"""Tokenization with HF `tokenizers`, configured once at load time."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from .errors import InputTooLongError, ModelFileError

# Texts longer than max_length x this many characters are cut before tokenizing (the tokenizer's cost grows with
# the whole text, truncation or not); the cut is checked to leave enough tokens, else the whole text is used.
CHARACTERS_PER_TOKEN_CAP = 64
# Tokens past max_length that a cut text must still yield, so a word split by the cut cannot reach the kept part.
_CUT_MARGIN_TOKENS = 8


@dataclass
class Batch:
    """Token ids and attention mask of a padded batch, int64."""

    input_ids: np.ndarray
    attention_mask: np.ndarray


@dataclass(frozen=True)
class TokenizedTexts:
    """Texts after tokenization, what `Embedder.embed` runs. Slice or concatenate to regroup texts, e.g. to
    batch the texts of several requests together."""

    encodings: tuple[Encoding, ...]
    truncated: tuple[bool, ...]

    def __len__(self) -> int:
        return len(self.encodings)

    def __getitem__(self, key: slice) -> "TokenizedTexts":
        if not isinstance(key, slice):
            raise TypeError("TokenizedTexts takes slices, e.g. tokens[2:5]")
        return TokenizedTexts(self.encodings[key], self.truncated[key])

    @property
    def lengths(self) -> list[int]:
        """Tokens per text, special tokens included, after truncation."""
        return [len(encoding) for encoding in self.encodings]  # len(), not len(.ids): no list of ids built

    @property
    def token_count(self) -> int:
        return sum(self.lengths)

    @property
    def truncated_count(self) -> int:
        return sum(self.truncated)

    @classmethod
    def concat(cls, parts: Sequence["TokenizedTexts"]) -> "TokenizedTexts":
        return cls(tuple(e for part in parts for e in part.encodings), tuple(t for part in parts for t in part.truncated))


class TextTokenizer:
    """Truncates at max_length; batches are padded to their own longest text.

    Any truncation or padding stored in tokenizer.json is replaced: a fixed
    padding length there would make pooling average over padding.
    """

    def __init__(self, path: Path, max_length: int, pad_token_id: int) -> None:
        self.max_length = max_length
        self._tokenizer = _load(path)
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=max_length)
        self._pad_token_id = pad_token_id
        self._windowing: dict[int, Tokenizer] = {}  # overlap -> a private copy that truncates with that stride
        self._counter: Tokenizer | None = None  # a private copy without truncation, for exact token counts

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def tokenize(self, texts: list[str], truncate: bool = True) -> TokenizedTexts:
        """Tokenize every text in one call (the parallel Rust batch path); InputTooLongError when a text is
        over max_length and `truncate` is False."""
        cap = self.max_length * CHARACTERS_PER_TOKEN_CAP
        encodings = self._tokenizer.encode_batch([text[:cap] for text in texts], add_special_tokens=True)
        for index, text in enumerate(texts):
            if len(text) > cap and _overflow_tokens(encodings[index]) < _CUT_MARGIN_TOKENS:
                encodings[index] = self._tokenizer.encode(text, add_special_tokens=True)  # the cut left too few
        truncated = tuple(bool(encoding.overflowing) for encoding in encodings)
        if not truncate:
            for index, cut in enumerate(truncated):
                if cut:
                    raise InputTooLongError(index, self.count_tokens(texts[index]), self.max_length)
        return TokenizedTexts(tuple(encodings), truncated)

    def count_tokens(self, text: str) -> int:
        """Token count without truncation, on a private copy so the shared tokenizer is never reconfigured."""
        if self._counter is None:
            counter = Tokenizer.from_str(self._tokenizer.to_str())
            counter.no_truncation()
            self._counter = counter
        return len(self._counter.encode(text, add_special_tokens=True).ids)

    def encode_windows(self, texts: list[str], overlap: int) -> list[list[Encoding]]:
        """Every text as windows of at most max_length tokens, each with its special tokens, sharing `overlap`
        tokens with the window before; a text that fits is one window."""
        if overlap not in self._windowing:
            windowing = Tokenizer.from_str(self._tokenizer.to_str())
            windowing.no_padding()
            windowing.enable_truncation(max_length=self.max_length, stride=overlap)
            self._windowing[overlap] = windowing
        return [[first, *first.overflowing]
                for first in self._windowing[overlap].encode_batch(texts, add_special_tokens=True)]

    def pad(self, encodings: Sequence[Encoding]) -> Batch:
        """Stack encodings into int64 arrays padded to the longest one."""
        longest = max((len(e) for e in encodings), default=0)
        input_ids = np.full((len(encodings), longest), self._pad_token_id, dtype=np.int64)
        attention_mask = np.zeros((len(encodings), longest), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            length = len(encoding)
            input_ids[row, :length] = encoding.ids
            attention_mask[row, :length] = encoding.attention_mask
        return Batch(input_ids=input_ids, attention_mask=attention_mask)


def _overflow_tokens(encoding: Encoding) -> int:
    return sum(len(part.ids) for part in encoding.overflowing)


def _load(path: Path) -> Tokenizer:
    if not path.is_file():
        raise ModelFileError(path, "tokenizer file not found; the exported directory is incomplete, re-export it")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
        raise ModelFileError(path, f"cannot be loaded as a tokenizers file ({str(exc)[:200]})") from None
