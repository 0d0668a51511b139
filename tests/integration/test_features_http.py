"""The external HTTP source against a small stub API on 127.0.0.1: timeouts, retries, garbage,
the circuit breaker, the fallback policy, and credentials from Secrets Manager (moto) with rotation.

The stub answers a bounded number of requests and stops by itself; tests count requests, never time.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from shipml.contract import parse_contract
from shipml.errors import FeatureSourceUnavailable, OnlineFeatureError
from shipml.features.http import HttpFeatureSource, apply_http_features, build_http_sources

Reply = tuple[int, object, float]  # status, body (JSON-able, or bytes sent as is), delay in seconds


class StubApi:
    """An HTTP server on 127.0.0.1 answering GETs with `respond(index, path, headers)`.

    It serves at most `max_requests` requests or for `lifetime_s` seconds, then stops by itself.
    """

    def __init__(
        self, respond: Callable[[int, str, dict], Reply], *, max_requests: int = 40, lifetime_s: float = 20
    ):
        self.respond = respond
        self.requests: list[tuple[str, str | None]] = []
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                with stub._lock:
                    index = len(stub.requests)
                    stub.requests.append((self.path, self.headers.get("Authorization")))
                status, body, delay = stub.respond(index, self.path, dict(self.headers))
                if delay:
                    time.sleep(delay)
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (a timeout test); nothing to tell it

            def log_message(self, *args) -> None:
                pass

        # Threads, so that a slow answer (a timeout test) does not hold the next request back.
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.timeout = 0.05
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1/customers/{{key}}"
        self._stop = threading.Event()
        self._deadline = time.monotonic() + lifetime_s
        self._max = max_requests
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while (
            not self._stop.is_set() and len(self.requests) < self._max and time.monotonic() < self._deadline
        ):
            self.server.handle_request()

    def __enter__(self) -> StubApi:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.server.server_close()


def ok(score: float = 0.25, segment: str = "gold") -> Reply:
    return 200, {"customer": "x", "risk": {"score": score, "segment": segment}}, 0.0


@pytest.fixture(scope="module")
def raw(contract_path) -> dict:
    return yaml.safe_load(contract_path.read_text())


def make_contract(raw: dict, url: str, **source) -> object:
    changed = copy.deepcopy(raw)
    changed["http_sources"] = [
        {"name": "risk_api", "url": url, "timeout_ms": 200, "retries": 1, "backoff_ms": 1, **source}
    ]
    changed["features"] += [
        {
            "name": "risk_score",
            "type": "number",
            "min": 0,
            "max": 1,
            "source": "http",
            "http_source": "risk_api",
            "response_field": "risk.score",
            "default": 0.5,
            "on_missing": "default",
        },
        {
            "name": "risk_segment",
            "type": "category",
            "categories": ["gold", "silver"],
            "source": "http",
            "http_source": "risk_api",
            "response_field": "risk.segment",
            "on_missing": "reject",
        },
    ]
    return parse_contract(changed)


def source_for(contract, **options) -> HttpFeatureSource:
    (source,) = build_http_sources(contract, **options).values()
    return source


def test_answers_are_mapped_and_checked_and_unknown_keys_are_absent(raw):
    def respond(index, path, headers):
        return (404, {"error": "unknown"}, 0.0) if path.endswith("C00000404") else ok(0.125)

    with StubApi(respond) as api:
        source = source_for(make_contract(raw, api.url))
        found = source.lookup(["C00000001", "C00000001", "C00000404", "C00000002"])
    assert found == {
        "C00000001": {"risk_score": 0.125, "risk_segment": "gold"},
        "C00000002": {"risk_score": 0.125, "risk_segment": "gold"},
    }
    assert sorted(path for path, _ in api.requests) == [
        "/v1/customers/C00000001",
        "/v1/customers/C00000002",
        "/v1/customers/C00000404",
    ]


def test_a_slow_api_times_out_is_retried_and_then_unavailable(raw):
    with StubApi(lambda i, p, h: (200, {"risk": {"score": 0.1}}, 0.5)) as api:
        source = source_for(make_contract(raw, api.url, timeout_ms=50, retries=2))
        with pytest.raises(FeatureSourceUnavailable, match=r"timed out after \d+ ms, after 3 attempt"):
            source.lookup(["C00000001"])
    assert source.requests == 3  # the first attempt and two retries, no more
    assert 1 <= len(api.requests) <= 3


def test_a_server_error_is_retried_once_and_the_retry_succeeds(raw):
    with StubApi(lambda i, p, h: (503, {"error": "busy"}, 0.0) if i == 0 else ok()) as api:
        source = source_for(make_contract(raw, api.url, retries=1))
        assert source.lookup(["C00000001"])["C00000001"]["risk_score"] == 0.25
    assert len(api.requests) == 2


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>oops</html>", "not JSON"),
        ([1, 2, 3], "not a JSON object"),
        ({"risk": {"score": 7.5, "segment": "gold"}}, "'risk.score' is outside"),
        ({"risk": {"score": "high", "segment": "gold"}}, "'risk.score' is not a finite number"),
        ({"risk": {"score": 0.2, "segment": "platinum"}}, "'risk.segment' is not one of the categories"),
    ],
)
def test_garbage_is_a_failure_never_retried_never_passed_on(raw, body, reason):
    with StubApi(lambda i, p, h: (200, body, 0.0)) as api:
        source = source_for(make_contract(raw, api.url, retries=3))
        with pytest.raises(FeatureSourceUnavailable, match=reason):
            source.lookup(["C00000001"])
    assert len(api.requests) == 1


def test_the_breaker_opens_stops_calling_and_closes_after_a_good_trial(raw):
    now = [1000.0]
    healthy = threading.Event()
    with StubApi(lambda i, p, h: ok() if healthy.is_set() else (500, {}, 0.0)) as api:
        contract = make_contract(raw, api.url, retries=0, breaker={"failures": 2, "reset_s": 30})
        source = source_for(contract, clock=lambda: now[0])
        for _ in range(2):
            with pytest.raises(FeatureSourceUnavailable, match="HTTP 500"):
                source.lookup(["C00000001"])
        assert source.breaker.state == "open"

        # While open: no request leaves, the caller gets the failure at once
        with pytest.raises(FeatureSourceUnavailable, match="circuit breaker open"):
            source.lookup(["C00000001"])
        assert len(api.requests) == 2

        # After reset_s: one trial; it fails, so the breaker opens again
        now[0] += 30
        with pytest.raises(FeatureSourceUnavailable, match="HTTP 500"):
            source.lookup(["C00000001"])
        assert source.breaker.state == "open" and len(api.requests) == 3

        # The API recovers; the next trial succeeds and closes the breaker
        healthy.set()
        now[0] += 30
        assert source.lookup(["C00000001"])["C00000001"]["risk_segment"] == "gold"
        assert source.breaker.state == "closed" and len(api.requests) == 4


def test_fallback_policy_applies_exactly_as_for_the_online_store(raw):
    rows = [{"customer_id": "C00000001"}, {"customer_id": "C00000002"}]
    with StubApi(lambda i, p, h: (200, {"risk": {"segment": "silver"}}, 0.0)) as api:
        contract = make_contract(raw, api.url)
        sources = build_http_sources(contract)
        # A missing score falls back to its default, flagged; the segment is there
        enriched = [dict(r) for r in rows]
        fallbacks = apply_http_features(contract, sources, enriched)
    assert fallbacks == [["risk_score"], ["risk_score"]]
    assert enriched[0] == {"customer_id": "C00000001", "risk_score": 0.5, "risk_segment": "silver"}

    with StubApi(lambda i, p, h: (500, {}, 0.0)) as api:
        contract = make_contract(raw, api.url, retries=0)
        # Unavailable: risk_segment has on_missing: reject, so the request is refused, naming it
        with pytest.raises(
            OnlineFeatureError, match="http feature 'risk_segment' is unavailable \\(http source"
        ):
            apply_http_features(contract, build_http_sources(contract), [dict(r) for r in rows])


@pytest.fixture
def secrets(moto_aws):
    client = moto_aws.client("secretsmanager")
    client.create_secret(Name="shipml/risk-api", SecretString=json.dumps({"token": "first"}))
    return client


def test_credentials_come_from_secrets_manager_cached_and_refreshed_on_rotation(raw, secrets):
    accepted = ["Bearer first"]

    def respond(index, path, headers):
        return ok() if headers.get("Authorization") == accepted[0] else (401, {"error": "bad token"}, 0.0)

    with StubApi(respond) as api:
        contract = make_contract(raw, api.url, secret="shipml/risk-api", secret_ttl_s=3600)
        source = source_for(contract, secrets_client=secrets)
        source.lookup(["C00000001"])
        source.lookup(["C00000002"])
        assert source.credentials.fetches == 1  # cached

        # The secret is rotated, and the API accepts only the new token from now on
        secrets.put_secret_value(SecretId="shipml/risk-api", SecretString=json.dumps({"token": "second"}))
        accepted[0] = "Bearer second"
        assert source.lookup(["C00000003"])["C00000003"]["risk_score"] == 0.25

    assert source.credentials.fetches == 2
    assert [auth for _, auth in api.requests] == [
        "Bearer first",
        "Bearer first",
        "Bearer first",
        "Bearer second",
    ]


def test_a_source_with_a_secret_needs_a_secrets_client(raw):
    contract = make_contract(raw, "http://127.0.0.1:9/{key}", secret="shipml/risk-api")
    with pytest.raises(ValueError, match="pass secrets_client"):
        build_http_sources(contract)
