"""Deterministic benchmark texts: real English prose from CPython, cut to token-counted lengths."""
from __future__ import annotations

import importlib
import inspect
import random
from dataclasses import dataclass, field
from pathlib import Path

# Pure-Python stdlib modules with long docstrings; their prose tops up the pydoc topic help.
DOC_MODULES = (
    "argparse", "asyncio", "collections", "concurrent.futures", "contextlib", "csv", "dataclasses", "datetime",
    "decimal", "difflib", "email", "enum", "fractions", "functools", "http.client", "http.server", "inspect",
    "io", "ipaddress", "itertools", "json", "logging", "mailbox", "multiprocessing", "os", "pathlib", "pickle",
    "random", "re", "shutil", "socket", "sqlite3", "statistics", "string", "subprocess", "tarfile", "tempfile",
    "textwrap", "threading", "typing", "unittest", "urllib.request", "uuid", "xml.etree.ElementTree", "zipfile",
)
# Token counts include the special tokens ([CLS] ... [SEP]): what the model really runs on.
QUERY_TOKENS = (8, 12)
PASSAGE_TOKENS = 128
CORPUS_TOKENS = (10, 400)
SEED = 20240601


@dataclass
class TextSet:
    """The texts every engine of one model gets, in the same order."""

    query: str
    passages: list[str]
    corpus: list[str]
    token_counts: dict[str, object] = field(default_factory=dict)


def prose_paragraphs() -> list[str]:
    """Paragraphs of the pydoc topic help and of stdlib docstrings, code examples dropped."""
    from pydoc_data.topics import topics

    docs = [topics[key] for key in sorted(topics)]
    for name in DOC_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        docs.append(inspect.getdoc(module) or "")
        for _, obj in sorted(vars(module).items()):
            if getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isclass(obj) or inspect.isfunction(obj):
                docs.append(inspect.getdoc(obj) or "")
            if inspect.isclass(obj):
                docs.extend(inspect.getdoc(member) or "" for _, member in sorted(vars(obj).items())
                            if inspect.isfunction(member))
    paragraphs = []
    for doc in docs:
        for block in doc.split("\n\n"):
            lines = [line.strip() for line in block.splitlines()]
            if any(line.startswith((">>>", "...", "$ ")) for line in lines):
                continue
            text = " ".join(line for line in lines if line)
            if len(text.split()) >= 5:
                paragraphs.append(text)
    return paragraphs


def build_texts(tokenizer_file: Path, corpus_size: int, passages: int = 32) -> TextSet:
    """Cut the prose into a query, `passages` texts of ~128 tokens and a corpus of mixed lengths."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    paragraphs = prose_paragraphs()
    words = " ".join(paragraphs).split()
    unique = sorted(set(words))
    # Byte-level BPE and WordPiece both split on whitespace first, so per-word counts add up.
    costs = dict(zip(unique, (len(e.ids) for e in tokenizer.encode_batch([" " + w for w in unique],
                                                                          add_special_tokens=False))))
    rng = random.Random(SEED)
    specials = len(tokenizer.encode("", add_special_tokens=True).ids)

    def cut(target: int) -> str:
        start = rng.randrange(len(words))
        taken, total = [], specials
        while total < target:
            word = words[(start + len(taken)) % len(words)]
            taken.append(word)
            total += costs[word]
        return " ".join(taken)

    query = _pick_query(paragraphs, tokenizer)
    batch = [cut(PASSAGE_TOKENS) for _ in range(passages)]
    corpus = [cut(rng.randint(*CORPUS_TOKENS)) for _ in range(corpus_size)]

    def counts(texts: list[str]) -> dict[str, float]:
        lengths = [len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=True)]
        return {"texts": len(lengths), "min": min(lengths), "mean": round(sum(lengths) / len(lengths), 1),
                "max": max(lengths), "total": sum(lengths)}

    return TextSet(query=query, passages=batch, corpus=corpus, token_counts={
        "query": len(tokenizer.encode(query, add_special_tokens=True).ids),
        "passages": counts(batch), "corpus": counts(corpus), "note": "with special tokens, before truncation"})


def _pick_query(paragraphs: list[str], tokenizer) -> str:  # tokenizer: tokenizers.Tokenizer
    """The first whole prose sentence whose token count is in QUERY_TOKENS."""
    low, high = QUERY_TOKENS
    for paragraph in paragraphs:
        for sentence in (paragraph + " ").split(". "):
            sentence = sentence.strip()
            if (sentence[:1].isupper() and sentence[-1:].isalpha()
                    and low <= len(tokenizer.encode(sentence, add_special_tokens=True).ids) <= high):
                return sentence
    return "How do I read a file line by line"
