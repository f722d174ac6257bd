"""Progress of a job: a tqdm bar on a terminal, a plain line every few seconds in a log, or nothing."""
from __future__ import annotations

import sys
import time
from typing import TextIO

MODES = ("bar", "log", "off")
DEFAULT_LOG_SECONDS = 30.0


def choose_mode(progress: bool | str | None, stream: TextIO) -> str:
    """None/True: a bar when `stream` is a terminal, else log lines; False: off; or a mode by name."""
    if progress is False:
        return "off"
    if progress is None or progress is True:
        return "bar" if getattr(stream, "isatty", lambda: False)() else "log"
    return progress


class Progress:
    """Counts rows (embedded or skipped), texts and tokens of this run; rows of resumed shards start it."""

    def __init__(self, *, total: int, done: int, mode: str, label: str, every: float = DEFAULT_LOG_SECONDS,
                 stream: TextIO | None = None) -> None:
        self.total = total
        self.rows = done
        self.texts = 0
        self.tokens = 0
        self._mode = mode
        self._label = label
        self._every = every
        self._stream = stream or sys.stderr
        self._start = time.perf_counter()
        self._last_line = self._start
        self._bar = None
        if mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=done, unit=" texts", unit_scale=True, dynamic_ncols=True,
                             smoothing=0.1, file=self._stream, desc=label, mininterval=0.5)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self._start

    def update(self, *, rows: int, texts: int, tokens: int) -> None:
        self.rows += rows
        self.texts += texts
        self.tokens += tokens
        if self._bar is not None:
            self._bar.update(rows)
            self._bar.set_postfix_str(f"{self.tokens / max(self.seconds, 1e-9):,.0f} tokens/s", refresh=False)
        elif self._mode == "log" and time.perf_counter() - self._last_line >= self._every:
            self._last_line = time.perf_counter()
            self._stream.write(self.line() + "\n")
            self._stream.flush()

    def line(self) -> str:
        seconds = max(self.seconds, 1e-9)
        rate = self.texts / seconds
        left = self.total - self.rows
        eta = f"ETA {_clock(left / rate)}" if rate > 0 and left > 0 else "ETA ?"
        share = 100.0 * self.rows / self.total if self.total else 100.0
        return (f"{self._label}: {self.rows:,} of {self.total:,} rows ({share:.1f}%), {rate:,.0f} texts/s, "
                f"{self.tokens / seconds:,.0f} tokens/s, {eta}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"
