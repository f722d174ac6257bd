"""Tokenization with HF `tokenizers`, configured once at load time."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from .errors import InputTooLongError, ModelFileError


@dataclass
class Batch:
    """Token ids and attention mask of a padded batch, int64."""

    input_ids: np.ndarray
    attention_mask: np.ndarray


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

    def encode(self, texts: list[str], truncate: bool = True) -> list[Encoding]:
        """Tokenize every text in one call (the parallel Rust batch path)."""
        encodings = self._tokenizer.encode_batch(texts, add_special_tokens=True)
        if not truncate:
            for index, encoding in enumerate(encodings):
                if encoding.overflowing:
                    raise InputTooLongError(index, self._count_tokens(texts[index]), self.max_length)
        return encodings

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
        longest = max((len(e.ids) for e in encodings), default=0)
        input_ids = np.full((len(encodings), longest), self._pad_token_id, dtype=np.int64)
        attention_mask = np.zeros((len(encodings), longest), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            length = len(encoding.ids)
            input_ids[row, :length] = encoding.ids
            attention_mask[row, :length] = encoding.attention_mask
        return Batch(input_ids=input_ids, attention_mask=attention_mask)

    def __call__(self, texts: list[str], truncate: bool = True) -> Batch:
        return self.pad(self.encode(texts, truncate))

    def _count_tokens(self, text: str) -> int:
        """Token count without truncation, on a private copy so the shared tokenizer is never reconfigured."""
        counter = Tokenizer.from_str(self._tokenizer.to_str())
        counter.no_truncation()
        return len(counter.encode(text, add_special_tokens=True).ids)


def _load(path: Path) -> Tokenizer:
    if not path.is_file():
        raise ModelFileError(path, "tokenizer file not found; the exported directory is incomplete, re-export it")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
        raise ModelFileError(path, f"cannot be loaded as a tokenizers file ({exc})") from None
