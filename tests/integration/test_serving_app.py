"""The FastAPI app on the local backend: routes, errors, capture, PII, hot swaps and fallbacks."""

from __future__ import annotations

import asyncio
import json
import logging

import pyarrow.parquet as pq
import pytest
from fastapi import Request, Response
from fastapi.testclient import TestClient

from shipml.backends import LIVE, local_backends
from shipml.backends.ports import OnlineStore
from shipml.errors import FeatureSourceUnavailable
from shipml.serving.app import DirectRoute, create_app
from shipml.serving.factory import local_context
from shipml.settings import Settings

CANARY_CARD = "4000999988887777"
CANARY_CUSTOMER = "C31415926"


@pytest.fixture
def settings(tmp_path, contract_path):
    return Settings(
        root=tmp_path / "root", contract=contract_path, live_poll_seconds=0.01, max_body_bytes=20_000
    )


@pytest.fixture
def backends(settings, make_artifact):
    backends = local_backends(settings.root)
    backends.registry.register("fraud", make_artifact(seed=1))
    backends.registry.approve("fraud", 1)
    backends.registry.set_alias("fraud", LIVE, 1)
    backends.online.put_many(
        "fraud",
        {CANARY_CUSTOMER: {"txn_count_24h": 3, "mean_amount_30d": 80.0, "days_since_first_seen": 400}},
    )
    return backends


@pytest.fixture
def context(settings, backends):
    return local_context(settings, backends)


@pytest.fixture
def client(context):
    with TestClient(create_app(context)) as client:
        yield client


def body(request_body, **overrides):
    return request_body(**{"customer_id": CANARY_CUSTOMER, "card_number": CANARY_CARD, **overrides})


def test_predict_answers_with_score_label_version_request_id_and_fallbacks(client, request_body):
    response = client.post("/predict", json=body(request_body), headers={"x-request-id": "req-1"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["transaction_id"] == "T000000000001"
    assert 0 <= answer["fraud_score"] <= 1
    assert answer["is_fraud_predicted"] == (answer["fraud_score"] >= 0.5)
    assert answer["model_version"] == "fraud:1"
    assert answer["request_id"] == "req-1" and response.headers["x-request-id"] == "req-1"
    assert answer["fallbacks"] == []


def test_unknown_entity_falls_back_to_defaults_and_says_so(client, request_body, context):
    answer = client.post("/predict", json=request_body(customer_id="C00000000")).json()
    assert answer["fallbacks"] == ["txn_count_24h", "mean_amount_30d", "days_since_first_seen"]
    context.metrics.flush()
    points = [json.loads(line) for line in (context.metrics.path).read_text().splitlines()]
    assert any(p["name"] == "Fallbacks" and p["value"] == 3 for p in points)


def test_batch_scores_every_record_and_caps_the_count(client, request_body, contract):
    records = [body(request_body, transaction_id=f"T{i}", amount=10.0 + i) for i in range(5)]
    answer = client.post("/predict/batch", json={"records": records}).json()
    assert [p["transaction_id"] for p in answer["predictions"]] == [f"T{i}" for i in range(5)]
    limit = contract.serving.max_batch_rows
    too_many = client.post("/predict/batch", json={"records": [records[0]] * (limit + 1)})
    assert too_many.status_code in (413, 422)


@pytest.mark.parametrize(
    ("change", "field", "rule"),
    [
        ({"amount": -1}, "amount", "greater_than_equal"),
        ({"amount": "12"}, "amount", "float_type"),
        ({"currency": "XXX"}, "currency", "literal_error"),
        ({"event_time": "2026-01-15T23:45:00"}, "event_time", "timestamp_format"),
        ({"event_time": "15/01/2026"}, "event_time", "timestamp_format"),
        ({"card_present": "yes"}, "card_present", "bool_type"),
        ({"unknown_field": 1}, "unknown_field", "extra_forbidden"),
        ({"card_number": "12"}, "card_number", "string_pattern_mismatch"),
    ],
)
def test_a_broken_rule_is_a_422_naming_field_and_rule_without_echoing_input(
    client, request_body, change, field, rule
):
    response = client.post("/predict", json=body(request_body, **change))
    assert response.status_code == 422
    answer = response.json()
    assert answer["error"] == "validation_error"
    assert {"field": field, "rule": rule} == {k: answer["errors"][0][k] for k in ("field", "rule")}
    assert CANARY_CARD not in response.text and CANARY_CUSTOMER not in response.text


def test_missing_field_nan_and_infinity_are_422(client, request_body):
    record = body(request_body)
    del record["amount"]
    assert client.post("/predict", json=record).json()["errors"][0] == {
        "field": "amount",
        "rule": "missing",
        "message": "Field required",
    }
    text = json.dumps(body(request_body)).replace("129.99", "NaN")
    response = client.post("/predict", content=text, headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["errors"][0]["rule"] == "finite_number"
    text = json.dumps(body(request_body)).replace("129.99", "Infinity")
    assert (
        client.post("/predict", content=text, headers={"content-type": "application/json"}).status_code == 422
    )


@pytest.mark.parametrize("raw", [b'{"amount": 1,', b"\xff\xfe{}", b"[1, 2]", b""])
def test_malformed_bodies_are_4xx_never_500(client, raw):
    response = client.post("/predict", content=raw, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["errors"]


def test_body_over_the_limit_is_413(client, request_body):
    record = body(request_body, transaction_id="T" * 30_000)
    response = client.post("/predict", json=record)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


def test_health_and_ping(client):
    health = client.get("/health").json()
    assert health == {
        "status": "ok",
        "model": "fraud",
        "model_version": "fraud:1",
        "model_loaded": True,
        "model_error": None,
        "backends": {"online": "ok"},
    }
    assert client.get("/ping").status_code == 200


def test_no_model_yet_is_503_everywhere_but_openapi(settings, request_body):
    context = local_context(settings, local_backends(settings.root))
    with TestClient(create_app(context)) as client:
        assert client.get("/ping").status_code == 503
        assert client.get("/health").json()["model_error"] == "no model version is deployed yet"
        response = client.post("/predict", json=request_body())
        assert response.status_code == 503 and "no model is loaded" in response.json()["message"]
        assert client.get("/openapi.json").status_code == 200


def test_openapi_documents_every_rule(client):
    spec = client.get("/openapi.json").json()
    schema = spec["components"]["schemas"]["FraudRequest"]
    assert schema["properties"]["amount"]["minimum"] == 0.01
    assert schema["properties"]["channel"]["enum"] == ["in_store", "online", "atm", "phone"]
    assert schema["properties"]["event_time"]["format"] == "date-time"
    assert set(spec["paths"]) >= {"/predict", "/predict/batch", "/health", "/ping", "/invocations"}
    assert "422" in spec["paths"]["/predict"]["post"]["responses"]
    assert "FraudPrediction" in spec["components"]["schemas"]


def test_invocations_json_lines_and_multi_record(client, request_body):
    lines = "".join(json.dumps(body(request_body, transaction_id=f"T{i}")) + "\n" for i in range(3))
    response = client.post("/invocations", content=lines, headers={"content-type": "application/jsonlines"})
    assert response.status_code == 200 and response.headers["content-type"].startswith(
        "application/jsonlines"
    )
    answers = [json.loads(line) for line in response.text.splitlines()]
    assert [a["transaction_id"] for a in answers] == ["T0", "T1", "T2"]


def test_invocations_csv_with_and_without_header(client, contract, request_body):
    names = [f.name for f in contract.request_features]
    record = body(request_body)
    row = ",".join(
        str(record.get(n, "")).lower() if isinstance(record.get(n), bool) else str(record.get(n, ""))
        for n in names
    )
    for payload in (row + "\n" + row, ",".join(names) + "\n" + row):
        response = client.post("/invocations", content=payload, headers={"content-type": "text/csv"})
        assert response.status_code == 200, response.text
        first = response.text.splitlines()[0].split(",")
        assert first[0] == "T000000000001" and 0 <= float(first[1]) <= 1 and first[2] in ("true", "false")
    bad = client.post(
        "/invocations", content=row.replace("129.99", "abc"), headers={"content-type": "text/csv"}
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "0.amount"
    short = client.post("/invocations", content="a,b", headers={"content-type": "text/csv"})
    assert short.status_code == 400 and "CSV line 1 has 2 values" in short.json()["message"]


def test_invocations_unsupported_type_is_415(client):
    response = client.post("/invocations", content=b"x", headers={"content-type": "application/x-parquet"})
    assert response.status_code == 415


def test_capture_holds_every_prediction_masked(client, context, request_body, settings, caplog):
    caplog.set_level(logging.DEBUG)
    for i in range(4):
        client.post("/predict", json=body(request_body, transaction_id=f"T{i}"))
    client.post("/predict/batch", json={"records": [body(request_body, transaction_id="B1")] * 2})
    context.capture.flush()
    tables = [pq.read_table(p) for p in (settings.root / "capture").rglob("*.parquet")]
    rows = [r for t in tables for r in t.to_pylist()]
    assert len(rows) == 6
    assert {r["model_version"] for r in rows} == {"fraud:1"}
    assert all(r["card_number"] == "************7777" for r in rows)
    assert all(r["customer_id"].startswith("h:") for r in rows)
    assert all(r["txn_count_24h"] == 3 for r in rows)  # the online features as scored
    everything = json.dumps(rows, default=str) + caplog.text
    assert CANARY_CARD not in everything and CANARY_CUSTOMER not in everything


def test_live_promotion_swaps_the_model_and_a_corrupt_one_is_refused(
    client, context, backends, make_artifact, request_body
):
    registry = backends.registry
    registry.register("fraud", make_artifact(seed=2))
    registry.approve("fraud", 2)
    registry.set_alias("fraud", LIVE, 2)
    assert context.holder.refresh(force=True)
    assert client.post("/predict", json=body(request_body)).json()["model_version"] == "fraud:2"

    version = registry.register("fraud", make_artifact(seed=3))
    registry.approve("fraud", 3)
    backends.blobs.put_bytes("models/fraud/3/model.tar.gz", b"corrupted after registration")
    registry.set_alias("fraud", LIVE, 3)
    assert not context.holder.refresh(force=True)
    assert client.post("/predict", json=body(request_body)).json()["model_version"] == "fraud:2"
    health = client.get("/health").json()
    assert health["model_version"] == "fraud:2" and health["model_error"].startswith("fraud:3 refused")
    assert version.version == 3


class DownStore(OnlineStore):
    """An online store that is down (timeouts, throttling): what the adapters raise."""

    def get_many(self, group, keys):
        raise FeatureSourceUnavailable("online store timed out after 40 ms")

    def put_many(self, group, items):
        raise FeatureSourceUnavailable("down")


def test_a_down_online_store_falls_back_or_refuses_per_the_contract(context, request_body, contract):
    context.holder.predictor.online = DownStore()
    context.online_check = None
    with TestClient(create_app(context)) as client:
        answer = client.post("/predict", json=body(request_body)).json()
        assert answer["fallbacks"] == ["txn_count_24h", "mean_amount_30d", "days_since_first_seen"]

    strict = contract.model_copy(
        update={
            "features": [
                f.model_copy(update={"on_missing": "reject"}) if f.source == "online" else f
                for f in contract.features
            ]
        }
    )
    context.holder.predictor.contract = strict
    with TestClient(create_app(context)) as client:
        response = client.post("/predict", json=body(request_body))
        assert response.status_code == 503
        assert (
            "online feature 'txn_count_24h' is unavailable (online store timed out after 40 ms)"
            in response.text
        )


def test_direct_routes_take_the_request_only():
    """A DirectRoute calls its endpoint with the Request alone, so any other parameter is refused
    when the app is built, rather than silently never filled."""

    seen: list[Request] = []

    async def reads_the_request(request: Request):  # noqa: ANN202
        seen.append(request)
        return Response(b"read")

    async def wants_a_query(request: Request, limit: int = 3):  # noqa: ANN202
        return None

    route = DirectRoute("/ok", reads_the_request, methods=["GET"])
    request = Request({"type": "http", "method": "GET", "path": "/ok", "headers": []})
    answer = asyncio.run(route.get_route_handler()(request))
    assert seen == [request] and answer.body == b"read"  # the endpoint's own request and response
    with pytest.raises(TypeError, match="takes the Request only"):
        DirectRoute("/bad", wants_a_query, methods=["GET"])


def test_request_id_is_echoed_and_an_oversized_body_still_gets_one(client, request_body):
    answer = client.post("/predict", json=request_body(), headers={"x-request-id": "abc-123"})
    assert answer.headers["x-request-id"] == "abc-123" and answer.json()["request_id"] == "abc-123"
    refused = client.post("/predict", content=b"{" + b" " * 30_000 + b"}", headers={"x-request-id": "big-1"})
    assert refused.status_code == 413 and refused.headers["x-request-id"] == "big-1"


def test_fastapi_opentelemetry_hooks_stay_off(context, request_body, monkeypatch):
    """Powertools is the observability: the app never consults OpenTelemetry's global providers
    (left on, FastAPI's hooks look them up on every request and would trace twice under an
    OpenTelemetry layer). A bare FastAPI app does consult them, which shows the check can fail."""
    from fastapi import FastAPI
    from opentelemetry import _logs, metrics, trace

    looked_up: list[str] = []
    for module, name in ((trace, "get_tracer_provider"), (metrics, "get_meter_provider")):
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda o=original, n=name: looked_up.append(n) or o())
    original_logs = _logs.get_logger_provider
    monkeypatch.setattr(_logs, "get_logger_provider", lambda: looked_up.append("logs") or original_logs())

    with TestClient(create_app(context)) as ours:
        assert ours.post("/predict", json=request_body()).status_code == 200
        assert ours.get("/ping").status_code == 200
    assert looked_up == []

    bare = FastAPI()

    @bare.get("/ping")
    async def ping() -> dict:
        return {}

    with TestClient(bare) as client:
        assert client.get("/ping").status_code == 200
    assert looked_up


def test_a_model_that_answers_nan_is_a_500_and_decides_nothing(settings, request_body, tmp_path):
    """NaN >= threshold is false: a NaN score must never become a "not fraud" answer. The API
    answers 500 (counted by the 5xx and rollout alarms), in the documented error shape."""
    from tests.conftest import CONTRACT_PATH, artifact_for

    backends = local_backends(settings.root)
    backends.registry.register("fraud", artifact_for(CONTRACT_PATH, tmp_path / "nan", bias=float("nan")))
    backends.registry.approve("fraud", 1)
    backends.registry.set_alias("fraud", LIVE, 1)
    context = local_context(settings, backends)
    with TestClient(create_app(context)) as client:
        answer = client.post("/predict", json=request_body())
        batch = client.post("/predict/batch", json={"records": [request_body(), request_body()]})
    for response in (answer, batch):
        body = json.loads(response.text, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
        assert response.status_code == 500 and body["error"] == "model_output"
        assert "fraud:1 produced no valid score" in body["message"]
    context.capture.flush()
    assert not list(settings.root.rglob("*.parquet"))  # nothing captured: no decision was made
