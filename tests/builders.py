"""Builders for Lambda events and contexts, in one place for every handler test."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stacks.lambda_bundle import BundleReport


@dataclass
class LambdaContext:
    function_name: str = "shipml-inference"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:shipml-inference:live"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 10_000


def _body(body: Any) -> tuple[str | None, bool]:
    if body is None:
        return None, False
    if isinstance(body, bytes):
        return base64.b64encode(body).decode(), True
    return (body if isinstance(body, str) else json.dumps(body)), False


def rest_v1_event(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> dict:
    """An API Gateway REST API (payload format 1.0) proxy event."""
    text, encoded = _body(body)
    headers = {"content-type": "application/json", **(headers or {})}
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "path": f"/prod{path}",
            "stage": "prod",
            "requestId": f"rest-{uuid.uuid4()}",
            "identity": {"sourceIp": "127.0.0.1", "userAgent": "pytest"},
        },
        "body": text,
        "isBase64Encoded": encoded,
    }


def http_v2_event(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> dict:
    """An API Gateway HTTP API (payload format 2.0) event."""
    text, encoded = _body(body)
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json", **(headers or {})},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "api",
            "domainName": "api.example.com",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "pytest",
            },
            "requestId": f"http-{uuid.uuid4()}",
            "routeKey": "$default",
            "stage": "$default",
        },
        "body": text,
        "isBase64Encoded": encoded,
    }


# --- stream events: Kinesis Data Streams and Kafka (MSK, self-managed) -------------------------

STREAM_ARN = "arn:aws:kinesis:eu-west-1:123456789012:stream/shipml-transactions"
MSK_CLUSTER_ARN = "arn:aws:kafka:eu-west-1:123456789012:cluster/shipml/2f7d6e8c-1a2b-3c4d-5e6f-abcdef012345-1"


def _stream_data(payload: Any) -> str | None:
    """base64 text for a stream record: a dict is sent as JSON, bytes as they are; None for no data."""
    if payload is None:
        return None
    if isinstance(payload, dict | list):
        payload = json.dumps(payload).encode()
    elif isinstance(payload, str):
        payload = payload.encode()
    return base64.b64encode(payload).decode()


@dataclass(frozen=True)
class RawData:
    """A record whose data is put into the event exactly as given (e.g. text that is not base64)."""

    text: str


def kinesis_event(
    payloads: list[Any],
    *,
    shard: str = "shardId-000000000000",
    first_sequence: int = 49_590_338_271_490_256_608,
) -> dict:
    """A Kinesis Data Streams event for a Lambda event source mapping: one record per payload, in order."""
    records = []
    for index, payload in enumerate(payloads):
        sequence = str(first_sequence + index)
        data = payload.text if isinstance(payload, RawData) else _stream_data(payload)
        records.append(
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": f"pk-{index}",
                    "sequenceNumber": sequence,
                    "data": data,
                    "approximateArrivalTimestamp": 1_768_000_000.0 + index,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"{shard}:{sequence}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::123456789012:role/shipml-stream",
                "awsRegion": "eu-west-1",
                "eventSourceARN": STREAM_ARN,
            }
        )
    return {"Records": records}


def kafka_event(
    payloads: list[Any],
    *,
    topic: str = "transactions",
    partitions: int = 1,
    first_offset: int = 100,
    self_managed: bool = False,
) -> dict:
    """An Amazon MSK (or self-managed Kafka) event: payloads dealt round-robin over the partitions,
    offsets counting up within each partition."""
    batches: dict[str, list[dict]] = {}
    for index, payload in enumerate(payloads):
        partition = index % partitions
        batch = batches.setdefault(f"{topic}-{partition}", [])
        value = payload.text if isinstance(payload, RawData) else _stream_data(payload)
        batch.append(
            {
                "topic": topic,
                "partition": partition,
                "offset": first_offset + len(batch),
                "timestamp": 1_768_000_000_000 + index,
                "timestampType": "CREATE_TIME",
                "key": base64.b64encode(f"key-{index}".encode()).decode(),
                "value": value,
                "headers": [{"source": list(b"pytest")}],
            }
        )
    event: dict[str, Any] = {
        "eventSource": "SelfManagedKafka" if self_managed else "aws:kafka",
        "bootstrapServers": "b-1.shipml.kafka.eu-west-1.amazonaws.com:9098",
        "records": batches,
    }
    if not self_managed:
        event["eventSourceArn"] = MSK_CLUSTER_ARN
    return event


# --- Lambda bundles under a real CPython 3.12: built as synth builds them, run isolated ----------------
# (imports inside the functions: the event builders above are used by tests that need none of this)

LAMBDA_ARCHITECTURES = {"x86_64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}


def python312() -> Path | None:
    """CPython 3.12 for running a bundle as Lambda does: $SHIPML_PYTHON312, pyenv's 3.12.x, or python3.12
    on PATH; None if there is none."""
    import os
    import shutil

    candidates = [os.environ.get("SHIPML_PYTHON312", "")]
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += sorted(str(p) for p in pyenv_root.glob("versions/3.12*/bin/python3.12"))
    candidates.append(shutil.which("python3.12") or "")
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


def host_lambda_architecture() -> str | None:
    """This machine's Lambda architecture ("x86_64" or "arm64"), the one a bundle built here can run on."""
    import platform

    return LAMBDA_ARCHITECTURES.get(platform.machine())


def bundle_test_marks() -> list:
    """The `pytestmark` of a bundle test module: slow, and skipped without CPython 3.12 or an architecture."""
    import platform

    import pytest

    return [
        pytest.mark.slow,
        pytest.mark.skipif(
            python312() is None, reason="needs CPython 3.12 (pyenv install 3.12, or SHIPML_PYTHON312)"
        ),
        pytest.mark.skipif(
            host_lambda_architecture() is None, reason=f"no Lambda architecture for {platform.machine()}"
        ),
    ]


def build_host_bundle(out: Path, **spec: Any) -> BundleReport:
    """Build a bundle for this machine's architecture into `out` with the code synth runs
    (`stacks.lambda_bundle.build_bundle`); `spec` names what differs from the serving bundle."""
    import sys

    from stacks import lambda_bundle

    architecture = host_lambda_architecture()
    assert architecture is not None
    spec = {"contract_path": "examples/fraud/contract.yaml", "budget_mb": 150, **spec}
    repo_root = Path(__file__).resolve().parents[1]
    report = lambda_bundle.build_bundle(
        lambda_bundle.BundleSpec(repo_root=repo_root, architecture=architecture, **spec), out
    )
    print(report.summary(), file=sys.stderr)
    return report


def run_in_bundle(
    bundle: Path, driver: str, *args: str, env: dict[str, str] | None = None, timeout: int = 120
) -> dict[str, Any]:
    """Run `driver` (Python source; argv = bundle, *args) in an isolated CPython 3.12 (`-I -S`: no
    site-packages, no PYTHON* variables) with the bundle as its working directory, as Lambda's /var/task;
    the driver puts the bundle on sys.path and prints one JSON line last, which is answered.
    `env=None` passes this process's environment on."""
    python = python312()
    assert python is not None
    command = [str(python), "-I", "-S", "-c", driver, str(bundle), *args]
    failed = f"the driver failed under {python}"
    return _last_json_line(command, cwd=bundle, env=env, timeout=timeout, failed=failed)


def run_fresh_python(script: str, *args: str, env: dict[str, str] | None = None, timeout: int = 120) -> Any:
    """Run `script` (Python source; argv = *args) in a fresh interpreter of this environment, from
    the repository root, and answer the JSON of the last line it prints. `env=None` passes this
    process's environment on."""
    import sys

    command = [sys.executable, "-c", script, *args]
    root = Path(__file__).resolve().parent.parent
    return _last_json_line(command, cwd=root, env=env, timeout=timeout, failed="the script failed")


def _last_json_line(
    command: list[str], *, cwd: Path, env: dict[str, str] | None, timeout: int, failed: str
) -> Any:
    import subprocess

    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{failed}:\n{done.stderr[-6000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def aws_settings(contract: Path | str, **overrides: Any) -> Any:
    """Settings of the aws backend for the example model (bucket `artifacts`, table `online`,
    stream `capture`, version 1), with `overrides`."""
    from shipml.settings import Settings

    values = {
        "backend": "aws",
        "contract": contract,
        "model": "fraud",
        "model_version": "1",
        "artifact_bucket": "artifacts",
        "online_table": "online",
        "capture_stream": "capture",
    }
    return Settings(**(values | overrides))


def create_online_table(dynamodb: Any, name: str) -> None:
    """The online-feature table's key schema (as `stacks/online_features_construct.py` declares it)
    in a moto or Stubber-backed DynamoDB client."""
    from shipml.backends.aws.online import PARTITION_KEY, SORT_KEY

    dynamodb.create_table(
        TableName=name,
        KeySchema=[
            {"AttributeName": PARTITION_KEY, "KeyType": "HASH"},
            {"AttributeName": SORT_KEY, "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": PARTITION_KEY, "AttributeType": "S"},
            {"AttributeName": SORT_KEY, "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )


def create_capture_stream(firehose: Any, name: str, bucket: str) -> None:
    """A Firehose delivery stream into `bucket` under `capture/` (the capture construct's prefix)
    in a moto-backed Firehose client."""
    firehose.create_delivery_stream(
        DeliveryStreamName=name,
        ExtendedS3DestinationConfiguration={
            "RoleARN": "arn:aws:iam::123456789012:role/f",
            "BucketARN": f"arn:aws:s3:::{bucket}",
            "Prefix": "capture/",
        },
    )
