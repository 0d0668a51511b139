"""Capture to Kinesis Data Firehose, metrics as CloudWatch EMF (Powertools), notifications to SNS."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

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
        lines = [(json.dumps(dict(r), default=str) + "\n").encode() for r in records]
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


class EmfMetricsSink(MetricsSink):
    """CloudWatch metrics through Powertools' EMF logging: no API call on the request path.

    Points with the default dimensions are batched into one EMF document per flush; points with
    other dimensions get a document of their own.
    """

    def __init__(
        self, namespace: str, service: str, *, default_dimensions: Mapping[str, str] | None = None
    ) -> None:
        from aws_lambda_powertools import Metrics

        self._metrics = Metrics(namespace=namespace, service=service)
        self._namespace = namespace
        self._defaults = dict(default_dimensions or {})
        self._metrics.set_default_dimensions(**self._defaults)
        self._lock = threading.Lock()

    def put(
        self, name: str, value: float, *, unit: str = "None", dimensions: Mapping[str, str] | None = None
    ) -> None:
        from aws_lambda_powertools.metrics import MetricUnit

        emf_unit = MetricUnit.NoUnit if unit == "None" else MetricUnit(unit)
        with self._lock:
            if dimensions is None or dict(dimensions) == self._defaults:
                self._metrics.add_metric(name=name, unit=emf_unit, value=value)
                return
            from aws_lambda_powertools.metrics import single_metric

            with single_metric(
                name=name,
                unit=emf_unit,
                value=value,
                namespace=self._namespace,
                default_dimensions=dict(dimensions),
            ):
                pass

    def flush(self) -> None:
        with self._lock:
            self._metrics.flush_metrics(raise_on_empty_metrics=False)
            self._metrics.set_default_dimensions(**self._defaults)


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
