"""The online store slow, down or throttling: the contract's fallback, or a 503 naming the feature.

Documented behaviour (shipml/predict.py, Predictor.enrich): a store that fails raises
`FeatureSourceUnavailable`; each online feature then follows its `on_missing`: `default` answers
with the contract's default and flags the feature in `fallbacks`; `reject` answers 503 with
`retry-after`, naming the feature. /health reports the store as degraded. Every answered
prediction is captured, with its fallbacks; a refused request captures nothing.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ReadTimeoutError
from botocore.stub import Stubber

from shipml.backends import local_backends
from shipml.backends.aws.online import DynamoDbOnlineStore
from shipml.backends.ports import OnlineStore
from shipml.contract import load_contract
from shipml.errors import FeatureSourceUnavailable
from tests.conftest import artifact_for
from tests.faults.conftest import KNOWN_CUSTOMER, ONLINE_FEATURES, World, captured_rows

REGION = "eu-west-1"


class FailingOnlineStore(OnlineStore):
    """An online store that is slow (times out), down, or throttling, as adapters report it."""

    REASONS = {
        "slow": "online store lookup timed out after 50 ms",
        "down": "online store lookup failed: could not connect to the endpoint",
        "throttling": "online store lookup failed: ProvisionedThroughputExceededException",
    }

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.lookups = 0

    def get_many(self, group: str, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        self.lookups += 1
        raise FeatureSourceUnavailable(self.REASONS[self.mode])

    def put_many(self, group: str, items: Mapping[str, Mapping[str, Any]]) -> int:
        raise FeatureSourceUnavailable(self.REASONS[self.mode])


@pytest.mark.parametrize("mode", ["slow", "down", "throttling"])
def test_a_failing_store_falls_back_to_the_defaults_flags_them_and_captures_every_answer(
    world: World, request_body, mode: str
) -> None:
    store = FailingOnlineStore(mode)
    context = world.context(online=store)
    with world.client(context) as client:
        answers = [client.post("/predict", json=request_body(customer_id=KNOWN_CUSTOMER)) for _ in range(5)]
        batch = client.post(
            "/predict/batch", json={"records": [request_body(transaction_id=f"B{i}") for i in range(3)]}
        )
        health = client.get("/health")

    assert [a.status_code for a in answers] == [200] * 5 and batch.status_code == 200
    assert all(a.json()["fallbacks"] == ONLINE_FEATURES for a in answers)
    assert all(p["fallbacks"] == ONLINE_FEATURES for p in batch.json()["predictions"])
    assert health.status_code == 503 and health.json()["backends"]["online"].startswith("error:")
    assert store.lookups == 6 + 1  # one lookup per request (a batch is one), plus the health probe
    rows = captured_rows(world.root)  # the lifespan flushed capture on shutdown
    assert len(rows) == 5 + 3
    assert {r["fallbacks"] for r in rows} == {",".join(ONLINE_FEATURES)}
    assert all(r["txn_count_24h"] == 0 and r["mean_amount_30d"] == 50.0 for r in rows)


@pytest.fixture
def strict_world(tmp_path: Path, contract_path: Path, world: World) -> World:
    """The same model, but `txn_count_24h` may not default (`on_missing: reject`)."""
    strict = tmp_path / "strict-contract.yaml"
    strict.write_text(contract_path.read_text().replace("on_missing: default", "on_missing: reject", 1))
    assert load_contract(strict).feature("txn_count_24h").on_missing == "reject"
    settings = world.settings.model_copy(update={"root": tmp_path / "strict-root", "contract": strict})
    strict_world = World(settings, local_backends(settings.root))
    strict_world.promote(artifact_for(strict, tmp_path / "strict-artifact"))
    return strict_world


def test_a_feature_that_may_not_default_makes_the_answer_a_503_naming_it_and_captures_nothing(
    strict_world: World, request_body
) -> None:
    context = strict_world.context(online=FailingOnlineStore("down"))
    with strict_world.client(context) as client:
        refused = client.post("/predict", json=request_body())

    assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
    assert "txn_count_24h" in refused.json()["message"]
    assert captured_rows(strict_world.root) == []  # nothing was answered, nothing is captured


# --------------------------------------------------------------------------------- DynamoDB itself


def _dynamodb():
    return boto3.client(
        "dynamodb", region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
    )


class _Clock:
    """A fake clock that sleeping advances: deadlines pass without waiting."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.mark.parametrize(
    "code", ["ProvisionedThroughputExceededException", "ThrottlingException", "InternalServerError"]
)
def test_dynamodb_throttling_or_failing_is_reported_as_unavailable(code: str) -> None:
    client = _dynamodb()
    store = DynamoDbOnlineStore(client, "online", budget_ms=50)
    with Stubber(client) as stub:
        stub.add_client_error("batch_get_item", service_error_code=code, http_status_code=400)
        with pytest.raises(FeatureSourceUnavailable, match=code):
            store.get_many("fraud", [KNOWN_CUSTOMER])
        stub.assert_no_pending_responses()


def test_dynamodb_leaving_keys_unprocessed_past_the_budget_is_reported_as_unavailable() -> None:
    client = _dynamodb()
    clock = _Clock()
    store = DynamoDbOnlineStore(
        client, "online", budget_ms=50, sleep=clock.sleep, clock=clock, jitter=lambda: 1.0
    )
    keys = {"Keys": [{"entity": {"S": KNOWN_CUSTOMER}, "feature_group": {"S": "fraud"}}]}
    with Stubber(client) as stub:
        for _ in range(20):
            stub.add_response(
                "batch_get_item", {"Responses": {"online": []}, "UnprocessedKeys": {"online": keys}}
            )
        with pytest.raises(FeatureSourceUnavailable, match="unprocessed at the 50 ms deadline"):
            store.get_many("fraud", [KNOWN_CUSTOMER])
    assert clock.now < 0.050  # it gave up before the budget, instead of sleeping past it


class _SlowClient:
    """A DynamoDB client whose read times out (what serving_client's short read_timeout raises)."""

    def batch_get_item(self, **_: Any) -> dict:
        time.sleep(0.01)
        raise ReadTimeoutError(endpoint_url="https://dynamodb.eu-west-1.amazonaws.com/")


def test_dynamodb_slow_throttling_and_down_end_to_end_answer_with_fallbacks(
    world: World, request_body
) -> None:
    """The real adapter in the app: timeouts and throttling become flagged defaults, all captured."""
    throttled_client = _dynamodb()
    stores = [
        DynamoDbOnlineStore(_SlowClient(), "online", budget_ms=50),
        DynamoDbOnlineStore(throttled_client, "online", budget_ms=50),
    ]
    answered = 0
    with Stubber(throttled_client) as stub:
        for _ in range(3):
            stub.add_client_error(
                "batch_get_item",
                service_error_code="ProvisionedThroughputExceededException",
                http_status_code=400,
            )
        for store in stores:
            with world.client(world.context(online=store)) as client:
                for _ in range(3):
                    answer = client.post("/predict", json=request_body())
                    assert answer.status_code == 200, answer.text
                    assert answer.json()["fallbacks"] == ONLINE_FEATURES
                    answered += 1

    assert len(captured_rows(world.root)) == answered == 6
