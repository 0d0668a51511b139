"""Firehose down: what happens to capture records, and to the answer, on Lambda.

`FirehoseCaptureSink.flush` sends every batch even when one fails, retries the failed records a
bounded number of times and puts those still undelivered back at the front of its buffer (beyond
`max_buffered` the oldest are logged, masked, as `capture_dead_letter`), then raises `CaptureLost`;
the handler's `finally` catches it, logs it and counts `CaptureDeliveryFailed`. So while Firehose
is down the answer stands (no Lambda error, no 502, no retried prediction, no false rollback), and
the records go out with the next flush that reaches Firehose. The tests below pin that.
"""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.stub import Stubber

from functions.inference import handler as module
from shipml.artifact import pack
from shipml.backends.aws.sinks import CaptureLost, FirehoseCaptureSink
from tests.builders import LambdaContext, create_capture_stream, create_online_table, rest_v1_event

REGION = "eu-west-1"


def _firehose():
    return boto3.client(
        "firehose", region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
    )


def _lines(call_params: dict) -> list[dict]:
    return [json.loads(r["Data"]) for r in call_params["Records"]]


def test_a_partly_failing_batch_is_retried_and_every_record_delivered_once():
    """Firehose throttling some records (FailedPutCount): only those are resent, in order."""
    client = _firehose()
    sink = FirehoseCaptureSink(client, "capture", max_attempts=4, base_delay_s=0)
    delivered: list[dict] = []
    client.meta.events.register(
        "provide-client-params.firehose.PutRecordBatch", lambda params, **_: delivered.append(params)
    )
    throttled = {"ErrorCode": "ServiceUnavailableException", "ErrorMessage": "Slow down."}
    with Stubber(client) as stub:
        stub.add_response(
            "put_record_batch",
            {"FailedPutCount": 2, "RequestResponses": [throttled, {"RecordId": "a"}, throttled]},
        )
        stub.add_response(
            "put_record_batch",
            {"FailedPutCount": 0, "RequestResponses": [{"RecordId": "b"}, {"RecordId": "c"}]},
        )
        sink.write([{"n": 1}, {"n": 2}, {"n": 3}])
        sink.flush()
        stub.assert_no_pending_responses()
    assert [_lines(p) for p in delivered] == [[{"n": 1}, {"n": 2}, {"n": 3}], [{"n": 1}, {"n": 3}]]


def test_firehose_down_past_the_retries_is_reported_as_capture_lost():
    """What the sink does today: a bounded number of attempts, then CaptureLost naming the count."""
    client = _firehose()
    sink = FirehoseCaptureSink(client, "capture", max_attempts=3, base_delay_s=0)
    failing = {"FailedPutCount": 2, "RequestResponses": [{"ErrorCode": "ServiceUnavailableException"}] * 2}
    with Stubber(client) as stub:
        for _ in range(3):
            stub.add_response("put_record_batch", failing)
        sink.write([{"n": 1}, {"n": 2}])
        with pytest.raises(CaptureLost, match="2 capture records could not be delivered"):
            sink.flush()
        stub.assert_no_pending_responses()


@pytest.mark.parametrize("outage", ["failed_records", "service_unavailable"])
def test_records_firehose_refused_stay_buffered_and_go_out_with_the_next_flush(outage: str):
    client = _firehose()
    sink = FirehoseCaptureSink(client, "capture", max_attempts=2, base_delay_s=0)
    sent: list[dict] = []
    client.meta.events.register(
        "provide-client-params.firehose.PutRecordBatch", lambda params, **_: sent.append(params)
    )
    with Stubber(client) as stub:
        for _ in range(2):
            if outage == "failed_records":
                stub.add_response(
                    "put_record_batch",
                    {"FailedPutCount": 1, "RequestResponses": [{"ErrorCode": "ServiceUnavailableException"}]},
                )
            else:
                stub.add_client_error(
                    "put_record_batch", service_error_code="ServiceUnavailableException", http_status_code=503
                )
        sink.write([{"n": 1}])
        with pytest.raises(CaptureLost):
            sink.flush()  # Firehose down: reported...
        stub.add_response(
            "put_record_batch",
            {"FailedPutCount": 0, "RequestResponses": [{"RecordId": "a"}, {"RecordId": "b"}]},
        )
        sink.write([{"n": 2}])
        sink.flush()  # ...and back: the record from before goes out first, then the new one
        stub.assert_no_pending_responses()
    assert _lines(sent[-1]) == [{"n": 1}, {"n": 2}]


def test_beyond_max_buffered_the_oldest_records_are_logged_as_dead_letters(caplog):
    client = _firehose()
    sink = FirehoseCaptureSink(client, "capture", max_attempts=1, base_delay_s=0, max_buffered=1)
    sent: list[dict] = []
    client.meta.events.register(
        "provide-client-params.firehose.PutRecordBatch", lambda params, **_: sent.append(params)
    )
    with Stubber(client) as stub, caplog.at_level("ERROR", logger="shipml.capture"):
        stub.add_client_error(
            "put_record_batch", service_error_code="ServiceUnavailableException", http_status_code=503
        )
        sink.write([{"n": 1}, {"n": 2}, {"n": 3}])
        with pytest.raises(CaptureLost):
            sink.flush()
        stub.add_response("put_record_batch", {"FailedPutCount": 0, "RequestResponses": [{"RecordId": "a"}]})
        sink.flush()
        stub.assert_no_pending_responses()
    dead = [r.getMessage() for r in caplog.records if r.getMessage().startswith("capture_dead_letter")]
    assert dead == ['capture_dead_letter {"n":1}', 'capture_dead_letter {"n":2}']
    assert _lines(sent[-1]) == [{"n": 3}]  # the newest one was kept and delivered


# ------------------------------------------------------------------------ the handler on Lambda


@pytest.fixture
def lambda_on_moto(moto_aws, monkeypatch, make_artifact, contract_path):
    """The inference handler on the aws backend (moto), cold-started, Firehose reachable."""
    session = moto_aws
    s3 = session.client("s3")
    for bucket in ("artifacts", "lake"):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_object(Bucket="artifacts", Key="models/fraud/3/model.tar.gz", Body=pack(make_artifact()))
    create_online_table(session.client("dynamodb"), "online")
    create_capture_stream(session.client("firehose"), "capture", "lake")
    for name, value in {
        "SHIPML_BACKEND": "aws",
        "SHIPML_MODEL": "fraud",
        "SHIPML_MODEL_VERSION": "3",
        "SHIPML_CONTRACT": str(contract_path),
        "SHIPML_ARTIFACT_BUCKET": "artifacts",
        "SHIPML_ONLINE_TABLE": "online",
        "SHIPML_CAPTURE_STREAM": "capture",
        "SHIPML_HASH_KEY": "k" * 32,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(module, "_runtime", {})
    assert module.handler(rest_v1_event("GET", "/ping"), LambdaContext())["statusCode"] == 200
    yield session


def _captured(session) -> list[dict]:
    s3 = session.client("s3")
    lines: list[str] = []
    for item in s3.list_objects_v2(Bucket="lake", Prefix="capture/").get("Contents", []):
        lines += s3.get_object(Bucket="lake", Key=item["Key"])["Body"].read().decode().splitlines()
    return [json.loads(line) for line in lines]


def test_firehose_down_on_lambda_the_answer_stands_and_no_record_is_lost(
    lambda_on_moto, request_body, capsys
):
    capture = module._runtime["ctx"].capture
    capture.base_delay_s = 0
    with Stubber(capture.client) as firehose_down:
        for _ in range(capture.max_attempts):
            firehose_down.add_client_error(
                "put_record_batch", service_error_code="ServiceUnavailableException", http_status_code=503
            )
        capsys.readouterr()
        during = module.handler(
            rest_v1_event("POST", "/predict", request_body(transaction_id="T1")), LambdaContext()
        )
    emitted = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith('{"_aws"')]
    assert [d["CaptureDeliveryFailed"] for d in emitted if "CaptureDeliveryFailed" in d] == [[1.0]]
    after = module.handler(
        rest_v1_event("POST", "/predict", request_body(transaction_id="T2")), LambdaContext()
    )

    assert during["statusCode"] == 200 and after["statusCode"] == 200
    assert sorted(r["transaction_id"] for r in _captured(lambda_on_moto)) == ["T1", "T2"]


def test_firehose_up_on_lambda_every_answer_is_captured_once(lambda_on_moto, request_body):
    """The counterpart: with Firehose reachable, count in = count out."""
    ids = [f"T{i}" for i in range(4)]
    answers = [
        module.handler(rest_v1_event("POST", "/predict", request_body(transaction_id=i)), LambdaContext())
        for i in ids
    ]

    assert [a["statusCode"] for a in answers] == [200] * 4
    assert sorted(r["transaction_id"] for r in _captured(lambda_on_moto)) == ids
