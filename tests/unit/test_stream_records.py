"""Reading Kinesis, Kafka and JSON Lines records, and decoding their payloads."""

from __future__ import annotations

import pytest

from shipml.stream.records import (
    BadEvent,
    Rejection,
    RejectReason,
    decode,
    record_id,
    records_from_event,
    records_from_lines,
)
from tests.builders import RawData, kafka_event, kinesis_event


def test_kinesis_records_keep_order_ids_and_the_payload_as_delivered():
    event = kinesis_event([{"a": 1}, {"b": 2}], shard="shardId-000000000007")

    records = records_from_event(event, "kinesis")

    assert [r.id for r in records] == [raw["eventID"] for raw in event["Records"]]
    assert records[0].id.startswith("shardId-000000000007:")
    assert {r.ordering_key for r in records} == {"shardId-000000000007"}
    assert records[1].payload == event["Records"][1]["kinesis"]["data"]
    assert records[0].partition_key == "pk-0"
    assert [decode(r) for r in records] == [{"a": 1}, {"b": 2}]


@pytest.mark.parametrize("self_managed", [False, True], ids=["msk", "self-managed"])
def test_kafka_records_are_flattened_over_partitions_with_topic_partition_offset_ids(self_managed):
    event = kafka_event([{"n": i} for i in range(5)], partitions=2, self_managed=self_managed)

    records = records_from_event(event, "kafka")

    assert [r.id for r in records] == [
        "transactions-0:100",
        "transactions-0:101",
        "transactions-0:102",
        "transactions-1:100",
        "transactions-1:101",
    ]
    assert [decode(r)["n"] for r in records] == [0, 2, 4, 1, 3]
    raw = event["records"]["transactions-1"][1]
    assert record_id(raw, "kafka") == "transactions-1:101"
    assert records[-1].ordering_key == "transactions-1"


@pytest.mark.parametrize(
    ("payload", "reason", "detail"),
    [
        (RawData("%%% not base64 %%%"), RejectReason.undecodable, "not valid base64"),
        (b"\xff\xfe\x00garbage", RejectReason.undecodable, "not UTF-8"),
        (b'{"amount": 12.5,', RejectReason.undecodable, "not JSON"),
        (None, RejectReason.undecodable, "no payload"),
        ([1, 2, 3], RejectReason.not_an_object, "JSON array, not an object"),
        (b'"just a string"', RejectReason.not_an_object, "JSON string"),
    ],
    ids=["not-base64", "not-utf8", "truncated-json", "empty", "array", "string"],
)
def test_undecodable_payloads_are_rejected_with_the_reason(payload, reason, detail):
    (record,) = records_from_event(kinesis_event([payload]), "kinesis")

    rejection = decode(record)

    assert isinstance(rejection, Rejection)
    assert rejection.reason == reason
    assert detail in rejection.detail


def test_a_rejection_never_quotes_the_payload():
    secret = b'{"card_number": "4000999988887777", '
    (record,) = records_from_event(kinesis_event([secret]), "kinesis")

    rejection = decode(record)

    assert isinstance(rejection, Rejection) and "4000999988887777" not in rejection.detail


def test_json_lines_are_records_numbered_by_line_and_blank_lines_skipped():
    records = records_from_lines(['{"a": 1}\n', "\n", '{"b": 2}\n'], start=10)

    assert [r.id for r in records] == ["line-10", "line-12"]
    assert [decode(r) for r in records] == [{"a": 1}, {"b": 2}]
    assert records[0].encoding == "text" and records[0].payload == '{"a": 1}'


@pytest.mark.parametrize(
    ("event", "source"),
    [({"records": {}}, "kinesis"), ({"Records": []}, "kafka"), ({"Records": "x"}, "kinesis")],
    ids=["kafka-event-as-kinesis", "kinesis-event-as-kafka", "records-not-a-list"],
)
def test_an_event_of_another_source_is_a_bad_event(event, source):
    with pytest.raises(BadEvent, match=f"not a {source} batch event"):
        records_from_event(event, source)
