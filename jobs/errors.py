"""Errors of the jobs package."""
from __future__ import annotations

from edgembed.runtime.errors import EdgembedError, UsageError


class InputFileError(UsageError, ValueError):
    """INPUT cannot be read as asked: unknown format, missing column, or a bad row (named with its number)."""


class JobStateError(EdgembedError):
    """The output holds a job whose model, options or input differ from this run's (or foreign files)."""


class WorkerError(EdgembedError):
    """A Ray worker failed, or the shards it wrote do not cover the input exactly once."""
