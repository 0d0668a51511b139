"""The feature encoder: layout, missing values, and parity between the training and serving paths."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa

from shipml.contract import FeatureEncoder, build_request_model, encode_target
from shipml.contract.encode import OTHER
from shipml.contract.validate import validate_table


def test_layout_follows_the_contract(contract):
    encoder = FeatureEncoder(contract)
    assert encoder.feature_names[0] == "amount"
    assert "currency=EUR" in encoder.feature_names
    assert f"merchant_category={OTHER}" in encoder.feature_names  # unseen: other
    assert f"channel={OTHER}" not in encoder.feature_names  # unseen: reject
    assert encoder.feature_names[-3:] == ["txn_count_24h", "mean_amount_30d", "days_since_first_seen"]
    assert encoder.width == len(encoder.feature_names) == 42


def test_values_are_encoded_as_documented(contract, request_body):
    encoder = FeatureEncoder(contract)
    row = (
        build_request_model(contract).model_validate(request_body(merchant_category="pet_shops")).model_dump()
    )
    row.update(txn_count_24h=None, mean_amount_30d=200.0, days_since_first_seen=3)
    (vector,) = encoder.encode_rows([row])
    named = dict(zip(encoder.feature_names, vector.tolist(), strict=True))
    assert math.isclose(named["amount"], math.log1p(129.99), rel_tol=1e-6)
    assert named["currency=EUR"] == 1 and named["currency=USD"] == 0
    assert named[f"merchant_category={OTHER}"] == 1 and named["merchant_category=electronics"] == 0
    assert named["card_present"] == 0
    # 23:45+01:00 is 22:45 UTC on a Thursday (day 3 with Monday = 0).
    assert math.isclose(named["event_time:hour_sin"], math.sin(2 * math.pi * 22.75 / 24), abs_tol=1e-6)
    assert math.isclose(named["event_time:dow_cos"], math.cos(2 * math.pi * 3 / 7), abs_tol=1e-6)
    assert named["txn_count_24h"] == 0.0  # missing -> the default 0 -> log1p(0)
    assert math.isclose(named["mean_amount_30d"], math.log1p(200.0), rel_tol=1e-6)
    assert vector.dtype == np.float32


def test_missing_category_without_default_encodes_to_other_or_zeros(contract):
    encoder = FeatureEncoder(contract)
    matrix = encoder.encode_columns({"merchant_category": [None], "channel": [None]}, rows=1)
    named = dict(zip(encoder.feature_names, matrix[0].tolist(), strict=True))
    assert named[f"merchant_category={OTHER}"] == 1
    assert sum(v for k, v in named.items() if k.startswith("channel=")) == 0


def test_training_and_serving_paths_give_the_same_tensor(contract, sample_table):
    """No training/serving skew: Arrow table -> encode_table equals JSON -> request model -> encode_rows."""
    encoder = FeatureEncoder(contract)
    table = sample_table.slice(0, 500)
    training = encoder.encode_table(validate_table(contract, table).table)

    request_model = build_request_model(contract)
    online = [f.name for f in contract.online_features]
    served_rows = []
    for record in table.to_pylist():
        # What a client sends: JSON with an ISO timestamp in its own offset, no label, no online features.
        body = {k: v for k, v in record.items() if k in request_model.model_fields}
        body["event_time"] = record["event_time"].astimezone().isoformat()
        parsed = request_model.model_validate(json.loads(json.dumps(body))).model_dump()
        parsed.update({name: record[name] for name in online})  # as the online store returns them
        served_rows.append(parsed)
    serving = encoder.encode_rows(served_rows)
    np.testing.assert_array_equal(training, serving)


def test_target_is_zero_one_float(contract):
    table = pa.table({"is_fraud": pa.array([True, False, True])})
    assert encode_target(contract, table).tolist() == [1.0, 0.0, 1.0]
