"""Model quality metrics, overall and per segment of the contract.

Used by training (holdout metrics in the card), by the pipeline's evaluate and gate steps, and by
the quality monitor once ground truth arrives. numpy only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from shipml.contract.schema import Contract, Segment, float32_threshold

if TYPE_CHECKING:
    import pyarrow as pa

MISSING = "__missing__"
_EPS = 1e-7
_CALIBRATION_BINS = 10


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve by the rank statistic (ties averaged); None if only one class."""
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # Average rank for each run of equal scores.
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [len(scores)]))
    average = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(average, ends - starts)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """AUC, log loss, precision and recall at the threshold, and calibration error, for one slice."""
    labels = np.asarray(labels, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    rows = len(labels)
    if rows == 0:
        return {"rows": 0}
    # Labelled as every path labels a score: against the threshold's float32 (the model's scores
    # are float32); the report keeps the threshold as the contract states it.
    predicted = scores >= float32_threshold(threshold)
    truth = labels > 0.5
    tp = int(np.sum(predicted & truth))
    fp = int(np.sum(predicted & ~truth))
    fn = int(np.sum(~predicted & truth))
    clipped = np.clip(scores, _EPS, 1 - _EPS)
    log_loss = float(-np.mean(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped)))
    bins = np.minimum((scores * _CALIBRATION_BINS).astype(int), _CALIBRATION_BINS - 1)
    counts = np.bincount(bins, minlength=_CALIBRATION_BINS)
    mean_score = np.bincount(bins, weights=scores, minlength=_CALIBRATION_BINS)
    mean_label = np.bincount(bins, weights=labels, minlength=_CALIBRATION_BINS)
    used = counts > 0
    ece = float(np.sum(np.abs(mean_score[used] - mean_label[used])) / rows)
    return {
        "rows": rows,
        "positives": int(truth.sum()),
        "positive_rate": float(truth.mean()),
        "mean_score": float(scores.mean()),
        "auc": roc_auc(truth, scores),
        "log_loss": log_loss,
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
        "threshold": threshold,
        "calibration_error": ece,
    }


def _bin_label(low: float, high: float) -> str:
    return f"[{low:g},{high:g})"


def segment_values(segment: Segment, values: np.ndarray) -> np.ndarray:
    """The segment label of each row: the category/boolean value, or the numeric bin it falls in."""
    if segment.bins is None:
        return np.array([MISSING if v is None else str(v) for v in values], dtype=object)
    numbers = np.asarray(values, dtype=np.float64)
    edges = [-np.inf, *segment.bins, np.inf]
    labels = np.array(
        [_bin_label(lo, hi) for lo, hi in zip(edges[:-1], edges[1:], strict=True)], dtype=object
    )
    index = np.searchsorted(np.asarray(segment.bins), numbers, side="right")
    out = labels[index]
    out[np.isnan(numbers)] = MISSING
    return out


def column_values(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy(zero_copy_only=False)


def evaluate(contract: Contract, table: pa.Table, scores: np.ndarray) -> dict[str, Any]:
    """Metrics of `scores` against the table's target, overall and per value of each segment."""
    from shipml.contract.encode import encode_target

    labels = encode_target(contract, table)
    threshold = contract.outputs.threshold
    result: dict[str, Any] = {"overall": binary_metrics(labels, scores, threshold), "segments": {}}
    for segment in contract.segments:
        groups = segment_values(segment, column_values(table, segment.feature))
        per_value = {}
        for value in sorted(set(groups.tolist())):
            mask = groups == value
            per_value[value] = binary_metrics(labels[mask], scores[mask], threshold)
        result["segments"][segment.name] = per_value
    return result
