"""The stream consumer's two output ports, beside the capture port: decisions and dead letters.

| port | aws | local |
| --- | --- | --- |
| `DecisionSink` | Kinesis stream (PutRecords) or DynamoDB table (BatchWriteItem) | JSON Lines |
| `DeadLetterSink` | SQS queue (KMS), the reason in message attributes | JSON Lines (a file) |

Both answer with the ids of the records they could not write after their bounded retries, so the
consumer reports exactly those as batch item failures and the event source delivers them again.
"""

from __future__ import annotations

import abc
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from pydantic import BaseModel, ConfigDict

from shipml.stream.records import RejectReason, StreamRecord


@dataclass(frozen=True)
class OutputItem:
    """One decision as the output receives it."""

    record_id: str
    key: str  # Kinesis partition key / DynamoDB partition key value
    body: dict[str, Any]


class Decision(BaseModel):
    """The decision for one record: what downstream systems act on. No PII: ids, score, label, version.

    `record_id` is the source record's id (stable across redeliveries), so a consumer of the output
    can tell a redelivered decision from a new one.
    """

    model_config = ConfigDict(frozen=True, protected_namespaces=())

    record_id: str
    id: str | int | None  # the contract's id field (transaction_id in the example)
    score: float
    label: bool
    model_version: str
    fallbacks: list[str] = []
    decided_at: str

    def to_output(self, *, id_field: str, score_field: str, label_field: str) -> OutputItem:
        """What is written to the output: the contract's field names; keyed by the contract id when
        the record has one (a redelivered decision overwrites itself in a table), else the record id."""
        body = {
            "record_id": self.record_id,
            id_field: self.id,
            score_field: self.score,
            label_field: self.label,
            "model_version": self.model_version,
            "fallbacks": list(self.fallbacks),
            "decided_at": self.decided_at,
        }
        key = str(self.id) if self.id is not None else self.record_id
        return OutputItem(record_id=self.record_id, key=key, body=body)


class DeadLetter(BaseModel):
    """A record that will not be scored, with the original payload (for replay) and the reason."""

    model_config = ConfigDict(frozen=True, protected_namespaces=())

    record: StreamRecord
    reason: RejectReason
    detail: str
    model: str
    model_version: str | None = None
    rejected_at: str

    def body(self) -> str:
        """The message body: the record as delivered, so it can be fixed and replayed as is."""
        return json.dumps(
            {
                "record_id": self.record.id,
                "source": self.record.source,
                "ordering_key": self.record.ordering_key,
                "partition_key": self.record.partition_key,
                "encoding": self.record.encoding,
                "payload": self.record.payload,
                "reason": str(self.reason),
                "detail": self.detail,
                "model": self.model,
                "model_version": self.model_version,
                "rejected_at": self.rejected_at,
            }
        )


class DecisionSink(abc.ABC):
    """Where decisions go."""

    @abc.abstractmethod
    def write(self, items: Sequence[OutputItem]) -> set[str]:
        """Write the items; return the record ids of those not written after the bounded retries."""


class DeadLetterSink(abc.ABC):
    """Where records that will not be scored go, with their reason."""

    @abc.abstractmethod
    def send(self, letters: Sequence[DeadLetter]) -> set[str]:
        """Send the letters; return the record ids that could not be sent after the bounded retries."""


class JsonLinesDecisionSink(DecisionSink):
    """One JSON object per line on a text stream (stdout for `shipml stream score`, or a file)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._lock = threading.Lock()

    def write(self, items: Sequence[OutputItem]) -> set[str]:
        text = "".join(json.dumps(item.body) + "\n" for item in items)
        with self._lock:
            self.out.write(text)
            self.out.flush()
        return set()


class JsonLinesDeadLetterSink(DeadLetterSink):
    """Each dead letter's body, one per line, on a text stream (stderr or a file)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._lock = threading.Lock()

    def send(self, letters: Sequence[DeadLetter]) -> set[str]:
        text = "".join(letter.body() + "\n" for letter in letters)
        with self._lock:
            self.out.write(text)
            self.out.flush()
        return set()
