"""edgembed jobs: embed a corpus file with progress and resume, on one box or on Ray Data.

    from edgembed.jobs import embed_file
    summary = embed_file("out", "corpus.jsonl", "vectors", prompt_name="document")

Needs the `jobs` extra (pyarrow, tqdm); Ray needs the `ray` extra. Importing this package imports neither:
`embed_file` and `JobSummary` load on first use, so `edgembed --help` stays light.
"""
from __future__ import annotations

__all__ = ["JobSummary", "embed_file"]


def __getattr__(name: str):
    if name in __all__:
        from . import job

        return getattr(job, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
