"""The contract's new parts: aggregations, http sources, currencies; each mistake named where it is."""

from __future__ import annotations

import copy

import pytest
import yaml

from shipml.contract import parse_contract
from shipml.errors import ContractError

HTTP_SOURCE = {
    "name": "risk_api",
    "url": "http://127.0.0.1:9/v1/customers/{key}",
    "secret": "shipml/risk-api",
}
HTTP_FEATURE = {
    "name": "risk_score",
    "type": "number",
    "min": 0,
    "max": 1,
    "source": "http",
    "http_source": "risk_api",
    "response_field": "risk.score",
    "default": 0.5,
    "on_missing": "default",
}


@pytest.fixture(scope="module")
def raw(contract_path) -> dict:
    return yaml.safe_load(contract_path.read_text())


def _feature(raw: dict, name: str) -> dict:
    return next(f for f in raw["features"] if f["name"] == name)


def _with_http(raw: dict) -> dict:
    raw["http_sources"] = [dict(HTTP_SOURCE)]
    raw["features"].append(dict(HTTP_FEATURE))
    return raw


def test_example_aggregations_and_an_http_source_load(raw):
    contract = parse_contract(_with_http(copy.deepcopy(raw)))
    assert [f.aggregation.function for f in contract.aggregated_features] == [
        "count",
        "mean",
        "days_since_first",
    ]
    assert contract.feature("txn_count_24h").aggregation.window_seconds == 86_400
    assert contract.feature("mean_amount_30d").aggregation.window_seconds == 30 * 86_400
    (feature,) = contract.http_features
    assert feature.name == "risk_score" and feature.looked_up and feature.may_be_missing
    assert contract.http_source("risk_api").breaker.failures == 5
    assert "risk_score" not in [f.name for f in contract.request_features]
    assert contract.online_features == [f for f in contract.features if f.source == "online"]


BAD = {
    "aggregation on a request feature": (
        lambda r: _feature(r, "amount").update(aggregation={"function": "count", "window": "1h"}),
        "aggregation applies to online features",
    ),
    "mean without a column": (
        lambda r: _feature(r, "mean_amount_30d").update(aggregation={"function": "mean", "window": "30d"}),
        "aggregation mean needs a 'column'",
    ),
    "days_since_first with a window": (
        lambda r: _feature(r, "days_since_first_seen").update(
            aggregation={"function": "days_since_first", "window": "1d"}
        ),
        "takes no 'window'",
    ),
    "bad window": (
        lambda r: _feature(r, "txn_count_24h").update(
            aggregation={"function": "count", "window": "24 hours"}
        ),
        "should match pattern",
    ),
    "aggregating a category": (
        lambda r: _feature(r, "mean_amount_30d").update(
            aggregation={"function": "mean", "column": "channel", "window": "30d"}
        ),
        "aggregation column 'channel' must name a numeric request feature",
    ),
    "count into a number feature": (
        lambda r: _feature(r, "mean_amount_30d").update(aggregation={"function": "count", "window": "30d"}),
        "aggregation count gives an integer",
    ),
    "aggregation without event_time": (lambda r: r.pop("event_time"), "needs an event_time"),
    "http feature without its source": (
        lambda r: r["features"].append({**HTTP_FEATURE, "http_source": None}),
        "an http feature needs 'http_source'",
    ),
    "http source naming nothing": (
        lambda r: r["features"].append(dict(HTTP_FEATURE)),
        "http_source 'risk_api' names no http_sources entry",
    ),
    "url without a key": (
        lambda r: r.update(http_sources=[{**HTTP_SOURCE, "url": "http://127.0.0.1/v1"}]),
        "url must contain '{key}'",
    ),
    "too many retries": (
        lambda r: r.update(http_sources=[{**HTTP_SOURCE, "retries": 50}]),
        "http_sources[0] (risk_api).retries: Input should be less than or equal to 5",
    ),
    "http feature without default": (
        lambda r: _with_http(r)["features"][-1].pop("default"),
        "on_missing: default needs a default value",
    ),
    "currency field naming a number": (
        lambda r: _feature(r, "amount").update(currency={"field": "amount", "to": "EUR"}),
        "currency field 'amount' must name a category request feature",
    ),
    "negative rate": (
        lambda r: _feature(r, "amount").update(
            currency={"field": "currency", "to": "EUR", "rates": {"USD": -1}}
        ),
        "Input should be greater than 0",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_contract_parts_are_named(raw, case):
    change, expected = BAD[case]
    broken = copy.deepcopy(raw)
    change(broken)
    with pytest.raises(ContractError) as caught:
        parse_contract(broken, source="broken.yaml")
    assert expected in str(caught.value)
