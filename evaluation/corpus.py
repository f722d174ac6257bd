"""Real English text for calibration and evaluation, read from the documentation every CPython carries.

Nothing is copied into edgembed: the text is extracted at run time from the interpreter's own
`pydoc_data` help topics and the docstrings of its standard-library sources (parsed with `ast`, never
imported). Both are Python documentation under the PSF licence. Sentences are split deterministically
by a checksum into a calibration share and an evaluation share that never overlap.
"""
from __future__ import annotations

import functools
import re
import zlib

from .python_text import stdlib_text

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def prose_paragraphs(text: str) -> list[str]:
    """The paragraphs of `text` that documentation_paragraphs() would keep."""
    return [p for p in _clean_paragraphs(text) if 6 <= len(p.split()) <= 300]


def _clean_paragraphs(text: str) -> list[str]:
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        paragraph = " ".join(block.split())
        if "::=" in paragraph or paragraph.startswith((">>>", "...", "-", "*", "|")):
            continue  # grammar rules, doctests, bullet lists and tables are not prose
        paragraphs.append(paragraph)
    return paragraphs


@functools.lru_cache(maxsize=1)
def documentation_paragraphs() -> tuple[str, ...]:
    """Distinct prose paragraphs from the help topics and the standard library's docstrings."""
    from pydoc_data.topics import topics

    sources = [topics[key] for key in sorted(topics)] + list(stdlib_text().docstrings)
    seen: dict[str, None] = {}
    for text in sources:
        for paragraph in _clean_paragraphs(text):
            if 6 <= len(paragraph.split()) <= 300:
                seen.setdefault(paragraph, None)
    return tuple(seen)


def _share(text: str) -> int:
    return zlib.crc32(text.encode("utf-8")) % 10


def _calibration_share() -> list[str]:
    return [p for p in documentation_paragraphs() if _share(p) == 0]


def calibration_pool() -> list[str]:
    """Every paragraph of the calibration share (calibration_texts() takes the first ones)."""
    return _calibration_share()


def calibration_texts(count: int = 300) -> list[str]:
    """`count` paragraphs of varied length (checksum share 0: never in the evaluation set)."""
    return _calibration_share()[:count]


def evaluation_set(queries: int = 300, documents: int = 3000) -> tuple[list[str], list[str]]:
    """Queries (single sentences) and documents (sentences and short paragraphs), disjoint from calibration."""
    sentences: dict[str, None] = {}
    calibration = set(_calibration_share())
    for paragraph in documentation_paragraphs():
        if _share(paragraph) == 0:
            continue
        for sentence in _SENTENCE_END.split(paragraph):
            if 5 <= len(sentence.split()) <= 60 and sentence not in calibration:
                sentences.setdefault(sentence, None)
    pool = list(sentences)
    query_pool = [s for s in pool if _share(s) in (1, 2)]
    document_pool = [s for s in pool if _share(s) not in (1, 2)]
    if len(query_pool) < queries or len(document_pool) < documents:
        raise ValueError(f"this Python's documentation yields {len(query_pool)} queries and "
                         f"{len(document_pool)} documents; ask for fewer")
    return query_pool[:queries], document_pool[:documents]
