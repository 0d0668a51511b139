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


def _floats(values: Any) -> np.ndarray:
    """Numbers or booleans with None/NaN for missing -> float64 with NaN for missing."""
    array = np.asarray(values)
    if array.dtype == object:
        array = np.array([np.nan if v is None else v for v in array], dtype=np.float64)
    return array.astype(np.float64, copy=False)


class FeatureEncoder:
    """Turns records into the model's input matrix, following the contract's input features."""

    input_name = "features"

    def __init__(self, contract: Contract) -> None:
        self.contract = contract
        self._slots = [_plan(f) for f in contract.input_features]
        self.feature_names: list[str] = [n for slot in self._slots for n in slot.names]

    @property
    def width(self) -> int:
        return len(self.feature_names)

    @property
    def input_columns(self) -> list[str]:
        """The record fields the encoder reads."""
        return [slot.feature.name for slot in self._slots]

    def encode_columns(self, columns: Mapping[str, Any], rows: int | None = None) -> np.ndarray:
        """Encode column arrays (one per input feature; None/NaN = missing) into float32 (rows, width)."""
        if rows is None:
            rows = len(columns[self._slots[0].feature.name]) if self._slots else 0
        out = np.zeros((rows, self.width), dtype=np.float32)
        col = 0
        for slot in self._slots:
            values = columns.get(slot.feature.name)
            if values is None:
                values = [None] * rows
            out[:, col : col + slot.width] = self._encode_one(slot, values, rows)
            col += slot.width
        return out

    def encode_rows(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Encode request-style records (dicts); the serving path."""
        columns = {name: [row.get(name) for row in rows] for name in self.input_columns}
        return self.encode_columns(columns, len(rows))

    def encode_table(self, table: pa.Table) -> np.ndarray:
        """Encode an Arrow table (training data, batch input); the offline path."""
        columns = {
            name: table.column(name).to_numpy(zero_copy_only=False)
            for name in self.input_columns
            if name in table.column_names
        }
        return self.encode_columns(columns, table.num_rows)

    def _encode_one(self, slot: _Slot, values: Any, rows: int) -> np.ndarray:
        feature = slot.feature
        if feature.type == FieldType.category:
            return self._one_hot(slot, values, rows)
        if feature.type == FieldType.timestamp:
            seconds = _epoch_seconds(values)
            hours = np.mod(seconds, _SECONDS_PER_DAY) / 3600.0
            days = np.mod(np.floor(seconds / _SECONDS_PER_DAY) + _EPOCH_WEEKDAY, 7)
            parts = np.stack(
                [
                    np.sin(2 * math.pi * hours / 24),
                    np.cos(2 * math.pi * hours / 24),
                    np.sin(2 * math.pi * days / 7),
                    np.cos(2 * math.pi * days / 7),
                ],
                axis=1,
            )
            return np.nan_to_num(parts, nan=0.0)
        # number, integer, boolean: one column; missing -> the contract's default (else 0).
        numbers = _floats(values)
        fill = float(feature.default) if feature.default is not None else 0.0
        numbers = np.where(np.isnan(numbers), fill, numbers)
        if feature.is_numeric:
            low = feature.min if feature.min is not None else -np.inf
            high = feature.max if feature.max is not None else np.inf
            numbers = np.clip(numbers, low, high)
            if feature.transform == "log1p":
                numbers = np.log1p(numbers)
        return numbers.reshape(rows, 1)

    @staticmethod
    def _one_hot(slot: _Slot, values: Any, rows: int) -> np.ndarray:
        feature = slot.feature
        cats = slot.categories
        # Missing -> the default category if any; unseen -> the OTHER slot when the contract has one.
        fallback = feature.default if feature.default is not None else (OTHER if OTHER in cats else "")
        text = (
            np.array([fallback if v is None else v for v in values], dtype=str) if rows else np.array([], str)
        )
        order = np.argsort(np.array(cats))
        sorted_cats = np.array(cats)[order]
        pos = np.clip(np.searchsorted(sorted_cats, text), 0, len(cats) - 1)
        found = sorted_cats[pos] == text
        index = np.where(found, order[pos], -1)
        if OTHER in cats:
            index = np.where(index < 0, cats.index(OTHER), index)
        out = np.zeros((rows, len(cats)), dtype=np.float32)
        hit = index >= 0
        out[np.nonzero(hit)[0], index[hit]] = 1.0
        return out


def encode_target(contract: Contract, table: pa.Table) -> np.ndarray:
    """The target column as float32 0/1; missing labels are a data error caught by validation."""
    from shipml.errors import DataError

    if contract.target not in table.column_names:
        raise DataError(f"the target column {contract.target!r} is missing")
    values = _floats(table.column(contract.target).to_numpy(zero_copy_only=False))
    if np.isnan(values).any():
        raise DataError(f"the target column {contract.target!r} has missing values")
    return (values > 0.5).astype(np.float32)
