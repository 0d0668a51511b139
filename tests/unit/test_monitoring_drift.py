"""Drift of captured windows against the card's baseline: planted drift found, no false alarms, bad input."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from shipml.monitoring.drift import Thresholds, compute_drift, segment_codes
from shipml.monitoring.window import window_from_arrow, window_from_records

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
START, END = AT - timedelta(hours=12), AT + timedelta(hours=12)


def _window(world, table, *, version: str = "fraud:1", kinds=None):
    from shipml.monitoring.window import monitored_columns

    return window_from_arrow(
        table,
        kinds=kinds or monitored_columns(world.contract),
        model_version=version,
        start=START,
        end=END,
    )


@pytest.fixture(scope="module")
def baseline(monitoring_world):
    return monitoring_world.artifact.card.baseline


@pytest.fixture(scope="module")
def clean_capture(monitoring_world):
    return monitoring_world.capture(monitoring_world.clean)[0]


@pytest.fixture(scope="module")
def drifted_capture(monitoring_world):
    return monitoring_world.capture(monitoring_world.drifted)[0]


# --- planted drift, and none ----------------------------------------------------------------------


def test_a_sample_of_the_same_distribution_shows_no_drift(monitoring_world, baseline, clean_capture) -> None:
    report = compute_drift(monitoring_world.contract, baseline, _window(monitoring_world, clean_capture))

    assert report.verdict == "no_drift"
    assert report.drifted_features == []
    assert report.drifted_segments == []
    assert report.rows == monitoring_world.clean.num_rows
    assert max(f.psi for f in report.features) < 0.05
    assert all(s.max_psi < 0.1 for s in report.segments if s.status == "compared")


def test_planted_drift_is_found_in_exactly_the_planted_features(
    monitoring_world, baseline, drifted_capture
) -> None:
    # Given amounts x2 (amount, and the 30-day mean made of amounts) and a new merchant category
    report = compute_drift(monitoring_world.contract, baseline, _window(monitoring_world, drifted_capture))

    assert report.verdict == "drift"
    assert set(report.drifted_features) - {"prediction"} == {"amount", "mean_amount_30d", "merchant_category"}
    merchant = next(f for f in report.features if f.feature == "merchant_category")
    assert merchant.unseen == {"crypto": pytest.approx(0.1 * report.rows, rel=0.1)}
    assert merchant.unseen_share == pytest.approx(0.1, abs=0.01)
    amount = next(f for f in report.features if f.feature == "amount")
    # log(2) / std(log amount) ~ a shift of half a standard deviation or more on the raw scale
    assert amount.wasserstein > 0.3
    # The fraud-rate knob changes labels only: no input feature other than the planted ones moves.
    quiet = [f for f in report.features if f.feature not in report.drifted_features]
    assert all(f.psi < 0.05 for f in quiet)


def test_drift_planted_in_one_segment_is_found_in_exactly_that_segment(
    monitoring_world, baseline, clean_capture
) -> None:
    # Given the 30-day mean amount tripled for the phone channel only (about 4 % of rows)
    phone = pc.equal(clean_capture.column("channel"), "phone")
    index = clean_capture.column_names.index("mean_amount_30d")
    tripled = pc.if_else(phone, pc.multiply(clean_capture.column(index), 3.0), clean_capture.column(index))
    planted = clean_capture.set_column(index, "mean_amount_30d", tripled)

    report = compute_drift(monitoring_world.contract, baseline, _window(monitoring_world, planted))

    assert report.drifted_segments == ["channel=phone"]
    assert report.drifted_features == []  # 4 % of rows do not move the whole population past 0.2
    phone_segment = next(s for s in report.segments if s.name == "channel=phone")
    assert phone_segment.drifted_features == ["mean_amount_30d"]


@pytest.mark.parametrize("seed", [101, 102, 103])
def test_no_false_alarm_on_random_halves_of_the_same_sample(
    monitoring_world, baseline, clean_capture, seed
) -> None:
    # Random 10,000-row windows of the held-out third: the false-positive rate over seeds is measured
    # in bench/drift.py --false-positives; here three seeds must stay quiet.
    rows = np.random.default_rng(seed).choice(clean_capture.num_rows, 10_000, replace=False)
    report = compute_drift(
        monitoring_world.contract, baseline, _window(monitoring_world, clean_capture.take(rows))
    )

    assert report.verdict == "no_drift", report.summary()


# --- both readers agree ---------------------------------------------------------------------------


def test_records_and_arrow_give_the_same_report(monitoring_world, baseline, drifted_capture) -> None:
    from shipml.monitoring.window import monitored_columns

    sample = drifted_capture.slice(0, 3_000)
    kinds = monitored_columns(monitoring_world.contract)
    from_arrow = window_from_arrow(sample, kinds=kinds, model_version="fraud:1", start=START, end=END)
    from_records = window_from_records(
        sample.to_pylist(), kinds=kinds, model_version="fraud:1", start=START, end=END
    )

    a = compute_drift(monitoring_world.contract, baseline, from_arrow, generated_at=AT)
    b = compute_drift(monitoring_world.contract, baseline, from_records, generated_at=AT)

    assert a.model_dump() == b.model_dump()


# --- hand-made baselines ---------------------------------------------------------------------------


def _tiny_contract(contract):
    return contract.model_copy(update={"segments": []})


def test_categorical_psi_and_js_with_an_unseen_category_by_hand(contract) -> None:
    # Baseline: channel in_store 50 %, online 50 %. Window: 600 in_store, 300 online, 100 "bike".
    baseline = {
        "features": {"channel": {"kind": "categorical", "frequencies": {"in_store": 0.5, "online": 0.5}}},
    }
    records = [
        {"time": AT.isoformat(), "model_version": "fraud:1", "channel": c}
        for c in ["in_store"] * 600 + ["online"] * 300 + ["bike"] * 100
    ]
    window = window_from_records(
        records, kinds={"channel": "categorical"}, model_version="fraud:1", start=START, end=END
    )
    thresholds = Thresholds(psi=0.2, js=0.1, missing_rate_delta=0.05, min_samples=500)

    report = compute_drift(_tiny_contract(contract), baseline, window, thresholds=thresholds)
    (channel,) = report.features

    e = np.array([0.5, 0.5, 1e-4]) / 1.0001
    a = np.array([0.6, 0.3, 0.1])
    assert channel.psi == pytest.approx(float(np.sum((a - e) * np.log(a / e))))
    m = (np.array([0.5, 0.5, 0.0]) + a) / 2
    kl_e = 0.5 * math.log2(0.5 / m[0]) + 0.5 * math.log2(0.5 / m[1])
    kl_a = sum(x * math.log2(x / y) for x, y in zip(a, m, strict=True))
    assert channel.js_distance == pytest.approx(math.sqrt((kl_e + kl_a) / 2))
    assert channel.unseen == {"bike": 100}
    assert channel.unseen_share == pytest.approx(0.1)
    assert channel.drifted and report.verdict == "drift"


def test_missing_rate_change_alone_is_drift(contract) -> None:
    baseline = {
        "features": {
            "amount": {"kind": "numeric", "edges": [10.0], "frequencies": [0.5, 0.5], "missing_rate": 0.0},
        }
    }
    values = [5.0, 15.0] * 450 + [None] * 100
    records = [{"time": AT.isoformat(), "model_version": "fraud:1", "amount": v} for v in values]
    window = window_from_records(
        records, kinds={"amount": "numeric"}, model_version="fraud:1", start=START, end=END
    )

    report = compute_drift(_tiny_contract(contract), baseline, window)
    (amount,) = report.features

    assert amount.psi == pytest.approx(0.0)
    assert amount.missing_rate_current == pytest.approx(0.1)
    assert amount.drifted and "missing rate" in amount.reasons[0]


def test_segment_codes_spell_values_like_evaluation(contract) -> None:
    from shipml.evaluation import segment_values
    from shipml.monitoring.window import Column

    band = next(s for s in contract.segments if s.bins is not None)
    values = np.array([0.5, 100.0, 99.99, 5000.0, np.nan, -1.0])

    codes, names = segment_codes(band, Column(values))

    assert [names[c] for c in codes] == segment_values(band, values).tolist()


# --- bad input: said plainly --------------------------------------------------------------------------


def test_an_empty_window_is_insufficient_data_never_no_drift(
    monitoring_world, baseline, clean_capture
) -> None:
    report = compute_drift(
        monitoring_world.contract, baseline, _window(monitoring_world, clean_capture.slice(0, 0))
    )

    assert report.verdict == "insufficient_data"
    assert report.rows == 0
    assert "the window is empty" in report.problems[0]
    assert report.features == [] and report.drifted_features == []


def test_a_window_under_min_samples_shows_statistics_but_draws_no_verdict(
    monitoring_world, baseline, drifted_capture
) -> None:
    report = compute_drift(
        monitoring_world.contract, baseline, _window(monitoring_world, drifted_capture.slice(0, 200))
    )

    assert report.verdict == "insufficient_data"
    assert any("under the contract's min_samples (500)" in p for p in report.problems)
    assert report.features and not any(f.drifted for f in report.features)
    assert next(f for f in report.features if f.feature == "merchant_category").unseen  # still shown


def test_rows_of_another_model_version_are_left_out_and_reported(
    monitoring_world, baseline, clean_capture
) -> None:
    other = clean_capture.slice(0, 700).set_column(
        clean_capture.column_names.index("model_version"), "model_version", pa.array(["fraud:2"] * 700)
    )
    mixed = pa.concat_tables([clean_capture.slice(700, 2_000), other])

    report = compute_drift(monitoring_world.contract, baseline, _window(monitoring_world, mixed))

    assert report.rows == 2_000
    assert report.excluded == {"model version fraud:2": 700}
    assert any("700 captured rows left out: model version fraud:2" in p for p in report.problems)


def test_only_rows_of_another_version_is_an_empty_window(monitoring_world, baseline, clean_capture) -> None:
    report = compute_drift(
        monitoring_world.contract, baseline, _window(monitoring_world, clean_capture, version="fraud:9")
    )

    assert report.verdict == "insufficient_data"
    assert report.excluded == {"model version fraud:1": clean_capture.num_rows}


def test_a_card_without_baseline_says_so(monitoring_world, clean_capture) -> None:
    report = compute_drift(monitoring_world.contract, {}, _window(monitoring_world, clean_capture))

    assert report.verdict == "no_baseline"
    assert "no baseline statistics" in report.problems[0]


def test_rows_outside_the_window_are_counted_not_judged(monitoring_world, baseline, clean_capture) -> None:
    late = clean_capture.slice(0, 100).set_column(
        clean_capture.column_names.index("time"),
        "time",
        pa.array([(END + timedelta(hours=1)).isoformat()] * 100),
    )
    report = compute_drift(
        monitoring_world.contract,
        baseline,
        _window(monitoring_world, pa.concat_tables([late, clean_capture])),
    )

    assert report.excluded == {"outside the window": 100}
    assert report.rows == clean_capture.num_rows


def test_small_segments_are_not_judged(monitoring_world, baseline, drifted_capture) -> None:
    report = compute_drift(monitoring_world.contract, baseline, _window(monitoring_world, drifted_capture))

    small = [s for s in report.segments if s.rows < 500]
    assert small, "the example has segments under 500 rows in a 20,000-row window"
    assert all(s.status == "too_few_rows" and not s.drifted for s in small)
    assert all(s.name not in report.drifted_segments for s in small)
