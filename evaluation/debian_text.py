"""Text read from Debian packages at pinned versions: the Debian Administrator's Handbook in its translations, and
the message catalogs of coreutils. Nothing is copied into edgembed; the files are read where the package put them.

Install them with `apt-get install debian-handbook=11.20220922 coreutils=9.1-1` (Debian 12 "bookworm"), or, without
root, `apt-get download` the same versions and unpack each with `dpkg-deb -x PACKAGE.deb DIR`, then point
EDGEMBED_CORPUS_ROOT at DIR. Another installed version is used as found, and its version is recorded.
"""
from __future__ import annotations

import functools
import html.parser
import os
import re
import struct
import subprocess
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DebianPackage:
    """A Debian package whose files a domain reads, at the version the suite was built on."""

    name: str
    version: str
    license: str
    probe: str  # a file the package installs, to tell whether it is there

    def root(self) -> Path | None:
        """The file-system root holding its files (EDGEMBED_CORPUS_ROOT first, then /), or None."""
        for root in _roots():
            if (root / self.probe.lstrip("/")).is_file():
                return root
        return None

    def found_version(self) -> str | None:
        """The version present: dpkg's for the system root, the declared one for an unpacked copy."""
        root = self.root()
        if root is None:
            return None
        if root != Path("/"):
            return self.version
        try:
            result = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", self.name], capture_output=True,
                                    text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return "unknown"
        return result.stdout.strip() or "unknown"

    def describe(self) -> str:
        found = self.found_version()
        pinned = f"Debian package {self.name} {self.version} ({self.license})"
        if found is None:
            return f"{pinned}: not installed"
        return pinned if found == self.version else f"{pinned}; found {found}"


HANDBOOK = DebianPackage("debian-handbook", "11.20220922", "GPL-2.0+ or CC-BY-SA-3.0",
                         "/usr/share/doc/debian-handbook/html/en-US/index.html")
COREUTILS = DebianPackage("coreutils", "9.1-1", "GPL-3.0+",
                          "/usr/share/locale/ko/LC_MESSAGES/coreutils.mo")
HANDBOOK_HTML = "usr/share/doc/debian-handbook/html"


def _roots() -> list[Path]:
    given = os.environ.get("EDGEMBED_CORPUS_ROOT")
    return ([Path(given)] if given else []) + [Path("/")]


class _Paragraphs(html.parser.HTMLParser):
    """The text of every <div class="para"> of a DocBook HTML page; <pre> blocks (commands, output) left out."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self._parts: list[str] | None = None
        self._depth = 0
        self._pre = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag == "pre":
            self._pre += 1
        elif tag == "div" and self._parts is not None:
            self._depth += 1
        elif tag == "div" and ("class", "para") in attrs:
            self._parts, self._depth = [], 0

    def handle_endtag(self, tag: str) -> None:
        if tag == "pre":
            self._pre = max(0, self._pre - 1)
        elif tag == "div" and self._parts is not None:
            if self._depth:
                self._depth -= 1
            else:
                self.paragraphs.append(" ".join("".join(self._parts).split()))
                self._parts = None

    def handle_data(self, data: str) -> None:
        if self._parts is not None and not self._pre:
            self._parts.append(data)


@functools.cache
def handbook_pages(language: str) -> tuple[tuple[str, ...], ...]:
    """The paragraphs of each page of the handbook's `language` translation (e.g. ru-RU), pages in file order."""
    root = HANDBOOK.root()
    if root is None:
        return ()
    pages = []
    for page in sorted((root / HANDBOOK_HTML / language).glob("*.html")):
        parser = _Paragraphs()
        parser.feed(page.read_text(encoding="utf-8"))
        pages.append(tuple(p for p in parser.paragraphs if p))
    return tuple(pages)


@functools.cache
def coreutils_messages(language: str) -> tuple[str, ...]:
    """coreutils' translated messages in `language` (e.g. ko), one line of help text each, option names removed."""
    root = COREUTILS.root()
    if root is None:
        return ()
    try:
        data = (root / f"usr/share/locale/{language}/LC_MESSAGES/coreutils.mo").read_bytes()
    except OSError:
        return ()
    lines: dict[str, None] = {}
    for message in mo_translations(data):
        for line in message.splitlines():
            text = _OPTION.sub("", line).strip()
            if text:
                lines.setdefault(" ".join(text.split()), None)
    return tuple(lines)


def mo_translations(data: bytes) -> list[str]:
    """The translated strings of a GNU .mo catalog, in its (msgid-sorted) order; plural forms one by one."""
    order = "<" if data[:4] == b"\xde\x12\x04\x95" else ">"
    count, _, translations = struct.unpack(order + "3I", data[8:20])
    found = []
    for number in range(count):
        length, offset = struct.unpack(order + "2I", data[translations + 8 * number:translations + 8 * number + 8])
        if number == 0 and length and data[offset:offset + length].startswith(b"Project-Id-Version"):
            continue  # the header entry (empty msgid)
        for form in data[offset:offset + length].split(b"\0"):
            found.append(form.decode("utf-8", errors="replace"))
    return found


# A help line's leading option list ("  -a, --all[=WHEN]  ", the same in every language) or bullet ("- ").
_OPTION = re.compile(r"^\s*(?:(?:-{1,2}[^\s,]+|[-*])(?:,\s*|\s+|$))+")


def script_share(text: str, script: str) -> float:
    """The share of `text`'s letters whose Unicode name starts with one of `script`'s words (e.g. "CYRILLIC")."""
    letters = Counter(c for c in text if c.isalpha())  # each distinct letter named once
    if not letters:
        return 0.0
    names = tuple(script.split("|"))
    named = sum(count for letter, count in letters.items() if unicodedata.name(letter, "").startswith(names))
    return named / sum(letters.values())
