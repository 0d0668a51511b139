"""Baseline statistics of the training data, stored in the model card for drift detection.

Per monitored feature: numeric features get quantile bin edges and the share of rows in each bin;
categorical and boolean features get their value frequencies; every feature gets its missing rate.
The model's score gets the same numeric treatment (prediction drift).
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


def _feature_baseline(feature: Feature, values: np.ndarray) -> dict[str, Any]:
    if feature.is_numeric:
        floats = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        return numeric_baseline(floats)
    if feature.type == FieldType.timestamp:
        # Drift in *when* traffic comes: the hour of day (UTC) is what a time shift moves.
        stamps = np.asarray(values).astype("datetime64[us]")
        hours = np.where(np.isnat(stamps), np.nan, (stamps.astype("datetime64[h]").astype(np.int64) % 24))
        return {**numeric_baseline(hours, bins=24), "derived": "hour_of_day_utc"}
    return categorical_baseline(values)


def baseline_statistics(contract: Contract, table: pa.Table, scores: np.ndarray) -> dict[str, Any]:
    """The drift baseline of a training table and the model's scores on it."""
    features = {}
    for feature in contract.monitored_features:
        if feature.name in table.column_names:
            values = table.column(feature.name).to_numpy(zero_copy_only=False)
            features[feature.name] = _feature_baseline(feature, values)
    return {
        "rows": table.num_rows,
        "features": features,
        "score": numeric_baseline(np.asarray(scores, dtype=np.float64)),
    }
