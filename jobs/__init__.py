"""edgembed jobs: embed a corpus file with progress and resume, on one box or on Ray Data.

    from edgembed.jobs import JobOptions, embed_file
    from edgembed.runtime import EncodeOptions
    summary = embed_file("out", "corpus.jsonl", "vectors", encode=EncodeOptions(prompt_name="document"),
                         job=JobOptions(id_field="id"))

Needs the `jobs` extra (pyarrow, tqdm); Ray needs the `ray` extra. Importing this package imports neither:
`embed_file` and `JobSummary` load on first use, so `edgembed --help` stays light.
"""
from __future__ import annotations

__all__ = ["JobOptions", "JobSummary", "RayOptions", "embed_file"]


def __getattr__(name: str):
    if name in ("JobOptions", "RayOptions"):
        from . import options

        return getattr(options, name)
    if name in __all__:
        from . import job

        return getattr(job, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
