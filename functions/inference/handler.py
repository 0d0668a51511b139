"""Lambda handler: API Gateway -> Mangum -> the shipml FastAPI app. Nothing else lives here.

The app, its model and its clients are built once per execution environment, during Lambda's
init phase (cold start); capture and metrics are flushed at the end of every invocation, so no
record waits in memory when the environment is frozen or shut down.
"""

from __future__ import annotations

import gc

# The cyclic garbage collector is paused while the environment initialises (these imports and the
# build), then what they made is frozen out of its way (`_settle`). Imports and pydantic's model
# building make ~75,000 objects and ~190 collections, about 50 ms of a cold start (a tenth of it)
# spent scanning objects that live as long as the process. A process that imports this module
# with its collector off (or whose import fails here) gets it back as it was.
_collecting = gc.isenabled()


def _resume() -> None:
    """The collector as the importer had it."""
    if _collecting:
        gc.enable()


# Defined before the imports below, which call it: one guarded block starts the environment.
def _start_tracing() -> None:
    """X-Ray on Lambda (the function runs with active tracing unless the `tracing` setting is off).

    Lambda itself records every invocation in the trace (and, on a cold start, its initialization);
    Powertools' Tracer patches botocore, so each AWS call (the S3 artifact, DynamoDB lookups,
    Firehose capture, Secrets Manager) is a subsegment of it. The handler is not wrapped in a
    subsegment of its own (`Tracer.capture_lambda_handler`): that repeats what Lambda records and
    cost about 0.1 ms of every invocation (bench/serving.py: overhead_vs_floor 1.9 instead of 1.2).
    Only botocore is patched: patching every library the SDK knows imports whichever happen to be
    installed, at each cold start. Elsewhere (tests, benchmarks, tools), or with
    POWERTOOLS_TRACE_DISABLED=true, the X-Ray SDK is never imported."""
    if (
        not os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        or os.environ.get("POWERTOOLS_TRACE_DISABLED") == "true"
    ):
        return
    from aws_lambda_powertools import Tracer

    Tracer(service="shipml", patch_modules=("botocore",))


gc.disable()
try:
    import json
    import os
    import sys
    from collections.abc import Callable
    from typing import Any

    # On Lambda, pydantic's copy of its version 1 (`pydantic.v1`) is marked absent before anything
    # imports it. FastAPI imports it while building routes only to refuse version 1 models (it
    # treats an ImportError as "no such model"), and nothing this function ships uses it; importing
    # it cost ~20 ms of every cold start (a thirtieth). A `None` in `sys.modules` is Python's own
    # way to make an import fail. Elsewhere (tests, tools) nothing is changed.
    if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        sys.modules.setdefault("pydantic.v1", None)

    from aws_lambda_powertools import Logger
    from aws_lambda_powertools.logging import utils
    from mangum import Mangum

    from shipml.errors import ShipmlError

    logger = Logger(service="shipml")
    _start_tracing()
except BaseException:
    _resume()
    raise

_runtime: dict[str, Any] = {}


def _build() -> tuple[Mangum, Any]:
    from shipml.serving.app import create_app
    from shipml.serving.factory import build_context
    from shipml.settings import Settings

    utils.copy_config_to_registered_loggers(source_logger=logger, include={"shipml"})
    context = build_context(Settings.from_env())
    app = create_app(context)
    return Mangum(app, lifespan="off", api_gateway_base_path=None), context


def _settle() -> None:
    """The end of initialisation: the collector runs again. On Lambda, the objects made so far (the
    modules, the app, the model, the clients: they live as long as the environment) are first
    frozen (`gc.freeze`), so no later collection scans them again: the first full collection
    after a cold start would otherwise walk all of them during a request. The cyclic garbage that
    init left (a few hundred objects of imports and client set-up) is frozen with them and never
    freed, an accepted, bounded cost: a `gc.collect()` first would take back most of the time the
    pause saved. Elsewhere (tests and tools importing this module) nothing is frozen."""
    if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        gc.freeze()
    _resume()


def _cold_start(build: Callable[[], tuple[Mangum, Any]] = _build) -> None:
    gc.disable()  # paused already when this runs during the module's import (Lambda's init phase)
    try:
        _runtime["app"], _runtime["ctx"] = build()
        _runtime["ctx"].metrics.put("ColdStart", 1, unit="Count")
    finally:
        _settle()


# On Lambda, build during the init phase, so the model download and session build are not billed
# to the first request's latency (and SnapStart / provisioned concurrency pre-warm them). The
# variable is set by the Lambda runtime only; tests and tools import this module without I/O.
if os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE"):
    _cold_start()
else:
    _settle()


def _log_context(event: Any, context: Any) -> None:
    """The keys Powertools' `inject_lambda_context` puts on every log line: the Lambda context,
    `cold_start`, and the API Gateway request id as `correlation_id` (REST and HTTP APIs keep it at
    `requestContext.requestId`). Set here with the Logger's own `append_keys`, because the
    decorator's per-event JMESPath query and environment reads cost a fifth of the invocation."""
    first = "logged" not in _runtime
    if first:
        _runtime["logged"] = True
        logger.append_keys(
            function_name=context.function_name,
            function_memory_size=context.memory_limit_in_mb,
            function_arn=context.invoked_function_arn,
        )
    # As Powertools counts it: a provisioned-concurrency environment was warmed before any request.
    cold = first and os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") != "provisioned-concurrency"
    request = event.get("requestContext") if isinstance(event, dict) else None
    logger.append_keys(  # correlation_id as `set_correlation_id` sets it, in the same call
        cold_start=cold,
        function_request_id=context.aws_request_id,
        correlation_id=request.get("requestId") if isinstance(request, dict) else None,
    )


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    _log_context(event, context)
    if "app" not in _runtime:
        _cold_start()
    try:
        return _runtime["app"](event, context)
    except Exception:  # noqa: BLE001 - the app answers its own errors; this is an event Mangum cannot read
        logger.exception("unreadable event")
        return {
            "statusCode": 400,
            "headers": {"content-type": "application/json"},
            "body": json.dumps({"error": "bad_event", "message": "not an API Gateway request", "errors": []}),
        }
    finally:
        ctx = _runtime["ctx"]
        try:
            ctx.capture.flush()
        except ShipmlError as exc:
            # The answer stands: the records stay buffered for the next invocation's flush.
            logger.error("capture delivery failed", extra={"error": str(exc)})
            ctx.metrics.put("CaptureDeliveryFailed", 1, unit="Count")
        ctx.metrics.flush()
