"""The fidelity-against-speed chart of `edgembed eval` (needs matplotlib, the `eval` extra)."""
from __future__ import annotations

import itertools
from pathlib import Path

from .evaluate import TOP_K, Evaluation

MARKERS = "os^Dv"  # one per backend, in the order the results name them


def plot(results: list[Evaluation], path: Path) -> bool:
    """Top-10 overlap against texts per second as a PNG; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axes = plt.subplots(figsize=(7, 4.5))
    backends = list(dict.fromkeys(r.backend for r in results))
    for backend, marker in zip(backends, itertools.cycle(MARKERS)):
        rows = [r for r in results if r.backend == backend]
        axes.scatter([r.texts_per_second for r in rows], [r.fidelity.top10_overlap for r in rows], marker=marker,
                     label=backend, s=60)
        for r in rows:
            axes.annotate(r.variant, (r.texts_per_second, r.fidelity.top10_overlap), textcoords="offset points",
                          xytext=(5, 4))
    axes.set_xlabel("texts per second (documents, batch 32)")
    axes.set_ylabel(f"top-{TOP_K} overlap with the reference")
    axes.set_title("edgembed variants: fidelity against speed")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True
