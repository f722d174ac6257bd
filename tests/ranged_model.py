"""The fast export (tests/fast_model.py) with the int8/uint8 ranges the exporter would measure, without torch."""
from __future__ import annotations

import shutil
from pathlib import Path

RANGE_TEXTS = 80


def ranged_copy(fast_export: Path, destination: Path) -> Path:
    """Copy the fast export and add embedding_ranges measured by export/embedding_ranges.py on its fp32."""
    from edgembed.evaluation.corpus import calibration_texts
    from edgembed.export.embedding_ranges import measure_ranges
    from edgembed.runtime import Embedder, Manifest

    shutil.copytree(fast_export, destination)
    model = Embedder.load(destination, variant="fp32", backend="onnxruntime")
    manifest = Manifest.read(destination)
    manifest.embedding_ranges = measure_ranges(model, calibration_texts(RANGE_TEXTS), variant="onnx/fp32",
                                               dims=manifest.matryoshka_dims)
    manifest.write(destination)
    return destination
