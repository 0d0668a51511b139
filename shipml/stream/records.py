"""Stream records: what Kinesis, Kafka (MSK or self-managed) and JSON Lines deliver, in one shape.

Every source is read into `StreamRecord`s that keep the payload exactly as it arrived (base64 for
Kinesis and Kafka, the line for JSON Lines), so a dead letter can carry the original bytes. Each
record gets an id that is stable across redeliveries and unique in its stream:

| source | id | ordered within |
| --- | --- | --- |
| Kinesis | `eventID`: `shardId-000000000000:4954...` (shard and sequence number) | the shard |
| Kafka | `topic-partition:offset`, e.g. `transactions-0:15` | the partition |
| JSON Lines | `line-N` (1-based) | the file |

`decode` turns a record's payload into a JSON object or says why it cannot (`Rejection`).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from shipml.errors import ShipmlError

Source = Literal["kinesis", "kafka", "jsonl"]

_JSON_KINDS = {
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


class BadEvent(ShipmlError):
    """The Lambda event is not a batch of the configured source (a wiring error, not a bad record)."""


class RejectReason(StrEnum):
    """Why a record was dead-lettered instead of scored. Each is deterministic: a retry cannot help."""

    undecodable = "undecodable"  # empty, not base64, not UTF-8, not JSON
    not_an_object = "not_an_object"  # valid JSON, but not a JSON object
    contract_violation = "contract_violation"  # a field breaks a contract rule
    unknown_entity = "unknown_entity"  # an online feature the contract will not default is missing


class Rejection(BaseModel):
    """A record that cannot be scored: the reason code and a detail naming fields and rules (no values)."""

    model_config = ConfigDict(frozen=True)

    reason: RejectReason
    detail: str


class StreamRecord(BaseModel):
    """One record of a batch, with its payload as delivered."""

    model_config = ConfigDict(frozen=True)

    id: str
    source: Source
    # The unit within which the source keeps order (shard, topic-partition, file).
    ordering_key: str
    # base64 text (Kinesis data, Kafka value) or the JSON text itself (JSON Lines); None when empty.
    payload: str | None
    encoding: Literal["base64", "text"]
    # Kinesis partition key or Kafka key (base64), for replaying a dead letter to the same place.
    partition_key: str | None = None


def kinesis_record_id(raw: Mapping[str, Any]) -> str:
    """The id of a Kinesis Lambda record (its eventID: shard id and sequence number)."""
    return str(raw["eventID"])


def kafka_record_id(raw: Mapping[str, Any]) -> str:
    """The id of a Kafka Lambda record: `topic-partition:offset`."""
    return f"{raw['topic']}-{raw['partition']}:{raw['offset']}"


def record_id(raw: Mapping[str, Any], source: Source) -> str:
    """The id `records_from_event` gives this raw event record."""
    return kinesis_record_id(raw) if source == "kinesis" else kafka_record_id(raw)


def records_from_event(event: Mapping[str, Any], source: Source) -> list[StreamRecord]:
    """The records of a Lambda event from Kinesis Data Streams or Kafka (MSK / self-managed), in order."""
    try:
        if source == "kinesis":
            raw_records = event["Records"]
            if not isinstance(raw_records, list):
                raise TypeError("Records is not a list")
            return [_kinesis_record(raw) for raw in raw_records]
        if source == "kafka":
            by_partition = event["records"]
            if not isinstance(by_partition, Mapping):
                raise TypeError("records is not an object of topic-partition lists")
            return [_kafka_record(raw) for batch in by_partition.values() for raw in batch]
    except (KeyError, TypeError) as exc:
        raise BadEvent(f"not a {source} batch event: {exc}") from None
    raise BadEvent(f"records_from_event reads kinesis or kafka events, not {source!r}")


def _kinesis_record(raw: Mapping[str, Any]) -> StreamRecord:
    kinesis = raw["kinesis"]
    record_id_ = kinesis_record_id(raw)
    return StreamRecord(
        id=record_id_,
        source="kinesis",
        ordering_key=record_id_.rsplit(":", 1)[0],
        payload=kinesis.get("data") or None,
        encoding="base64",
        partition_key=kinesis.get("partitionKey"),
    )


def _kafka_record(raw: Mapping[str, Any]) -> StreamRecord:
    return StreamRecord(
        id=kafka_record_id(raw),
        source="kafka",
        ordering_key=f"{raw['topic']}-{raw['partition']}",
        payload=raw.get("value") or None,
        encoding="base64",
        partition_key=raw.get("key"),
    )


def records_from_lines(lines: Iterable[str], *, start: int = 1) -> list[StreamRecord]:
    """JSON Lines as stream records (`shipml stream score`); blank lines are skipped but counted."""
    records = []
    for number, line in enumerate(lines, start=start):
        text = line.strip()
        if text:
            records.append(
                StreamRecord(
                    id=f"line-{number}", source="jsonl", ordering_key="jsonl", payload=text, encoding="text"
                )
            )
    return records


def payload_bytes(record: StreamRecord) -> bytes | Rejection:
    """The payload's bytes, or why they cannot be had."""
    if record.payload is None:
        return Rejection(reason=RejectReason.undecodable, detail="the record has no payload")
    if record.encoding == "text":
        return record.payload.encode("utf-8")
    try:
        return base64.b64decode(record.payload, validate=True)
    except (binascii.Error, ValueError):
        return Rejection(reason=RejectReason.undecodable, detail="the payload is not valid base64")


def decode(record: StreamRecord) -> dict[str, Any] | Rejection:
    """The record's JSON object, or a `Rejection` naming what is wrong with it."""
    data = payload_bytes(record)
    if isinstance(data, Rejection):
        return data
    try:
        # Decoded explicitly: json.loads would guess UTF-16 or UTF-32 from the first bytes.
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return Rejection(reason=RejectReason.undecodable, detail="the payload is not UTF-8 text")
    try:
        value = json.loads(text)
    except ValueError as exc:  # json.JSONDecodeError; its message has a position, never the content
        return Rejection(reason=RejectReason.undecodable, detail=f"the payload is not JSON: {exc.msg}")
    if not isinstance(value, dict):
        kind = _JSON_KINDS.get(type(value), "value")
        return Rejection(
            reason=RejectReason.not_an_object, detail=f"the payload is a JSON {kind}, not an object"
        )
    return value
