"""The inference handler on the aws backend, end to end against moto: S3 artifact pinned by
version, DynamoDB online features, Firehose capture, the live SSM pointer, the PII hash key."""

from __future__ import annotations

import json

import pytest

from functions.inference import handler as module
from shipml.artifact import pack
from shipml.backends.aws.online import DynamoDbOnlineStore
from shipml.contract import Masker, load_contract
from tests.builders import (
    LambdaContext,
    create_capture_stream,
    create_online_table,
    http_v2_event,
    rest_v1_event,
    run_fresh_python,
)
from tests.conftest import CONTRACT_PATH

REGION = "eu-west-1"
CONTRACT = load_contract(CONTRACT_PATH)
CANARY_CARD = "4000111122223333"


@pytest.fixture
def aws(moto_aws, monkeypatch, tmp_path, make_artifact, contract_path):
    session = moto_aws
    s3 = session.client("s3")
    s3.create_bucket(Bucket="artifacts", CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_object(Bucket="artifacts", Key="models/fraud/3/model.tar.gz", Body=pack(make_artifact()))
    dynamodb = session.client("dynamodb")
    create_online_table(dynamodb, "online")
    DynamoDbOnlineStore(dynamodb, "online").put_many(
        "fraud",
        {"C00000042": {"txn_count_24h": 7, "mean_amount_30d": 42.5, "days_since_first_seen": 900}},
    )
    s3.create_bucket(Bucket="lake", CreateBucketConfiguration={"LocationConstraint": REGION})
    create_capture_stream(session.client("firehose"), "capture", "lake")
    session.client("ssm").put_parameter(Name="/shipml/fraud/dev/live-model-version", Value="3", Type="String")
    secret = session.client("secretsmanager").create_secret(Name="pii-key", SecretString="k" * 32)["ARN"]
    for name, value in {
        "SHIPML_BACKEND": "aws",
        "SHIPML_MODEL": "fraud",
        "SHIPML_CONTRACT": str(contract_path),
        "SHIPML_ARTIFACT_BUCKET": "artifacts",
        "SHIPML_ONLINE_TABLE": "online",
        "SHIPML_CAPTURE_STREAM": "capture",
        "SHIPML_LIVE_PARAMETER": "/shipml/fraud/dev/live-model-version",
        "SHIPML_HASH_KEY_SECRET": secret,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(module, "_runtime", {})
    yield session


def captured(session) -> list[dict]:
    s3 = session.client("s3")
    lines = []
    for item in s3.list_objects_v2(Bucket="lake", Prefix="capture/").get("Contents", []):
        lines += s3.get_object(Bucket="lake", Key=item["Key"])["Body"].read().decode().splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize("version", ["3", "live"])
@pytest.mark.parametrize("event_builder", [rest_v1_event, http_v2_event], ids=["rest-v1", "http-v2"])
def test_predict_on_aws(aws, monkeypatch, request_body, version, event_builder):
    monkeypatch.setenv("SHIPML_MODEL_VERSION", version)
    known = handler_call(event_builder, request_body(card_number=CANARY_CARD))
    unknown = handler_call(event_builder, request_body(customer_id="C00000001"))
    assert known["statusCode"] == 200, known["body"]
    assert json.loads(known["body"])["model_version"] == "fraud:3"
    assert json.loads(known["body"])["fallbacks"] == []
    assert json.loads(unknown["body"])["fallbacks"] == [
        "txn_count_24h",
        "mean_amount_30d",
        "days_since_first_seen",
    ]
    records = captured(aws)  # flushed to Firehose at the end of each invocation
    assert len(records) == 2
    (found,) = [r for r in records if not r["fallbacks"]]
    assert found["txn_count_24h"] == 7 and found["model_version"] == "fraud:3"
    assert found["card_number"] == "************3333"
    assert CANARY_CARD not in json.dumps(records)
    # The customer is hashed with the key from Secrets Manager, not the settings' default key.
    assert found["customer_id"] == Masker(CONTRACT, hash_key=b"k" * 32).hash_value("C00000042")


def handler_call(event_builder, body):
    return module.handler(event_builder("POST", "/predict", body), LambdaContext())


def test_no_model_deployed_yet_answers_503(aws, monkeypatch, request_body):
    monkeypatch.setenv("SHIPML_MODEL_VERSION", "0")
    response = handler_call(rest_v1_event, request_body())
    assert response["statusCode"] == 503
    health = module.handler(rest_v1_event("GET", "/health"), LambdaContext())
    assert json.loads(health["body"])["model_error"] == "no model version is deployed yet"


def test_a_missing_artifact_is_reported_not_crashed_on(aws, monkeypatch, request_body):
    monkeypatch.setenv("SHIPML_MODEL_VERSION", "9")
    response = handler_call(rest_v1_event, request_body())
    assert response["statusCode"] == 503
    assert "fraud:9 refused" in json.loads(response["body"])["message"]


COLD_START_IMPORTS = """
import io, json, sys
from pathlib import Path
from shipml.serving.factory import aws_context
from tests.builders import aws_settings

artifact, contract, cache = sys.argv[1:4]

class Clients:
    # botocore's create_client, answering from memory: the artifact, no items, accepted records, a key
    def create_client(self, service, **options):
        return self
    def get_object(self, Bucket, Key):
        return {"Body": io.BytesIO(Path(artifact).read_bytes())}
    def batch_get_item(self, RequestItems):
        return {"Responses": {}, "UnprocessedKeys": {}}
    def put_record_batch(self, DeliveryStreamName, Records):
        return {"FailedPutCount": 0, "RequestResponses": [{"RecordId": "1"} for _ in Records]}
    def get_secret_value(self, SecretId):
        return {"SecretString": "k" * 32}

settings = aws_settings(contract, model_version="3", hash_key_secret="pii-key")
context = aws_context(settings, session=Clients(), cache_dir=Path(cache))
print(json.dumps({
    "model": context.holder.status().version,
    "imported": sorted(
        m for m in ("boto3", "s3transfer", "aws_lambda_powertools.utilities.parameters") if m in sys.modules
    ),
}))
"""


def test_the_cold_start_imports_neither_boto3_nor_powertools_parameters(
    tmp_path, make_artifact, contract_path
):
    """botocore's clients are all the serving path needs (boto3 would add ~20 ms to every cold
    start); the PII hash key is read with the same clients, not through Powertools' parameters."""
    packed = tmp_path / "model.tar.gz"
    packed.write_bytes(pack(make_artifact()))
    answer = run_fresh_python(COLD_START_IMPORTS, str(packed), str(contract_path), str(tmp_path / "cache"))
    assert answer == {"model": "fraud:3", "imported": []}
