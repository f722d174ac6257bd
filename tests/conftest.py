"""Shared fixtures: a tiny ModernBERT exported to all six variants, and the PyTorch reference."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fast_model import build_fast_export  # noqa: E402

from edgembed.export.synthetic import build_tiny_modernbert, real_sentences  # noqa: E402

DTYPES = ("fp32", "fp16", "q8")
BACKENDS = ("onnxruntime", "openvino")
# Minimum cosine to PyTorch per text on the tiny model, whatever the CPU.
TINY_THRESHOLDS = {"fp32": 0.9999, "fp16": 0.999, "q8": 0.995}
ALL_VARIANTS = [(dtype, backend) for dtype in DTYPES for backend in BACKENDS]


def torch_reference(model_dir: Path, texts: list[str], max_length: int) -> np.ndarray:
    """The model card's recipe, written independently of edgembed: AutoModel, masked mean, L2 norm."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir)).float().eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), 16):
            batch = tokenizer(texts[start:start + 16], padding=True, truncation=True, max_length=max_length,
                              return_tensors="pt")
            hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            out.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
    return torch.cat(out).numpy()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


# Fixtures that need torch and the exporter: a test using any of them belongs to the export tier.
EXPORT_FIXTURES = {"tiny_model_dir", "tiny_export", "parity_reference", "embedders", "minilm_dir", "minilm_export",
                   "long_model", "calibrated_export", "light_python"}


def pytest_collection_modifyitems(items) -> None:
    """Mark the export tier by the fixtures each test uses, so `-m "not export"` runs the fast tier."""
    for item in items:
        if EXPORT_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.export)


@pytest.fixture(scope="session")
def fast_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fast tier's model: a real ONNX graph and OpenVINO IR built without torch (tests/fast_model.py)."""
    return build_fast_export(tmp_path_factory.mktemp("fast") / "model")


@pytest.fixture(scope="session")
def ranged_export(fast_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fast export with the int8/uint8 ranges an export measures (tests/ranged_model.py); read-only."""
    from ranged_model import ranged_copy

    return ranged_copy(fast_export, tmp_path_factory.mktemp("ranged") / "model")


@pytest.fixture()
def fast_copy(fast_export: Path, tmp_path: Path) -> Path:
    """A private copy of the fast export, for tests that damage it."""
    copy = tmp_path / "model"
    shutil.copytree(fast_export, copy)
    return copy


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_modernbert(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_export(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All six variants of the tiny model, exported through the public CLI entry point."""
    from edgembed.cli import main

    out = tmp_path_factory.mktemp("export") / "tiny"
    # --allow-low-fidelity: a weak variant fails its own tests (which assert its figures), not every test here.
    code = main(["export", str(tiny_model_dir), "-o", str(out), "--quantize", "fp32", "fp16", "q8",
                 "--format", "onnx", "openvino", "--matryoshka-dims", "64", "32", "16", "--allow-low-fidelity"])
    assert code == 0
    return out


@pytest.fixture(scope="session")
def parity_texts() -> list[str]:
    """Short and long texts; many exceed the tiny model's 16-token local window, some its 256-token limit."""
    sentences = real_sentences(60)
    long_texts = [" ".join(sentences[i:i + 12]) for i in range(0, 48, 12)]
    return sentences[:40] + long_texts + ["", "   ", "a"]


@pytest.fixture(scope="session")
def parity_reference(tiny_model_dir: Path, parity_texts: list[str]) -> np.ndarray:
    return torch_reference(tiny_model_dir, parity_texts, max_length=256)


@pytest.fixture(scope="session")
def embedders(tiny_export: Path):
    """One loaded Embedder per (variant, backend), shared by the tests."""
    from edgembed.runtime import Embedder

    return {(d, b): Embedder.load(tiny_export, variant=d, backend=b) for d, b in ALL_VARIANTS}


_FIGURES: list[str] = []


@pytest.fixture(scope="session")
def report():
    """Append a line to the fidelity figures printed at the end of the run (even without -s)."""
    return _FIGURES.append


def pytest_terminal_summary(terminalreporter) -> None:
    if _FIGURES:
        terminalreporter.section("measured fidelity")
        for line in _FIGURES:
            terminalreporter.write_line(line)
