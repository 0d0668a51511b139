"""The contract's aggregations, evaluated for (entity, point in time) pairs: one implementation.

Materialisation asks for every entity at the run's `as_of`; the point-in-time training join asks
for every training row at its own event time. Both call `aggregate_at`, so the online store and
the training data hold the same numbers for the same history (see `Aggregation` in the schema for
the definition: events of the entity with `t - window <= event_time < t`).

How: events are sorted by (entity, time); each query becomes two binary searches (the first event
at or after `t - window`, the first at or after `t`) in one int64 key that orders by entity, then
by the *rank* of the time among all times involved (ranks keep the key small whatever the time
span). Sums, minima and maxima come from `reduceat` over the found ranges, so a value depends
only on the events inside its window. Everything is vectorised: no Python loop over entities or rows.

Needs numpy and pyarrow (imported lazily); never on the serving path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from shipml.contract.schema import Contract, Feature, FieldType

if TYPE_CHECKING:
    import pyarrow as pa

US_PER_SECOND = 1_000_000
US_PER_DAY = 86_400 * US_PER_SECOND


@dataclass(frozen=True)
class Events:
    """An entity's events in the form the aggregation needs: sorted by (entity code, time)."""

    dictionary: pa.Array  # entity keys (strings); an event's code indexes it
    codes: np.ndarray  # int64, sorted
    times: np.ndarray  # int64 epoch microseconds, sorted within each code
    columns: dict[str, np.ndarray]  # float64 values of the aggregated columns, same order

    @property
    def rows(self) -> int:
        return len(self.codes)


def aggregation_columns(contract: Contract, features: Sequence[Feature] | None = None) -> list[str]:
    """The event columns an aggregation reads: the entity key, the event time and aggregated columns."""
    features = contract.aggregated_features if features is None else features
    names = [contract.entity_key, contract.event_time]
    for feature in features:
        column = feature.aggregation.column  # type: ignore[union-attr]
        if column is not None and column not in names:
            names.append(column)
    return [n for n in names if n is not None]


def prepare_events(contract: Contract, table: pa.Table, features: Sequence[Feature] | None = None) -> Events:
    """Sort a (validated) event table by entity and time; rows without a key or a time are left out."""
    import pyarrow as pa
    import pyarrow.compute as pc

    key, time = contract.entity_key, contract.event_time
    keys = pc.cast(table.column(key), pa.string()).combine_chunks()
    times = _epoch_us(table.column(time))
    keep = pc.and_(pc.is_valid(keys), pa.array(times != _NO_TIME))
    if not pc.all(keep).as_py():
        keys = keys.filter(keep)
        table = table.filter(keep)
        times = times[keep.to_numpy(zero_copy_only=False)]
    encoded = pc.dictionary_encode(keys)
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    order = np.lexsort((times, codes))
    columns = {}
    for name in aggregation_columns(contract, features)[2:]:
        values = pc.cast(table.column(name), pa.float64()).to_numpy(zero_copy_only=False)
        columns[name] = np.asarray(values, dtype=np.float64)[order]
    return Events(dictionary=encoded.dictionary, codes=codes[order], times=times[order], columns=columns)


_NO_TIME = np.iinfo(np.int64).min


def _epoch_us(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Timestamps (any unit, UTC) -> int64 epoch microseconds; missing ones -> _NO_TIME."""
    import pyarrow as pa
    import pyarrow.compute as pc

    as_us = pc.cast(column, pa.timestamp("us", tz="UTC")).cast(pa.int64())
    return np.asarray(pc.fill_null(as_us, int(_NO_TIME)).to_numpy(zero_copy_only=False), dtype=np.int64)


def epoch_us(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Public form of the timestamp conversion used for query times (missing -> a sentinel)."""
    return _epoch_us(column)


def whole_days(later_us: np.ndarray, earlier_us: np.ndarray) -> np.ndarray:
    """Whole days from `earlier` to `later` (floor), as float64."""
    return np.floor((later_us - earlier_us) / US_PER_DAY)


def aggregate_at(
    contract: Contract,
    events: Events,
    keys: pa.Array | Sequence[str],
    times_us: np.ndarray,
    features: Sequence[Feature] | None = None,
) -> dict[str, np.ndarray]:
    """Each aggregated feature for each (key, time) query: float64 arrays, NaN where missing.

    `times_us` are epoch microseconds (int64). A query whose time is missing gets NaN everywhere.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    features = contract.aggregated_features if features is None else list(features)
    keys = pa.array(keys, pa.string()) if not isinstance(keys, pa.Array) else pc.cast(keys, pa.string())
    times_us = np.asarray(times_us, dtype=np.int64)
    queries = len(times_us)
    unknown = len(events.dictionary)  # a code no event has: no history
    codes = pc.fill_null(pc.index_in(keys, value_set=events.dictionary), unknown)
    q_codes = codes.to_numpy(zero_copy_only=False).astype(np.int64)
    no_time = times_us == _NO_TIME
    q_times = np.where(no_time, 0, times_us)

    windows = sorted({f.aggregation.window_seconds for f in features if f.aggregation.window_seconds})  # type: ignore[union-attr]
    starts = {w: q_times - w * US_PER_SECOND for w in windows}
    grid = np.sort(np.concatenate([events.times, q_times, *starts.values()]))
    if len(grid):  # distinct values; a sort is several times faster than np.unique's hashing here
        grid = grid[np.concatenate([[True], grid[1:] != grid[:-1]])]
    span = np.int64(len(grid) + 1)

    def key_of(codes_: np.ndarray, times_: np.ndarray) -> np.ndarray:
        return codes_ * span + np.searchsorted(grid, times_).astype(np.int64)

    event_keys = key_of(events.codes, events.times)  # sorted: events are sorted by (code, time)
    hi = np.searchsorted(event_keys, key_of(q_codes, q_times), side="left")  # first event at/after t
    first = np.searchsorted(event_keys, q_codes * span, side="left")  # the entity's first event
    lows = {w: np.searchsorted(event_keys, key_of(q_codes, s), side="left") for w, s in starts.items()}

    out: dict[str, np.ndarray] = {}
    for feature in features:
        agg = feature.aggregation
        assert agg is not None
        lo = lows[agg.window_seconds] if agg.window_seconds else first
        count = (hi - lo).astype(np.float64)
        if agg.function == "count":
            value = count
        elif agg.function == "days_since_first":
            seen = hi > first
            first_time = events.times[np.minimum(first, max(events.rows - 1, 0))] if events.rows else q_times
            value = np.where(seen, whole_days(q_times, first_time), np.nan)
        else:
            column = events.columns[agg.column]  # type: ignore[index]
            if agg.function in ("sum", "mean"):
                # Summed window by window (not as a difference of prefix sums), so a value depends
                # only on the events in its window: the same window gives the same bits whatever
                # else was read (a full run and an incremental one agree exactly).
                total = np.nan_to_num(_range_reduce(column, lo, hi, np.add), nan=0.0)
                if agg.function == "sum":
                    value = total
                else:
                    with np.errstate(invalid="ignore", divide="ignore"):
                        value = np.where(count > 0, total / np.maximum(count, 1), np.nan)
            else:
                value = _range_reduce(column, lo, hi, np.minimum if agg.function == "min" else np.maximum)
        out[feature.name] = np.where(no_time, np.nan, value) if queries else value
    return out


def _range_reduce(values: np.ndarray, lo: np.ndarray, hi: np.ndarray, ufunc: np.ufunc) -> np.ndarray:
    """ufunc (add, min or max) over values[lo:hi], in order, for each pair; NaN for empty ranges."""
    result = np.full(len(lo), np.nan)
    nonempty = np.nonzero(hi > lo)[0]
    if len(nonempty) == 0:
        return result
    # reduceat over interleaved (lo, hi) bounds: even slots hold the wanted ranges. Visiting them
    # in order of lo keeps the odd (discarded) slots short, so the work stays linear.
    order = nonempty[np.argsort(lo[nonempty], kind="stable")]
    bounds = np.empty(2 * len(order), dtype=np.int64)
    bounds[0::2] = lo[order]
    bounds[1::2] = hi[order]
    padded = np.concatenate([values, [np.nan]])  # so that a bound equal to len(values) is valid
    reduced = ufunc.reduceat(padded, bounds)[0::2]
    result[order] = reduced
    return result


def to_feature_array(feature: Feature, values: np.ndarray) -> pa.Array:
    """Aggregated float64 values (NaN = missing) as the Arrow type the contract gives the feature."""
    import pyarrow as pa

    missing = np.isnan(values)
    if feature.type == FieldType.integer:
        return pa.array(np.where(missing, 0, values).astype(np.int64), pa.int64(), mask=missing)
    return pa.array(values, pa.float64(), mask=missing)
