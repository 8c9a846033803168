"""A Prometheus histogram fed with whole numpy arrays (one call per batch, not per sample).

Rendered through ``plantwire.metrics``' histogram family (one ``# TYPE <name> histogram``):
``<name>_bucket{le="..."}`` (cumulative), ``<name>_sum`` and ``<name>_count``, which is what
Prometheus and ``bench/e2e.py``'s quantile estimate read. Observing a batch is one
``searchsorted`` plus one ``bincount``: a million latencies cost a few ms.

Several histograms may share one family, told apart by constant labels (``stage="write"``): the
ingestor's per-stage timings are one family, as Prometheus expects. It lives on the ground floor
because both daemons time their stages with it (the edge its flushes, the cloud its writes).
"""

from __future__ import annotations

import threading

import numpy as np

from plantwire.metrics import Registry

__all__ = ["LATENCY_BUCKETS_S", "Histogram"]

#: Sample-to-InfluxDB latency buckets: sub-second for live data, up to hours for back-log replays.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5, 1.75, 2.0,
    2.5, 3.0, 4.0, 5.0, 7.5, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0,
)  # fine around 0.1-2 s, where live data lands; coarse for back-log replays


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class Histogram:
    """Cumulative buckets with upper bounds ``buckets`` (``le``, inclusive) plus ``+Inf``."""

    def __init__(
        self, registry: Registry, name: str, help_: str, buckets: tuple[float, ...], **labels: str
    ) -> None:
        bounds = np.asarray(sorted(buckets), dtype=np.float64)
        if bounds.size == 0 or not np.all(np.isfinite(bounds)):
            raise ValueError("histogram buckets must be finite and non-empty")
        self.bounds = bounds
        self._counts = np.zeros(bounds.size + 1, dtype=np.int64)  # last: above every bound
        self._sum = 0.0
        self._lock = threading.Lock()
        self._family = registry.histogram(name, help_)
        self._labels = [_le(b) for b in bounds] + ["+Inf"]
        self._const = labels  # e.g. stage="write": one series set of a shared family
        self._publish()

    def observe(self, values: np.ndarray) -> None:
        """Count every value; NaN is ignored (it has no bucket), negatives land in the first bucket."""
        v = np.asarray(values, dtype=np.float64)
        v = v[~np.isnan(v)]
        if v.size == 0:
            return
        idx = np.searchsorted(self.bounds, v, side="left")  # first bound >= value: Prometheus' le
        add = np.bincount(idx, minlength=self._counts.size)
        with self._lock:
            self._counts += add
            self._sum += float(v.sum())
            self._publish()

    def _publish(self) -> None:
        cum = np.cumsum(self._counts)
        for label, c in zip(self._labels, cum.tolist(), strict=True):
            self._family.set(c, suffix="_bucket", le=label, **self._const)
        self._family.set(self._sum, suffix="_sum", **self._const)
        self._family.set(int(cum[-1]), suffix="_count", **self._const)

    @property
    def count(self) -> int:
        return int(self._counts.sum())

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding quantile ``q`` (inf above the last bound, nan if empty)."""
        total = self.count
        if total == 0:
            return float("nan")
        cum = np.cumsum(self._counts)
        i = int(np.searchsorted(cum, q * total, side="left"))
        return float(self.bounds[i]) if i < self.bounds.size else float("inf")
