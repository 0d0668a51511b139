"""Quality from delayed labels: metrics equal scikit-learn's; the join reports every oddity plainly."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, log_loss, precision_score, recall_score, roc_auc_score

from shipml.backends.local import FolderBlobStore
from shipml.monitoring.quality import (
    LabelRecord,
    QualityRules,
    calibration_table,
    compute_quality,
    expected_calibration_error,
    join_labels,
    label_value,
    read_labels,
    slice_quality,
)
from shipml.monitoring.window import REQUEST_ID, column_kinds, window_from_arrow, window_from_records

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
START, END = AT - timedelta(hours=12), AT + timedelta(hours=12)


def _window(world, captured):
    contract = world.contract
    kinds = column_kinds(contract, [contract.outputs.score, *(s.feature for s in contract.segments)])
    return window_from_arrow(
        captured,
        kinds=kinds,
        model_version="fraud:1",
        start=START,
        end=END,
        key_names=(REQUEST_ID, contract.id),
    )


def _records(labels_table, target: str = "is_fraud") -> list[LabelRecord]:
    return [
        LabelRecord(request_id=r["request_id"], id=r.get("transaction_id"), label=r[target])
        for r in labels_table.to_pylist()
    ]


@pytest.fixture(scope="module")
def clean(monitoring_world):
    captured, labels = monitoring_world.capture(monitoring_world.clean)
    return _window(monitoring_world, captured), labels


@pytest.fixture(scope="module")
def drifted(monitoring_world):
    captured, labels = monitoring_world.capture(monitoring_world.drifted)
    return _window(monitoring_world, captured), labels


# --- the same numbers as scikit-learn ------------------------------------------------------------------


def test_metrics_equal_scikit_learn_on_the_same_labels() -> None:
    rng = np.random.default_rng(3)
    scores = rng.random(5_000)
    labels = rng.random(5_000) < scores * 0.6  # informative, imperfectly calibrated
    rules = QualityRules(min_rows=100)

    item = slice_quality(labels, scores, threshold=0.5, rules=rules, with_table=True)

    predicted = scores >= 0.5
    assert item.auc == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert item.precision == pytest.approx(precision_score(labels, predicted), abs=1e-12)
    assert item.recall == pytest.approx(recall_score(labels, predicted), abs=1e-12)
    assert item.log_loss == pytest.approx(log_loss(labels, scores), abs=1e-6)
    assert item.brier == pytest.approx(brier_score_loss(labels, scores), abs=1e-12)
    prob_true, prob_pred = calibration_curve(labels, scores, n_bins=10, strategy="uniform")
    assert [b.positive_rate for b in item.calibration] == pytest.approx(prob_true.tolist(), abs=1e-12)
    assert [b.mean_score for b in item.calibration] == pytest.approx(prob_pred.tolist(), abs=1e-12)
    counts = np.array([b.rows for b in item.calibration])
    assert item.calibration_error == pytest.approx(
        float(np.sum(counts / counts.sum() * np.abs(prob_true - prob_pred))), abs=1e-12
    )


def test_calibration_bins_match_scikit_learn_at_bin_edges() -> None:
    # Scores exactly on the edges: calibration_curve's searchsorted puts 0.1 in the first bin.
    scores = np.array([0.0, 0.1, 0.2, 0.5, 0.9, 1.0, 0.1, 0.3])
    labels = np.array([0, 1, 0, 1, 1, 1, 0, 0], dtype=bool)

    table = calibration_table(labels, scores)
    prob_true, prob_pred = calibration_curve(labels, scores, n_bins=10)

    assert [b.positive_rate for b in table] == pytest.approx(prob_true.tolist())
    assert [b.mean_score for b in table] == pytest.approx(prob_pred.tolist())
    assert expected_calibration_error(table) >= 0


def test_ties_in_scores_give_sklearns_auc() -> None:
    scores = np.array([0.2, 0.2, 0.2, 0.7, 0.7, 0.1])
    labels = np.array([1, 0, 1, 1, 0, 0], dtype=bool)

    item = slice_quality(labels, scores, threshold=0.5, rules=QualityRules(min_rows=1))

    assert item.auc == pytest.approx(roc_auc_score(labels, scores))


def test_per_segment_metrics_equal_scikit_learn(monitoring_world, clean) -> None:
    window, labels = clean
    report = compute_quality(monitoring_world.contract, window, _records(labels))

    truth = np.array(labels.column("is_fraud").to_pylist(), dtype=bool)
    scores = window.columns["fraud_score"].values
    channel = np.array(monitoring_world.clean.column("channel").to_pylist(), dtype=object)
    in_store = next(s for s in report.segments if s.name == "channel=in_store")
    mask = channel == "in_store"
    assert in_store.auc == pytest.approx(roc_auc_score(truth[mask], scores[mask]), abs=1e-12)
    assert report.overall.auc == pytest.approx(roc_auc_score(truth, scores), abs=1e-12)
    assert report.labelled_rows == window.rows == monitoring_world.clean.num_rows


# --- judged against floors ---------------------------------------------------------------------------


def test_the_same_distribution_is_ok(monitoring_world, clean) -> None:
    window, labels = clean
    report = compute_quality(
        monitoring_world.contract,
        window,
        _records(labels),
        card_metrics=monitoring_world.artifact.card.metrics,
    )

    assert report.verdict == "ok", report.summary()
    assert report.overall.auc > 0.85


def test_a_planted_fraud_rate_change_is_found_in_that_country(monitoring_world, drifted) -> None:
    # The fraud odds x4 in country=FR: within FR the ranking barely changes, the base rate does.
    window, labels = drifted
    report = compute_quality(
        monitoring_world.contract,
        window,
        _records(labels),
        card_metrics=monitoring_world.artifact.card.metrics,
    )

    countries = [s for s in report.degraded_slices if s.startswith("country=")]
    assert countries == ["country=FR"]
    france = next(s for s in report.segments if s.name == "country=FR")
    assert france.calibration_ratio > 2 and france.calibration_z > 4
    assert report.verdict == "degraded"


def test_an_auc_floor_is_applied() -> None:
    rng = np.random.default_rng(4)
    scores = rng.random(1_000)
    labels = rng.random(1_000) < 0.5  # no signal: AUC about 0.5

    item = slice_quality(labels, scores, threshold=0.5, rules=QualityRules(min_rows=100, auc_floor=0.7))

    assert item.degraded and any("floor 0.7" in r for r in item.reasons)


# --- the join: bad input reported, never a crash ------------------------------------------------------


def _small_window():
    records = [
        {
            "time": AT.isoformat(),
            "model_version": "fraud:1",
            "request_id": f"r{i}",
            "transaction_id": f"T{i}",
            "fraud_score": 0.1,
            "channel": "online",
            "country": "DE",
            "amount": 10.0,
        }
        for i in range(5)
    ]
    # A batch request: one request id, two rows told apart by transaction_id.
    records += [
        {
            "time": AT.isoformat(),
            "model_version": "fraud:1",
            "request_id": "batch",
            "transaction_id": f"B{i}",
            "fraud_score": 0.2,
            "channel": "online",
            "country": "DE",
            "amount": 10.0,
        }
        for i in range(2)
    ]
    return window_from_records(
        records,
        kinds={"fraud_score": "numeric"},
        model_version="fraud:1",
        start=START,
        end=END,
        key_names=(REQUEST_ID, "transaction_id"),
    )


def test_join_reports_unknown_duplicate_conflicting_ambiguous_and_invalid_labels() -> None:
    records = [
        LabelRecord("r0", None, True),
        LabelRecord("r1", "T1", False),
        LabelRecord("r1", "T1", False),  # duplicate, same value: one kept
        LabelRecord("r2", None, True),
        LabelRecord("r2", None, False),  # conflicting: both dropped
        LabelRecord("nope", None, True),  # unknown request id
        LabelRecord("batch", None, True),  # ambiguous: two captured rows
        LabelRecord("batch", "B1", True),  # the batch row, told apart
        LabelRecord("r3", None, "maybe"),  # not a label
        LabelRecord(None, None, True),  # no request id
        None,  # an unreadable line
    ]

    rows, labels, join = join_labels(records, _small_window(), id_field="transaction_id")

    assert join.read == 11
    assert join.matched == 3 and sorted(rows.tolist()) == [0, 1, 6]
    assert join.duplicates == 1
    assert join.conflicting == 2
    assert join.unknown == 1 and join.unknown_examples == ["nope"]
    assert join.ambiguous == 1
    assert join.invalid == 3
    assert len(join.problems) == 5


def test_no_labels_at_all_is_insufficient_data(monitoring_world, clean) -> None:
    window, _ = clean
    report = compute_quality(monitoring_world.contract, window, [])

    assert report.verdict == "insufficient_data"
    assert report.problems[0] == "no ground-truth labels found"
    assert report.unlabelled_rows == window.rows


def test_an_empty_window_is_insufficient_data(monitoring_world, clean) -> None:
    window, labels = clean
    empty = window_from_records(
        [], kinds={"fraud_score": "numeric"}, model_version="fraud:1", start=START, end=END
    )

    report = compute_quality(monitoring_world.contract, empty, _records(labels))

    assert report.verdict == "insufficient_data"
    assert "the window is empty" in report.problems[0]
    assert report.labels.unknown == labels.num_rows


def test_too_few_labels_draw_no_verdict(monitoring_world, clean) -> None:
    window, labels = clean
    report = compute_quality(monitoring_world.contract, window, _records(labels.slice(0, 100)))

    assert report.verdict == "insufficient_data"
    assert report.labelled_rows == 100
    assert "under the 500 needed" in report.problems[0]


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (True, True),
        (0, False),
        (1.0, True),
        ("true", True),
        ("0", False),
        ("No", False),
        (2, None),
        ("x", None),
    ],
)
def test_label_spellings(raw, value) -> None:
    assert label_value(raw) is value


def test_label_files_in_every_format_are_read(tmp_path) -> None:
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "labels"
    folder.mkdir()
    (folder / "a.jsonl").write_text(json.dumps({"request_id": "r1", "is_fraud": True}) + "\nnot json\n")
    (folder / "b.csv").write_text("request_id,transaction_id,label\nr2,T2,0\n")
    (folder / "c.jsonl.gz").write_bytes(gzip.compress(json.dumps({"request_id": "r3", "label": 1}).encode()))
    pq.write_table(pa.table({"request_id": ["r4"], "is_fraud": [False]}), folder / "d.parquet")
    (folder / "ignored.txt").write_text("r5,1")

    records, files = read_labels(FolderBlobStore(folder), "", target="is_fraud", id_field="transaction_id")

    assert files == 4
    readable = [r for r in records if r is not None]
    assert {(r.request_id, r.id, label_value(r.label)) for r in readable} == {
        ("r1", None, True),
        ("r2", "T2", False),
        ("r3", None, True),
        ("r4", None, False),
    }
    assert records.count(None) == 1
