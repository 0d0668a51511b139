"""Quality checks on training data, beyond the contract's per-row rules.

A table can satisfy the contract row by row and still be unfit to train on: too few rows, a
column mostly missing, a label rate that says the labelling job broke, the same transaction twice,
or a feature whose distribution moved so far from the previous training set that its meaning
probably changed (a unit, an encoding). Each check returns `Problem`s; ValidateData fails on any.

Drift is measured with the population stability index (PSI) against the baseline statistics in the
champion's model card (`shipml.stats`), bin for bin.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from shipml.contract.schema import Contract, FieldType
from shipml.pipeline.models import Problem, QualityRules

if TYPE_CHECKING:
    import pyarrow as pa

#: Floor on a bin's share, so that an empty bin gives a large but finite PSI term.
PSI_EPSILON = 1e-4


def population_stability_index(expected: np.ndarray, actual: np.ndarray) -> float:
    """PSI = sum((a - e) * ln(a / e)) over bins of two share vectors (each summing to 1)."""
    e = np.clip(np.asarray(expected, dtype=np.float64), PSI_EPSILON, None)
    a = np.clip(np.asarray(actual, dtype=np.float64), PSI_EPSILON, None)
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def _numeric_shares(values: np.ndarray, edges: list[float]) -> np.ndarray | None:
    present = values[~np.isnan(values)]
    if len(present) == 0:
        return None
    counts = np.bincount(np.searchsorted(np.asarray(edges), present, side="right"), minlength=len(edges) + 1)
    return counts / len(present)


def feature_psi(
    baseline: Mapping[str, Any], values: np.ndarray, *, hour_of_day: bool = False
) -> float | None:
    """PSI of one feature's current values against its baseline entry (None if nothing to compare)."""
    if baseline.get("kind") == "numeric":
        edges, frequencies = baseline.get("edges") or [], baseline.get("frequencies") or []
        if not frequencies:
            return None
        if hour_of_day:
            stamps = np.asarray(values).astype("datetime64[us]")
            numbers = np.where(np.isnat(stamps), np.nan, stamps.astype("datetime64[h]").astype(np.int64) % 24)
        else:
            numbers = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        shares = _numeric_shares(numbers, edges)
        return None if shares is None else population_stability_index(np.asarray(frequencies), shares)
    frequencies = baseline.get("frequencies") or {}
    present = [str(v) for v in values if v is not None]
    if not frequencies or not present:
        return None
    names, counts = np.unique(np.asarray(present, dtype=str), return_counts=True)
    current = dict(zip(names.tolist(), (counts / len(present)).tolist(), strict=True))
    keys = sorted(set(frequencies) | set(current))
    return population_stability_index(
        np.array([frequencies.get(k, 0.0) for k in keys]), np.array([current.get(k, 0.0) for k in keys])
    )


def check_quality(
    contract: Contract,
    table: pa.Table,
    rules: QualityRules,
    *,
    baseline: Mapping[str, Any] | None = None,
) -> tuple[list[Problem], list[Problem], dict[str, float], float | None]:
    """(problems, warnings, PSI per feature, label rate) of a contract-valid, normalised table."""
    import pyarrow.compute as pc

    problems: list[Problem] = []
    warnings: list[Problem] = []
    rows = table.num_rows
    if rows < rules.min_rows:
        problems.append(
            Problem(
                check="row_count", rows=rows, message=f"{rows} rows, fewer than the floor of {rules.min_rows}"
            )
        )
    if rows == 0:
        return problems, warnings, {}, None

    for feature in contract.features:
        if not feature.input or not feature.from_request or feature.name not in table.column_names:
            continue
        missing = table.column(feature.name).null_count
        ceiling = rules.missing_rate_ceilings.get(feature.name, rules.max_missing_rate)
        if missing / rows > ceiling:
            problems.append(
                Problem(
                    check="missing_rate",
                    column=feature.name,
                    rows=missing,
                    message=f"missing in {missing / rows:.1%} of rows, above the ceiling of {ceiling:.1%}",
                )
            )

    label_rate: float | None = None
    if contract.target in table.column_names:
        target = pc.cast(table.column(contract.target), "float64")
        label_rate = float(pc.mean(target).as_py() or 0.0)
        if not rules.min_label_rate <= label_rate <= rules.max_label_rate:
            problems.append(
                Problem(
                    check="label_rate",
                    column=contract.target,
                    message=(
                        f"label rate {label_rate:.4%} outside [{rules.min_label_rate:.4%}, "
                        f"{rules.max_label_rate:.4%}]"
                    ),
                )
            )

    if contract.id and contract.id in table.column_names:
        ids = table.column(contract.id)
        duplicates = rows - pc.count_distinct(ids).as_py()
        if duplicates > rules.max_duplicate_ids:
            counts = pc.value_counts(ids)
            repeated = [c["values"] for c in counts.to_pylist() if c["counts"] > 1][:5]
            problems.append(
                Problem(
                    check="duplicate_ids",
                    column=contract.id,
                    rows=duplicates,
                    message=f"{duplicates} rows repeat an earlier id (e.g. {', '.join(map(str, repeated))})",
                )
            )

    psi: dict[str, float] = {}
    for name, entry in ((baseline or {}).get("features") or {}).items():
        if name not in table.column_names:
            continue
        is_time = contract.feature(name).type == FieldType.timestamp
        values = table.column(name).to_numpy(zero_copy_only=False)
        value = feature_psi(entry, values, hour_of_day=is_time)
        if value is None:
            continue
        psi[name] = round(value, 6)
        if value > rules.drift_failure_psi:
            problems.append(
                Problem(
                    check="drift",
                    column=name,
                    message=(
                        f"PSI {value:.2f} against the previous training set, above "
                        f"{rules.drift_failure_psi}: the feature probably changed meaning"
                    ),
                )
            )
        elif value > rules.drift_warning_psi:
            warnings.append(
                Problem(
                    check="drift", column=name, message=f"PSI {value:.2f} against the previous training set"
                )
            )
    return problems, warnings, psi, label_rate
