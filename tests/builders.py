"""Builders for Lambda events and contexts, in one place for every handler test."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, field
from typing import Any


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
