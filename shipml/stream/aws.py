"""The stream consumer's aws adapters: decisions to Kinesis or DynamoDB, dead letters to SQS, and a
model source that follows the live-version parameter. Clients are injected; boto3 is imported by
the factory, never here at import time.

Every writer retries what failed (throttling, partial batch failures) a bounded number of times
with exponential backoff, then answers with the record ids it could not write; the consumer reports
those for redelivery. Errors a retry cannot fix (a message over SQS's size limit, a sender fault)
are not retried.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from shipml.artifact import Artifact
from shipml.backends.ports import BlobStore
from shipml.errors import ShipmlError
from shipml.serving.models import NO_MODEL, PinnedBlobModelSource
from shipml.stream.ports import DeadLetter, DeadLetterSink, DecisionSink, OutputItem

log = logging.getLogger("shipml.stream")

# The attribute holding the output key (the contract id, else the source record id) in the table.
DECISION_TABLE_KEY = "decision_key"
_KINESIS_MAX_RECORDS = 500  # PutRecords: 500 records, 5 MiB per call, 1 MiB per record
_KINESIS_MAX_BYTES = 5 * 1024 * 1024 - 64 * 1024
_DYNAMODB_MAX_ITEMS = 25  # BatchWriteItem
_SQS_MAX_ENTRIES = 10  # SendMessageBatch: 10 messages, 256 KiB in all
_SQS_MAX_BYTES = 256 * 1024
_SQS_MAX_ATTRIBUTE_CHARS = 1024


def _aws_errors() -> tuple[type[Exception], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


_Pending = TypeVar("_Pending", list, dict)


class _Retrying:
    def __init__(self, max_attempts: int, base_delay_s: float, sleep: Callable[[float], None]) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.max_attempts = max_attempts
        self.base_delay_s = base_delay_s
        self._sleep = sleep

    def backoff(self, attempt: int) -> None:
        if attempt + 1 < self.max_attempts:
            self._sleep(self.base_delay_s * (2**attempt))

    def retry(self, call: str, pending: _Pending, attempt_once: Callable[[_Pending], _Pending]) -> _Pending:
        """Send `pending` with `attempt_once`, which answers what is still pending, until nothing is
        or the attempts run out, backing off in between; answers what is still pending then.

        An AWS error fails a whole attempt (logged as `call` failed): everything is sent again.
        """
        for attempt in range(self.max_attempts):
            try:
                pending = attempt_once(pending)
            except _aws_errors() as exc:
                log.warning("%s failed (attempt %d): %s", call, attempt + 1, exc)
            else:
                if not pending:
                    return pending
            self.backoff(attempt)
        return pending


class KinesisDecisionSink(DecisionSink, _Retrying):
    """PutRecords to the output stream, partitioned by the decision key (the contract id), so the
    decisions for one transaction stay in order on one shard."""

    def __init__(
        self,
        client: Any,
        stream_name: str,
        *,
        max_attempts: int = 4,
        base_delay_s: float = 0.05,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        _Retrying.__init__(self, max_attempts, base_delay_s, sleep)
        self.client = client
        self.stream_name = stream_name

    def write(self, items: Sequence[OutputItem]) -> set[str]:
        entries = [(item.record_id, item.key[:256], json.dumps(item.body).encode()) for item in items]
        failed: set[str] = set()
        for chunk in _chunks(
            entries, _KINESIS_MAX_RECORDS, _KINESIS_MAX_BYTES, lambda e: len(e[2]) + len(e[1])
        ):
            failed |= self._put(chunk)
        return failed

    def _put(self, chunk: list[tuple[str, str, bytes]]) -> set[str]:
        def put_records(pending: list[tuple[str, str, bytes]]) -> list[tuple[str, str, bytes]]:
            response = self.client.put_records(
                StreamName=self.stream_name,
                Records=[{"Data": data, "PartitionKey": key} for _, key, data in pending],
            )
            if not response.get("FailedRecordCount"):
                return []
            # Resend only the records that failed, in their order.
            return [
                entry
                for entry, result in zip(pending, response["Records"], strict=True)
                if "ErrorCode" in result
            ]

        left = self.retry(f"PutRecords to {self.stream_name}", chunk, put_records)
        return {record_id for record_id, _, _ in left}


class DynamoDbDecisionSink(DecisionSink, _Retrying):
    """BatchWriteItem to the output table, keyed by the decision key: a redelivered decision
    overwrites itself, so the table holds one decision per transaction."""

    def __init__(
        self,
        client: Any,
        table_name: str,
        *,
        max_attempts: int = 4,
        base_delay_s: float = 0.05,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        _Retrying.__init__(self, max_attempts, base_delay_s, sleep)
        self.client = client
        self.table_name = table_name

    def write(self, items: Sequence[OutputItem]) -> set[str]:
        # One item per key in a request (DynamoDB refuses duplicates): the later record wins, as it
        # would have if written one after the other; the earlier one counts as written.
        latest: dict[str, OutputItem] = {}
        for item in items:
            latest[item.key] = item
        superseded = {item.record_id: latest[item.key].record_id for item in items}
        failed: set[str] = set()
        for chunk in _chunks(list(latest.values()), _DYNAMODB_MAX_ITEMS, None, None):
            failed |= self._put(chunk)
        return {record_id for record_id, winner in superseded.items() if winner in failed}

    def _put(self, chunk: list[OutputItem]) -> set[str]:
        def batch_write(pending: dict[str, OutputItem]) -> dict[str, OutputItem]:
            requests = [{"PutRequest": {"Item": dynamodb_item(item)}} for item in pending.values()]
            response = self.client.batch_write_item(RequestItems={self.table_name: requests})
            left = response.get("UnprocessedItems", {}).get(self.table_name, [])
            keys = {request["PutRequest"]["Item"][DECISION_TABLE_KEY]["S"] for request in left}
            return {key: item for key, item in pending.items() if key in keys}

        left = self.retry(
            f"BatchWriteItem to {self.table_name}", {item.key: item for item in chunk}, batch_write
        )
        return {item.record_id for item in left.values()}


def dynamodb_item(item: OutputItem) -> dict[str, Any]:
    """The decision as a DynamoDB item (numbers as their shortest exact decimal)."""
    attributes = {name: _attribute(value) for name, value in item.body.items()}
    attributes[DECISION_TABLE_KEY] = {"S": item.key}
    return attributes


def _attribute(value: Any) -> dict[str, Any]:
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | float):
        return {"N": repr(value)}
    if isinstance(value, list):
        return {"L": [_attribute(v) for v in value]}
    return {"S": str(value)}


class SqsDeadLetterSink(DeadLetterSink, _Retrying):
    """SendMessageBatch to the dead-letter queue: the body is the record as delivered (for replay),
    the reason, its detail and the record's id are message attributes (for filtering and alarms)."""

    def __init__(
        self,
        client: Any,
        queue_url: str,
        *,
        max_message_bytes: int = _SQS_MAX_BYTES,
        max_attempts: int = 4,
        base_delay_s: float = 0.05,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        _Retrying.__init__(self, max_attempts, base_delay_s, sleep)
        self.client = client
        self.queue_url = queue_url
        self.max_message_bytes = max_message_bytes

    def send(self, letters: Sequence[DeadLetter]) -> set[str]:
        failed: set[str] = set()
        entries = []
        for letter in letters:
            entry = sqs_entry(letter)
            if _message_bytes(entry) > self.max_message_bytes:
                # Cannot be dead-lettered: left unsettled, so the event source keeps it until its
                # retries or maximum age run out and its own failure destination records the batch.
                log.error("record %s is too large for the dead-letter queue", letter.record.id)
                failed.add(letter.record.id)
            else:
                entries.append((letter.record.id, entry))
        for chunk in _chunks(
            entries, _SQS_MAX_ENTRIES, self.max_message_bytes, lambda e: _message_bytes(e[1])
        ):
            failed |= self._send(chunk)
        return failed

    def _send(self, chunk: list[tuple[str, dict[str, Any]]]) -> set[str]:
        hopeless: set[str] = set()  # sender faults: sending again cannot help

        def send_batch(
            pending: dict[str, tuple[str, dict[str, Any]]],
        ) -> dict[str, tuple[str, dict[str, Any]]]:
            response = self.client.send_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": key, **entry} for key, (_, entry) in pending.items()],
            )
            failures = response.get("Failed", [])
            retry = {f["Id"] for f in failures if not f.get("SenderFault")}
            hopeless.update(pending[f["Id"]][0] for f in failures if f.get("SenderFault"))
            return {key: value for key, value in pending.items() if key in retry}

        pending = {str(index): entry for index, entry in enumerate(chunk)}
        left = self.retry("SendMessageBatch to the dead-letter queue", pending, send_batch)
        return hopeless | {record_id for record_id, _ in left.values()}


def sqs_entry(letter: DeadLetter) -> dict[str, Any]:
    """The SendMessageBatch entry (without its Id) for a dead letter."""
    attributes = {
        "reason": str(letter.reason),
        "detail": letter.detail[:_SQS_MAX_ATTRIBUTE_CHARS],
        "record_id": letter.record.id,
        "source": letter.record.source,
        "model": letter.model,
    }
    if letter.model_version:
        attributes["model_version"] = letter.model_version
    return {
        "MessageBody": letter.body(),
        "MessageAttributes": {
            name: {"DataType": "String", "StringValue": value} for name, value in attributes.items()
        },
    }


def _message_bytes(entry: dict[str, Any]) -> int:
    # SQS counts the body and each attribute's name, type and value against the size limit.
    size = len(entry["MessageBody"].encode())
    for name, value in entry["MessageAttributes"].items():
        size += len(name.encode()) + len(value["DataType"]) + len(value["StringValue"].encode())
    return size


def _chunks(
    entries: list, max_count: int, max_bytes: int | None, size: Callable[[Any], int] | None
) -> list[list]:
    chunks: list[list] = []
    current: list = []
    total = 0
    for entry in entries:
        entry_size = size(entry) if size is not None else 0
        full = len(current) == max_count or (max_bytes is not None and total + entry_size > max_bytes)
        if current and full:
            chunks.append(current)
            current, total = [], 0
        current.append(entry)
        total += entry_size
    if current:
        chunks.append(current)
    return chunks


class LiveParameterModelSource:
    """A `ModelSource` for a long-lived consumer on aws: the version is the SSM live-version parameter
    (the pipeline's deploy step writes it), re-read whenever the `ModelHolder` polls, so the consumer
    follows promotions between batches without a redeploy; artifacts come from the blob store (S3)."""

    def __init__(self, ssm: Any, parameter: str, blobs: BlobStore, model: str, cache_dir: Path) -> None:
        self.ssm = ssm
        self.parameter = parameter
        self.blobs = blobs
        self.model = model
        self.cache_dir = cache_dir

    def resolve(self) -> str | None:
        try:
            value = self.ssm.get_parameter(Name=self.parameter)["Parameter"]["Value"]
        except _aws_errors() as exc:
            raise ShipmlError(f"cannot read the live version from {self.parameter}: {exc}") from None
        return None if value == NO_MODEL else f"{self.model}:{value}"

    def open(self, ref: str) -> Artifact:
        version = ref.rsplit(":", 1)[1]
        return PinnedBlobModelSource(self.blobs, self.model, version, self.cache_dir).open(ref)
