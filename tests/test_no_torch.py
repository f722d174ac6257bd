"""The runtime works in a process where torch, transformers and optimum cannot be imported."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
from conftest import ALL_VARIANTS, TINY_THRESHOLDS, cosines

SCRIPT = textwrap.dedent("""
    import importlib.abc, sys

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"torch", "transformers", "optimum"}:
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, Refuse())
    import json
    import numpy as np
    from edgembed.runtime import Embedder
    from edgembed.cli import main  # the CLI module must not pull them in either

    out, texts = sys.argv[1], json.loads(sys.argv[2])
    for dtype, backend in [pair.split(":") for pair in sys.argv[3].split(",")]:
        vectors = Embedder.load(out, variant=dtype, backend=backend).encode(texts)
        np.save(f"{out}/../{dtype}-{backend}.npy", vectors)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "transformers", "optimum"})
    print("LOADED", loaded)
""")


def test_runtime_without_torch(tiny_export, parity_texts, parity_reference):
    texts = parity_texts[40:44] + parity_texts[:4]
    pairs = ",".join(f"{d}:{b}" for d, b in ALL_VARIANTS)
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_export), json.dumps(texts), pairs],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout
    reference = np.concatenate([parity_reference[40:44], parity_reference[:4]])
    for dtype, backend in ALL_VARIANTS:
        vectors = np.load(tiny_export.parent / f"{dtype}-{backend}.npy")
        assert cosines(vectors, reference).min() >= TINY_THRESHOLDS[dtype], (dtype, backend)
