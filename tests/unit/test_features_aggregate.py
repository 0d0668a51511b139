"""One definition, two uses: the contract's aggregations at points in time, and the training join.

Every value is checked against a direct pandas computation of the definition (events of the
entity with `t - window <= event_time < t`), and the join is shown never to see the future.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml

from shipml.contract import parse_contract
from shipml.features.aggregate import aggregate_at, epoch_us, prepare_events
from shipml.features.training import point_in_time_join

T0 = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def rich_contract(contract_path):
    """The example contract plus sum/min/max aggregations, to cover every function."""
    raw = yaml.safe_load(contract_path.read_text())
    raw = copy.deepcopy(raw)
    for name, function, window in (
        ("amount_sum_1h", "sum", "1h"),
        ("amount_min_7d", "min", "7d"),
        ("amount_max_7d", "max", "7d"),
    ):
        raw["features"].append(
            {
                "name": name,
                "type": "number",
                "min": 0,
                "source": "online",
                "default": 0.0,
                "on_missing": "default",
                "aggregation": {"function": function, "column": "amount", "window": window},
            }
        )
    return parse_contract(raw)


def _events(rows):
    keys, times, amounts = zip(*rows, strict=True)
    return pa.table(
        {
            "customer_id": pa.array(keys, pa.string()),
            "event_time": pa.array(times, pa.timestamp("us", tz="UTC")),
            "amount": pa.array(amounts, pa.float64()),
        }
    )


def _by_pandas(events: pa.Table, key: str, at: datetime, contract) -> dict[str, float]:
    """The definition, written out directly: the events of `key` in [at - window, at)."""
    frame = events.to_pandas()
    frame = frame[(frame.customer_id == key) & (frame.event_time < pd.Timestamp(at))]
    out = {}
    for feature in contract.aggregated_features:
        agg = feature.aggregation
        window = frame
        if agg.window_seconds:
            window = frame[frame.event_time >= pd.Timestamp(at) - pd.Timedelta(seconds=agg.window_seconds)]
        if agg.function == "count":
            out[feature.name] = float(len(window))
        elif agg.function == "days_since_first":
            first = frame.event_time.min()
            out[feature.name] = (
                np.floor((pd.Timestamp(at) - first) / pd.Timedelta(days=1)) if len(frame) else np.nan
            )
        elif agg.function == "sum":
            out[feature.name] = float(window.amount.sum())
        else:
            out[feature.name] = float(getattr(window.amount, agg.function)()) if len(window) else np.nan
    return out


def test_window_bounds_are_inclusive_at_the_start_and_exclusive_at_the_point_in_time(rich_contract):
    # Given events exactly 24 h before, 1 µs later, and exactly at the point in time
    day = timedelta(hours=24)
    events = _events(
        [
            ("C00000001", T0 - day, 10.0),  # on the window's start: counted
            ("C00000001", T0 - day + timedelta(microseconds=1), 20.0),
            ("C00000001", T0, 1000.0),  # at t itself: never counted (a row must not see itself)
            ("C00000002", T0 - 40 * day, 5.0),  # outside every window but first seen 40 days ago
        ]
    )
    prepared = prepare_events(rich_contract, events)

    # When aggregating at T0 for both customers and one nobody has seen
    values = aggregate_at(
        rich_contract,
        prepared,
        ["C00000001", "C00000002", "C99999999"],
        np.full(3, epoch_us(pa.array([T0]))[0]),
    )

    # Then
    assert values["txn_count_24h"].tolist() == [2, 0, 0]
    assert values["mean_amount_30d"][0] == 15.0 and np.isnan(values["mean_amount_30d"][1:]).all()
    assert values["days_since_first_seen"][:2].tolist() == [1.0, 40.0] and np.isnan(
        values["days_since_first_seen"][2]
    )
    assert values["amount_sum_1h"].tolist() == [0.0, 0.0, 0.0]
    assert values["amount_min_7d"][0] == 10.0 and values["amount_max_7d"][0] == 20.0


def test_every_function_equals_pandas_on_random_events(rich_contract):
    # Given 3,000 random events of 40 customers over 60 days and 300 random query points
    rng = np.random.default_rng(5)
    keys = [f"C{n:08d}" for n in rng.integers(0, 40, 3000)]
    times = [T0 + timedelta(seconds=float(s)) for s in rng.uniform(-60 * 86400, 0, 3000)]
    events = _events(list(zip(keys, times, np.round(rng.lognormal(3, 1, 3000), 2).tolist(), strict=True)))
    query_keys = [f"C{n:08d}" for n in rng.integers(0, 45, 120)]
    query_times = [T0 - timedelta(seconds=float(s)) for s in rng.uniform(0, 30 * 86400, 120)]

    # When
    got = aggregate_at(
        rich_contract,
        prepare_events(rich_contract, events),
        query_keys,
        epoch_us(pa.array(query_times, pa.timestamp("us", tz="UTC"))),
    )

    # Then each value equals the definition computed directly
    for i, (key, at) in enumerate(zip(query_keys, query_times, strict=True)):
        expected = _by_pandas(events, key, at, rich_contract)
        for name, value in expected.items():
            assert np.isclose(got[name][i], value, rtol=1e-12, equal_nan=True), (name, key, at)


def test_training_rows_never_see_their_own_or_later_events(contract, sample_table):
    # Given the history, and the same history with a huge transaction appended after every row
    rows = sample_table.slice(0, 400)
    joined, _ = point_in_time_join(contract, rows)
    last = max(rows.column("event_time").to_pylist())
    poison = rows.slice(0, 50)
    poison = poison.set_column(
        poison.column_names.index("event_time"),
        "event_time",
        pa.array([last + timedelta(seconds=1)] * 50, pa.timestamp("us", tz="UTC")),
    ).set_column(poison.column_names.index("amount"), "amount", pa.array([49_999.0] * 50))
    history = pa.concat_tables([rows, poison])

    # When joining with the poisoned history
    poisoned, report = point_in_time_join(contract, rows, history)

    # Then no row changed: nothing at or after a row's own time reaches it
    names = [f.name for f in contract.aggregated_features]
    assert poisoned.select(names).equals(joined.select(names))
    assert report.history_rows == 450 and report.history_refused == 0
    # and a row's own amount is not in its 30-day mean when it is the customer's first transaction
    frame = joined.to_pandas()
    firsts = frame.sort_values("event_time").groupby("customer_id").head(1)
    assert firsts.mean_amount_30d.isna().all() and (firsts.txn_count_24h == 0).all()


def test_training_join_equals_pandas_on_generated_transactions(contract, sample_table):
    # Given the generated transactions (they are both the rows and the history)
    joined, _ = point_in_time_join(contract, sample_table)
    frame = sample_table.to_pandas()
    got = joined.to_pandas()

    # Then for a sample of rows each feature is the definition computed directly
    for index in np.random.default_rng(3).choice(len(frame), 150, replace=False):
        row = frame.iloc[index]
        expected = _by_pandas(sample_table, row.customer_id, row.event_time.to_pydatetime(), contract)
        for name, value in expected.items():
            assert np.isclose(
                float(got.iloc[index][name]) if pd.notna(got.iloc[index][name]) else np.nan,
                value,
                rtol=1e-12,
                equal_nan=True,
            )


def test_string_event_times_with_offsets_are_joined_in_utc(contract, sample_table):
    # Given the same rows with event times as ISO strings in +05:30
    rows = sample_table.slice(0, 300)
    as_text = [
        t.astimezone(__import__("datetime").timezone(timedelta(hours=5, minutes=30))).isoformat()
        for t in rows.column("event_time").to_pylist()
    ]
    shifted = rows.set_column(rows.column_names.index("event_time"), "event_time", pa.array(as_text))

    # When joining both
    names = [f.name for f in contract.aggregated_features]
    expected, _ = point_in_time_join(contract, rows)
    got, _ = point_in_time_join(contract, shifted)

    # Then the features are the same: the instant matters, not how it was written
    assert got.select(names).equals(expected.select(names))


def test_history_rows_that_break_the_contract_are_left_out_and_counted(contract, sample_table):
    rows = sample_table.slice(0, 200)
    bad = rows.set_column(
        rows.column_names.index("amount"), "amount", pa.array([-5.0] + rows.column("amount").to_pylist()[1:])
    )
    _, report = point_in_time_join(contract, rows, bad)
    assert report.history_refused == 1
