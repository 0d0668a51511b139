"""The health check of the serving API: GET /health, signed with SigV4 when the API uses IAM, or
with a key of the usage plan when it uses API keys.

Run every few minutes by a scheduled Lambda function (`functions/monitor/health.py`); publishes
`HealthCheckSuccess` (1 or 0) and `HealthCheckLatency`, which the health alarm watches. Standard
library and botocore only.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from shipml.backends.ports import MetricsSink
from shipml.monitoring.publish import HEALTH_CHECK_LATENCY, HEALTH_CHECK_SUCCESS, MODEL, MetricPoint, publish

#: Sends (method, url, headers) and answers (status, body); the default uses urllib.
Send = Callable[[str, str, Mapping[str, str]], tuple[int, bytes]]
#: Adds authentication headers to (method, url, headers); returns the headers to send.
Sign = Callable[[str, str, Mapping[str, str]], dict[str, str]]


class HealthResult(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    url: str
    healthy: bool
    status: int | None
    latency_ms: float
    model_version: str | None = None
    detail: str = ""


def urllib_send(timeout_s: float) -> Send:
    def send(method: str, url: str, headers: Mapping[str, str]) -> tuple[int, bytes]:
        request = urllib.request.Request(url, method=method, headers=dict(headers))
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - https URL from config
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    return send


def sigv4_signer(credentials: Any, region: str, service: str = "execute-api") -> Sign:
    """A signer for IAM-authorised API Gateway methods, with the caller's credentials (botocore)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    def sign(method: str, url: str, headers: Mapping[str, str]) -> dict[str, str]:
        request = AWSRequest(method=method, url=url, headers=dict(headers))
        SigV4Auth(credentials.get_frozen_credentials(), service, region).add_auth(request)
        return dict(request.headers.items())

    return sign


def api_key_signer(value: str) -> Sign:
    """Adds API Gateway's `x-api-key` header (the API's `api_key` mode)."""

    def sign(method: str, url: str, headers: Mapping[str, str]) -> dict[str, str]:
        return {**headers, "x-api-key": value}

    return sign


def check_health(
    url: str, *, send: Send, sign: Sign | None = None, clock: Callable[[], float] = time.perf_counter
) -> HealthResult:
    """One GET of `url` (the API's /health): healthy on 200 with `"status": "ok"` in the body."""
    headers = {"accept": "application/json"}
    if sign is not None:
        headers = sign("GET", url, headers)
    started = clock()
    try:
        status, body = send("GET", url, headers)
    except (OSError, TimeoutError) as exc:
        return HealthResult(
            url=url,
            healthy=False,
            status=None,
            latency_ms=(clock() - started) * 1000,
            detail=f"no answer: {exc}",
        )
    latency_ms = (clock() - started) * 1000
    try:
        parsed = json.loads(body or b"{}")
    except ValueError:
        parsed = {}
    if not isinstance(parsed, dict):
        parsed = {}
    healthy = status == 200 and parsed.get("status") == "ok"
    detail = (
        ""
        if healthy
        else f"HTTP {status}: {str(parsed.get('status') or parsed.get('message') or body[:200])}"
    )
    return HealthResult(
        url=url,
        healthy=healthy,
        status=status,
        latency_ms=latency_ms,
        model_version=parsed.get("model_version"),
        detail=detail,
    )


def publish_health(result: HealthResult, model: str, sink: MetricsSink) -> int:
    dims = {MODEL: model}
    return publish(
        [
            MetricPoint(HEALTH_CHECK_SUCCESS, float(result.healthy), "Count", dims),
            MetricPoint(HEALTH_CHECK_LATENCY, result.latency_ms, "Milliseconds", dims),
        ],
        sink,
    )
