"""Capture to Kinesis Data Firehose, metrics as CloudWatch EMF (Powertools), notifications to SNS."""

from __future__ import annotations

import json
import logging
import math
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic_core import to_json

from shipml.backends.ports import CaptureSink, MetricsSink, Notifier
from shipml.errors import ShipmlError

log = logging.getLogger("shipml.capture")

_FIREHOSE_MAX_RECORDS = 500  # PutRecordBatch limits: 500 records, 4 MiB
_FIREHOSE_MAX_BYTES = 4 * 1024 * 1024 - 64 * 1024


class CaptureLost(ShipmlError):
    """Capture records could not be delivered after the bounded retries (they stay buffered)."""


class FirehoseCaptureSink(CaptureSink):
    """Buffers masked records; `flush` sends them with PutRecordBatch, retrying the failed ones.

    The Lambda handler flushes at the end of every invocation, so nothing waits in memory when
    the execution environment is frozen or shut down.
    """

    def __init__(
        self,
        client: Any,
        stream: str,
        *,
        max_attempts: int = 4,
        base_delay_s: float = 0.05,
        max_buffered: int = 10_000,
    ) -> None:
        self.max_buffered = max_buffered
        self.client = client
        self.stream = stream
        self.max_attempts = max_attempts
        self.base_delay_s = base_delay_s
        self._buffer: list[bytes] = []
        self._lock = threading.Lock()

    def write(self, records: Sequence[Mapping[str, Any]]) -> None:
        # pydantic-core's serialiser: a quarter of json.dumps' time on the request path; values it
        # cannot write become str(value), and datetimes ISO 8601 text (callers send ISO text).
        lines = [to_json(r if type(r) is dict else dict(r), fallback=str) + b"\n" for r in records]
        with self._lock:
            self._buffer.extend(lines)

    def flush(self) -> None:
        """Send everything buffered. Records still refused after the retries go back to the front of
        the buffer for the next flush (the oldest beyond `max_buffered` are logged, masked, as dead
        letters); then `CaptureLost` says how many are pending."""
        with self._lock:
            pending, self._buffer = self._buffer, []
        undelivered: list[bytes] = []
        for batch in self._batches(pending):
            undelivered.extend(self._send(batch))
        if not undelivered:
            return
        with self._lock:
            self._buffer = undelivered + self._buffer
            overflow = len(self._buffer) - self.max_buffered
            if overflow > 0:
                for line in self._buffer[:overflow]:
                    log.error("capture_dead_letter %s", line.decode().rstrip())
                self._buffer = self._buffer[overflow:]
        raise CaptureLost(
            f"{len(undelivered)} capture records could not be delivered to {self.stream} "
            "(kept for the next flush)"
        )

    @staticmethod
    def _batches(lines: list[bytes]) -> list[list[bytes]]:
        batches: list[list[bytes]] = []
        current: list[bytes] = []
        size = 0
        for line in lines:
            if current and (len(current) == _FIREHOSE_MAX_RECORDS or size + len(line) > _FIREHOSE_MAX_BYTES):
                batches.append(current)
                current, size = [], 0
            current.append(line)
            size += len(line)
        if current:
            batches.append(current)
        return batches

    def _send(self, batch: list[bytes]) -> list[bytes]:
        """Send one batch; return the records still refused after the attempts."""
        from botocore.exceptions import BotoCoreError, ClientError

        for attempt in range(self.max_attempts):
            try:
                response = self.client.put_record_batch(
                    DeliveryStreamName=self.stream, Records=[{"Data": line} for line in batch]
                )
            except (BotoCoreError, ClientError) as exc:
                log.warning("PutRecordBatch failed (attempt %d): %s", attempt + 1, exc)
            else:
                if not response.get("FailedPutCount"):
                    return []
                # Resend only the records that failed, in order.
                batch = [
                    line
                    for line, result in zip(batch, response["RequestResponses"], strict=True)
                    if "ErrorCode" in result
                ]
            time.sleep(self.base_delay_s * (2**attempt))
        return batch


def _json_floats(values: list[float]) -> str:
    """A JSON array of floats; `repr` is JSON's own spelling of a finite float."""
    if len(values) == 1 and math.isfinite(values[0]):
        return f"[{values[0]!r}]"
    if all(math.isfinite(v) for v in values):
        return "[" + ",".join(map(float.__repr__, values)) + "]"
    return json.dumps(values)  # NaN / Infinity: spelled as Powertools would (json.dumps)


class EmfMetricsSink(MetricsSink):
    """CloudWatch metrics as Embedded Metric Format documents on stdout: no API call on the request path.

    Points are grouped by dimension set; each flush prints one document per group. Powertools'
    EMF provider builds each document's layout (namespace, dimensions, names and units, with its
    validation of names, units and the EMF limits) the first time a shape is seen; a flush then
    only fills in the time and the values. Building the whole document through Powertools on
    every flush cost more than a prediction (three `add_metric` calls and a serialisation, about
    60 us), and a Lambda invocation flushes once. `tests/integration/test_aws_sinks.py` checks
    that the documents are exactly what Powertools prints for the same points.
    """

    # EMF limits per document: 100 metrics, 100 values per metric (Powertools prints a document
    # by itself when a layout reaches 100 metrics, so layouts stop one short).
    _MAX_METRICS = 99
    _MAX_VALUES = 100

    def __init__(
        self, namespace: str, service: str, *, default_dimensions: Mapping[str, str] | None = None
    ) -> None:
        from aws_lambda_powertools.metrics import MetricUnit
        from aws_lambda_powertools.metrics.functions import is_metrics_disabled

        self._namespace = namespace
        self._service = service
        self._defaults = tuple((k, str(v)) for k, v in (default_dimensions or {}).items())
        self._default_map = dict(self._defaults)
        self._units = {unit.value: unit.value for unit in MetricUnit} | {"None": MetricUnit.NoUnit.value}
        self._disabled = is_metrics_disabled()
        # dimensions -> metric name -> (unit, values)
        self._points: dict[tuple[tuple[str, str], ...], dict[str, tuple[str, list[float]]]] = {}
        self._layouts: dict[tuple, tuple[str, str, list[str]]] = {}
        self._lock = threading.Lock()

    def put(
        self, name: str, value: float, *, unit: str = "None", dimensions: Mapping[str, str] | None = None
    ) -> None:
        emf_unit = self._units.get(unit)
        if emf_unit is None:
            raise ValueError(f"metric {name!r}: unit {unit!r} is not a CloudWatch unit")
        if dimensions is None or dimensions == self._default_map:
            dims = self._defaults
        else:
            dims = tuple((k, str(v)) for k, v in dimensions.items())
        with self._lock:
            group = self._points.setdefault(dims, {})
            point = group.get(name)
            if point is None or point[0] != emf_unit:
                group[name] = point = (emf_unit, [])
            point[1].append(float(value))

    def flush(self) -> None:
        with self._lock:
            points, self._points = self._points, {}
        if self._disabled:
            return
        for dims, group in points.items():
            # One write per document: EMF is read line by line from the function's stdout.
            for document in self._documents(dims, group):
                sys.stdout.write(document)

    def _documents(
        self, dims: tuple[tuple[str, str], ...], group: dict[str, tuple[str, list[float]]]
    ) -> list[str]:
        """The EMF documents (JSON lines) for one dimension set's points."""
        if len(group) <= self._MAX_METRICS and all(len(v) <= self._MAX_VALUES for _, v in group.values()):
            # The common case (an invocation's few points): one document.
            return [self._document(dims, [(name, unit, values) for name, (unit, values) in group.items()])]
        names = list(group)
        documents = []
        for first in range(0, len(names), self._MAX_METRICS):
            chunk = names[first : first + self._MAX_METRICS]
            longest = max(len(group[n][1]) for n in chunk)
            for start in range(0, longest, self._MAX_VALUES):
                # A later slice of values may not hold every metric: it lists only those it holds.
                points = [
                    (n, group[n][0], group[n][1][start : start + self._MAX_VALUES])
                    for n in chunk
                    if len(group[n][1]) > start
                ]
                documents.append(self._document(dims, points))
        return documents

    def _document(self, dims: tuple[tuple[str, str], ...], points: list[tuple[str, str, list[float]]]) -> str:
        """One EMF document (a JSON line) of (name, unit, values) points."""
        head, tail, keys = self._layout(dims, tuple((name, unit) for name, unit, _ in points))
        values = "".join([f",{key}:{_json_floats(v)}" for key, (_, _, v) in zip(keys, points, strict=True)])
        return f"{head}{int(time.time() * 1000)}{tail}{values}}}\n"

    def _layout(
        self, dims: tuple[tuple[str, str], ...], shape: tuple[tuple[str, str], ...]
    ) -> tuple[str, str, list[str]]:
        """Powertools' document for these dimensions and (name, unit) pairs, as JSON text around the
        two parts a flush fills in: the time, and the metric values."""
        key = (dims, shape)
        layout = self._layouts.get(key)
        if layout is None:
            from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
                AmazonCloudWatchEMFProvider,
            )

            provider = AmazonCloudWatchEMFProvider(
                namespace=self._namespace, service=self._service, default_dimensions=dict(dims)
            )
            for name, unit in shape:
                provider.add_metric(name=name, unit=unit, value=0)
            document = provider.serialize_metric_set()
            compact = {"separators": (",", ":")}
            rest = {k: v for k, v in document.items() if k != "_aws" and k not in dict(shape)}
            head = '{"_aws":{"Timestamp":'
            tail = (
                ',"CloudWatchMetrics":' + json.dumps(document["_aws"]["CloudWatchMetrics"], **compact) + "}"
            )
            if rest:
                tail += "," + json.dumps(rest, **compact)[1:-1]
            layout = (head, tail, [json.dumps(name) for name, _ in shape])
            self._layouts[key] = layout
        return layout


class SnsNotifier(Notifier):
    def __init__(self, client: Any, topic_arn: str) -> None:
        self.client = client
        self.topic_arn = topic_arn

    def notify(self, subject: str, message: str, *, severity: str = "info") -> None:
        self.client.publish(
            TopicArn=self.topic_arn,
            Subject=f"[{severity}] {subject}"[:100],
            Message=message,
            MessageAttributes={"severity": {"DataType": "String", "StringValue": severity}},
        )
