"""The monitoring files of a generated project as the tests read them: Prometheus's text format, Grafana's queries."""

from __future__ import annotations

import json
import re
from pathlib import Path

DASHBOARD = Path("monitoring") / "grafana" / "dashboards" / "model-server.json"


def samples(text: str) -> dict[str, float]:
    """A /metrics page as {`name{labels}`: value}."""
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


def names(text: str) -> set[str]:
    """The metric names on a /metrics page (histograms' _bucket, _sum and _count included)."""
    return {re.sub(r"\{.*", "", name) for name in samples(text)}


def dashboard_metrics(project: Path) -> set[str]:
    """The metric names the project's Grafana dashboard queries: what is left of each PromQL expression without its
    strings, label matchers, ranges, `by (...)` clauses, numbers and function calls."""
    dashboard = json.loads((project / DASHBOARD).read_text())
    found: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = re.sub(r'"[^"]*"|\{[^}]*\}|\[[^\]]*\]|\bby \([^)]*\)', " ", target["expr"])
            found |= set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", expr))
    return found
