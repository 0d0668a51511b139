"""The serving bundle, built as synth builds it, imported and invoked under a real CPython 3.12.

The interpreter runs isolated (`-I -S`: no site-packages, no PYTHON* variables) with only the
bundle added to sys.path, as Lambda's /var/task, so a missing dependency or a package that only
this venv has fails here rather than in the cloud. The first build downloads the pinned wheels
from PyPI (about 60 MB, some 10 s); later runs reuse `.shipml/build/lambda-deps/`.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shipml.backends import local_backends
from shipml.contract import Contract
from stacks import lambda_bundle
from stacks.lambda_bundle import BundleReport
from tests.builders import (
    build_host_bundle,
    bundle_test_marks,
    host_lambda_architecture,
    python312,
    run_in_bundle,
)

CONTRACT = "examples/fraud/contract.yaml"

# Runs inside the bundle's interpreter: argv = bundle dir, events JSON, "memory-capture" or "".
# The local backend captures to Parquet through pyarrow, which the bundle rightly lacks (on Lambda
# capture goes to Firehose); with "memory-capture" a fake of our own CaptureSink port stands in.
_DRIVER = r"""
import json, sys, sysconfig
bundle, events, capture = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
sys.path.insert(0, bundle)
captured = []
if capture == "memory-capture":
    import shipml.backends.local as local
    from shipml.backends.ports import CaptureSink

    class MemoryCaptureSink(CaptureSink):
        def __init__(self, *args, **kwargs):
            pass

        def write(self, records):
            captured.extend(records)

    local.ParquetCaptureSink = MemoryCaptureSink
from functions.inference.handler import handler

class LambdaContext:
    function_name = "shipml-fraud-dev-serving"
    function_version = "7"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:shipml-fraud-dev-serving:live"
    aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e812345678"

responses = [handler(event, LambdaContext()) for event in events]
stdlib = sysconfig.get_paths()["stdlib"]
outside = sorted(
    name for name, module in list(sys.modules.items())
    if getattr(module, "__file__", None)
    and not module.__file__.startswith((bundle, stdlib))
)
print(json.dumps({
    "python": list(sys.version_info[:2]),
    "responses": responses,
    "heavy_imported": [name for name in ("torch", "pandas", "sklearn", "pyarrow") if name in sys.modules],
    "imported_from_outside": outside,
    "onnxruntime": sys.modules["onnxruntime"].__file__ if "onnxruntime" in sys.modules else None,
    "captured": len(captured),
    "yaml_imported": "yaml" in sys.modules,
    "pydantic_v1": (
        "absent" if sys.modules.get("pydantic.v1", False) is None
        else "imported" if "pydantic.v1" in sys.modules else "not imported"
    ),
}))
"""


PYTHON312 = python312()
HOST_ARCHITECTURE = host_lambda_architecture()

pytestmark = bundle_test_marks()


def api_event(method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """An API Gateway REST (v1) proxy event, as the serving API sends it to the function."""
    headers = {"Host": "abc123.execute-api.eu-west-1.amazonaws.com", "X-Forwarded-Proto": "https"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": path,
            "httpMethod": method,
            "path": f"/v1{path}",
            "stage": "v1",
            "requestId": "3f1e6a43-request",
            "accountId": "123456789012",
            "apiId": "abc123",
            "identity": {"sourceIp": "203.0.113.7", "userAgent": "pytest"},
        },
        "body": None if body is None else json.dumps(body),
        "isBase64Encoded": False,
    }


@pytest.fixture(scope="module")
def built_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BundleReport]:
    """The bundle for this machine's architecture, built by the same code that synth runs."""
    out = tmp_path_factory.mktemp("bundle")
    return out, build_host_bundle(out, contract_path=CONTRACT, budget_mb=150)


@pytest.fixture
def invoke(built_bundle: tuple[Path, BundleReport], tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """Send events to the bundle's handler in an isolated CPython 3.12, cwd = the bundle (like /var/task)."""
    bundle, _ = built_bundle

    def run(
        *events: dict[str, Any],
        root: Path = tmp_path / "shipml",
        memory_capture: bool = False,
        lambda_runtime: bool = False,
    ) -> dict[str, Any]:
        # The Lambda runtime names the function; tracing stays off, as the X-Ray SDK needs
        # botocore, which Lambda provides and this isolated interpreter lacks.
        on_lambda = {
            "AWS_LAMBDA_FUNCTION_NAME": "shipml-fraud-dev-serving",
            "POWERTOOLS_TRACE_DISABLED": "true",
        }
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp_path),
            "SHIPML_BACKEND": "local",
            "SHIPML_ROOT": str(root),
            "SHIPML_CONTRACT": CONTRACT,
            "SHIPML_MODEL": "fraud",
            "POWERTOOLS_SERVICE_NAME": "shipml-fraud",
            "POWERTOOLS_METRICS_NAMESPACE": "shipml",
            "LAMBDA_TASK_ROOT": str(bundle),
        } | (on_lambda if lambda_runtime else {})
        return run_in_bundle(
            bundle, _DRIVER, json.dumps(list(events)), "memory-capture" if memory_capture else "", env=env
        )

    return run


def test_bundle_is_under_budget_and_holds_no_heavy_package(built_bundle: tuple[Path, BundleReport]) -> None:
    bundle, report = built_bundle

    print(f"bundle_mb={report.bundle_mb:.1f} installed_mb={report.installed_bytes / 2**20:.1f}")
    assert report.bundle_mb <= 150
    assert lambda_bundle.tree_bytes(bundle) == report.bundle_bytes
    assert lambda_bundle.heavy_packages(bundle) == []
    # Pruning did its job: what the rules name is gone, what serving needs is there.
    assert not list(bundle.glob("**/tests")) and not list(bundle.glob("**/*.pyi"))
    assert not list(bundle.glob("onnxruntime/capi/libonnxruntime.so*"))
    assert list(bundle.glob("onnxruntime/capi/onnxruntime_pybind11_state*.so"))
    assert report.pruned_bytes["onnxruntime C API library"] > 0
    assert (bundle / "functions" / "inference" / "handler.py").is_file()
    assert (bundle / "shipml" / "serving").is_dir() and (bundle / CONTRACT).is_file()
    # The contract's JSON rendition, read at a cold start instead of the YAML, renders these bytes.
    rendition = json.loads((bundle / f"{CONTRACT}.json").read_text())
    assert rendition["sha256"] == hashlib.sha256((bundle / CONTRACT).read_bytes()).hexdigest()
    assert not list(bundle.glob("shipml/**/__pycache__"))


def test_wheels_are_cp312_for_the_lambda_platform(built_bundle: tuple[Path, BundleReport]) -> None:
    bundle, _ = built_bundle
    machine = {"x86_64": "x86_64", "arm64": "aarch64"}[HOST_ARCHITECTURE or "x86_64"]

    extensions = [path.name for path in bundle.glob("**/*.cpython-*.so")]

    assert extensions, "expected compiled extensions (numpy, onnxruntime, pydantic_core)"
    assert all(f"cpython-312-{machine}-linux-gnu" in name for name in extensions), extensions


def test_ping_and_health_answer_under_python_312_with_only_the_bundle(invoke: Callable[..., Any]) -> None:
    # Given an empty local registry (no model deployed yet)
    # When API Gateway sends GET /ping and GET /health
    result = invoke(api_event("GET", "/ping"), api_event("GET", "/health"))

    # Then the real handler answers from the bundle alone, and says there is no model yet
    assert result["python"] == [3, 12]
    ping, health = result["responses"]
    assert ping["statusCode"] == 503
    assert health["statusCode"] == 503
    assert json.loads(health["body"])["model_loaded"] is False
    assert result["heavy_imported"] == []
    assert result["imported_from_outside"] == []


def _live_model(root: Path, make_artifact: Callable[..., Path]) -> Path:
    """A local registry under `root` with a model registered, approved and promoted to live."""
    registry = local_backends(root).registry
    version = registry.register("fraud", make_artifact())
    registry.approve("fraud", version.version)
    registry.set_alias("fraud", "live", version.version)
    return root


def test_a_live_model_is_served_through_the_pruned_onnxruntime(
    invoke: Callable[..., Any],
    built_bundle: tuple[Path, BundleReport],
    make_artifact: Callable[..., Path],
    request_body: Callable[..., dict],
    contract: Contract,
    tmp_path: Path,
) -> None:
    # Given a model registered, approved and promoted to live in the local registry
    root = _live_model(tmp_path / "registry-root", make_artifact)

    # When API Gateway sends GET /ping and POST /predict
    result = invoke(
        api_event("GET", "/ping"),
        api_event("POST", "/predict", request_body()),
        root=root,
        memory_capture=True,
    )

    # Then the model loads with the bundle's onnxruntime (without its C API library) and scores
    ping, predict = result["responses"]
    assert ping["statusCode"] == 200, ping
    assert result["onnxruntime"].startswith(str(built_bundle[0]))
    assert predict["statusCode"] == 200, predict["body"]
    assert 0.0 <= json.loads(predict["body"])[contract.outputs.score] <= 1.0
    assert result["captured"] == 1
    assert result["imported_from_outside"] == []


def test_on_lambda_the_app_is_built_and_documented_without_pydantic_v1_or_yaml(
    invoke: Callable[..., Any],
    make_artifact: Callable[..., Path],
    request_body: Callable[..., dict],
    tmp_path: Path,
) -> None:
    """With the Lambda runtime's environment, the handler marks `pydantic.v1` absent (a cold-start
    saving): the bundle's FastAPI builds every route, serves a prediction and documents the API.
    The contract comes from its JSON rendition, and the model's copy of it is not parsed again: the
    YAML library is never imported."""
    root = _live_model(tmp_path / "registry-root", make_artifact)

    result = invoke(
        api_event("POST", "/predict", request_body()),
        api_event("GET", "/openapi.json"),
        root=root,
        memory_capture=True,
        lambda_runtime=True,
    )

    predict, openapi = result["responses"]
    assert predict["statusCode"] == 200, predict["body"]
    assert openapi["statusCode"] == 200, openapi["body"]
    assert {"/predict", "/predict/batch", "/health"} <= set(json.loads(openapi["body"])["paths"])
    assert result["pydantic_v1"] == "absent"
    assert result["yaml_imported"] is False  # the contract came from its JSON rendition
    assert result["imported_from_outside"] == []


def test_tracing_dependencies_are_in_the_bundle(built_bundle: tuple[Path, BundleReport]) -> None:
    """On Lambda, Powertools' Tracer imports the X-Ray SDK; prove the bundle carries it.

    `aws_xray_sdk.core` also needs botocore, which the Lambda runtime provides and this isolated
    interpreter lacks, so the probe imports the package and its compiled dependency only.
    """
    bundle, _ = built_bundle
    probe = "import sys; sys.path.insert(0, sys.argv[1]); import aws_xray_sdk, wrapt; print('ok')"
    result = subprocess.run(
        [str(PYTHON312), "-I", "-S", "-c", probe, str(bundle)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stdout.strip() == "ok", result.stderr[-3000:]
