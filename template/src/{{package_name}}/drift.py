"""Input drift: the Population Stability Index (PSI) of recent inputs against the training data, per feature.

At training time `reference` bins every feature at the training split's deciles and stores the edges and each
bin's share in the logged model's metadata (MLmodel, key `drift_reference`), so the statistics travel with the
model wherever it is registered or copied. While serving, serve.py's `DriftMonitor` keeps the last rows it was sent
and computes each feature's PSI with `psi` when Prometheus scrapes, never on the request path. This module needs
NumPy alone: training imports it, and the training image has no Prometheus client.

PSI = sum over bins of (recent - reference) * ln(recent / reference). Common reading: below 0.1 no shift,
0.1 to 0.25 a moderate shift, above 0.25 a major one. A bin's share is floored at EPSILON, so an empty bin counts
as a large but finite change.
"""

from __future__ import annotations

from typing import Any

import numpy as np

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
