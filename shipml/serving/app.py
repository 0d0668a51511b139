"""One FastAPI app, three hosts: Lambda (through Mangum), uvicorn locally, a SageMaker container.

Routes: POST /predict (one record), POST /predict/batch (up to the contract's max_batch_rows),
GET /health, and SageMaker's container contract GET /ping and POST /invocations (JSON, JSON Lines
and CSV). Request and response models are generated from the contract, so /openapi.json
documents every rule. Every route is `async def`: a `def` route hops through a thread pool, which
costs more than the whole prediction.

Domain errors become responses here, in one place: a rule broken -> 422 naming the field and the
rule; malformed JSON -> 400; a body over the limit -> 413; no model or an online feature that must
not default -> 503. Inputs are never echoed back in errors, so PII cannot leak through them.
"""

# No `from __future__ import annotations` here: FastAPI reads the route annotations at runtime,
# and the request models are local to create_app.
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field, ValidationError
from pydantic_core import to_json
from starlette.exceptions import HTTPException as StarletteHTTPException

from shipml.backends.ports import CaptureSink, MetricsSink
from shipml.capture import capture_record
from shipml.contract import Contract, Masker, build_request_model
from shipml.errors import FeatureSourceUnavailable, ModelOutputError, OnlineFeatureError, ShipmlError
from shipml.predict import Prediction, Predictor
from shipml.serving import invocations
from shipml.serving.models import ModelHolder
from shipml.serving.schemas import build_response_models, error_response_model

log = logging.getLogger("shipml.serving")

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID_HEADER_BYTES = REQUEST_ID_HEADER.encode()
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class ServiceUnavailable(ShipmlError):
    """The app cannot answer now (no model loaded); a 503."""


@dataclass
class ServingContext:
    """What the routes need; built once per process (cold start)."""

    contract: Contract
    holder: ModelHolder
    capture: CaptureSink
    metrics: MetricsSink
    masker: Masker
    max_body_bytes: int = 262_144
    online_check: Callable[[], str] | None = None


def _request_id(scope: dict, header: bytes | None) -> str:
    """The caller's x-request-id when it is well formed, else API Gateway's request id, else new."""
    given = header.decode("latin-1") if header else ""
    if given and _REQUEST_ID.match(given):
        return given
    event = scope.get("aws.event") or {}
    aws_id = (event.get("requestContext") or {}).get("requestId") if isinstance(event, dict) else None
    return str(aws_id) if aws_id else uuid.uuid4().hex


async def _body(request: Request) -> bytes:
    """The request body. Edge has already received it whole (to enforce the size limit), so it is
    one message, or a few: read them directly rather than through Starlette's stream generator."""
    chunks = []
    while True:
        message = await request.receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _field(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


def _violations(errors: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    # A JSON syntax error's location is a character offset, not a field: name the body instead.
    return [
        {
            "field": "body" if e["type"] == "json_invalid" else _field(e["loc"]),
            "rule": e["type"],
            "message": e["msg"],
        }
        for e in errors
    ]


class Edge:
    """ASGI middleware, outermost: a request id and a start time for every request (echoed in
    x-request-id), and bodies over the limit refused with 413 before anything reads them.

    Plain ASGI rather than `@app.middleware("http")`, whose task-group plumbing costs more per
    request than a whole prediction; one layer for both jobs, because each layer is paid on
    every request.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = declared = None
        for name, value in scope.get("headers") or ():
            if name == b"content-length":
                declared = value
            elif name == _REQUEST_ID_HEADER_BYTES:
                given = value
        request_id = _request_id(scope, given)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["started"] = time.perf_counter()
        header = (_REQUEST_ID_HEADER_BYTES, request_id.encode())

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send_with_id)
            return
        received = 0
        buffered: list[dict] = []
        while True:
            message = await receive()
            buffered.append(message)
            if message["type"] != "http.request":
                break
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                await self._refuse(send_with_id)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> dict:
            return buffered.pop(0) if buffered else await receive()

        await self.app(scope, replay, send_with_id)

    async def _refuse(self, send: Callable) -> None:
        body = json.dumps(
            {"error": "payload_too_large", "message": f"the request body is over {self.max_bytes} bytes"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class DirectRoute(APIRoute):
    """A route whose endpoint takes only the `Request` and returns a `Response` itself.

    FastAPI then has nothing to solve, parse or serialise, so the endpoint is awaited directly,
    through the documented `APIRoute.get_route_handler` extension point, skipping the generic
    handler's per-request bookkeeping (about a fifth of a prediction's time on Lambda). The route
    keeps everything else: path matching, exception handlers, and its OpenAPI description.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        dependant = self.dependant
        extra = [
            *dependant.path_params,
            *dependant.query_params,
            *dependant.header_params,
            *dependant.cookie_params,
            *dependant.body_params,
            *dependant.dependencies,
        ]
        if extra or not dependant.request_param_name:
            raise TypeError(f"{path}: a DirectRoute endpoint takes the Request only")

    def get_route_handler(self) -> Callable[[Request], Any]:
        endpoint = self.endpoint

        async def handler(request: Request) -> Response:
            return await endpoint(request)

        return handler


def _error(
    request: Request,
    status: int,
    error: str,
    message: str,
    errors: list[dict[str, Any]] | None = None,
    *,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """An answer in the documented error shape (`ErrorBody`): the code, a message that never echoes
    an input, the request id (when `Edge` gave one), and the violations."""
    content = {
        "error": error,
        "message": message,
        "request_id": getattr(request.state, "request_id", None),
        "errors": errors or [],
    }
    return JSONResponse(status_code=status, content=content, headers=headers)


def create_app(ctx: ServingContext) -> FastAPI:
    """The app for one contract. Builds the generated models once; serves whatever `ctx.holder` holds."""
    contract = ctx.contract
    RequestModel = build_request_model(contract)  # noqa: N806 - a class
    PredictResponse, BatchResponse = build_response_models(contract)  # noqa: N806
    max_rows = contract.serving.max_batch_rows

    class BatchRequest(BaseModel):
        records: Annotated[
            list[RequestModel],  # type: ignore[valid-type]
            Field(min_length=1, max_length=max_rows, description=f"1 to {max_rows} records."),
        ]

    BatchRequest.__name__ = f"{RequestModel.__name__}Batch"
    ErrorResponse = error_response_model()  # noqa: N806
    errors = {
        400: {"model": ErrorResponse, "description": "Malformed JSON."},
        413: {"model": ErrorResponse, "description": "Body over the size limit."},
        422: {
            "model": ErrorResponse,
            "description": "A field breaks a contract rule; each names the field and rule.",
        },
        500: {
            "model": ErrorResponse,
            "description": "The model produced no valid score (NaN or infinite): no decision is made.",
        },
        503: {
            "model": ErrorResponse,
            "description": "No model loaded, or an online feature with no default.",
        },
    }

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        # Shutdown of a long-running host (uvicorn): nothing buffered is lost. Lambda runs with
        # lifespan off and flushes after every invocation instead.
        ctx.holder.stop_polling()
        ctx.capture.flush()
        ctx.metrics.flush()

    app = FastAPI(
        # Observability is Powertools' (JSON logs, EMF metrics, X-Ray traces). FastAPI's own
        # OpenTelemetry instrumentation stays off: left on, it looks up the global OpenTelemetry
        # providers on every request, and with an OpenTelemetry layer installed it would trace
        # every request a second time.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        lifespan=lifespan,
        title=f"shipml: {contract.model}",
        description=contract.description,
        version=str(contract.version),
        responses=errors,
    )

    def current_predictor() -> Predictor:
        predictor = ctx.holder.predictor
        if predictor is None:
            status = ctx.holder.status()
            raise ServiceUnavailable(f"no model is loaded ({status.error or 'not loaded yet'})")
        return predictor

    def score(records: list[dict[str, Any]], request_id: str, started: float) -> list[Prediction]:
        predictor = current_predictor()
        predictions, rows = predictor.predict_enriched(records)
        latency_ms = (time.perf_counter() - started) * 1000.0
        now = datetime.now(UTC).isoformat()
        captured = []
        fallbacks = 0
        for prediction, row in zip(predictions, rows, strict=True):
            fallbacks += len(prediction.fallbacks)
            captured.append(
                capture_record(
                    ctx.masker,
                    row,
                    outputs=contract.outputs,
                    request_id=request_id,
                    time=now,
                    model_version=prediction.model_version,
                    latency_ms=latency_ms,
                    score=prediction.score,
                    label=prediction.label,
                    fallbacks=prediction.fallbacks,
                )
            )
        ctx.capture.write(captured)
        dims = {"model": contract.model}
        ctx.metrics.put("Latency", latency_ms, unit="Milliseconds", dimensions=dims)
        ctx.metrics.put("Predictions", len(predictions), unit="Count", dimensions=dims)
        positives = sum(p.label for p in predictions)
        if positives:  # predictions by label: positives are rare, so the common case costs nothing
            ctx.metrics.put("PositivePredictions", positives, unit="Count", dimensions=dims)
        if fallbacks:
            ctx.metrics.put("Fallbacks", fallbacks, unit="Count", dimensions=dims)
        return predictions

    def response_item(prediction: Prediction, request_id: str) -> dict[str, Any]:
        return {
            contract.id: prediction.id,
            contract.outputs.score: prediction.score,
            contract.outputs.label: prediction.label,
            "model_version": prediction.model_version,
            "request_id": request_id,
            "fallbacks": prediction.fallbacks,
        }

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = _violations(exc.errors())
        malformed = any(p["rule"] == "json_invalid" for p in problems)
        ctx.metrics.put("ValidationFailures", 1, unit="Count", dimensions={"model": contract.model})
        status = 400 if malformed else 422
        message = "the body is not valid JSON" if malformed else "the request breaks the contract"
        return _error(
            request, status, "malformed_json" if malformed else "validation_error", message, problems
        )

    @app.exception_handler(ServiceUnavailable)
    @app.exception_handler(OnlineFeatureError)
    @app.exception_handler(FeatureSourceUnavailable)
    async def unavailable(request: Request, exc: ShipmlError) -> JSONResponse:
        return _error(request, 503, "unavailable", str(exc), headers={"retry-after": "5"})

    @app.exception_handler(ModelOutputError)
    async def no_valid_score(request: Request, exc: ModelOutputError) -> JSONResponse:
        # A server-side failure (the 5xx rate and the rollout's error alarm count it), with the
        # model version and the record's position only: never the inputs.
        log.error("no valid score (request %s): %s", getattr(request.state, "request_id", "?"), exc)
        return _error(request, 500, "model_output", str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def refused_by_the_framework(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI's own refusals (a body it cannot decode, an unknown path or method) in the
        # documented error shape, like every other error.
        malformed = exc.status_code == 400
        problems = (
            [{"field": "body", "rule": "json_invalid", "message": str(exc.detail)}] if malformed else []
        )
        return _error(
            request,
            exc.status_code,
            "malformed_json" if malformed else "http_error",
            "the body is not valid JSON" if malformed else str(exc.detail),
            problems,
            headers=exc.headers,
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Never echo internals; the log (masked, with the request id) has the details.
        log.exception(
            "unexpected error on %s %s (request %s)",
            request.method,
            request.url.path,
            getattr(request.state, "request_id", "?"),
        )
        return _error(request, 500, "internal", "internal error")

    def direct(method: str, path: str, **kwargs: Any) -> Callable[[Callable], Callable]:
        """Register a route whose endpoint reads the request itself (see DirectRoute)."""

        def register(endpoint: Callable) -> Callable:
            app.router.add_api_route(
                path, endpoint, methods=[method], route_class_override=DirectRoute, **kwargs
            )
            return endpoint

        return register

    request_schema = {"$ref": f"#/components/schemas/{RequestModel.__name__}"}

    @direct(
        "POST",
        "/predict",
        response_model=PredictResponse,
        summary="Score one record",
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": {"schema": request_schema}}}
        },
    )
    async def predict(request: Request) -> JSONResponse:
        # The body is validated by pydantic-core straight from the JSON bytes: the same model and
        # the same errors as a typed body parameter, at a third of FastAPI's per-request cost.
        try:
            record = RequestModel.model_validate_json(await _body(request))
        except ValidationError as exc:
            raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
        state = request.scope["state"]  # set by Edge; read directly, not through a State wrapper
        request_id = state["request_id"]
        # The validated field values, as pydantic keeps them: the model is flat (no nested models to
        # dump), and the Predictor copies each record before adding online features. `dict(record)`
        # walks the same values through a generator at ~6 us, `model_dump()` at ~1.3 us.
        (prediction,) = score([record.__dict__], request_id, state["started"])
        # The items are built from validated values, so FastAPI's second pass over the response
        # model is skipped (the model still documents the response in /openapi.json), and
        # pydantic-core writes the JSON, as FastAPI itself does for a response model.
        return Response(to_json(response_item(prediction, request_id)), media_type="application/json")

    @app.post("/predict/batch", response_model=BatchResponse, summary=f"Score up to {max_rows} records")
    async def predict_batch(request: Request, batch: BatchRequest) -> JSONResponse:
        request_id = request.state.request_id
        predictions = score([r.__dict__ for r in batch.records], request_id, request.state.started)
        return JSONResponse(
            {
                "request_id": request_id,
                "model_version": predictions[0].model_version,
                "predictions": [response_item(p, request_id) for p in predictions],
            }
        )

    @direct("GET", "/health", summary="Model version, loaded or not, backends reachable")
    async def health(request: Request) -> JSONResponse:
        status = ctx.holder.status()
        online = ctx.online_check() if ctx.online_check else "not configured"
        healthy = status.loaded and online in ("ok", "not configured")
        body = {
            "status": "ok" if healthy else "degraded",
            "model": contract.model,
            "model_version": status.version,
            "model_loaded": status.loaded,
            "model_error": status.error,
            "backends": {"online": online},
        }
        return JSONResponse(status_code=200 if healthy else 503, content=body)

    @direct(
        "GET",
        "/ping",
        summary="SageMaker container health check",
        response_class=Response,
        responses={
            200: {"description": "A model is loaded.", "content": None},
            503: {"description": "No model is loaded.", "content": None},
        },
    )
    async def ping(request: Request) -> Response:
        return Response(status_code=200 if ctx.holder.predictor is not None else 503)

    @direct(
        "POST",
        "/invocations",
        summary="SageMaker container inference (JSON, JSON Lines or CSV; one or many records)",
        openapi_extra={
            "requestBody": {"content": {t: {} for t in invocations.CONTENT_TYPES}, "required": True}
        },
    )
    async def invoke(request: Request) -> Response:
        request_id = request.state.request_id
        content_type = invocations.media_type(request.headers.get("content-type"))
        raw = await request.body()
        try:
            records = invocations.parse(raw, content_type, contract)
        except invocations.PayloadError as exc:
            return _error(request, exc.status, "bad_payload", str(exc))
        if not records:
            return _error(request, 400, "bad_payload", "no records in the body")
        validated, problems = [], []
        for index, record in enumerate(records):
            try:
                validated.append(RequestModel.model_validate(record).model_dump())
            except ValidationError as exc:
                problems.extend({**p, "field": f"{index}.{p['field']}"} for p in _violations(exc.errors()))
        if problems:
            ctx.metrics.put("ValidationFailures", 1, unit="Count", dimensions={"model": contract.model})
            return _error(request, 422, "validation_error", "records break the contract", problems)
        predictions = score(validated, request_id, request.state.started)
        items = [response_item(p, request_id) for p in predictions]
        accept = invocations.media_type(request.headers.get("accept")) or content_type
        body, media = invocations.render(items, accept, contract)
        return Response(content=body, media_type=media)

    # Starlette tries routes in order and FastAPI registered its docs routes first: the hot route
    # goes to the front (the order of /openapi.json's paths is unchanged).
    hot = [r for r in app.router.routes if getattr(r, "path", None) == "/predict"]
    app.router.routes[:] = hot + [r for r in app.router.routes if r not in hot]
    app.add_middleware(Edge, max_bytes=ctx.max_body_bytes)
    return app
