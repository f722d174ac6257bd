"""Errors of the evaluation package."""
from __future__ import annotations

from edgembed.runtime import EdgembedError, UsageError


class TextFileError(UsageError, ValueError):
    """A file of texts given by the user (calibration, evaluation) cannot be used."""


class EvaluationError(EdgembedError):
    """An export cannot be evaluated as asked (for example it has no fp32 variant to compare with)."""
