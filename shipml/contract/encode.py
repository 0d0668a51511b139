"""The feature encoder: raw values -> the model's float32 input matrix.

This is the only encoding implementation. Training calls `encode_table` on Arrow tables, serving
calls `encode_rows` on validated request dicts; both reduce to `encode_columns`, so the same row
gives the same tensor on both paths (no training/serving skew). The encoder is a pure function of
the contract (no fitted state): scaling to zero mean and unit variance lives inside the exported
model graph, so the artifact carries it.

Serving imports this module, so it needs numpy only; pyarrow is imported lazily by `encode_table`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from shipml.contract.schema import Contract, Feature, FieldType

if TYPE_CHECKING:
    import pyarrow as pa

OTHER = "__other__"
_SECONDS_PER_DAY = 86_400.0
# 1970-01-01 was a Thursday: shift so that Monday is day 0.
_EPOCH_WEEKDAY = 3
# sin/cos of each weekday's angle, as the per-row formula computes them (a contiguous float64 array).
_WEEKDAY_ANGLES = np.arange(7, dtype=np.float64) * (2 * math.pi / 7)
_WEEKDAY_SIN = np.sin(_WEEKDAY_ANGLES)
_WEEKDAY_COS = np.cos(_WEEKDAY_ANGLES)


@dataclass(frozen=True)
class _Slot:
    feature: Feature
    names: tuple[str, ...]
    categories: tuple[str, ...] = ()

    @property
    def width(self) -> int:
        return len(self.names)


def _plan(feature: Feature) -> _Slot:
    name = feature.name
    if feature.type == FieldType.category:
        cats = tuple(feature.categories or ())
        if feature.unseen == "other":
            cats = (*cats, OTHER)
        return _Slot(feature, tuple(f"{name}={c}" for c in cats), cats)
    if feature.type == FieldType.timestamp:
        return _Slot(
            feature, tuple(f"{name}:{part}" for part in ("hour_sin", "hour_cos", "dow_sin", "dow_cos"))
        )
    return _Slot(feature, (name,))


def _epoch_seconds(values: Any) -> np.ndarray:
    """Timestamps (datetime64, aware datetimes or ISO strings with offset) -> UTC epoch seconds."""
    if _is_arrow(values):
        import pyarrow as pa

        if pa.types.is_timestamp(values.type) and values.type.unit == "us":
            # The microseconds as int64 straight from Arrow: the same numbers as the datetime64
            # route below, without its two intermediate copies.
            micros = values.cast(pa.int64())
            seconds = micros.to_numpy(zero_copy_only=False) / 1e6
            if micros.null_count:
                seconds[micros.is_null().to_numpy(zero_copy_only=False)] = np.nan
            return seconds
        values = values.to_numpy(zero_copy_only=False)  # timestamp -> datetime64 (UTC), NaT for nulls
    array = np.asarray(values)
    if np.issubdtype(array.dtype, np.datetime64):
        seconds = array.astype("datetime64[us]").astype(np.int64) / 1e6
        return np.where(np.isnat(array), np.nan, seconds)
    out = np.empty(len(array), dtype=np.float64)
    for i, value in enumerate(array):
        if value is None:
            out[i] = np.nan
        elif isinstance(value, datetime):
            out[i] = value.timestamp()
        else:
            out[i] = datetime.fromisoformat(str(value)).timestamp()
    return out


def _float_block(columns: Mapping[str, Any], names: Sequence[str], rows: int) -> np.ndarray:
    """The named columns as a (rows, len(names)) float64 block, NaN for missing values.

    Lists of Python values (the serving path, a few rows) are gathered in one pass; arrays (the
    offline path, millions of rows) are converted column by column, without a Python loop.
    """
    values = [columns.get(name) for name in names]
    if all(isinstance(v, list) for v in values):
        flat = (np.nan if x is None else x for column in values for x in column)
        return np.fromiter(flat, dtype=np.float64, count=rows * len(names)).reshape(len(names), rows).T
    block = np.empty((rows, len(names)), dtype=np.float64)
    for j, column in enumerate(values):
        block[:, j] = np.nan if column is None else _floats(column)
    return block


def _is_arrow(values: Any) -> bool:
    return type(values).__module__.startswith("pyarrow")


def _floats(values: Any) -> np.ndarray:
    """Numbers or booleans with None/NaN for missing -> float64 with NaN for missing."""
    if _is_arrow(values):
        import pyarrow as pa
        import pyarrow.compute as pc

        return pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)
    if isinstance(values, np.ndarray) and values.dtype != object:
        return values.astype(np.float64, copy=False)
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


@dataclass(frozen=True)
class _CategoryPlan:
    name: str
    offset: int
    index: dict[str, int]
    unseen: int  # column for a value outside the list: OTHER's, or -1 (all zeros)
    missing: int  # column for a missing value: the default's, else OTHER's, else -1


class FeatureEncoder:
    """Turns records into the model's input matrix, following the contract's input features.

    The work is planned once per contract and done in a few vectorised blocks (all scalar
    features at once, one pass per category feature), so one row costs microseconds and a
    million rows cost well under a second per column.
    """

    input_name = "features"

    def __init__(self, contract: Contract) -> None:
        self.contract = contract
        self._slots = [_plan(f) for f in contract.input_features]
        self.feature_names: list[str] = [n for slot in self._slots for n in slot.names]
        scalars: list[tuple[Feature, int]] = []
        self._categories: list[_CategoryPlan] = []
        self._timestamps: list[tuple[str, int]] = []
        offset = 0
        for slot in self._slots:
            feature = slot.feature
            if feature.type == FieldType.category:
                index = {c: i for i, c in enumerate(slot.categories)}
                other = index.get(OTHER, -1)
                missing = index[feature.default] if feature.default is not None else other
                self._categories.append(_CategoryPlan(feature.name, offset, index, other, missing))
            elif feature.type == FieldType.timestamp:
                self._timestamps.append((feature.name, offset))
            else:
                scalars.append((feature, offset))
            offset += slot.width
        self._scalar_names = [f.name for f, _ in scalars]
        self._scalar_columns = np.array([col for _, col in scalars], dtype=np.intp)
        # Missing -> the contract's default (else 0); then clip to [min, max]; then log1p where asked.
        self._defaults = np.array([float(f.default) if f.default is not None else 0.0 for f, _ in scalars])
        self._low = np.array([f.min if f.is_numeric and f.min is not None else -np.inf for f, _ in scalars])
        self._high = np.array([f.max if f.is_numeric and f.max is not None else np.inf for f, _ in scalars])
        self._log1p = np.array([f.transform == "log1p" for f, _ in scalars], dtype=bool)
        self._any_log1p = bool(self._log1p.any())

    @property
    def width(self) -> int:
        return len(self.feature_names)

    def _category_index(self, plan: _CategoryPlan, values: Any, rows: int) -> np.ndarray:
        """The one-hot column (within the feature) of each row; -1 means all zeros."""
        if values is None:
            return np.full(rows, plan.missing, dtype=np.intp)
        if _is_arrow(values):
            # Millions of rows: Arrow's hash lookup in C++, no Python loop. `positions` maps the
            # position in `known` to the one-hot column, and its last entry (index -1) is "unseen".
            import pyarrow as pa
            import pyarrow.compute as pc

            known = [c for c in plan.index if c != OTHER]
            positions = np.array([plan.index[c] for c in known] + [plan.unseen], dtype=np.intp)
            value_set = pa.array(known, pa.string())
            if pa.types.is_dictionary(values.type):
                # Dictionary-encoded (Parquet's own encoding, read as is): look each dictionary
                # entry up once, then spread the answers to the rows by their indices.
                chunks = values.chunks if isinstance(values, pa.ChunkedArray) else [values]
                parts = [self._dictionary_index(plan, chunk, positions, value_set) for chunk in chunks]
                return np.concatenate(parts) if parts else np.zeros(0, dtype=np.intp)
            found = pc.fill_null(pc.index_in(values, value_set=value_set), -1)
            index = positions[found.to_numpy(zero_copy_only=False)]
            if values.null_count:
                index[values.is_null().to_numpy(zero_copy_only=False)] = plan.missing
            return index
        lookup, unseen_at, missing_at = plan.index.get, plan.unseen, plan.missing
        return np.fromiter(
            (missing_at if v is None else lookup(v, unseen_at) for v in values), dtype=np.intp, count=rows
        )

    @staticmethod
    def _dictionary_index(
        plan: _CategoryPlan, chunk: pa.DictionaryArray, positions: np.ndarray, value_set: pa.Array
    ) -> np.ndarray:
        """`_category_index` of one dictionary-encoded chunk: the same columns, per entry then per row."""
        import pyarrow.compute as pc

        dictionary = chunk.dictionary
        if dictionary.type != value_set.type:
            dictionary = dictionary.cast(value_set.type)
        found = pc.fill_null(pc.index_in(dictionary, value_set=value_set), -1)
        per_entry = positions[found.to_numpy(zero_copy_only=False)]
        if dictionary.null_count:
            per_entry[dictionary.is_null().to_numpy(zero_copy_only=False)] = plan.missing
        indices = chunk.indices
        index = (
            per_entry[pc.fill_null(indices, 0).to_numpy(zero_copy_only=False)]
            if len(per_entry)
            else (np.full(len(chunk), plan.missing, dtype=np.intp))
        )
        if indices.null_count:
            index[indices.is_null().to_numpy(zero_copy_only=False)] = plan.missing
        return index

    @property
    def input_columns(self) -> list[str]:
        """The record fields the encoder reads."""
        return [slot.feature.name for slot in self._slots]

    def encode_columns(self, columns: Mapping[str, Any], rows: int | None = None) -> np.ndarray:
        """Encode column arrays (one per input feature; None/NaN = missing) into float32 (rows, width)."""
        if rows is None:
            rows = len(next(iter(columns.values()))) if columns else 0
        out = np.zeros((rows, self.width), dtype=np.float32)
        if rows == 0:
            return out
        if self._scalar_names:
            block = _float_block(columns, self._scalar_names, rows)
            missing = np.isnan(block)
            if missing.any():
                block = np.where(missing, self._defaults, block)
            np.clip(block, self._low, self._high, out=block)
            if self._any_log1p:
                block[:, self._log1p] = np.log1p(block[:, self._log1p])
            out[:, self._scalar_columns] = block
        if self._categories:
            # One-hot: set out[row, offset + index] through flat positions, one feature at a time.
            flat = out.reshape(-1)
            row_starts = np.arange(rows, dtype=np.intp) * self.width
            for plan in self._categories:
                index = self._category_index(plan, columns.get(plan.name), rows)
                targets = row_starts + (plan.offset + index)
                hit = index >= 0
                flat[targets if hit.all() else targets[hit]] = 1.0
        for name, offset in self._timestamps:
            values = columns.get(name)
            seconds = np.full(rows, np.nan) if values is None else _epoch_seconds(values)
            missing_time = np.isnan(seconds)
            if missing_time.any():
                seconds = np.where(missing_time, 0.0, seconds)
            hour_angle = np.mod(seconds, _SECONDS_PER_DAY) * (2 * math.pi / _SECONDS_PER_DAY)
            out[:, offset] = np.sin(hour_angle)
            out[:, offset + 1] = np.cos(hour_angle)
            # The weekday takes seven values: index their sines and cosines (computed by the same
            # numpy functions on the same angles) instead of evaluating both per row.
            days = np.floor(seconds / _SECONDS_PER_DAY)  # exact integers: |days| < 1e9 for any date
            weekday = np.mod(days.astype(np.int64) + _EPOCH_WEEKDAY, 7)
            out[:, offset + 2] = _WEEKDAY_SIN[weekday]
            out[:, offset + 3] = _WEEKDAY_COS[weekday]
            if missing_time.any():
                out[missing_time, offset : offset + 4] = 0.0  # a missing time carries no signal
        return out

    def encode_rows(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Encode request-style records (dicts); the serving path."""
        columns = {name: [row.get(name) for row in rows] for name in self.input_columns}
        return self.encode_columns(columns, len(rows))

    def encode_table(self, table: pa.Table) -> np.ndarray:
        """Encode an Arrow table (training data, batch input); the offline path."""
        columns = {name: table.column(name) for name in self.input_columns if name in table.column_names}
        return self.encode_columns(columns, table.num_rows)


def encode_target(contract: Contract, table: pa.Table) -> np.ndarray:
    """The target column as float32 0/1; missing labels are a data error caught by validation."""
    from shipml.errors import DataError

    if contract.target not in table.column_names:
        raise DataError(f"the target column {contract.target!r} is missing")
    values = _floats(table.column(contract.target).to_numpy(zero_copy_only=False))
    if np.isnan(values).any():
        raise DataError(f"the target column {contract.target!r} has missing values")
    return (values > 0.5).astype(np.float32)
