#!/usr/bin/env python3
"""Smoke test of a deployed shipml stack: the API answers signed calls and refuses unsigned ones.

    python scripts/smoke_test.py --stack-name shipml-fraud-dev --region eu-west-1 \\
        [--requests examples/fraud/requests.jsonl] [--allow-no-model]

It reads the API's URL from the stack's CloudFormation outputs and authenticates the way the stack
does: SigV4 (`execute-api`, the caller's AWS credentials) by default, or the API key when the stack
has one (its key id is an output; the value is read with apigateway:GetApiKey). Then it checks that

1. a call without credentials is refused at the edge (403);
2. GET /health answers 200 with a loaded model;
3. POST /predict answers 200 with a score and the model version, for every request in the file.

`--allow-no-model` accepts a stack that has no model yet (the first deploy, before the pipeline
has promoted one): /health and /predict must then answer 503 saying so, never anything else.
Exits 0 when every check passes, 1 otherwise, printing one line per check.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

# Names of the stack outputs (stacks/constants.py: OUTPUT_API_URL, OUTPUT_API_KEY_ID); repeated here so
# that the script runs in a user's pipeline with boto3 alone.
OUTPUT_API_URL = "ServingApiUrl"
OUTPUT_API_KEY_ID = "ServingApiKeyId"
DEFAULT_REQUESTS = Path("examples/fraud/requests.jsonl")
TIMEOUT_S = 30.0


class SmokeTestError(Exception):
    """The stack cannot be smoke-tested (no such stack, no API output, unreadable requests)."""


@dataclass(frozen=True)
class Endpoint:
    """Where the API is and how to authenticate: SigV4 unless the stack has an API key."""

    url: str
    region: str
    api_key: str | None = None


@dataclass(frozen=True)
class Response:
    status: int
    body: Any


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


def find_endpoint(stack_name: str, region: str, *, cloudformation: Any, apigateway: Any) -> Endpoint:
    """Read the API URL (and the API key, if the stack has one) from the stack's outputs."""
    try:
        (stack,) = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except cloudformation.exceptions.ClientError as error:
        raise SmokeTestError(f"stack {stack_name} not found in {region}: {error}") from error
    outputs = {output["OutputKey"]: output["OutputValue"] for output in stack.get("Outputs", [])}
    if OUTPUT_API_URL not in outputs:
        raise SmokeTestError(f"stack {stack_name} has no {OUTPUT_API_URL} output")
    api_key = None
    if OUTPUT_API_KEY_ID in outputs:
        api_key = apigateway.get_api_key(apiKey=outputs[OUTPUT_API_KEY_ID], includeValue=True)["value"]
    url = outputs[OUTPUT_API_URL]
    return Endpoint(url=url if url.endswith("/") else f"{url}/", region=region, api_key=api_key)


def read_requests(path: Path) -> list[dict[str, Any]]:
    """The request bodies, one JSON object a line (blank lines skipped)."""
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise SmokeTestError(f"cannot read {path}: {error}") from error
    bodies = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                bodies.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise SmokeTestError(f"{path}:{number} is not JSON: {error}") from error
    if not bodies:
        raise SmokeTestError(f"{path} holds no requests")
    return bodies


Send = Callable[[str, str, bytes | None, bool], Response]


def http_sender(endpoint: Endpoint, credentials: Any) -> Send:
    """A function that sends one request to the API, authenticated unless `authenticate` is False.

    `credentials` are botocore credentials (access key, secret key, token) for SigV4.
    """

    def send(method: str, path: str, body: bytes | None, authenticate: bool) -> Response:
        url = endpoint.url + path.lstrip("/")
        headers = {"content-type": "application/json", "accept": "application/json"}
        if authenticate and endpoint.api_key is not None:
            headers["x-api-key"] = endpoint.api_key
        elif authenticate:
            if credentials is None:
                raise SmokeTestError("no AWS credentials to sign the request with (SigV4)")
            signed = AWSRequest(method=method, url=url, data=body, headers=headers)
            SigV4Auth(credentials, "execute-api", endpoint.region).add_auth(signed)
            headers = dict(signed.headers.items())
        request = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as reply:
                return Response(reply.status, _json(reply.read()))
        except urllib.error.HTTPError as error:
            return Response(error.code, _json(error.read()))

    return send


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except json.JSONDecodeError:
        return raw.decode(errors="replace")[:200]


def run_checks(send: Send, requests: Sequence[dict[str, Any]], *, allow_no_model: bool) -> list[Check]:
    """Unsigned call refused, /health, then /predict for every request; one Check each."""
    checks = []
    unsigned = send("GET", "health", None, False)
    checks.append(Check("unauthenticated call refused", unsigned.status == 403, f"HTTP {unsigned.status}"))

    health = send("GET", "health", None, True)
    body = health.body if isinstance(health.body, dict) else {}
    no_model = health.status == 503 and body.get("model_loaded") is False
    if health.status == 200 and body.get("model_loaded") is True:
        checks.append(Check("health", True, f"model version {body.get('model_version')}"))
    elif no_model and allow_no_model:
        checks.append(Check("health", True, "no model deployed yet (allowed)"))
    else:
        checks.append(Check("health", False, f"HTTP {health.status}: {health.body}"))

    for number, request in enumerate(requests, start=1):
        reply = send("POST", "predict", json.dumps(request).encode(), True)
        answer = reply.body if isinstance(reply.body, dict) else {}
        name = f"predict #{number}"
        if reply.status == 200 and "model_version" in answer:
            checks.append(Check(name, True, f"model version {answer['model_version']}"))
        elif no_model and allow_no_model and reply.status == 503 and answer.get("error") == "unavailable":
            checks.append(Check(name, True, "503: no model yet (allowed)"))
        else:
            checks.append(Check(name, False, f"HTTP {reply.status}: {reply.body}"))
    return checks


def main(argv: Sequence[str] | None = None, *, session: Any = None) -> int:
    """Run the smoke test; `session` (a boto3 Session) is for tests."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack-name", required=True)
    parser.add_argument("--region", required=True)
    parser.add_argument("--requests", type=Path, default=DEFAULT_REQUESTS)
    parser.add_argument("--allow-no-model", action="store_true")
    args = parser.parse_args(argv)

    session = session or boto3.Session(region_name=args.region)
    try:
        endpoint = find_endpoint(
            args.stack_name,
            args.region,
            cloudformation=session.client("cloudformation", region_name=args.region),
            apigateway=session.client("apigateway", region_name=args.region),
        )
        requests = read_requests(args.requests)
        credentials = session.get_credentials()
        send = http_sender(endpoint, credentials.get_frozen_credentials() if credentials else None)
        checks = run_checks(send, requests, allow_no_model=args.allow_no_model)
    except (SmokeTestError, OSError) as error:
        print(f"smoke test failed: {error}", file=sys.stderr)
        return 1
    auth = "API key" if endpoint.api_key else "SigV4"
    print(f"smoke test of {args.stack_name} at {endpoint.url} ({auth})")
    for check in checks:
        print(f"  {'ok  ' if check.passed else 'FAIL'} {check.name}: {check.detail}")
    failed = sum(not check.passed for check in checks)
    print(f"{len(checks) - failed}/{len(checks)} checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
