"""Tokenization with HF `tokenizers`, configured once at load time."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from .errors import InputTooLongError, InvalidArgumentError, ModelFileError

# A text is tokenized from a prefix of max_length x this many characters: the tokenizer's cost (and the GIL
# while Python hands it the string) grows with the characters it reads, and the model keeps max_length tokens.
CHARACTERS_PER_TOKEN = 64
# A prefix that yields too few tokens (long runs of spaces, words the vocabulary reads as one [UNK]) is read
# further, doubling, up to max_length x this many characters; what lies past that never reaches the model.
MOST_CHARACTERS_PER_TOKEN = 256
# Tokens past max_length that a cut prefix must still yield, so a word split by the cut cannot reach the kept part.
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

    def __getitem__(self, key: slice) -> TokenizedTexts:
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
    def concat(cls, parts: Sequence[TokenizedTexts]) -> TokenizedTexts:
        return cls(tuple(e for part in parts for e in part.encodings),
                   tuple(t for part in parts for t in part.truncated))


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
        self._counter: Tokenizer | None = None  # a private copy without truncation, for token counts

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def tokenize(self, texts: list[str], *, prefix: str = "", truncate: bool = True) -> TokenizedTexts:
        """`prefix` + each text, tokenized in batch calls that release the GIL; only a prefix of a long text is read
        (CHARACTERS_PER_TOKEN). InputTooLongError when a text is over max_length and `truncate` is False."""
        budget = self.max_length * CHARACTERS_PER_TOKEN
        encodings = self._encode_batch(self._tokenizer, [prefix + text[:budget] for text in texts], texts)
        read = [min(len(text), budget) for text in texts]
        for index, text in enumerate(texts):
            if read[index] < len(text) and _overflow_tokens(encodings[index]) < _CUT_MARGIN_TOKENS:
                encodings[index], read[index] = self._read_further(prefix, text, index, budget)
        truncated = tuple(bool(encoding.overflowing) or read[index] < len(texts[index])
                          for index, encoding in enumerate(encodings))
        if not truncate and any(truncated):
            index = truncated.index(True)
            raise InputTooLongError(index, self._count_tokens(prefix + texts[index][:read[index]]), self.max_length,
                                    characters=len(texts[index]), characters_read=read[index])
        return TokenizedTexts(tuple(encodings), truncated)

    def _read_further(self, prefix: str, text: str, index: int, budget: int) -> tuple[Encoding, int]:
        """The encoding of a longer prefix of `text`, doubling until the tokens pass max_length with a margin, the
        text ends or MOST_CHARACTERS_PER_TOKEN is reached; returns it with the characters read."""
        ceiling = self.max_length * MOST_CHARACTERS_PER_TOKEN
        while True:
            budget = min(2 * budget, ceiling, len(text))
            encoding = self._encode_batch(self._tokenizer, [prefix + text[:budget]], [text], first=index)[0]
            if budget in (ceiling, len(text)) or _overflow_tokens(encoding) >= _CUT_MARGIN_TOKENS:
                return encoding, budget

    def _count_tokens(self, text: str) -> int:
        """Tokens without truncation, on a private copy so the shared tokenizer is never reconfigured."""
        if self._counter is None:
            counter = Tokenizer.from_str(self._tokenizer.to_str())
            counter.no_truncation()
            self._counter = counter
        return len(self._encode_batch(self._counter, [text], [text])[0])

    @staticmethod
    def _encode_batch(tokenizer: Tokenizer, inputs: list[str], texts: list[str], first: int = 0) -> list[Encoding]:
        try:
            return tokenizer.encode_batch(inputs, add_special_tokens=True)
        except TypeError:  # tokenizers' answer to a lone surrogate: name the text instead
            for offset, text in enumerate(inputs):
                check_unicode(f"texts[{first + offset}]", text)
            raise

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


def check_unicode(name: str, text: str) -> None:
    """Text that cannot be encoded as UTF-8 (a lone surrogate) is named with the position of the fault."""
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgumentError(name, text, "valid Unicode text", f"{exc.reason} at position {exc.start}; "
                                   "decode your input with errors='replace'") from None
