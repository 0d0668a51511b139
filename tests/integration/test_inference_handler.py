"""The Lambda handler with API Gateway REST (v1) and HTTP API (v2) events, on the local backend."""

from __future__ import annotations

import io
import json
import os

import pytest

from functions.inference import handler as module
from shipml.backends import LIVE, local_backends
from tests.builders import LambdaContext, http_v2_event, rest_v1_event, run_fresh_python


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


def test_tracing_starts_on_lambda_only_and_patches_botocore_only(monkeypatch):
    import aws_lambda_powertools

    made = []
    monkeypatch.setattr(aws_lambda_powertools, "Tracer", lambda **options: made.append(options))
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    module._start_tracing()  # tests, benchmarks, tools: no X-Ray SDK import
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "shipml-inference")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    module._start_tracing()  # tracing switched off by configuration
    assert made == []
    monkeypatch.delenv("POWERTOOLS_TRACE_DISABLED")
    module._start_tracing()
    assert made == [{"service": "shipml", "patch_modules": ("botocore",)}]
    assert not hasattr(module.handler, "__wrapped__")  # Lambda records the invocation itself


TRACED_CALL = """
import json, sys
from aws_xray_sdk.core import xray_recorder
import functions.inference.handler  # starts tracing, as on Lambda
sent = []
class Emitter:
    def send_entity(self, entity):
        sent.append(json.loads(entity.serialize()))
    def set_daemon_address(self, address):
        pass
xray_recorder.configure(emitter=Emitter())
import botocore.session
from botocore.stub import Stubber
client = botocore.session.get_session().create_client("dynamodb", region_name="eu-west-1")
with Stubber(client) as stub:
    stub.add_response("batch_get_item", {"Responses": {}})
    client.batch_get_item(RequestItems={"online": {"Keys": [{"entity": {"S": "C1"}}]}})
print(json.dumps([(e["name"], e.get("trace_id"), e.get("parent_id")) for e in sent]))
"""


def test_on_lambda_each_aws_call_is_a_subsegment_of_the_invocation(tmp_path):
    """In a fresh interpreter with Lambda's environment (botocore is patched process-wide, so not
    in this one): a DynamoDB call made while a sampled invocation runs is sent as a subsegment of
    Lambda's own segment for it."""
    env = {
        **os.environ,
        "AWS_LAMBDA_FUNCTION_NAME": "shipml-inference",
        "LAMBDA_TASK_ROOT": str(tmp_path),
        "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    env.pop("POWERTOOLS_TRACE_DISABLED", None)
    assert run_fresh_python(TRACED_CALL, env=env) == [
        ["dynamodb", "1-5759e988-bd862e3fe1be46a994272793", "53995c3f42cd8ad8"]
    ]


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


def _outside_lambda(**values: str) -> dict[str, str]:
    """This process's environment without the Lambda runtime's variables, plus `values`."""
    lambda_names = ("AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_INITIALIZATION_TYPE")
    return {k: v for k, v in os.environ.items() if k not in lambda_names} | values


COLLECTOR_DURING_INIT = """
import gc, json, sys

seen = {}

class Spy:
    # Records whether the collector runs when the handler module imports its dependencies.
    def find_spec(self, name, path=None, target=None):
        if name == "mangum":
            seen["while_importing"] = gc.isenabled()
        return None

sys.meta_path.insert(0, Spy())
from functions.inference import handler as module
seen["after_import"] = gc.isenabled()
seen["frozen_after_import"] = gc.get_freeze_count()

class Context:
    class metrics:
        @staticmethod
        def put(*args, **kwargs):
            pass

def build():
    seen["while_building"] = gc.isenabled()
    return object(), Context()

def failing():
    raise RuntimeError("no model")

module._cold_start(build)
seen["after_build"] = gc.isenabled()
seen["frozen_after_build"] = gc.get_freeze_count()
try:
    module._cold_start(failing)
except RuntimeError:
    seen["after_a_failed_build"] = gc.isenabled()
print(json.dumps(seen))
"""


@pytest.mark.parametrize("on_lambda", [True, False], ids=["lambda", "elsewhere"])
def test_the_collector_is_paused_while_initialising_then_runs_again(on_lambda):
    """In a fresh interpreter: the imports and the build run with the cyclic collector paused; it
    runs again afterwards, even after a failed build; on Lambda what init made is frozen first."""
    on = {"AWS_LAMBDA_FUNCTION_NAME": "shipml-inference", "POWERTOOLS_TRACE_DISABLED": "true"}
    seen = run_fresh_python(COLLECTOR_DURING_INIT, env=_outside_lambda(**(on if on_lambda else {})))
    assert (seen["while_importing"], seen["while_building"]) == (False, False)
    assert (seen["after_import"], seen["after_build"], seen["after_a_failed_build"]) == (True, True, True)
    if on_lambda:
        assert seen["frozen_after_import"] > 10_000
        assert seen["frozen_after_build"] >= seen["frozen_after_import"]
    else:
        assert (seen["frozen_after_import"], seen["frozen_after_build"]) == (0, 0)


COLLECTOR_AS_FOUND = """
import gc, json, sys
gc.disable()  # an importer that runs with the collector off keeps it off
from functions.inference import handler as module


class Metrics:
    def put(self, *args, **kwargs):
        pass


class Context:
    metrics = Metrics()


module._cold_start(lambda: (object(), Context()))
kept_off = not gc.isenabled()
gc.enable()
sys.modules["mangum"] = None  # the handler's import of Mangum fails
del sys.modules["functions.inference.handler"]
try:
    import functions.inference.handler
except ImportError:
    pass
print(json.dumps({"kept_off": kept_off, "on_after_a_failed_import": gc.isenabled()}))
"""


def test_the_collector_is_left_as_the_importer_had_it():
    assert run_fresh_python(COLLECTOR_AS_FOUND, env=_outside_lambda()) == {
        "kept_off": True,
        "on_after_a_failed_import": True,
    }
