"""What every converter gets and gives: a recipe's converter is a function of ConvertInputs that returns the
files it wrote (the graph first)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .q8_turned import TurnedRounding

DEFAULT_Q4_BLOCK_SIZE = 32
DEFAULT_Q8_RECIPE = "smoothed"  # the recipes: variants.Q8_RECIPE_DESCRIPTIONS


@dataclass(frozen=True)
class ConvertInputs:
    """The fp32 ONNX graph the recipe's format reads, where to write (the recipe's file, and its alternates per
    int8 family), the calibration feeds (one per text, for recipes that need them) and the shared settings."""

    source: Path
    destination: Path
    calibration: list[dict[str, np.ndarray]] | None
    alternates: dict[str, Path] = field(default_factory=dict)
    q4_block_size: int = DEFAULT_Q4_BLOCK_SIZE
    q8_recipe: str = DEFAULT_Q8_RECIPE
    status: Callable[[str], None] | None = None  # hears where a long conversion is, for the progress heartbeat
    turned_rounding: TurnedRounding | None = None  # the turned q8's codes, shared by the formats of one export

    def say(self, step: str) -> None:
        if self.status is not None:
            self.status(step)


Converter = Callable[[ConvertInputs], list[Path]]
