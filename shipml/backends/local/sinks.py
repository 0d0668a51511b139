"""Local capture, metrics and notifications: files a person or the CLI can read back."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shipml import atomic
from shipml.backends.ports import CaptureSink, MetricsSink, Notifier

log = logging.getLogger("shipml.notify")
capture_log = logging.getLogger("shipml.capture")


class ParquetCaptureSink(CaptureSink):
    """Buffers records and writes them as Parquet parts under capture/date=YYYY-MM-DD/.

    Records must already be masked. Each part is written atomically, so a reader never sees a
    half-written file; `flush` writes whatever is buffered.
    """

    def __init__(self, root: str | Path, *, buffer_rows: int = 1000) -> None:
        self.root = Path(root)
        self.buffer_rows = buffer_rows
        self._buffer: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def write(self, records: Sequence[Mapping[str, Any]]) -> None:
        with self._lock:
            self._buffer.extend(dict(r) for r in records)
            if len(self._buffer) >= self.buffer_rows:
                try:
                    self._flush_locked()
                except OSError as exc:
                    # The answer stands; the records stay buffered for the next write or flush.
                    capture_log.error(
                        "capture part not written (%d records kept): %s", len(self._buffer), exc
                    )

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if not self._buffer:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(self._buffer)
        now = datetime.now(UTC)
        path = self.root / f"date={now:%Y-%m-%d}" / f"part-{now:%H%M%S}-{uuid.uuid4().hex[:8]}.parquet"
        with atomic.atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        self._buffer.clear()


class JsonLinesMetricsSink(MetricsSink):
    """Buffers data points and appends them, one JSON object per line, to metrics.jsonl."""

    def __init__(self, path: str | Path, *, buffer_points: int = 500) -> None:
        self.path = Path(path)
        self.buffer_points = buffer_points
        self._buffer: list[str] = []
        self._lock = threading.Lock()

    def put(
        self, name: str, value: float, *, unit: str = "None", dimensions: Mapping[str, str] | None = None
    ) -> None:
        record = {
            "time": datetime.now(UTC).isoformat(),
            "name": name,
            "value": float(value),
            "unit": unit,
            "dimensions": dict(dimensions or {}),
        }
        with self._lock:
            self._buffer.append(json.dumps(record))
            if len(self._buffer) >= self.buffer_points:
                self._flush_locked()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if not self._buffer:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write("\n".join(self._buffer) + "\n")
        self._buffer.clear()


class LogNotifier(Notifier):
    """Logs each notification and keeps it in notifications.jsonl."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def notify(self, subject: str, message: str, *, severity: str = "info") -> None:
        log.log(logging.WARNING if severity != "info" else logging.INFO, "%s: %s", subject, message)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            record = {
                "time": datetime.now(UTC).isoformat(),
                "subject": subject,
                "message": message,
                "severity": severity,
            }
            handle.write(json.dumps(record) + "\n")
