"""Baseline statistics of the training data, stored in the model card for drift detection.

Per monitored feature: numeric features get quantile bin edges and the share of rows in each bin;
categorical and boolean features get their value frequencies; every feature gets its missing rate.
The model's score gets the same numeric treatment (prediction drift).

Numeric entries also keep the percentiles 0..100 (`quantiles`), from which the drift monitor
estimates the Wasserstein distance. Per contract segment and segment value (`segments`), the shares
of every feature over the *overall* bins and categories, so that a segment is compared with the
same segment in training rather than with the whole population.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from shipml.contract.schema import Contract, Feature, FieldType

if TYPE_CHECKING:
    import pyarrow as pa

QUANTILE_BINS = 10
MAX_CATEGORIES = 50
OTHER = "__other__"
#: Percentile levels kept per numeric feature (for the Wasserstein distance of the drift monitor).
QUANTILE_LEVELS = 101
#: Segment values with fewer training rows than this get no per-segment baseline.
MIN_SEGMENT_ROWS = 50


def numeric_baseline(values: np.ndarray, bins: int = QUANTILE_BINS) -> dict[str, Any]:
    """Quantile bin edges (inner edges; the outer bins are open) and the share of rows per bin."""
    numbers = np.asarray(values, dtype=np.float64)
    present = numbers[~np.isnan(numbers)]
    missing_rate = float(1 - len(present) / len(numbers)) if len(numbers) else 0.0
    if len(present) == 0:
        return {"kind": "numeric", "edges": [], "frequencies": [], "missing_rate": missing_rate}
    edges = np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, present, side="right"), minlength=len(edges) + 1)
    return {
        "kind": "numeric",
        "edges": edges.tolist(),
        "frequencies": (counts / len(present)).tolist(),
        "missing_rate": missing_rate,
        "mean": float(present.mean()),
        "std": float(present.std()),
        "min": float(present.min()),
        "max": float(present.max()),
        "quantiles": np.quantile(present, np.linspace(0, 1, QUANTILE_LEVELS)).tolist(),
    }


def categorical_baseline(values: np.ndarray) -> dict[str, Any]:
    """Value frequencies (the most frequent MAX_CATEGORIES, the rest pooled) and the missing rate."""
    items = [None if v is None else str(v) for v in values]
    present = np.array([v for v in items if v is not None], dtype=object)
    missing_rate = float(1 - len(present) / len(items)) if items else 0.0
    if len(present) == 0:
        return {"kind": "categorical", "frequencies": {}, "missing_rate": missing_rate}
    names, counts = np.unique(present.astype(str), return_counts=True)
    order = np.argsort(-counts, kind="stable")
    frequencies = {str(names[i]): float(counts[i] / len(present)) for i in order[:MAX_CATEGORIES]}
    rest = float(counts[order[MAX_CATEGORIES:]].sum() / len(present))
    if rest:
        frequencies[OTHER] = rest
    return {"kind": "categorical", "frequencies": frequencies, "missing_rate": missing_rate}


def _numeric_values(feature: Feature, values: np.ndarray) -> np.ndarray:
    """A numeric or timestamp feature as floats (NaN = missing); timestamps as the UTC hour of day."""
    if feature.is_numeric:
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    # Drift in *when* traffic comes: the hour of day (UTC) is what a time shift moves.
    stamps = np.asarray(values).astype("datetime64[us]")
    return np.where(np.isnat(stamps), np.nan, (stamps.astype("datetime64[h]").astype(np.int64) % 24))


def _feature_baseline(feature: Feature, values: np.ndarray) -> dict[str, Any]:
    if feature.is_numeric:
        return numeric_baseline(_numeric_values(feature, values))
    if feature.type == FieldType.timestamp:
        return {**numeric_baseline(_numeric_values(feature, values), bins=24), "derived": "hour_of_day_utc"}
    return categorical_baseline(values)


def _numeric_shares(numbers: np.ndarray, edges: list[float]) -> dict[str, Any]:
    present = numbers[~np.isnan(numbers)]
    missing_rate = float(1 - len(present) / len(numbers)) if len(numbers) else 0.0
    if len(present) == 0:
        return {"frequencies": [], "missing_rate": missing_rate}
    counts = np.bincount(np.searchsorted(np.asarray(edges), present, side="right"), minlength=len(edges) + 1)
    return {"frequencies": (counts / len(present)).tolist(), "missing_rate": missing_rate}


class _Codes:
    """A categorical column as integer codes (-1 = missing) into the baseline's keys, pooled as there."""

    def __init__(self, values: np.ndarray, known: dict[str, float]) -> None:
        texts = np.array(["" if v is None else str(v) for v in values], dtype=object)
        names, inverse = np.unique(texts.astype(str), return_inverse=True)
        missing = np.array([v is None for v in values], dtype=bool)
        self.keys = list(known) if OTHER in known else [*known, OTHER]
        slot = {k: i for i, k in enumerate(self.keys)}
        # A category the overall baseline pooled as rare stays pooled in every segment.
        lookup = np.array([slot.get(n, slot[OTHER]) for n in names.tolist()], dtype=np.int64)
        self.codes = np.where(missing, -1, lookup[inverse] if len(names) else -1)

    def shares(self, mask: np.ndarray) -> dict[str, Any]:
        codes = self.codes[mask]
        present = codes[codes >= 0]
        missing_rate = float(1 - len(present) / len(codes)) if len(codes) else 0.0
        if len(present) == 0:
            return {"frequencies": {}, "missing_rate": missing_rate}
        counts = np.bincount(present, minlength=len(self.keys))
        shares = {k: float(c / len(present)) for k, c in zip(self.keys, counts.tolist(), strict=True) if c}
        return {"frequencies": shares, "missing_rate": missing_rate}


def segment_baselines(
    contract: Contract,
    table: pa.Table,
    scores: np.ndarray,
    features: dict[str, dict[str, Any]],
    score_baseline: dict[str, Any],
) -> dict[str, Any]:
    """Per segment and segment value: its rows, and each feature's shares over the overall bins.

    Values with fewer than MIN_SEGMENT_ROWS rows are left out (too few to compare against).
    """
    from shipml.evaluation import column_values, segment_values

    prepared: dict[str, Any] = {}
    for name, entry in features.items():
        feature = contract.feature(name)
        values = table.column(name).to_numpy(zero_copy_only=False)
        if entry["kind"] == "numeric":
            prepared[name] = _numeric_values(feature, values)
        else:
            prepared[name] = _Codes(values, entry["frequencies"])
    score_values = np.asarray(scores, dtype=np.float64)
    out: dict[str, Any] = {}
    for segment in contract.segments:
        if segment.feature not in table.column_names:
            continue
        groups = segment_values(segment, column_values(table, segment.feature))
        names, counts = np.unique(groups.astype(str), return_counts=True)
        per_value: dict[str, Any] = {}
        for value, count in sorted(zip(names.tolist(), counts.tolist(), strict=True), key=lambda x: -x[1]):
            if count < MIN_SEGMENT_ROWS or len(per_value) >= MAX_CATEGORIES:
                continue
            mask = groups == value
            slice_features = {}
            for name, entry in features.items():
                if entry["kind"] == "numeric":
                    slice_features[name] = _numeric_shares(prepared[name][mask], entry["edges"])
                else:
                    slice_features[name] = prepared[name].shares(mask)
            per_value[value] = {
                "rows": int(count),
                "features": slice_features,
                "score": _numeric_shares(score_values[mask], score_baseline.get("edges", [])),
            }
        out[segment.name] = per_value
    return out


def baseline_statistics(contract: Contract, table: pa.Table, scores: np.ndarray) -> dict[str, Any]:
    """The drift baseline of a training table and the model's scores on it."""
    features = {}
    for feature in contract.monitored_features:
        if feature.name in table.column_names:
            values = table.column(feature.name).to_numpy(zero_copy_only=False)
            features[feature.name] = _feature_baseline(feature, values)
    score = numeric_baseline(np.asarray(scores, dtype=np.float64))
    return {
        "rows": table.num_rows,
        "features": features,
        "score": score,
        "segments": segment_baselines(contract, table, scores, features, score),
    }
