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
