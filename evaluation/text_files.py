"""Reading user text files: one text per line, or JSON Lines with the text in a named field."""
from __future__ import annotations

import json
from pathlib import Path

from .errors import TextFileError


def read_texts(path: Path, field: str = "text", field_option: str = "--calibration-field") -> list[str]:
    """Texts from a .jsonl file (field `field` of each object) or any other file (one text per line)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise TextFileError(f"{path}: cannot be read as UTF-8 text ({exc})") from None
    if path.suffix.lower() not in (".jsonl", ".ndjson"):
        texts = [line for line in lines if line.strip()]
    else:
        texts = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TextFileError(f"{path}, line {number}: not JSON ({exc.msg})") from None
            value = record.get(field) if isinstance(record, dict) else None
            if not isinstance(value, str):
                raise TextFileError(f"{path}, line {number}: no string field {field!r} "
                                  f"(fields: {sorted(record) if isinstance(record, dict) else type(record).__name__});"
                                  f" name the field with {field_option}")
            texts.append(value)
    if not texts:
        raise TextFileError(f"{path}: holds no text")
    return texts
