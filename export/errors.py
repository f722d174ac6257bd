"""Errors of the exporter."""
from __future__ import annotations

from edgembed.runtime.errors import EdgembedError

# The install line a missing exporter dependency names (MissingDependencyError's `install`): torch pinned to the
# CPU build, since a bare "torch" pulls CUDA wheels.
EXPORT_INSTALL = 'pip install torch==2.13.0 "edgembed[export]"'


class ExportError(EdgembedError):
    """The exporter could not produce a variant."""


class UnsupportedModelError(ExportError):
    """The source checkpoint is something the exporter cannot handle."""


class FidelityError(ExportError):
    """A variant's embeddings differ from the PyTorch reference more than allowed."""

    def __init__(self, variant: str, figure: str, value: float, threshold: float) -> None:
        self.variant = variant
        self.figure = figure
        self.value = value
        self.threshold = threshold
        super().__init__(
            f"variant {variant}: {figure} {value:.6f} is below the threshold {threshold}; "
            "rerun with --allow-low-fidelity to keep it (it is then marked in manifest.json)"
        )
