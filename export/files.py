"""Copying the checkpoint's side files and recording what was written."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from edgembed.runtime.manifest import FileEntry

from .source import ST_FILES, Source

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "vocab.json", "merges.txt", "added_tokens.json", "sentencepiece.bpe.model", "spiece.model")


def file_entry(root: Path, path: Path) -> FileEntry:
    """Relative path, sha256 and size of one written file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return FileEntry(path=path.relative_to(root).as_posix(), sha256=digest.hexdigest(), bytes=path.stat().st_size)


def copy_side_files(source: Source, out: Path) -> list[str]:
    """Copy config.json, the tokenizer files and the sentence-transformers files that exist; returns their names."""
    copied = []
    candidates = [(source.transformer_dir / name, name) for name in ("config.json", *TOKENIZER_FILES)]
    candidates += [(source.root / name, name) for name in ST_FILES]
    candidates += [(source.transformer_dir / "sentence_bert_config.json", "sentence_bert_config.json")]
    for origin, name in candidates:
        target = out / name
        if origin.is_file() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(origin, target)
            copied.append(name)
    return copied
