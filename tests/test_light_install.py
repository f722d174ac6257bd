"""A fresh virtual environment with only `pip install ".[onnx,openvino]"`: no torch, and the same embeddings."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ALL_VARIANTS, TINY_THRESHOLDS, cosines

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import json, sys
import numpy as np
from edgembed.runtime import Embedder
out, texts, target = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
for dtype, backend in json.loads(sys.argv[4]):
    np.save(f"{target}/{dtype}-{backend}.npy", Embedder.load(out, variant=dtype, backend=backend).encode(texts))
"""


@pytest.fixture(scope="module")
def light_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Python of a new venv holding edgembed (a normal, non-editable install) with the onnx and openvino extras."""
    venv = tmp_path_factory.mktemp("light") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    result = subprocess.run([str(python), "-m", "pip", "install", "--quiet", f"{REPO}[onnx,openvino]"],
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    return python


def test_light_install_has_no_torch(light_python: Path):
    listed = subprocess.run([str(light_python), "-m", "pip", "list", "--format", "json"],
                            capture_output=True, text=True, check=True).stdout
    names = {entry["name"].lower() for entry in json.loads(listed)}
    assert {"edgembed", "onnxruntime", "openvino", "numpy", "tokenizers"} <= names
    assert not names & {"torch", "transformers", "optimum", "optimum-onnx", "nncf"}, names


def test_light_install_matches_pytorch(light_python: Path, tiny_export, parity_texts, parity_reference, tmp_path):
    result = subprocess.run([str(light_python), "-c", SCRIPT, str(tiny_export), json.dumps(parity_texts),
                             str(tmp_path), json.dumps(ALL_VARIANTS)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for dtype, backend in ALL_VARIANTS:
        sims = cosines(np.load(tmp_path / f"{dtype}-{backend}.npy"), parity_reference)
        print(f"\nlight venv {dtype}/{backend}: cosine min {sims.min():.6f}")
        assert sims.min() >= TINY_THRESHOLDS[dtype], (dtype, backend)


def test_light_install_cli(light_python: Path, tiny_export):
    result = subprocess.run([str(light_python.parent / "edgembed"), "embed", str(tiny_export), "--variant", "q8",
                             "hello"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["dimension"] == 64
