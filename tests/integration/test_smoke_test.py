"""scripts/smoke_test.py offline: the stack's outputs from moto's CloudFormation, the API a stub HTTP
server on 127.0.0.1 that verifies SigV4 signatures (or the API key) the way API Gateway would."""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from moto import mock_aws

REPO_ROOT = Path(__file__).resolve().parents[2]
REQUESTS = REPO_ROOT / "examples" / "fraud" / "requests.jsonl"
REGION = "eu-west-1"
STACK = "shipml-fraud-dev"
API_KEY_VALUE = "smoke-test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def smoke() -> ModuleType:
    spec = importlib.util.spec_from_file_location("smoke_test", REPO_ROOT / "scripts" / "smoke_test.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the module runs.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


@dataclass
class StubApi:
    """API Gateway in front of the app, as far as the smoke test can tell: auth at the edge, then routes."""

    auth: str = "iam"  # or "api_key"
    model_loaded: bool = True
    predict_status: int = 200
    refuse_unsigned: bool = True
    # The caller's credentials, as IAM knows them: what the signature is checked against.
    credentials: Any = None
    seen: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    def authenticated(self, method: str, path: str, headers: dict[str, str], body: bytes) -> bool:
        if self.auth == "api_key":
            return headers.get("x-api-key") == API_KEY_VALUE
        authorization = headers.get("authorization", "")
        if not authorization.startswith("AWS4-HMAC-SHA256 "):
            return False
        parts = dict(
            item.strip().split("=", 1) for item in authorization[len("AWS4-HMAC-SHA256 ") :].split(",")
        )
        signed_names = parts["SignedHeaders"].split(";")
        if (
            parts["Credential"]
            != f"{self.credentials.access_key}/{headers['x-amz-date'][:8]}/{REGION}/execute-api/aws4_request"
        ):
            return False
        # Recompute the signature from what arrived, as API Gateway does.
        request = AWSRequest(
            method=method,
            url=f"http://{headers['host']}{path}",
            data=body or None,
            headers={name: headers[name] for name in signed_names},
        )
        request.context["timestamp"] = headers["x-amz-date"]
        signer = SigV4Auth(self.credentials, "execute-api", REGION)
        expected = signer.signature(
            signer.string_to_sign(request, signer.canonical_request(request)), request
        )
        return parts["Signature"] == expected

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        if method == "GET" and path == "/v1/health":
            if self.model_loaded:
                return 200, {"status": "ok", "model_loaded": True, "model_version": "3"}
            return 503, {"status": "degraded", "model_loaded": False, "model_version": None}
        if method == "POST" and path == "/v1/predict":
            record = json.loads(body)
            if not self.model_loaded:
                return 503, {"error": "unavailable", "message": "no model is loaded", "errors": []}
            if self.predict_status != 200:
                return self.predict_status, {"error": "internal"}
            return 200, {"transaction_id": record["transaction_id"], "score": 0.12, "model_version": "3"}
        return 403, {"message": "Missing Authentication Token"}


@pytest.fixture
def stub_api() -> Iterator[StubApi]:
    api = StubApi()

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {name.lower(): value for name, value in self.headers.items()}
            authenticated = self.path.startswith("/v1/") and api.authenticated(
                self.command, self.path, headers, body
            )
            api.seen.append({"method": self.command, "path": self.path, "authenticated": authenticated})
            if authenticated or not api.refuse_unsigned:
                status, payload = api.answer(self.command, self.path, body)
            else:
                status, payload = 403, {"message": "Missing Authentication Token"}
            raw = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        do_GET = do_POST = _handle  # noqa: N815

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    api.url = f"http://127.0.0.1:{server.server_address[1]}/v1/"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield api
    server.shutdown()
    server.server_close()


def _deploy_stack(outputs: dict[str, str]) -> None:
    """A stack in moto's CloudFormation with the outputs the shipml stack publishes."""
    template = {
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {name: {"Value": value} for name, value in outputs.items()},
    }
    boto3.client("cloudformation", region_name=REGION).create_stack(
        StackName=STACK, TemplateBody=json.dumps(template)
    )


def _run(smoke: ModuleType, api: StubApi | None, *extra: str) -> int:
    session = boto3.Session(region_name=REGION)
    if api is not None:
        api.credentials = session.get_credentials().get_frozen_credentials()
    return smoke.main(
        ["--stack-name", STACK, "--region", REGION, "--requests", str(REQUESTS), *extra], session=session
    )


@mock_aws
def test_signed_calls_pass_and_the_unsigned_one_is_refused(
    smoke: ModuleType, stub_api: StubApi, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a deployed stack whose API checks SigV4 signatures
    _deploy_stack({smoke.OUTPUT_API_URL: stub_api.url})

    # When the smoke test runs
    code = _run(smoke, stub_api)

    # Then it passes: one unsigned call refused, then /health and one /predict per request, all signed
    output = capsys.readouterr().out
    assert code == 0, output
    requests = len(REQUESTS.read_text().splitlines())
    assert [(s["path"], s["authenticated"]) for s in stub_api.seen] == [
        ("/v1/health", False),
        ("/v1/health", True),
        *[("/v1/predict", True)] * requests,
    ]
    assert f"{requests + 2}/{requests + 2} checks passed" in output
    assert "(SigV4)" in output


@mock_aws
def test_api_key_stacks_are_called_with_the_key_from_api_gateway(
    smoke: ModuleType, stub_api: StubApi
) -> None:
    # Given a stack in api_key mode: the key's id is an output, its value is in API Gateway
    stub_api.auth = "api_key"
    key = boto3.client("apigateway", region_name=REGION).create_api_key(
        name="shipml-fraud-dev serving client", value=API_KEY_VALUE, enabled=True
    )
    _deploy_stack({smoke.OUTPUT_API_URL: stub_api.url, smoke.OUTPUT_API_KEY_ID: key["id"]})

    assert _run(smoke, stub_api) == 0
    assert all(s["authenticated"] for s in stub_api.seen[1:])


@mock_aws
def test_a_failing_prediction_fails_the_smoke_test(
    smoke: ModuleType, stub_api: StubApi, capsys: pytest.CaptureFixture[str]
) -> None:
    stub_api.predict_status = 500
    _deploy_stack({smoke.OUTPUT_API_URL: stub_api.url})

    assert _run(smoke, stub_api) == 1
    assert "FAIL predict #1: HTTP 500" in capsys.readouterr().out


@mock_aws
def test_an_api_that_accepts_unsigned_calls_fails_the_smoke_test(
    smoke: ModuleType, stub_api: StubApi, capsys: pytest.CaptureFixture[str]
) -> None:
    stub_api.refuse_unsigned = False
    _deploy_stack({smoke.OUTPUT_API_URL: stub_api.url})

    assert _run(smoke, stub_api) == 1
    assert "FAIL unauthenticated call refused: HTTP 200" in capsys.readouterr().out


@mock_aws
def test_no_model_yet_fails_unless_allowed(smoke: ModuleType, stub_api: StubApi) -> None:
    # Given the first deploy: the API is up, no model has been promoted yet (/health and /predict 503)
    stub_api.model_loaded = False
    _deploy_stack({smoke.OUTPUT_API_URL: stub_api.url})

    assert _run(smoke, stub_api) == 1
    assert _run(smoke, stub_api, "--allow-no-model") == 0


@mock_aws
def test_a_missing_stack_or_output_is_a_clear_failure(
    smoke: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(smoke, None) == 1
    assert f"stack {STACK} not found in {REGION}" in capsys.readouterr().err

    _deploy_stack({"SomethingElse": "x"})
    assert _run(smoke, None) == 1
    assert f"has no {smoke.OUTPUT_API_URL} output" in capsys.readouterr().err


def test_request_files_are_read_line_by_line_and_refused_when_broken(
    smoke: ModuleType, tmp_path: Path
) -> None:
    assert len(smoke.read_requests(REQUESTS)) == len(REQUESTS.read_text().splitlines())

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"a": 1}\n{not json\n')
    with pytest.raises(smoke.SmokeTestError, match=r"broken.jsonl:2 is not JSON"):
        smoke.read_requests(broken)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(smoke.SmokeTestError, match="holds no requests"):
        smoke.read_requests(empty)


@mock_aws
def test_the_stub_checks_signatures_for_real(smoke: ModuleType, stub_api: StubApi) -> None:
    # Proves the passing runs above were signed correctly: another secret makes every signature wrong.
    _deploy_stack({smoke.OUTPUT_API_URL: stub_api.url})
    session = boto3.Session(region_name=REGION)
    real = session.get_credentials().get_frozen_credentials()
    stub_api.credentials = Credentials(real.access_key, "another-secret")

    code = smoke.main(
        ["--stack-name", STACK, "--region", REGION, "--requests", str(REQUESTS)], session=session
    )

    assert code == 1
    assert not any(s["authenticated"] for s in stub_api.seen)
