"""The evaluation suite: several domains of real text, each split by checksum into calibration and evaluation.

Every domain reads text installed on the machine (see SOURCES in each domain and docs/evaluation-suite.md):
CPython's own documentation and standard library (always there), and Debian packages at pinned versions (used
when installed). A text's share (CRC-32 of its key, mod 10) decides once where it goes: share 0 is calibration,
every other share evaluation, so no text is in both. Queries come from shares 1 and 2: a passage's first sentence
(the passage stays a document) or, for one-sentence items, the item itself (then it is no document).
"""
from __future__ import annotations

import functools
import re
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import corpus, debian_text, python_text
from .debian_text import COREUTILS, HANDBOOK, script_share

if TYPE_CHECKING:
    from tokenizers import Tokenizer

CALIBRATION_SHARE = 0
QUERY_SHARES = (1, 2)
DEFAULT_QUERIES = 100  # per domain
DEFAULT_DOCUMENTS = 1000  # per domain
DEFAULT_CALIBRATION = 300  # texts over all domains
# The export's retrieval check of every variant, per domain: the PyTorch reference of these texts is the longest
# step of a large model's export (docs/export.md); `edgembed eval` measures with the full sizes.
EXPORT_CHECK_QUERIES = 10
# 50 documents still set edgembed's q8 well apart from plain dynamic int8 on every domain (benchmarks/check_size.py)
EXPORT_CHECK_DOCUMENTS = 50
# Long documents cost about 15 times the tokens of the others (and attention grows faster than that): the
# export's check keeps this many of them.
EXPORT_CHECK_LONG_DOCUMENTS = 20
# The q8 goal for the top-10 kept on every domain (docs/q8-recipe.md): below it the export names the other
# recipe.
TOP10_GOAL = 0.95
# The export's check reads each text up to this many of the model's tokens (the long domain's up to the second):
# non-Latin scripts take 3-5 times the tokens of English in an English vocabulary (docs/export.md, "The retrieval
# check's size").
EXPORT_CHECK_TOKENS = 128
EXPORT_CHECK_LONG_TOKENS = 1024
# Sentence ends: Latin and Cyrillic after a space, CJK full-width marks at once, the Arabic question mark.
_SENTENCE_END = re.compile(r"(?<=[.!?؟])\s+|(?<=[。！？])")
PYTHON = "CPython's own documentation and standard library, this interpreter (PSF-2.0)"


@dataclass(frozen=True)
class Item:
    """One unit of a domain: `key` decides its share; `document` is its text; `query` a text that asks for it."""

    key: str
    document: str
    query: str | None
    calibration: bool | None = None  # set: decided by containment, not by the share of `key`


@dataclass
class DomainTexts:
    """A domain's calibration texts and its evaluation queries and documents (disjoint from the calibration)."""

    calibration: list[str]
    queries: list[str]
    documents: list[str]


@dataclass(frozen=True)
class Domain:
    """A kind of text: how to read it, where it comes from and whether its source is installed."""

    name: str
    description: str
    packages: tuple[debian_text.DebianPackage, ...]  # Debian packages it reads (none: CPython only)
    build: Callable[[], DomainTexts]
    optional_packages: bool = False  # True: CPython's text alone makes the domain, the packages add to it

    def available(self) -> bool:
        return self.optional_packages or not self.packages or any(p.root() is not None for p in self.packages)

    def sources(self) -> list[str]:
        python = [PYTHON] if self.optional_packages or not self.packages else []
        return python + [package.describe() for package in self.packages]


def share(key: str) -> int:
    return zlib.crc32(key.encode("utf-8")) % 10


def _shuffled(texts: Iterable[str]) -> list[str]:
    """A fixed pseudo-random order (by checksum), so taking the first N does not favour one file or chapter."""
    return sorted(dict.fromkeys(texts), key=lambda text: (zlib.crc32(b"order:" + text.encode("utf-8")), text))


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def _passage_items(passages: Iterable[str], keep: Callable[[str], bool] = lambda text: True,
                   max_query_words: int = 40) -> list[Item]:
    """Passages as documents; the first sentence of a longer one, or a one-sentence passage itself, as its query.
    `keep` decides which passages, and which of their first sentences, are taken."""
    items = []
    for passage in dict.fromkeys(p for p in passages if keep(p)):
        parts = sentences(passage)
        first = parts[0] if parts else passage
        short = len(first.split()) <= max_query_words or len(first) <= 4 * max_query_words
        items.append(Item(key=passage, document=passage, query=first if short and keep(first) else None))
    return items


def split(items: Sequence[Item]) -> DomainTexts:
    """Calibration: share 0 (documents and queries); evaluation: the rest, queries from shares 1 and 2."""
    calibration, queries, documents = [], [], []
    for item in items:
        part = share(item.key)
        if item.calibration or (item.calibration is None and part == CALIBRATION_SHARE):
            calibration += [item.document] + ([item.query] if item.query else [])
        elif part in QUERY_SHARES and item.query:
            queries.append(item.query)
            if item.query != item.document:
                documents.append(item.document)
        else:
            documents.append(item.document)
    held = set(calibration)
    documents = [d for d in documents if d not in held]
    taken = set(documents)
    queries = [q for q in queries if q not in held and q not in taken]
    return DomainTexts(calibration=_shuffled(calibration), queries=_shuffled(queries), documents=_shuffled(documents))


# --- the domains' items ---------------------------------------------------------------------------------------

def _code() -> list[Item]:
    """Query: a function's docstring summary; document: its code without the docstring."""
    return [Item(key=f.name, document=f.code, query=f.summary if 3 <= len(f.summary.split()) <= 30 else None)
            for f in python_text.stdlib_functions()]


def _query_words(name: str) -> str | None:
    """`shutil.make_archive` -> "shutil make archive": the words a programmer types to find it."""
    parts = name.split(".")
    if any(part.startswith("_") for part in parts):
        return None
    return " ".join(" ".join(parts).replace("_", " ").split())


def _short() -> list[Item]:
    """Query: a function's dotted name as words; document: the one-line summary of its docstring."""
    items = []
    for function in python_text.stdlib_functions():
        words = function.summary.split()
        query = _query_words(function.name)
        if query and 4 <= len(words) <= 25:
            items.append(Item(key=function.name, document=function.summary, query=query))
    return items


def _long() -> list[Item]:
    """Documents of 450 words or more: help topics, long docstrings and the handbook's English pages. CPython's
    long documents hold english-prose's paragraphs: they are evaluation only, and only those holding none of its
    calibration paragraphs."""
    held = set(corpus.calibration_pool())
    items = [_long_item(python_text.capped(text), evaluation_only=True) for text in python_text.long_documentation()
             if not any(paragraph in held for paragraph in corpus.prose_paragraphs(text))]
    for page in debian_text.handbook_pages("en-US"):
        text = " ".join(page)
        if len(text.split()) >= python_text.LONG_WORDS:
            items.append(_long_item(python_text.capped(text), evaluation_only=False))
    return items


def _long_item(text: str, evaluation_only: bool) -> Item:
    middle = [s for s in sentences(text) if 5 <= len(s.split()) <= 40]
    return Item(key=text, document=text, query=middle[len(middle) // 2] if middle else None,
                calibration=False if evaluation_only else None)


def _handbook(language: str, script: str) -> Callable[[], list[Item]]:
    def items() -> list[Item]:
        paragraphs = [p for page in debian_text.handbook_pages(language) for p in page]
        return _passage_items(paragraphs, lambda text: len(text) >= 20 and script_share(text, script) >= 0.5)

    return items


def _korean() -> list[Item]:
    """coreutils' Korean messages (short) and the handbook's Korean paragraphs."""
    texts = list(debian_text.coreutils_messages("ko")) + [p for page in debian_text.handbook_pages("ko-KR")
                                                           for p in page]
    return _passage_items(texts, lambda text: len(text) >= 8 and script_share(text, "HANGUL") >= 0.5)


def _from_items(items: Callable[[], list[Item]]) -> Callable[[], DomainTexts]:
    return lambda: split(items())


def _english_prose_texts() -> DomainTexts:
    """corpus.py's split, unchanged, so this domain's figures compare with the ones measured before the suite."""
    queries, documents = corpus.evaluation_set(300, 3000)
    return DomainTexts(calibration=corpus.calibration_pool(), queries=queries, documents=documents)


def _handbook_domain(name: str, language: str, script: str, label: str) -> Domain:
    return Domain(name, f"{label}: the Debian handbook's paragraphs", (HANDBOOK,),
                  _from_items(_handbook(language, script)))


DOMAINS: tuple[Domain, ...] = (
    Domain("english-prose", "English prose: sentences and paragraphs of CPython's help topics and docstrings",
           (), _english_prose_texts),
    Domain("code", "code: a docstring's summary against standard-library functions' source", (),
           _from_items(_code)),
    Domain("short", "short queries (a function's dotted name as words) against one-line descriptions", (),
           _from_items(_short)),
    Domain("long", "long documents (450 to 1,500 words, past 512 tokens): help topics, long docstrings and, when "
           "installed, the Debian handbook's English pages; queries are sentences from them", (HANDBOOK,),
           _from_items(_long), optional_packages=True),
    _handbook_domain("russian", "ru-RU", "CYRILLIC", "Russian (Cyrillic)"),
    _handbook_domain("chinese", "zh-CN", "CJK", "Chinese (simplified, CJK)"),
    _handbook_domain("japanese", "ja-JP", "CJK|HIRAGANA|KATAKANA", "Japanese (kanji and kana)"),
    Domain("korean", "Korean (Hangul): coreutils' messages and the Debian handbook's paragraphs",
           (COREUTILS, HANDBOOK), _from_items(_korean)),
    _handbook_domain("arabic", "ar-MA", "ARABIC", "Arabic (Arabic script)"),
    _handbook_domain("persian", "fa-IR", "ARABIC", "Persian (Arabic script)"),
)
DOMAIN_NAMES = tuple(domain.name for domain in DOMAINS)


def find_domain(name: str) -> Domain:
    from edgembed.runtime import UnknownChoiceError

    for domain in DOMAINS:
        if domain.name == name:
            return domain
    raise UnknownChoiceError("domain", name, DOMAIN_NAMES)


@functools.cache
def _raw_texts(name: str) -> DomainTexts:
    domain = find_domain(name)
    return domain.build() if domain.available() else DomainTexts([], [], [])


@functools.cache
def domain_texts(name: str) -> DomainTexts:
    """One domain's calibration and evaluation texts (empty when its source is not installed). An evaluation text
    sharing a sentence (of 30 characters or more) with any domain's calibration text is left out."""
    texts = _raw_texts(name)
    held = _calibration_pieces()
    return DomainTexts(calibration=texts.calibration, queries=[q for q in texts.queries if not _overlaps(q, held)],
                       documents=[d for d in texts.documents if not _overlaps(d, held)])


MIN_PIECE = 30  # characters: shorter sentences ("Return None.") may occur anywhere and prove nothing


def _pieces(text: str) -> set[str]:
    return {text} | {piece for piece in sentences(text) if len(piece) >= MIN_PIECE}


@functools.lru_cache(maxsize=1)
def _calibration_pieces() -> frozenset[str]:
    return frozenset(piece for name in DOMAIN_NAMES for text in _raw_texts(name).calibration
                     for piece in _pieces(text))


def _overlaps(text: str, held: frozenset[str]) -> bool:
    return any(piece in held for piece in _pieces(text))


def available_domains() -> list[str]:
    """The domains whose texts are installed here, in DOMAINS order."""
    return [name for name in DOMAIN_NAMES if domain_texts(name).documents]


@dataclass
class Suite:
    """Per domain: the evaluation queries and documents, at most the sizes asked for."""

    domains: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # domains whose source is not installed

    def texts(self) -> int:
        return sum(len(q) + len(d) for q, d in self.domains.values())

    def flatten(self) -> list[str]:
        """Every domain's queries then documents, domain after domain: the layout of spans()."""
        return [text for queries, documents in self.domains.values() for text in queries + documents]

    def spans(self) -> dict[str, tuple[slice, slice]]:
        """Per domain, where its queries and its documents are in flatten()."""
        found, start = {}, 0
        for name, (queries, documents) in self.domains.items():
            middle = start + len(queries)
            found[name] = (slice(start, middle), slice(middle, middle + len(documents)))
            start = middle + len(documents)
        return found

    def speed_documents(self, count: int) -> list[str]:
        """Up to `count` documents, the domains taking turns: the texts speed is timed on."""
        pools = [list(documents) for _, documents in self.domains.values()]
        taken: list[str] = []
        for turn in range(max((len(p) for p in pools), default=0)):
            taken += [pool[turn] for pool in pools if turn < len(pool)]
        return taken[:count]


def export_check_suite(queries: int = EXPORT_CHECK_QUERIES, documents: int = EXPORT_CHECK_DOCUMENTS, *,
                       tokenizer: Tokenizer | None = None) -> Suite:
    """The suite of the export's retrieval check: `queries` x `documents` per domain, at most
    EXPORT_CHECK_LONG_DOCUMENTS of them long; with `tokenizer` (a tokenizers.Tokenizer), each text cut after
    EXPORT_CHECK_TOKENS of its tokens (EXPORT_CHECK_LONG_TOKENS in the long domain)."""
    suite = evaluation_suite(queries, documents)
    if "long" in suite.domains:
        long_queries, long_documents = suite.domains["long"]
        suite.domains["long"] = (long_queries, long_documents[:EXPORT_CHECK_LONG_DOCUMENTS])
    if tokenizer is not None:
        for name, (domain_queries, domain_documents) in suite.domains.items():
            limit = EXPORT_CHECK_LONG_TOKENS if name == "long" else EXPORT_CHECK_TOKENS
            suite.domains[name] = (cut_to_tokens(domain_queries, tokenizer, limit),
                                   cut_to_tokens(domain_documents, tokenizer, limit))
    return suite


def cut_to_tokens(texts: list[str], tokenizer: Tokenizer, limit: int) -> list[str]:
    """Each text up to the end of its `limit`-th token (special tokens not counted); shorter texts unchanged."""
    encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
    return [text if len(encoding.offsets) <= limit else text[:encoding.offsets[limit - 1][1]]
            for text, encoding in zip(texts, encodings)]


def evaluation_suite(queries: int = DEFAULT_QUERIES, documents: int = DEFAULT_DOCUMENTS,
                     domains: Sequence[str] | None = None) -> Suite:
    """Up to `queries` x `documents` texts of every available domain (or of `domains`), never calibration text."""
    names = list(domains) if domains is not None else list(DOMAIN_NAMES)
    suite = Suite()
    for name in names:
        texts = domain_texts(name)
        if not texts.documents or not texts.queries:
            suite.missing.append(name)
            continue
        suite.domains[name] = (texts.queries[:queries], texts.documents[:documents])
    return suite


@dataclass
class CalibrationSet:
    """The built-in calibration texts, domains taking turns, and what the manifest says about them."""

    texts: list[str]
    per_domain: dict[str, int]
    missing: list[str]

    def describe(self) -> dict[str, object]:
        sources = sorted({source for name in self.per_domain for source in find_domain(name).sources()})
        return {"set": "built-in", "texts": len(self.texts), "domains": self.per_domain, "missing_domains":
                self.missing, "sources": sources,
                "split": "CRC-32 of each item's key mod 10 == 0 (evaluation uses the other shares)"}


def calibration_set(count: int = DEFAULT_CALIBRATION) -> CalibrationSet:
    """`count` texts from every available domain, the domains taking turns (one text each per turn, a domain
    whose share is used up drops out), so any prefix holds every domain (GPTQ's Gram matrices read the first
    tokens). A text two domains share counts once, for the first."""
    pools = {name: domain_texts(name).calibration for name in DOMAIN_NAMES}
    present = {name: list(pool) for name, pool in pools.items() if pool}
    texts: dict[str, None] = {}
    per_domain = dict.fromkeys(present, 0)
    while len(texts) < count and any(present.values()):
        for name, pool in present.items():
            while pool and len(texts) < count:
                text = pool.pop(0)
                if text not in texts:
                    texts[text] = None
                    per_domain[name] += 1
                    break
    return CalibrationSet(list(texts), per_domain, [name for name in DOMAIN_NAMES if name not in present])


def calibration_texts(count: int = DEFAULT_CALIBRATION) -> list[str]:
    return calibration_set(count).texts


def describe_calibration(user_texts: Sequence[str] | None) -> dict[str, object]:
    """What the manifest records about the calibration texts: the user's, or the built-in set's make-up."""
    if user_texts is not None:
        return {"set": "user", "texts": len(user_texts), "sources": ["texts given with --calibration-data"]}
    return calibration_set().describe()
