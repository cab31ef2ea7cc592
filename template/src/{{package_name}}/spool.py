"""What the tracking server could not take while it was away, kept in the run's folder until it answers again.

`<output_dir>/tracking-spool.jsonl` holds one JSON record a line (params, metrics, artifacts, the model, the
run's status), in the order the run logged them, each appended and fsynced when its call fails. Sending them
twice does no harm, so a replay cut short is simply run again: a metric keeps the timestamp of the original
call (the store keeps one point per key, step, timestamp and value), params keep their values, artifacts
overwrite, the model is logged only while the run has none, and the status carries its original end time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FILE = "tracking-spool.jsonl"

Record = dict[str, Any]


class Spool:
    def __init__(self, output_dir: Path) -> None:
        self.path = output_dir / FILE

    def records(self) -> list[Record]:
        if not self.path.exists():
            return []
        lines = self.path.read_text().splitlines(keepends=True)
        # A kill while appending leaves a partial last line: its call never returned, so it is not owed.
        return [json.loads(line) for line in lines if line.endswith("\n")]

    def append(self, record: Record) -> None:
        with self.path.open("a") as stream:
            stream.write(json.dumps(record) + "\n")
            stream.flush()
            os.fsync(stream.fileno())

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def summary(records: list[Record]) -> str:
    """What the records hold, for one line: `params, metrics of steps 2-8, 5 artifacts, the model, status FINISHED`."""
    parts = []
    if any(record["op"] == "params" for record in records):
        parts.append("params")
    steps = sorted(
        {record["step"] for record in records if record["op"] == "metrics"}
        | {int(row["epoch"]) for record in records if record["op"] == "missing" for row in record["rows"]}
    )
    if steps:
        parts.append(f"metrics of steps {steps[0]}-{steps[-1]}" if len(steps) > 1 else f"metrics of step {steps[0]}")
    artifacts = sum(len(record["paths"]) for record in records if record["op"] == "artifacts")
    if artifacts:
        parts.append(f"{artifacts} artifacts")
    if any(record["op"] == "model" for record in records):
        parts.append("the model")
    parts += [f"status {record['status']}" for record in records if record["op"] == "status"][-1:]
    return ", ".join(parts)
