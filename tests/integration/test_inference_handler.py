"""The Lambda handler with API Gateway REST (v1) and HTTP API (v2) events, on the local backend."""

from __future__ import annotations

import io
import json

import pytest

from functions.inference import handler as module
from shipml.backends import LIVE, local_backends
from tests.builders import LambdaContext, http_v2_event, rest_v1_event


@pytest.fixture
def handler(tmp_path, monkeypatch, make_artifact, contract_path):
    root = tmp_path / "root"
    backends = local_backends(root)
    backends.registry.register("fraud", make_artifact())
    backends.registry.approve("fraud", 1)
    backends.registry.set_alias("fraud", LIVE, 1)
    monkeypatch.setenv("SHIPML_BACKEND", "local")
    monkeypatch.setenv("SHIPML_ROOT", str(root))
    monkeypatch.setenv("SHIPML_CONTRACT", str(contract_path))
    monkeypatch.setattr(module, "_runtime", {})
    return module.handler


@pytest.mark.parametrize("event_builder", [rest_v1_event, http_v2_event], ids=["rest-v1", "http-v2"])
def test_predict_through_the_handler(handler, event_builder, request_body):
    response = handler(event_builder("POST", "/predict", request_body()), LambdaContext())
    assert response["statusCode"] == 200, response["body"]
    answer = json.loads(response["body"])
    assert answer["model_version"] == "fraud:1"
    assert answer["request_id"].startswith(("rest-", "http-"))  # API Gateway's request id


@pytest.mark.parametrize("event_builder", [rest_v1_event, http_v2_event], ids=["rest-v1", "http-v2"])
def test_bad_input_through_the_handler_is_4xx(handler, event_builder, request_body):
    bad = handler(event_builder("POST", "/predict", request_body(amount=-5)), LambdaContext())
    assert bad["statusCode"] == 422
    assert json.loads(bad["body"])["errors"][0]["field"] == "amount"
    garbage = handler(event_builder("POST", "/predict", b"\xff\xfe not json"), LambdaContext())
    assert garbage["statusCode"] == 400


def test_health_and_ping(handler):
    assert handler(rest_v1_event("GET", "/ping"), LambdaContext())["statusCode"] == 200
    health = json.loads(handler(http_v2_event("GET", "/health"), LambdaContext())["body"])
    assert health["model_loaded"] is True


@pytest.mark.parametrize("event", [{}, {"foo": "bar"}, {"httpMethod": "GET"}, {"version": "2.0"}])
def test_a_malformed_event_is_answered_not_crashed_on(handler, event):
    response = handler(event, LambdaContext())
    assert response["statusCode"] == 400
    assert json.loads(response["body"])["error"] == "bad_event"


def test_the_app_is_built_once_per_environment(handler, request_body):
    handler(rest_v1_event("GET", "/ping"), LambdaContext())
    app = module._runtime["app"]
    handler(rest_v1_event("POST", "/predict", request_body()), LambdaContext())
    assert module._runtime["app"] is app


def test_tracing_wraps_the_handler_on_lambda_only(monkeypatch):
    def plain(event, context):
        return {"statusCode": 200}

    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    assert module._traced(plain) is plain  # tests, benchmarks, tools: no X-Ray SDK import
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "shipml-inference")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    assert module._traced(plain) is plain  # tracing switched off by configuration
    monkeypatch.delenv("POWERTOOLS_TRACE_DISABLED")
    traced = module._traced(plain)
    assert traced is not plain and traced.__wrapped__ is plain


def test_the_tracer_patches_botocore_only(monkeypatch):
    import aws_lambda_powertools

    made = []

    class Tracer:
        def __init__(self, **options):
            made.append(options)

        def capture_lambda_handler(self, **options):
            return lambda function: function

    monkeypatch.setattr(aws_lambda_powertools, "Tracer", Tracer)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "shipml-inference")
    monkeypatch.delenv("POWERTOOLS_TRACE_DISABLED", raising=False)
    module._traced(lambda event, context: None)
    assert made == [{"service": "shipml", "patch_modules": ("botocore",)}]


def test_log_lines_carry_the_lambda_context_and_the_correlation_id(handler, monkeypatch):
    """The keys of Powertools' `inject_lambda_context`: context, cold start, API Gateway request id."""
    stream = io.StringIO()
    monkeypatch.setattr(module.logger.registered_handler, "stream", stream)

    def logged() -> dict:
        (line,) = [json.loads(x) for x in stream.getvalue().splitlines() if '"unreadable event"' in x]
        stream.seek(0)
        stream.truncate()
        return line

    lines = []
    for request_id in ("first-request", "second-request"):
        context = LambdaContext()
        handler({"requestContext": {"requestId": request_id}}, context)  # unreadable: logged
        line = logged()
        assert line["function_request_id"] == context.aws_request_id
        lines.append(line)
    assert [x["correlation_id"] for x in lines] == ["first-request", "second-request"]
    assert [x["cold_start"] for x in lines] == [True, False]
    assert lines[0]["function_name"] == "shipml-inference" and lines[0]["function_memory_size"] == 1024
    assert lines[1]["function_arn"].endswith(":function:shipml-inference:live")
    handler({}, LambdaContext())  # no request context: no correlation id left over from before
    assert logged().get("correlation_id") is None
