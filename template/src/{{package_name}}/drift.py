"""Input drift: the Population Stability Index (PSI) of recent inputs against the training data, per feature.

At training time `reference` bins every feature at the training split's deciles and stores the edges and each
bin's share in the logged model's metadata (MLmodel, key `drift_reference`), so the statistics travel with the
model wherever it is registered or copied. While serving, `DriftMonitor` keeps the last `window` rows it was
sent and computes each feature's PSI when Prometheus scrapes, never on the request path.

PSI = sum over bins of (recent - reference) * ln(recent / reference). Common reading: below 0.1 no shift,
0.1 to 0.25 a moderate shift, above 0.25 a major one. A bin's share is floored at EPSILON, so an empty bin counts
as a large but finite change.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

BINS = 10
EPSILON = 1e-4
METADATA_KEY = "drift_reference"  # tracking.py logs it under this key


def reference(features: np.ndarray, bins: int = BINS) -> dict[str, Any]:
    """Each feature's inner decile edges (duplicates merged: a constant feature has one bin) and bin shares."""
    features = np.asarray(features, dtype=np.float64)
    quantiles = np.linspace(0, 1, bins + 1)[1:-1]
    edges = [np.unique(np.quantile(column, quantiles)) for column in features.T]
    shares = [_shares(column, edge) for column, edge in zip(features.T, edges, strict=True)]
    return {"edges": [edge.tolist() for edge in edges], "shares": [share.tolist() for share in shares]}


def _shares(column: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(edges, column, side="right"), minlength=len(edges) + 1)
    return counts / max(len(column), 1)


def psi(recent: np.ndarray, stored: dict[str, Any]) -> np.ndarray:
    """Each feature's PSI of the rows `recent` against the `stored` reference."""
    values = []
    for column, edges, shares in zip(np.asarray(recent).T, stored["edges"], stored["shares"], strict=True):
        now = np.maximum(_shares(column, np.asarray(edges)), EPSILON)
        then = np.maximum(np.asarray(shares), EPSILON)
        values.append(float(np.sum((now - then) * np.log(now / then))))
    return np.asarray(values)


class DriftMonitor(Collector):
    """The last `window` input rows, and their PSI per feature as Prometheus gauges when scraped."""

    def __init__(self, stored: dict[str, Any], window: int) -> None:
        self.stored = stored
        self.rows: deque[np.ndarray] = deque(maxlen=window)
        self._lock = threading.Lock()  # predictions run in worker threads; scrapes in the event loop

    def observe(self, batch: np.ndarray) -> None:
        batch = np.asarray(batch, dtype=np.float64).reshape(len(batch), -1)
        with self._lock:
            self.rows.extend(batch)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            recent = np.array(self.rows)
        seen = GaugeMetricFamily("model_drift_window_rows", "Input rows the drift statistics are computed over")
        seen.add_metric([], len(recent))
        yield seen
        per_feature = GaugeMetricFamily(
            "model_input_drift_psi", "PSI of recent inputs against the training data", labels=["feature"]
        )
        worst = GaugeMetricFamily("model_input_drift_psi_max", "The largest PSI over all features")
        if len(recent):
            values = psi(recent, self.stored)
            for feature, value in enumerate(values):
                per_feature.add_metric([str(feature)], value)
            worst.add_metric([], float(values.max()))
        yield per_feature
        yield worst
