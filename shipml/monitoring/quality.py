"""Model quality from delayed ground truth: join labels with captured predictions, then measure.

Labels arrive later as files of `request_id` -> label (the contract's target name, or `label`),
optionally with the contract's id (`transaction_id`): a batch request scores many rows under one
request id, and the id tells them apart. Files are JSON Lines, CSV (either optionally gzip'd) or
Parquet, under a blob-store prefix (S3 on AWS, `ground-truth/`) or in a local folder.

The join reports every oddity plainly instead of guessing: labels that cannot be read (no request
id, a value that is not a boolean), duplicate labels (the same key twice with the same value: one
kept), conflicting labels (the same key with different values: dropped), labels for request ids
that are not among the captured rows of the live version in the window (unknown), and labels that
match several captured rows (a batch request labelled without the contract's id: ambiguous).

On the matched rows: AUC, precision and recall at the contract's threshold, log loss, the Brier
score and calibration (per bin of the score, as scikit-learn's `calibration_curve` with ten
uniform bins, and the expected calibration error), overall and per value of each contract segment.
A slice is judged only with at least `min_rows` labelled rows (AUC needs both classes). The
verdict `degraded` says a slice fell below a floor: AUC under `auc_floor`, AUC more than
`max_auc_drop` (and `auc_drop_z` standard errors) under the card's holdout AUC for the same
slice, calibration error more than `max_calibration_error` above the card's for the slice, or
observed positives more than `max_calibration_ratio` times off the expected ones (the scores times
the slice's ratio of positives to scores in the card) *and* more than `calibration_z` standard
errors away (of the window's count and of the card's estimate): a changed base rate in one
segment, which barely moves the AUC.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from shipml.backends.ports import BlobStore
from shipml.contract.schema import Contract
from shipml.evaluation import binary_metrics
from shipml.monitoring.drift import segment_codes
from shipml.monitoring.window import REQUEST_ID, CapturedWindow

GROUND_TRUTH_PREFIX = "ground-truth/"
CALIBRATION_BINS = 10
#: Unknown request ids named in a report (the count covers all of them).
LISTED_UNKNOWN = 5
LABEL_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".jsonl.gz", ".json.gz", ".csv.gz")
_TRUE = {"1", "true", "t", "yes", "y"}
_FALSE = {"0", "false", "f", "no", "n"}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class QualityRules(_Model):
    """Floors below which quality counts as degraded."""

    min_rows: int = Field(default=500, gt=0, description="Labelled rows a slice needs to be judged.")
    auc_floor: float | None = Field(default=None, ge=0, le=1, description="Lowest acceptable AUC.")
    max_auc_drop: float = Field(default=0.05, ge=0, le=1, description="Largest drop under the card's AUC.")
    auc_drop_z: float = Field(
        default=3.0, ge=0, description="How many standard errors of the AUC a drop must also exceed."
    )
    max_calibration_error: float = Field(default=0.05, gt=0, le=1, description="Largest calibration error.")
    max_calibration_ratio: float = Field(
        default=1.5, gt=1, description="Largest factor between observed and expected positives."
    )
    calibration_z: float = Field(
        default=4.0, gt=0, description="How many standard errors that factor must also be away."
    )


class CalibrationBin(_Model):
    low: float
    high: float
    rows: int
    mean_score: float
    positive_rate: float


class SliceQuality(_Model):
    """Quality on one slice: everything, or one value of one segment."""

    segment: str | None = None
    value: str | None = None
    rows: int
    positives: int = 0
    status: Literal["measured", "too_few_rows", "one_class"]
    auc: float | None = None
    auc_standard_error: float | None = Field(default=None, description="Hanley and McNeil (1982).")
    precision: float | None = None
    recall: float | None = None
    log_loss: float | None = None
    brier: float | None = None
    positive_rate: float | None = None
    mean_score: float | None = None
    calibration_error: float | None = None
    expected_positives: float | None = Field(default=None, description="Sum of the scores.")
    calibration_ratio: float | None = Field(default=None, description="Observed over expected positives.")
    calibration_z: float | None = Field(default=None, description="(observed - expected) / its std error.")
    calibration: list[CalibrationBin] = []
    baseline_auc: float | None = Field(default=None, description="The card's holdout AUC of this slice.")
    baseline_calibration_error: float | None = Field(default=None, description="The card's, this slice.")
    baseline_ratio: float | None = Field(
        default=None, description="The card's positive rate over mean score, this slice (1 if calibrated)."
    )
    degraded: bool = False
    reasons: list[str] = []

    @property
    def name(self) -> str:
        return "overall" if self.segment is None else f"{self.segment}={self.value}"


class LabelJoin(_Model):
    """How the labels met the captured rows."""

    files: int = 0
    read: int = 0
    invalid: int = 0
    duplicates: int = 0
    conflicting: int = 0
    unknown: int = 0
    ambiguous: int = 0
    matched: int = 0
    unknown_examples: list[str] = []
    problems: list[str] = []


class QualityReport(_Model):
    model: str
    model_version: str
    window_start: datetime
    window_end: datetime
    generated_at: datetime
    labels_source: str = ""
    captured_rows: int
    labelled_rows: int
    unlabelled_rows: int
    labels: LabelJoin
    rules: QualityRules
    verdict: Literal["ok", "degraded", "insufficient_data"]
    problems: list[str] = []
    overall: SliceQuality | None = None
    segments: list[SliceQuality] = []
    degraded_slices: list[str] = []

    def summary(self) -> str:
        head = f"{self.model_version}: quality {self.verdict} on {self.labelled_rows:,} labelled rows"
        if self.overall is not None and self.overall.auc is not None:
            head += f" (AUC {self.overall.auc:.4f}, calibration error {self.overall.calibration_error:.4f})"
        if self.degraded_slices:
            head += "; degraded: " + ", ".join(self.degraded_slices)
        elif self.problems:
            head += f"; {self.problems[0]}"
        return head


# --- reading labels ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelRecord:
    request_id: str | None
    id: str | None
    label: Any


def _decode(key: str, data: bytes) -> tuple[str, bytes]:
    if key.endswith(".gz") or data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return key.removesuffix(".gz"), data


def parse_label_file(key: str, data: bytes, *, target: str, id_field: str) -> Iterator[LabelRecord | None]:
    """Label records of one file (None for a line that cannot be read). Parquet needs pyarrow."""
    name, data = _decode(key, data)
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        rows: Iterable[Any] = pq.read_table(io.BytesIO(data)).to_pylist()
    elif name.endswith(".csv"):
        rows = csv.DictReader(io.StringIO(data.decode("utf-8", errors="replace")))
    else:

        def json_rows() -> Iterator[Any]:
            for line in data.splitlines():
                if line.strip():
                    try:
                        yield json.loads(line)
                    except ValueError:
                        yield None

        rows = json_rows()
    for row in rows:
        if not isinstance(row, Mapping):
            yield None
            continue
        label = row.get(target, row.get("label"))
        request_id = row.get(REQUEST_ID)
        ident = row.get(id_field)
        yield LabelRecord(
            request_id=None if request_id in (None, "") else str(request_id),
            id=None if ident in (None, "") else str(ident),
            label=label,
        )


def read_labels(
    blobs: BlobStore, prefix: str, *, target: str, id_field: str
) -> tuple[list[LabelRecord | None], int]:
    """Every label record under `prefix` (None for unreadable ones), and the number of files."""
    keys = [k for k in blobs.list(prefix) if k.endswith(LABEL_SUFFIXES)]
    records: list[LabelRecord | None] = []
    for key in keys:
        try:
            records.extend(parse_label_file(key, blobs.get_bytes(key), target=target, id_field=id_field))
        except (OSError, EOFError, ValueError, UnicodeDecodeError):
            records.append(None)
    return records, len(keys)


def label_value(value: Any) -> bool | None:
    """A label as a boolean: true/false, 1/0, or their spellings; None if it is none of those."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    return None


# --- the join ---------------------------------------------------------------------------------------


def join_labels(
    records: Iterable[LabelRecord | None], window: CapturedWindow, *, id_field: str, files: int = 0
) -> tuple[np.ndarray, np.ndarray, LabelJoin]:
    """(row index into the window, label) of every matched label, and how the join went."""
    join = LabelJoin(files=files)
    by_key: dict[tuple[str, str | None], bool | None] = {}
    seen: dict[tuple[str, str | None], int] = {}
    for record in records:
        join.read += 1
        value = None if record is None else label_value(record.label)
        if record is None or record.request_id is None or value is None:
            join.invalid += 1
            continue
        key = (record.request_id, record.id)
        seen[key] = seen.get(key, 0) + 1
        if key in by_key:
            previous = by_key[key]
            if previous is not None and previous != value:
                by_key[key] = None  # conflicting: neither value can be trusted
            continue
        by_key[key] = value
    join.duplicates = sum(n - 1 for key, n in seen.items() if n > 1 and by_key[key] is not None)
    conflicting = [key for key, value in by_key.items() if value is None]
    join.conflicting = sum(seen[key] for key in conflicting)

    request_ids = window.keys.get(REQUEST_ID, np.array([], dtype=object))
    ids = window.keys.get(id_field, np.full(len(request_ids), None, dtype=object))
    rows_by_request: dict[str, list[int]] = {}
    row_by_pair: dict[tuple[str, str], int] = {}
    for index, (request_id, ident) in enumerate(zip(request_ids.tolist(), ids.tolist(), strict=True)):
        if request_id is None:
            continue
        rows_by_request.setdefault(request_id, []).append(index)
        if ident is not None:
            row_by_pair.setdefault((request_id, ident), index)

    matched_rows: list[int] = []
    matched_labels: list[bool] = []
    taken: set[int] = set()
    unknown: list[str] = []
    for (request_id, ident), value in by_key.items():
        if value is None:
            continue
        if ident is not None:
            row = row_by_pair.get((request_id, ident))
            if row is None:
                join.unknown += 1
                unknown.append(f"{request_id}/{ident}")
                continue
        else:
            rows = rows_by_request.get(request_id)
            if not rows:
                join.unknown += 1
                unknown.append(request_id)
                continue
            if len(rows) > 1:
                join.ambiguous += 1
                continue
            row = rows[0]
        if row in taken:
            join.duplicates += 1  # the same captured row labelled with and without its id
            continue
        taken.add(row)
        matched_rows.append(row)
        matched_labels.append(value)
    join.matched = len(matched_rows)
    join.unknown_examples = unknown[:LISTED_UNKNOWN]
    if join.invalid:
        join.problems.append(
            f"{join.invalid:,} label records unreadable "
            "(no request_id, or a label that is not true/false/1/0)"
        )
    if join.duplicates:
        join.problems.append(
            f"{join.duplicates:,} duplicate labels (same request and value): one of each kept"
        )
    if join.conflicting:
        join.problems.append(
            f"{join.conflicting:,} labels conflict (same request, different values): "
            "those requests were left out"
        )
    if join.unknown:
        join.problems.append(
            f"{join.unknown:,} labels for request ids not among the captured rows of {window.model_version} "
            f"in the window (e.g. {', '.join(join.unknown_examples)})"
        )
    if join.ambiguous:
        join.problems.append(
            f"{join.ambiguous:,} labels name a batch request (several captured rows) without the "
            f"contract's id ({id_field}); add it to the label files to match them"
        )
    return np.asarray(matched_rows, dtype=np.int64), np.asarray(matched_labels, dtype=bool), join


# --- the metrics ------------------------------------------------------------------------------------


def calibration_table(
    labels: np.ndarray, scores: np.ndarray, bins: int = CALIBRATION_BINS
) -> list[CalibrationBin]:
    """Per uniform score bin: rows, mean score, positive rate (scikit-learn's `calibration_curve` bins)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.searchsorted(edges[1:-1], scores)  # side "left", as calibration_curve
    totals = np.bincount(index, minlength=bins)
    score_sums = np.bincount(index, weights=scores, minlength=bins)
    label_sums = np.bincount(index, weights=labels.astype(np.float64), minlength=bins)
    return [
        CalibrationBin(
            low=float(edges[i]),
            high=float(edges[i + 1]),
            rows=int(totals[i]),
            mean_score=float(score_sums[i] / totals[i]),
            positive_rate=float(label_sums[i] / totals[i]),
        )
        for i in range(bins)
        if totals[i]
    ]


def expected_calibration_error(table: list[CalibrationBin]) -> float:
    """Sum over bins of (share of rows) * |positive rate - mean score|."""
    total = sum(b.rows for b in table)
    return float(sum(b.rows / total * abs(b.positive_rate - b.mean_score) for b in table)) if total else 0.0


def auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """The standard error of an AUC estimate (Hanley and McNeil, 1982)."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    variance = (auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)) / (
        positives * negatives
    )
    return float(np.sqrt(max(variance, 0.0)))


def slice_quality(
    labels: np.ndarray,
    scores: np.ndarray,
    *,
    threshold: float,
    rules: QualityRules,
    segment: str | None = None,
    value: str | None = None,
    baseline: Mapping[str, Any] | None = None,
    with_table: bool = False,
) -> SliceQuality:
    """The metrics of one slice, judged against the rules and the card's metrics of the same slice.

    Calibration is judged against the card too: a model trained with class weights has scores that
    are not probabilities, and what matters is that the slice still relates to them as in training.
    """
    baseline = baseline or {}
    baseline_auc = baseline.get("auc")
    baseline_ratio = None
    if baseline.get("mean_score") and baseline.get("positive_rate") is not None:
        baseline_ratio = baseline["positive_rate"] / baseline["mean_score"]
    rows = len(labels)
    positives = int(labels.sum())
    item = SliceQuality(
        segment=segment,
        value=value,
        rows=rows,
        positives=positives,
        status="measured",
        baseline_auc=baseline_auc,
        baseline_calibration_error=baseline.get("calibration_error"),
        baseline_ratio=baseline_ratio,
    )
    if rows < rules.min_rows:
        item.status = "too_few_rows"
        item.reasons = [f"{rows:,} labelled rows < {rules.min_rows:,}: not judged"]
        return item
    metrics = binary_metrics(labels, scores, threshold)
    table = calibration_table(labels, scores)
    item.precision, item.recall = metrics["precision"], metrics["recall"]
    item.log_loss, item.positive_rate, item.mean_score = (
        metrics["log_loss"],
        metrics["positive_rate"],
        metrics["mean_score"],
    )
    item.brier = float(np.mean((scores - labels.astype(np.float64)) ** 2))
    item.calibration_error = expected_calibration_error(table)
    # Observed against expected positives: a change of the base rate in one slice (concept drift)
    # moves this long before it moves a base-rate-dependent error like the ECE. Expected as in
    # training: the scores times the slice's training ratio of positives to scores.
    expected_rates = np.clip(scores * (baseline_ratio or 1.0), 0.0, 1.0)
    expected = float(expected_rates.sum())
    variance = float(np.sum(expected_rates * (1 - expected_rates)))
    base_positives = baseline.get("positives")
    if baseline_ratio is not None and base_positives:
        # The card's ratio is itself an estimate from its holdout positives: its noise counts too.
        variance += expected * expected / base_positives
    item.expected_positives = expected
    item.calibration_ratio = positives / expected if expected > 0 else None
    item.calibration_z = (positives - expected) / np.sqrt(variance) if variance > 0 else None
    if with_table:
        item.calibration = table
    if positives == 0 or positives == rows:
        item.status = "one_class"
        item.reasons = ["one class only: AUC is undefined"]
    else:
        item.auc = metrics["auc"]
        item.auc_standard_error = auc_standard_error(item.auc, positives, rows - positives)
    reasons = []
    if item.auc is not None:
        if rules.auc_floor is not None and item.auc < rules.auc_floor:
            reasons.append(f"AUC {item.auc:.4f} < floor {rules.auc_floor:g}")
        drop = None if baseline_auc is None else baseline_auc - item.auc
        # A slice with few positives has a noisy AUC: the drop must also be beyond its noise.
        noise = rules.auc_drop_z * (item.auc_standard_error or 0.0)
        if drop is not None and drop > rules.max_auc_drop and drop > noise:
            reasons.append(
                f"AUC {item.auc:.4f} dropped {drop:.4f} from {baseline_auc:.4f} "
                f"(more than {rules.max_auc_drop:g} and {rules.auc_drop_z:g} standard errors)"
            )
    allowed_error = (item.baseline_calibration_error or 0.0) + rules.max_calibration_error
    if item.calibration_error is not None and item.calibration_error > allowed_error:
        reasons.append(
            f"calibration error {item.calibration_error:.4f} > {allowed_error:.4f} "
            f"(the card's {item.baseline_calibration_error or 0:.4f} + {rules.max_calibration_error:g})"
        )
    ratio, z = item.calibration_ratio, item.calibration_z
    if (
        ratio is not None
        and z is not None
        and abs(z) > rules.calibration_z
        and not 1 / rules.max_calibration_ratio <= ratio <= rules.max_calibration_ratio
    ):
        reasons.append(
            f"{positives:,} positives where training expects {expected:,.1f} "
            f"(x{ratio:.2f}, {z:+.1f} standard errors)"
        )
    item.reasons += reasons
    item.degraded = bool(reasons)
    return item


def _card_slice(card_metrics: Mapping[str, Any], segment: str | None, value: str | None) -> dict[str, Any]:
    """The card's holdout metrics of one slice (`shipml.evaluation.evaluate`'s layout), or {}."""
    try:
        found = card_metrics["overall"] if segment is None else card_metrics["segments"][segment][value]
    except (KeyError, TypeError):
        return {}
    return found if isinstance(found, dict) else {}


def compute_quality(
    contract: Contract,
    window: CapturedWindow,
    records: Iterable[LabelRecord | None],
    *,
    rules: QualityRules | None = None,
    card_metrics: Mapping[str, Any] | None = None,
    label_files: int = 0,
    labels_source: str = "",
    generated_at: datetime | None = None,
) -> QualityReport:
    """Join `records` with `window` and measure quality overall and per segment."""
    rules = rules or QualityRules(min_rows=contract.drift.min_samples)
    card_metrics = card_metrics or {}
    rows, labels, join = join_labels(records, window, id_field=contract.id, files=label_files)
    report = QualityReport(
        model=contract.model,
        model_version=window.model_version,
        window_start=window.start,
        window_end=window.end,
        generated_at=generated_at or datetime.now(UTC),
        labels_source=labels_source,
        captured_rows=window.rows,
        labelled_rows=len(rows),
        unlabelled_rows=window.rows - len(rows),
        labels=join,
        rules=rules,
        verdict="insufficient_data",
        problems=[*window.problems, *join.problems],
    )
    for reason, count in window.excluded.items():
        if reason != "outside the window":
            report.problems.append(f"{count:,} captured rows left out: {reason}")
    if window.rows == 0:
        report.problems.insert(0, f"the window is empty: no captured rows of {window.model_version}")
        return report
    if join.read == 0:
        report.problems.insert(0, "no ground-truth labels found")
        return report
    score_column = window.columns.get(contract.outputs.score)
    if score_column is None:
        report.problems.append(f"the capture has no {contract.outputs.score} column")
        return report
    scores = score_column.values[rows]
    present = ~np.isnan(scores)
    if not present.all():
        report.problems.append(f"{int((~present).sum()):,} labelled rows have no score and were left out")
        rows, labels, scores = rows[present], labels[present], scores[present]
        report.labelled_rows = len(rows)
    threshold = contract.outputs.threshold
    report.overall = slice_quality(
        labels,
        scores,
        threshold=threshold,
        rules=rules,
        baseline=_card_slice(card_metrics, None, None),
        with_table=True,
    )
    for segment in contract.segments:
        column = window.columns.get(segment.feature)
        if column is None:
            continue
        groups, names = segment_codes(segment, column)
        groups = groups[rows]
        for code in np.unique(groups).tolist():
            mask = groups == code
            value = names[code]
            report.segments.append(
                slice_quality(
                    labels[mask],
                    scores[mask],
                    threshold=threshold,
                    rules=rules,
                    segment=segment.name,
                    value=value,
                    baseline=_card_slice(card_metrics, segment.name, value),
                )
            )
    if report.overall.status == "too_few_rows":
        report.problems.insert(
            0, f"{report.labelled_rows:,} labelled rows, under the {rules.min_rows:,} needed for a verdict"
        )
        return report
    slices = [report.overall, *report.segments]
    report.degraded_slices = [s.name for s in slices if s.degraded]
    report.verdict = "degraded" if report.degraded_slices else "ok"
    return report
