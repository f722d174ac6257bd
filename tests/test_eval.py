"""`edgembed eval` and the retrieval figures the exporter stores per variant."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import ALL_VARIANTS

from edgembed.cli import main
from edgembed.evaluation.domains import DOMAIN_NAMES, EXPORT_CHECK_DOCUMENTS, EXPORT_CHECK_QUERIES, Suite
from edgembed.evaluation.evaluate import evaluate_directory, top_k_overlap


def test_top_k_overlap():
    rng = np.random.default_rng(0)
    documents = rng.normal(size=(50, 8)).astype(np.float32)
    queries = rng.normal(size=(5, 8)).astype(np.float32)
    assert top_k_overlap(queries, documents, queries, documents) == 1.0
    assert top_k_overlap(queries, documents, -queries, documents, k=10) == 0.0  # opposite rankings
    assert top_k_overlap(queries, documents[:3], queries, documents[:3]) == 1.0  # fewer documents than k


def test_eval_writes_table_json_and_plot(tiny_export, parity_texts, tmp_path, capsys):
    documents = tmp_path / "documents.txt"  # plain text: one document per line
    documents.write_text("\n".join(parity_texts[:40]))
    queries = tmp_path / "queries.jsonl"
    queries.write_text("\n".join(json.dumps({"text": t[:40]}) for t in parity_texts[:8]))
    report = tmp_path / "report"
    assert main(["eval", str(tiny_export), "--texts", str(documents), "--queries", str(queries),
                 "--field", "q", "--report", str(report)]) == 2
    assert "no string field 'q'" in capsys.readouterr().err and not report.exists()
    assert main(["eval", str(tiny_export), "--texts", str(documents), "--queries", str(queries),
                 "--report", str(report), "--passes", "2"]) == 0
    rows = json.loads((report / "report.json").read_text())
    assert sorted((r["variant"], r["backend"]) for r in rows) == sorted(ALL_VARIANTS)
    for row in rows:
        fidelity = row["fidelity"]
        assert 0.99 <= fidelity["cosine_mean"] <= 1.0 + 1e-6 and row["texts_per_second"] > 0 and row["bytes"] > 0
        if row["variant"] == "fp32":
            assert fidelity["top10_overlap"] == pytest.approx(1.0) and fidelity["cosine_min"] >= 0.9999
    markdown = (report / "report.md").read_text()
    assert "| q8 | openvino |" in markdown and "top-10 overlap" in markdown and "best of 2 passes" in markdown
    assert "| custom | 8 x 40 |" in markdown
    assert (report / "fidelity_vs_speed.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["eval", str(tiny_export), "--texts", str(documents), "--report", str(report)]) == 2
    assert "--texts and --queries go together" in capsys.readouterr().err


def test_eval_reports_each_built_in_domain(tiny_export, tmp_path):
    report = tmp_path / "report"
    assert main(["eval", str(tiny_export), "--domains", "code", "short", "--size", "5", "30", "--passes", "1",
                 "--report", str(report)]) == 0
    rows = json.loads((report / "report.json").read_text())
    for row in rows:
        domains = row["domains"]
        assert sorted(domains) == ["code", "short"] and all(d["texts"] == 35 for d in domains.values())
        worst = row["fidelity"]
        assert worst["cosine_min"] == min(d["cosine_min"] for d in domains.values())
        assert worst["top10_overlap"] == min(d["top10_overlap"] for d in domains.values())
        assert worst["texts"] == 70
    markdown = (report / "report.md").read_text()
    assert "| code | 5 x 30 |" in markdown and "| short | 5 x 30 |" in markdown and "PSF-2.0" in markdown


def test_speed_is_the_best_pass_with_variants_taking_turns(tiny_export, parity_texts):
    """The fidelity pass times each variant once; then each round runs every variant again, in reversed order every
    other round, and each keeps its best pass."""
    calls = []

    def fake_rate(embedder, documents):
        calls.append((embedder.variant, embedder.backend))
        return float(len(calls))  # every pass faster than the one before: the last one is the best

    suite = Suite(domains={"custom": (parity_texts[:4], parity_texts[:20])})
    results = evaluate_directory(tiny_export, suite, passes=3, progress=lambda _: None, rate=fake_rate)
    pairs = [(r.variant, r.backend) for r in results]
    assert sorted(pairs) == sorted(ALL_VARIANTS)
    assert calls == pairs + pairs[::-1] + pairs  # the fidelity pass, then rounds 2 and 3
    assert [r.texts_per_second for r in results] == [2 * len(pairs) + i + 1 for i in range(len(pairs))]


def test_export_stores_retrieval_figures_per_domain(tiny_export):
    manifest = json.loads((tiny_export / "manifest.json").read_text())
    for variant in manifest["variants"]:
        if variant["dtype"] == "fp32":  # beside q8 and fp16 of its format: their check covers its runtime path
            assert variant["evaluation"] is None and not variant["evaluation_domains"]
            continue
        figures, domains = variant["evaluation"], variant["evaluation_domains"]
        assert {"english-prose", "code", "short", "long"} <= set(domains) <= set(DOMAIN_NAMES)
        full = EXPORT_CHECK_QUERIES + EXPORT_CHECK_DOCUMENTS  # the export's default check
        assert all(d["texts"] <= full for d in domains.values()) and domains["code"]["texts"] == full
        assert figures["texts"] == sum(d["texts"] for d in domains.values()) and figures["int8_path"]
        assert figures["reference"].startswith("pytorch")
        assert figures["top10_overlap"] == min(d["top10_overlap"] for d in domains.values())
        assert 0.8 <= figures["top10_overlap"] <= 1.0 and figures["cosine_p1"] >= figures["cosine_min"]
    calibration = manifest["calibration"]
    assert calibration["set"] == "built-in" and calibration["texts"] == 300
    assert {"english-prose", "code", "short"} <= set(calibration["domains"])


def test_an_fp32_variant_alone_in_its_format_is_checked_and_matches_pytorch_on_every_domain(tiny_model_dir,
                                                                                              tmp_path):
    out = tmp_path / "fp32"
    assert main(["export", str(tiny_model_dir), "-o", str(out), "--quantize", "fp32", "--format", "onnx"]) == 0
    (variant,) = json.loads((out / "manifest.json").read_text())["variants"]
    assert {"english-prose", "code", "short", "long"} <= set(variant["evaluation_domains"])
    for figures in variant["evaluation_domains"].values():
        assert figures["top10_overlap"] == pytest.approx(1.0) and figures["cosine_min"] > 0.9999


def test_fp32_checks_are_left_to_their_siblings_only_while_the_runtime_tokenizes_as_transformers(tiny_model_dir,
                                                                                                parity_texts):
    from edgembed.export.pipeline import _repeated_checks
    from edgembed.export.reference import reference_token_ids
    from edgembed.export.variants import find_recipe
    from edgembed.runtime.tokenization import TextTokenizer

    recipes = [find_recipe(fmt, dtype) for fmt in ("onnx", "openvino") for dtype in ("fp32", "q8")]
    tokenizer = TextTokenizer(tiny_model_dir / "tokenizer.json", 256, 0)
    ids = reference_token_ids(tiny_model_dir, parity_texts, 256)
    notes: list[str] = []
    assert _repeated_checks(recipes, tokenizer, parity_texts, ids, notes.append) == {"onnx/fp32", "openvino/fp32"}
    assert _repeated_checks(recipes[:1] + recipes[2:3], tokenizer, parity_texts, ids, notes.append) == set()
    assert not notes
    ids[5] = ids[5][:-1]
    assert _repeated_checks(recipes, tokenizer, parity_texts, ids, notes.append) == set()
    assert notes and "1 of the" in notes[0] and "text 5" in notes[0]
