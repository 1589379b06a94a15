"""Per-frame latency statistics: the one implementation behind the depth node's log line, the recorder's
``latency.json`` and offline inference's ``summary.json``."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    """Count, mean, maximum and percentiles (percent -> value) of latencies; None where there are none."""

    count: int
    mean: float | None
    max: float | None
    percentiles: dict[float, float | None]


def latency_stats(latencies: Sequence[float], percentiles: Sequence[float] = (50, 95)) -> LatencyStats:
    """Statistics of (N,) latencies, in their unit; percentiles interpolate linearly (``np.percentile``)."""
    values = np.asarray(latencies, dtype=np.float64)
    if values.size == 0:
        return LatencyStats(0, None, None, dict.fromkeys(percentiles))
    levels = np.percentile(values, percentiles).tolist()
    return LatencyStats(
        int(values.size),
        float(values.mean()),
        float(values.max()),
        dict(zip(percentiles, levels, strict=True)),
    )


class FrameStats:
    """Frame counts (received, processed, dropped, rejected, failed) and latencies over one logging period,
    plus totals; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.received = self.processed = self.dropped = self.rejected = self.failed = 0
        self._latencies_ms: list[float] = []
        self._window_start = time.monotonic()
        self._window_dropped = 0

    def add(self, **counts: int) -> None:
        """Add to the named counters, e.g. ``add(received=1, dropped=1)``."""
        with self._lock:
            for name, count in counts.items():
                setattr(self, name, getattr(self, name) + count)
            self._window_dropped += counts.get("dropped", 0)

    def frame_done(self, latency_s: float) -> None:
        """Count one processed frame that took ``latency_s`` seconds."""
        with self._lock:
            self.processed += 1
            self._latencies_ms.append(latency_s * 1e3)

    def take_window(self) -> str:
        """A log line for the period since the last call (rate, latency mean/p50/p95), then a fresh period."""
        with self._lock:
            latencies, self._latencies_ms = self._latencies_ms, []
            dropped, self._window_dropped = self._window_dropped, 0
            now = time.monotonic()
            elapsed, self._window_start = now - self._window_start, now
            totals = f"totals: processed {self.processed}, dropped {self.dropped}, rejected {self.rejected}"
        stats = latency_stats(latencies)
        if stats.count == 0:
            return f"no frames processed in the last {elapsed:.1f} s ({dropped} dropped); {totals}"
        p50, p95 = stats.percentiles[50], stats.percentiles[95]
        return (
            f"{stats.count / elapsed:.1f} fps, latency mean {stats.mean:.1f} ms, p50 {p50:.1f} ms, "
            f"p95 {p95:.1f} ms, {dropped} dropped in the last {elapsed:.1f} s; {totals}"
        )
