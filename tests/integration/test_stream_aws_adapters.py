"""The stream's aws adapters under partial failures (botocore Stubber: moto never fails a record),
and the live-version model source against moto's SSM and S3."""

from __future__ import annotations

import json

import boto3
from botocore.stub import ANY, Stubber
from moto import mock_aws

from shipml.artifact import artifact_key, pack
from shipml.backends.aws.blob import S3BlobStore
from shipml.stream.aws import (
    DECISION_TABLE_KEY,
    DynamoDbDecisionSink,
    KinesisDecisionSink,
    LiveParameterModelSource,
    SqsDeadLetterSink,
)
from shipml.stream.ports import DeadLetter, OutputItem
from shipml.stream.records import RejectReason, StreamRecord

REGION = "eu-west-1"
NO_SLEEP = {"sleep": lambda _: None}


def client(service: str):
    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    ).client(service)


def item(n: int, key: str | None = None) -> OutputItem:
    return OutputItem(
        record_id=f"r{n}", key=key or f"T{n}", body={"transaction_id": f"T{n}", "fraud_score": 0.25}
    )


def letter(n: int, payload: str = "eyJhIjogMX0=") -> DeadLetter:
    record = StreamRecord(
        id=f"r{n}", source="kinesis", ordering_key="shard-0", payload=payload, encoding="base64"
    )
    return DeadLetter(
        record=record,
        reason=RejectReason.contract_violation,
        detail="amount: greater_than_equal",
        model="fraud",
        model_version="fraud:1",
        rejected_at="2026-01-01T00:00:00+00:00",
    )


def test_kinesis_resends_only_the_failed_records_and_reports_those_still_failing():
    kinesis = client("kinesis")
    sink = KinesisDecisionSink(kinesis, "decisions", max_attempts=2, **NO_SLEEP)
    ok = {"SequenceNumber": "1", "ShardId": "shardId-0"}
    throttled = {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "slow down"}
    with Stubber(kinesis) as stub:
        stub.add_response(
            "put_records",
            {"FailedRecordCount": 2, "Records": [ok, throttled, throttled]},
            {
                "StreamName": "decisions",
                "Records": [{"Data": ANY, "PartitionKey": k} for k in ("T0", "T1", "T2")],
            },
        )
        stub.add_response(
            "put_records",
            {"FailedRecordCount": 1, "Records": [ok, throttled]},
            {"StreamName": "decisions", "Records": [{"Data": ANY, "PartitionKey": k} for k in ("T1", "T2")]},
        )

        failed = sink.write([item(0), item(1), item(2)])

        stub.assert_no_pending_responses()
    assert failed == {"r2"}


def test_dynamodb_retries_unprocessed_items_and_writes_one_item_per_key():
    dynamodb = client("dynamodb")
    sink = DynamoDbDecisionSink(dynamodb, "decisions", max_attempts=3, **NO_SLEEP)
    with Stubber(dynamodb) as stub:
        # r0 and r2 share a key: only the later one (r2) is sent.
        def put(*keys):
            return {"decisions": [{"PutRequest": {"Item": ANY}} for _ in keys]}

        stub.add_response("batch_write_item", {"UnprocessedItems": {"decisions": [
            {"PutRequest": {"Item": {DECISION_TABLE_KEY: {"S": "T1"}}}}
        ]}}, {"RequestItems": put("T0", "T1")})  # fmt: skip
        stub.add_response("batch_write_item", {"UnprocessedItems": {}}, {"RequestItems": put("T1")})

        failed = sink.write([item(0, "T0"), item(1, "T1"), item(2, "T0")])

        stub.assert_no_pending_responses()
    assert failed == set()


def test_dynamodb_reports_the_records_behind_a_key_that_could_not_be_written():
    dynamodb = client("dynamodb")
    sink = DynamoDbDecisionSink(dynamodb, "decisions", max_attempts=2, **NO_SLEEP)
    with Stubber(dynamodb) as stub:
        for _ in range(2):
            stub.add_client_error("batch_write_item", "ProvisionedThroughputExceededException")

        failed = sink.write([item(0, "T0"), item(1, "T0")])

    assert failed == {"r0", "r1"}  # r0 was superseded by r1, which did not land: both are retried


def test_sqs_retries_service_faults_but_not_sender_faults():
    sqs = client("sqs")
    sink = SqsDeadLetterSink(
        sqs, "https://sqs.eu-west-1.amazonaws.com/123456789012/dlq", max_attempts=3, **NO_SLEEP
    )
    with Stubber(sqs) as stub:
        stub.add_response(
            "send_message_batch",
            {
                "Successful": [{"Id": "0", "MessageId": "m0", "MD5OfMessageBody": "x"}],
                "Failed": [
                    {"Id": "1", "SenderFault": False, "Code": "InternalError"},
                    {"Id": "2", "SenderFault": True, "Code": "InvalidParameterValue"},
                ],
            },
        )
        stub.add_response(
            "send_message_batch",
            {"Successful": [{"Id": "1", "MessageId": "m1", "MD5OfMessageBody": "x"}], "Failed": []},
        )

        failed = sink.send([letter(0), letter(1), letter(2)])

        stub.assert_no_pending_responses()
    assert failed == {"r2"}


def test_sqs_messages_carry_the_reason_as_attributes_and_oversized_ones_are_not_sent(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        sqs = client("sqs")
        url = sqs.create_queue(QueueName="dlq")["QueueUrl"]
        sink = SqsDeadLetterSink(sqs, url, max_message_bytes=2048)

        failed = sink.send([letter(0), letter(1, payload="A" * 4000)])

        (message,) = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"], MaxNumberOfMessages=10)[
            "Messages"
        ]
    assert failed == {"r1"}
    attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
    assert attributes == {
        "reason": "contract_violation",
        "detail": "amount: greater_than_equal",
        "record_id": "r0",
        "source": "kinesis",
        "model": "fraud",
        "model_version": "fraud:1",
    }
    assert json.loads(message["Body"])["payload"] == "eyJhIjogMX0="


def test_live_parameter_source_follows_the_parameter(make_artifact, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        s3, ssm = client("s3"), client("ssm")
        s3.create_bucket(Bucket="artifacts", CreateBucketConfiguration={"LocationConstraint": REGION})
        blobs = S3BlobStore(s3, "artifacts")
        blobs.put_bytes(artifact_key("fraud", 2), pack(make_artifact()))
        ssm.put_parameter(Name="/shipml/fraud/dev/live", Value="0", Type="String")
        source = LiveParameterModelSource(ssm, "/shipml/fraud/dev/live", blobs, "fraud", tmp_path / "cache")

        assert source.resolve() is None  # nothing deployed yet
        ssm.put_parameter(Name="/shipml/fraud/dev/live", Value="2", Type="String", Overwrite=True)
        assert source.resolve() == "fraud:2"
        assert source.open("fraud:2").card.model_name == "fraud"
