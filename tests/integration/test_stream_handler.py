"""The stream Lambda handler with Kinesis and Kafka (MSK, self-managed) events.

The model, online features and capture come from the local backend (a registry with a live model);
the decision output (Kinesis or DynamoDB) and the dead-letter queue (SQS) are moto's.
"""

from __future__ import annotations

import base64
import json

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from functions.stream import handler as module
from shipml.backends import LIVE, local_backends
from shipml.stream.aws import DECISION_TABLE_KEY
from tests.builders import LambdaContext, RawData, kafka_event, kinesis_event
from tests.conftest import valid_request

KNOWN = "C31415926"


@pytest.fixture
def aws(moto_aws, monkeypatch):
    session = moto_aws
    session.client("kinesis").create_stream(StreamName="decisions", ShardCount=1)
    session.client("dynamodb").create_table(
        TableName="decisions",
        KeySchema=[{"AttributeName": DECISION_TABLE_KEY, "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": DECISION_TABLE_KEY, "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    session.client("sqs").create_queue(QueueName="dead-letters")
    yield session


@pytest.fixture
def root(tmp_path, make_artifact):
    root = tmp_path / "root"
    backends = local_backends(root)
    backends.registry.register("fraud", make_artifact())
    backends.registry.approve("fraud", 1)
    backends.registry.set_alias("fraud", LIVE, 1)
    backends.online.put_many(
        "fraud", {KNOWN: {"txn_count_24h": 3, "mean_amount_30d": 80.0, "days_since_first_seen": 400}}
    )
    return root


@pytest.fixture
def configure(aws, root, monkeypatch, contract_path):
    """Point the handler at a source and an output, as the construct's environment does."""
    queue_url = aws.client("sqs").get_queue_url(QueueName="dead-letters")["QueueUrl"]

    def configure(source: str, output: str = "kinesis", **extra: str):
        env = {
            "SHIPML_BACKEND": "local",
            "SHIPML_ROOT": str(root),
            "SHIPML_CONTRACT": str(contract_path),
            "SHIPML_STREAM_SOURCE": source,
            "SHIPML_STREAM_OUTPUT": output,
            "SHIPML_STREAM_OUTPUT_STREAM": "decisions",
            "SHIPML_STREAM_OUTPUT_TABLE": "decisions",
            "SHIPML_STREAM_DLQ_URL": queue_url,
            **extra,
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(module, "_runtime", {})
        return module.handler

    return configure


def good(n: int, **overrides) -> dict:
    return valid_request(**{"transaction_id": f"T{n:04d}", "customer_id": KNOWN, **overrides})


def output_stream(session) -> list[dict]:
    kinesis = session.client("kinesis")
    shard = kinesis.list_shards(StreamName="decisions")["Shards"][0]["ShardId"]
    iterator = kinesis.get_shard_iterator(
        StreamName="decisions", ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )
    records = kinesis.get_records(ShardIterator=iterator["ShardIterator"], Limit=10_000)["Records"]
    return [json.loads(r["Data"]) for r in records]


def dead_letters(session) -> list[dict]:
    sqs = session.client("sqs")
    url = sqs.get_queue_url(QueueName="dead-letters")["QueueUrl"]
    letters = []
    while batch := sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    ).get("Messages", []):
        for message in batch:
            attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
            letters.append({"body": json.loads(message["Body"]), **attributes})
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return letters


MIXED = [
    good(0),
    RawData("this is not base64 ***"),
    good(1, amount=-5.0),
    good(2, customer_id="C00000000"),  # unknown entity: scored with flagged fallbacks
    b"{not json",
    good(3),
]


def test_kinesis_batch_mixing_good_and_bad_records(configure, aws):
    handler = configure("kinesis")
    event = kinesis_event(MIXED)
    ids = [r["eventID"] for r in event["Records"]]

    response = handler(event, LambdaContext())

    # Every record is settled: the poison ones are in the dead-letter queue, so none is redriven.
    assert response == {"batchItemFailures": []}
    decisions = output_stream(aws)
    assert [d["transaction_id"] for d in decisions] == ["T0000", "T0002", "T0003"]
    assert [d["record_id"] for d in decisions] == [ids[0], ids[3], ids[5]]
    assert decisions[1]["fallbacks"] == ["txn_count_24h", "mean_amount_30d", "days_since_first_seen"]
    letters = {letter["record_id"]: letter for letter in dead_letters(aws)}
    assert {k: v["reason"] for k, v in letters.items()} == {
        ids[1]: "undecodable",
        ids[2]: "contract_violation",
        ids[4]: "undecodable",
    }
    assert letters[ids[2]]["detail"].startswith("amount: greater_than_equal")
    assert letters[ids[2]]["model"] == "fraud" and letters[ids[2]]["model_version"] == "fraud:1"
    # The body is the record as delivered: its payload decodes back to what the producer sent.
    assert json.loads(base64.b64decode(letters[ids[2]]["body"]["payload"])) == good(1, amount=-5.0)


def test_records_that_cannot_be_settled_are_exactly_the_failed_item_ids(configure, aws):
    # A dead-letter queue that takes at most 2 KB: the big poison record cannot be dead-lettered.
    handler = configure("kinesis", SHIPML_STREAM_MAX_DLQ_MESSAGE_BYTES="2048")
    event = kinesis_event([good(0), {"oversized": "x" * 4000}, RawData("@@ small poison"), good(1)])
    records = event["Records"]

    response = handler(event, LambdaContext())

    assert response == {"batchItemFailures": [{"itemIdentifier": records[1]["kinesis"]["sequenceNumber"]}]}
    assert [d["transaction_id"] for d in output_stream(aws)] == ["T0000", "T0001"]
    assert [letter["record_id"] for letter in dead_letters(aws)] == [records[2]["eventID"]]


@pytest.mark.parametrize("self_managed", [False, True], ids=["msk", "self-managed"])
def test_kafka_batch_mixing_good_and_bad_records(configure, aws, self_managed):
    handler = configure("kafka", SHIPML_STREAM_MAX_DLQ_MESSAGE_BYTES="2048")
    payloads = [good(0), {"oversized": "y" * 4000}, good(1, currency="XXX"), good(2), b"[]", good(3)]
    event = kafka_event(payloads, partitions=2, self_managed=self_managed)

    response = handler(event, LambdaContext())

    # Round-robin over 2 partitions: payload 1 is partition 1's first record (offset 100).
    assert response == {
        "batchItemFailures": [{"itemIdentifier": {"partition": "transactions-1", "offset": 100}}]
    }
    assert sorted(d["transaction_id"] for d in output_stream(aws)) == ["T0000", "T0002", "T0003"]
    letters = {letter["record_id"]: letter["reason"] for letter in dead_letters(aws)}
    assert letters == {"transactions-0:101": "contract_violation", "transactions-0:102": "not_an_object"}


def test_dynamodb_output_holds_each_good_record_once_even_when_a_batch_is_delivered_again(configure, aws):
    handler = configure("kinesis", output="dynamodb")
    event = kinesis_event(MIXED)

    assert handler(event, LambdaContext()) == {"batchItemFailures": []}
    assert handler(event, LambdaContext()) == {"batchItemFailures": []}  # a redelivery

    items = aws.client("dynamodb").scan(TableName="decisions")["Items"]
    assert sorted(item[DECISION_TABLE_KEY]["S"] for item in items) == ["T0000", "T0002", "T0003"]
    t0 = next(item for item in items if item[DECISION_TABLE_KEY]["S"] == "T0000")
    assert t0["model_version"] == {"S": "fraud:1"} and "BOOL" in t0["is_fraud_predicted"]


def test_capture_of_the_stream_lands_in_the_local_backend(configure, aws, root):
    import pyarrow.parquet as pq

    handler = configure("kinesis")
    handler(kinesis_event([good(0), good(1)]), LambdaContext())

    parts = sorted((root / "capture").rglob("*.parquet"))
    rows = [row for part in parts for row in pq.read_table(part).to_pylist()]
    assert [row["transaction_id"] for row in rows] == ["T0000", "T0001"]
    assert all(row["customer_id"] != KNOWN for row in rows)  # hashed, per the contract


def test_without_a_live_model_the_whole_batch_fails_and_nothing_is_written(
    configure, aws, tmp_path, monkeypatch
):
    handler = configure("kinesis")
    monkeypatch.setenv("SHIPML_ROOT", str(tmp_path / "empty"))

    with pytest.raises(BatchProcessingError, match="All records failed"):
        handler(kinesis_event([good(0), RawData("@@")]), LambdaContext())

    assert output_stream(aws) == [] and dead_letters(aws) == []


def test_the_consumer_is_built_once_per_environment(configure, aws):
    handler = configure("kinesis")
    handler(kinesis_event([good(0)]), LambdaContext())
    consumer = module._runtime["consumer"]

    handler(kinesis_event([good(1)]), LambdaContext())

    assert module._runtime["consumer"] is consumer
    assert [d["transaction_id"] for d in output_stream(aws)] == ["T0000", "T0001"]
