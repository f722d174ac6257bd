"""Prometheus text exposition with TEI's metric names and buckets, so TEI dashboards read edgembed.

Written here rather than taken from prometheus_client: eleven metrics, updated only from the event loop's
thread, need no registry, no locks and no dependency.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field

# TEI's buckets (router/src/prometheus.rs): durations 35 steps of x1.5 from 15 us; lengths and batches powers of 2.
DURATION_BUCKETS = tuple(1e-5 * 1.5 ** step for step in range(1, 36))
BATCH_SIZE_BUCKETS = tuple(float(2 ** power) for power in range(13))
BATCH_TOKENS_BUCKETS = tuple(float(2 ** power) for power in range(21))

Labels = tuple[tuple[str, str], ...]


@dataclass
class _Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        self.total += value
        self.count += 1
        index = bisect.bisect_left(self.buckets, value)  # the first bucket whose bound is >= value
        if index < len(self.counts):
            self.counts[index] += 1


@dataclass
class _Family:
    kind: str  # counter, gauge or histogram
    help: str
    buckets: tuple[float, ...] = ()
    series: dict[Labels, float | _Histogram] = field(default_factory=dict)


class Metrics:
    """The server's metrics; `render()` gives the text a Prometheus scrape reads."""

    def __init__(self, max_input_length: int) -> None:
        lengths = tuple(float(2 ** power) for power in range(20) if 2 ** power <= max_input_length)
        self._families: dict[str, _Family] = {}
        for name, text in (("te_request_count", "Embedding requests received, by method (single or batch)"),
                           ("te_request_success", "Embedding requests answered, by method"),
                           ("te_request_failure", "Requests refused or failed, by reason (err)")):
            self._families[name] = _Family("counter", text)
        for name, text in (("te_request_duration", "Seconds from a request's arrival to its answer"),
                           ("te_request_tokenization_duration", "Seconds spent tokenizing a request"),
                           ("te_request_queue_duration", "Seconds a request waited for its batch to start"),
                           ("te_request_inference_duration", "Seconds of the batch that embedded a request")):
            self._families[name] = _Family("histogram", text, DURATION_BUCKETS)
        self._families["te_request_input_length"] = _Family("histogram", "Tokens per text", lengths)
        self._families["te_batch_next_size"] = _Family("histogram", "Texts per batch", BATCH_SIZE_BUCKETS)
        self._families["te_batch_next_tokens"] = _Family("histogram", "Tokens per batch", BATCH_TOKENS_BUCKETS)
        self._families["te_queue_size"] = _Family("gauge", "Requests waiting for a batch")

    def increment(self, name: str, value: float = 1.0, **labels: str) -> None:
        series = self._families[name].series
        key = _key(labels)
        series[key] = series.get(key, 0.0) + value

    def set(self, name: str, value: float, **labels: str) -> None:
        self._families[name].series[_key(labels)] = float(value)

    def observe(self, name: str, value: float, **labels: str) -> None:
        family = self._families[name]
        key = _key(labels)
        histogram = family.series.get(key)
        if histogram is None:
            histogram = family.series[key] = _Histogram(family.buckets)
        histogram.observe(value)

    def value(self, name: str, **labels: str) -> float:
        """A counter's or gauge's current value (0 if never set)."""
        return self._families[name].series.get(tuple(sorted(labels.items())), 0.0)

    def histogram(self, name: str, **labels: str) -> tuple[int, float]:
        """(observations, their sum) of a histogram."""
        found = self._families[name].series.get(tuple(sorted(labels.items())))
        return (found.count, found.total) if isinstance(found, _Histogram) else (0, 0.0)

    def render(self) -> str:
        lines: list[str] = []
        for name, family in self._families.items():
            lines.append(f"# HELP {name} {family.help}")
            lines.append(f"# TYPE {name} {family.kind}")
            for labels, value in family.series.items():
                if isinstance(value, _Histogram):
                    cumulative = 0
                    for bound, count in zip(value.buckets, value.counts):
                        cumulative += count
                        lines.append(f"{name}_bucket{_labels(labels, le=format(bound, '.6g'))} {cumulative}")
                    lines.append(f"{name}_bucket{_labels(labels, le='+Inf')} {value.count}")
                    lines.append(f"{name}_sum{_labels(labels)} {_number(value.total)}")
                    lines.append(f"{name}_count{_labels(labels)} {value.count}")
                else:
                    lines.append(f"{name}{_labels(labels)} {_number(value)}")
        return "\n".join(lines) + "\n"


def _key(labels: dict[str, str]) -> Labels:
    return tuple(sorted(labels.items())) if labels else ()


def _labels(labels: Labels, **extra: str) -> str:
    pairs = [*labels, *extra.items()]
    if not pairs:
        return ""
    return "{" + ",".join(f'{key}="{_escape(str(value))}"' for key, value in pairs) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
