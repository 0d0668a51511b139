"""The aws adapters for blobs, capture, metrics and notifications, against moto."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.stub import Stubber

from shipml.backends.aws.blob import S3BlobStore
from shipml.backends.aws.sinks import CaptureLost, EmfMetricsSink, FirehoseCaptureSink, SnsNotifier
from tests.builders import create_capture_stream

REGION = "eu-west-1"


def test_s3_blob_store(moto_aws):
    s3 = moto_aws.client("s3")
    s3.create_bucket(Bucket="artifacts", CreateBucketConfiguration={"LocationConstraint": REGION})
    blobs = S3BlobStore(s3, "artifacts", prefix="shipml")
    blobs.put_bytes("models/fraud/1/model.tar.gz", b"packed")
    assert blobs.get_bytes("models/fraud/1/model.tar.gz") == b"packed"
    assert blobs.exists("models/fraud/1/model.tar.gz") and not blobs.exists("models/fraud/2/model.tar.gz")
    assert blobs.list("models/") == ["models/fraud/1/model.tar.gz"]
    assert blobs.uri("models/x") == "s3://artifacts/shipml/models/x"
    with pytest.raises(KeyError):
        blobs.get_bytes("models/absent")
    with pytest.raises(ValueError, match="invalid blob key"):
        blobs.put_bytes("../escape", b"x")


def test_firehose_capture_delivers_every_record(moto_aws):
    s3 = moto_aws.client("s3")
    s3.create_bucket(Bucket="lake", CreateBucketConfiguration={"LocationConstraint": REGION})
    firehose = moto_aws.client("firehose")
    create_capture_stream(firehose, "capture", "lake")
    sink = FirehoseCaptureSink(firehose, "capture")
    sink.write([{"request_id": f"r{i}", "score": i / 1000} for i in range(1_234)])
    sink.flush()
    sink.flush()  # nothing left: a second flush sends nothing
    lines = []
    for item in s3.list_objects_v2(Bucket="lake", Prefix="capture/").get("Contents", []):
        lines.extend(s3.get_object(Bucket="lake", Key=item["Key"])["Body"].read().decode().splitlines())
    assert sorted(json.loads(line)["request_id"] for line in lines) == sorted(f"r{i}" for i in range(1_234))


def test_firehose_resends_only_failed_records_and_reports_loss():
    client = boto3.client("firehose", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    sink = FirehoseCaptureSink(client, "capture", max_attempts=2, base_delay_s=0)
    with Stubber(client) as stub:
        stub.add_response(
            "put_record_batch",
            {
                "FailedPutCount": 1,
                "RequestResponses": [{"RecordId": "a"}, {"ErrorCode": "ServiceUnavailable"}],
            },
            {"DeliveryStreamName": "capture", "Records": [{"Data": b'{"n":1}\n'}, {"Data": b'{"n":2}\n'}]},
        )
        stub.add_response(
            "put_record_batch",
            {"FailedPutCount": 0, "RequestResponses": [{"RecordId": "b"}]},
            {"DeliveryStreamName": "capture", "Records": [{"Data": b'{"n":2}\n'}]},
        )
        sink.write([{"n": 1}, {"n": 2}])
        sink.flush()
        stub.assert_no_pending_responses()
    failing = {"FailedPutCount": 1, "RequestResponses": [{"ErrorCode": "ServiceUnavailable"}]}
    with Stubber(client) as stub:
        stub.add_response("put_record_batch", failing)
        stub.add_response("put_record_batch", failing)
        sink.write([{"n": 3}])
        with pytest.raises(CaptureLost, match="1 capture records could not be delivered"):
            sink.flush()


def test_emf_metrics_are_printed_as_embedded_metric_format(capsys):
    sink = EmfMetricsSink("shipml", "fraud", default_dimensions={"model": "fraud"})
    sink.put("Latency", 3.0, unit="Milliseconds", dimensions={"model": "fraud"})
    sink.put("Predictions", 2, unit="Count")
    sink.flush()
    document = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert document["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "shipml"
    assert document["Latency"] == [3.0] and document["Predictions"] == [2.0] and document["model"] == "fraud"


def _documents(capsys) -> list[dict]:
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    documents = [json.loads(line) for line in lines]
    for document in documents:
        assert isinstance(document["_aws"].pop("Timestamp"), int)
    return documents


def test_emf_documents_are_what_powertools_prints_for_the_same_points(capsys):
    from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

    sink = EmfMetricsSink("shipml", "fraud", default_dimensions={"model": "fraud"})
    sink.put("Latency", 3.5, unit="Milliseconds", dimensions={"model": "fraud"})
    sink.put("Predictions", 2, unit="Count")
    sink.put("Latency", 1.25, unit="Milliseconds")
    sink.put("Ratio", 0.5)
    sink.put("Shed", 1, unit="Count", dimensions={"model": "fraud", "reason": "quota"})
    sink.flush()
    ours = _documents(capsys)

    expected = []
    for dims, points in (
        (
            {"model": "fraud"},
            [
                ("Latency", "Milliseconds", 3.5),
                ("Predictions", "Count", 2),
                ("Latency", "Milliseconds", 1.25),
                ("Ratio", "None", 0.5),
            ],
        ),
        ({"model": "fraud", "reason": "quota"}, [("Shed", "Count", 1)]),
    ):
        provider = AmazonCloudWatchEMFProvider(namespace="shipml", service="fraud", default_dimensions=dims)
        for name, unit, value in points:
            provider.add_metric(name=name, unit="NoUnit" if unit == "None" else unit, value=value)
        provider.flush_metrics()
    expected = _documents(capsys)
    assert ours == expected
    assert ours[0]["Latency"] == [3.5, 1.25] and ours[1]["reason"] == "quota"

    sink.flush()  # nothing buffered: nothing printed
    assert _documents(capsys) == []


def test_emf_documents_keep_to_the_limit_of_values_per_metric(capsys):
    sink = EmfMetricsSink("shipml", "fraud")
    for i in range(250):
        sink.put("Latency", float(i), unit="Milliseconds")
    sink.put("Predictions", 1, unit="Count")
    sink.flush()
    documents = _documents(capsys)
    assert [len(d["Latency"]) for d in documents] == [100, 100, 50]
    assert sum((d["Latency"] for d in documents), []) == [float(i) for i in range(250)]
    # The second and third documents hold Latency only, and list only it.
    assert [[m["Name"] for m in d["_aws"]["CloudWatchMetrics"][0]["Metrics"]] for d in documents] == [
        ["Latency", "Predictions"],
        ["Latency"],
        ["Latency"],
    ]
    assert "Predictions" not in documents[1]


def test_emf_refuses_an_unknown_unit():
    with pytest.raises(ValueError, match="unit 'Parsecs'"):
        EmfMetricsSink("shipml", "fraud").put("Distance", 1, unit="Parsecs")


def test_sns_notifier(moto_aws):
    sns, sqs = moto_aws.client("sns"), moto_aws.client("sqs")
    topic = sns.create_topic(Name="alerts")["TopicArn"]
    queue = sqs.create_queue(QueueName="inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    SnsNotifier(sns, topic).notify("model promoted", "fraud:2 is live", severity="warning")
    (message,) = sqs.receive_message(QueueUrl=queue)["Messages"]
    envelope = json.loads(message["Body"])
    assert envelope["Subject"] == "[warning] model promoted" and envelope["Message"] == "fraud:2 is live"
    assert envelope["MessageAttributes"]["severity"]["Value"] == "warning"
