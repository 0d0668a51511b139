"""The serving fast path of the encoder gives the tensor of the vectorised encoder, value for value."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from shipml.contract import FeatureEncoder, build_request_model
from shipml.contract.row_encode import RowEncoder


def _assert_same(encoder: FeatureEncoder, rows: list[dict]) -> None:
    fast = RowEncoder(encoder)
    expected = encoder.encode_rows(rows)
    got = np.concatenate([fast.encode([row]) for row in rows]) if rows else fast.encode(rows)
    assert got.dtype == np.float32 and got.shape == expected.shape
    # sin/cos/log1p: libm here, numpy's own loops there; at most one float32 ulp apart.
    np.testing.assert_allclose(got, expected, rtol=2e-7, atol=1e-7)
    np.testing.assert_array_equal(got != 0, expected != 0)


def test_the_sample_data_encodes_identically(contract, sample_table):
    encoder = FeatureEncoder(contract)
    request_model = build_request_model(contract)
    online = [f.name for f in contract.online_features]
    rows = []
    for record in sample_table.slice(0, 400).to_pylist():
        body = {k: v for k, v in record.items() if k in request_model.model_fields}
        body["event_time"] = record["event_time"].astimezone().isoformat()
        parsed = request_model.model_validate(json.loads(json.dumps(body))).model_dump()
        parsed.update({name: record[name] for name in online})
        rows.append(parsed)
    _assert_same(encoder, rows)
    # A few rows at once go through the fast path as one matrix.
    np.testing.assert_allclose(
        RowEncoder(encoder).encode(rows[:5]), encoder.encode_rows(rows[:5]), rtol=2e-7, atol=1e-7
    )


_numbers = st.one_of(
    st.none(),
    st.just(float("nan")),
    st.integers(-(10**6), 10**6),
    st.floats(-1e6, 1e6, allow_nan=False),
    st.sampled_from([0, 0.01, 50_000, 50_000.5, 10_000, 20_000, -1]),
)


def _times():
    offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
    moments = st.datetimes(min_value=datetime(1960, 1, 1), max_value=datetime(2100, 1, 1), timezones=offsets)
    return st.one_of(st.none(), moments, moments.map(lambda d: d.isoformat()))


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_record_encodes_identically(contract, data):
    """Missing, NaN, out-of-range, unseen and odd timestamps: both paths agree on all of them."""
    encoder = FeatureEncoder(contract)
    row: dict = {}
    for feature in contract.input_features:
        kind = feature.type.value
        if kind == "category":
            known = list(feature.categories or [])
            row[feature.name] = data.draw(st.one_of(st.none(), st.sampled_from(known), st.text(max_size=5)))
        elif kind == "timestamp":
            row[feature.name] = data.draw(_times())
        elif kind == "boolean":
            row[feature.name] = data.draw(st.one_of(st.none(), st.booleans()))
        else:
            row[feature.name] = data.draw(_numbers)
    _assert_same(encoder, [row])


def test_more_rows_than_the_fast_path_takes_use_the_vectorised_encoder(contract, request_body, monkeypatch):
    encoder = FeatureEncoder(contract)
    row = build_request_model(contract).model_validate(request_body()).model_dump()
    fast = RowEncoder(encoder)
    calls: list[int] = []
    monkeypatch.setattr(fast, "_row", lambda r: calls.append(1) or RowEncoder._row(fast, r))
    expected = encoder.encode_rows([row] * (RowEncoder.max_rows + 1))
    np.testing.assert_array_equal(fast.encode([row] * (RowEncoder.max_rows + 1)), expected)
    assert calls == []  # the vectorised path
    fast.encode([row] * RowEncoder.max_rows)
    assert len(calls) == RowEncoder.max_rows  # up to max_rows: the row path


def test_a_missing_time_encodes_to_zeros(contract):
    encoder = FeatureEncoder(contract)
    (vector,) = RowEncoder(encoder).encode([{"event_time": None}])
    named = dict(zip(encoder.feature_names, vector.tolist(), strict=True))
    assert [named[f"event_time:{p}"] for p in ("hour_sin", "hour_cos", "dow_sin", "dow_cos")] == [0.0] * 4
    (vector,) = RowEncoder(encoder).encode([{"event_time": datetime(2026, 1, 1, tzinfo=UTC)}])
    named = dict(zip(encoder.feature_names, vector.tolist(), strict=True))
    # Midnight on a Thursday (day 3): hour angle 0, weekday angle 3 * 2pi/7.
    assert named["event_time:hour_sin"] == 0.0 and named["event_time:hour_cos"] == 1.0
    assert named["event_time:dow_sin"] != 0.0 and named["event_time:dow_cos"] != 0.0
