"""Materialisation: the contract's online features computed from the lake and written to the online store.

A run at `as_of` gives every entity the values a request at `as_of` should see (events strictly
before it; see `shipml.features.aggregate`).

*Full* runs read the whole history before `as_of` and write every item: a rerun gives the same
table, and a damaged table is repaired. *Incremental* runs (the default once a state exists)
read only `[last as_of - longest window, as_of)`: windowed aggregates need nothing older, and the
one all-history aggregate, days since first seen, is kept as per-entity state (the first event
time). The state also holds a digest of each entity's last written item, so an incremental run
writes only the items whose values changed: rerunning it writes nothing and leaves the table as
it was. The state lives in a blob store (S3 on AWS), beside the lake, and is saved only after the
writes; an item that failed to write keeps its old digest and is written again next time.

Bad input: event rows that break the contract (key pattern, timestamps, amounts...) are counted
and reported, never aggregated; computed items that break it (out of range) are counted and not
written; keys that the store could not write after its retries are reported by name.

An incremental run falls back to a full one (and says why) when there is no state, when the
contract's aggregations changed since the state was written, when an aggregation other than
days_since_first has no window (it would need the whole history), or when `as_of` goes back in time.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from shipml.backends.ports import BlobStore, OnlineStore
from shipml.contract.schema import Contract
from shipml.errors import OnlineStoreWriteError, ShipmlError
from shipml.features.aggregate import (
    aggregate_at,
    aggregation_columns,
    epoch_us,
    prepare_events,
    whole_days,
)
from shipml.features.lake import EventSource

if TYPE_CHECKING:
    import pyarrow as pa

STATE_VERSION = 1
_MAX_REPORTED_KEYS = 100


def state_key(model: str) -> str:
    """Where a model's materialisation state lives in the blob store."""
    return f"features/{model}/materialization-state.parquet"


class MaterializeReport(BaseModel):
    """What a run read, refused and wrote."""

    model_config = ConfigDict(frozen=True)

    model: str
    mode: Literal["full", "incremental"]
    reason: str
    as_of: datetime
    read_from: datetime | None
    source: str
    rows_read: int
    rows_refused: int
    rows_used: int
    refusals: str
    entities: int
    items_written: int
    items_unchanged: int
    items_refused: int
    failed_keys: list[str]
    failed_count: int
    seconds: float

    def summary(self) -> str:
        """A few lines for a log or the CLI."""
        window = f"[{self.read_from.isoformat()}, " if self.read_from else "[beginning, "
        lines = [
            f"{self.mode} materialisation of {self.model!r} as of {self.as_of.isoformat()} ({self.reason})",
            f"read {self.rows_read:,} rows from {self.source} in {window}{self.as_of.isoformat()}); "
            f"refused {self.rows_refused:,}; used {self.rows_used:,}",
            f"{self.entities:,} entities: wrote {self.items_written:,} items, {self.items_unchanged:,} "
            f"unchanged, {self.items_refused:,} refused, {self.failed_count:,} failed",
        ]
        if self.failed_keys:
            lines.append("failed keys: " + ", ".join(self.failed_keys))
        return "\n".join(lines)


def definition_digest(contract: Contract) -> str:
    """A digest of what the state depends on: the entity key, event time and every aggregation."""
    spec = {
        "key": contract.entity_key,
        "time": contract.event_time,
        "features": [
            [f.name, f.type.value, f.aggregation.model_dump()]  # type: ignore[union-attr]
            for f in contract.aggregated_features
        ],
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


class _State:
    """Per entity: the first event time (epoch µs) and the digest of the last item written."""

    def __init__(self, entities: list[str], first_seen: np.ndarray, digests: list[str | None]) -> None:
        self.entities = entities
        self.first_seen = first_seen
        self.digests = digests

    @classmethod
    def empty(cls) -> _State:
        return cls([], np.zeros(0, dtype=np.int64), [])

    @classmethod
    def load(cls, blobs: BlobStore, model: str) -> tuple[_State, dict[str, str]] | None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            data = blobs.get_bytes(state_key(model))
        except KeyError:
            return None
        try:
            table = pq.read_table(pa.BufferReader(data))
        except pa.ArrowException as exc:
            raise ShipmlError(
                f"{blobs.uri(state_key(model))}: unreadable materialisation state: {exc}"
            ) from None
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        state = cls(
            table.column("entity").to_pylist(),
            table.column("first_seen_us").to_numpy(zero_copy_only=False).astype(np.int64),
            table.column("digest").to_pylist(),
        )
        return state, meta

    def save(self, blobs: BlobStore, model: str, meta: dict[str, str]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table(
            {
                "entity": pa.array(self.entities, pa.string()),
                "first_seen_us": pa.array(self.first_seen, pa.int64()),
                "digest": pa.array(self.digests, pa.string()),
            }
        ).replace_schema_metadata(meta)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        blobs.put_bytes(state_key(model), sink.getvalue().to_pybytes())


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ShipmlError(f"as_of must carry a UTC offset, got {moment.isoformat()}")
    return moment.astimezone(UTC)


def _to_us(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _plan(
    contract: Contract, loaded: tuple[_State, dict[str, str]] | None, as_of: datetime, full: bool
) -> tuple[str, str, _State, datetime | None]:
    """Choose the mode: (mode, reason, prior state, the start of the read window)."""
    windows = [f.aggregation.window_seconds for f in contract.aggregated_features]  # type: ignore[union-attr]
    functions = [f.aggregation.function for f in contract.aggregated_features]  # type: ignore[union-attr]
    if full:
        return "full", "asked for", _State.empty(), None
    if loaded is None:
        return "full", "no state from an earlier run", _State.empty(), None
    state, meta = loaded
    if meta.get("definitions") != definition_digest(contract) or meta.get("version") != str(STATE_VERSION):
        return "full", "the aggregation definitions changed", _State.empty(), None
    if any(w is None and fn != "days_since_first" for w, fn in zip(windows, functions, strict=True)):
        return "full", "an aggregation without a window needs the whole history", _State.empty(), None
    last = datetime.fromisoformat(meta["as_of"])
    if as_of < last:
        return "full", f"as_of is before the last run's ({last.isoformat()})", _State.empty(), None
    lookback = max((w for w in windows if w is not None), default=0)
    return "incremental", f"since {last.isoformat()}", state, last - timedelta(seconds=lookback)


def materialize(
    contract: Contract,
    source: EventSource,
    store: OnlineStore,
    *,
    as_of: datetime,
    state_store: BlobStore | None = None,
    full: bool = False,
    write_batch: int = 10_000,
) -> MaterializeReport:
    """Compute the contract's aggregated online features as of `as_of` and write them to `store`.

    Without a `state_store` every run is full. The group written is the contract's model name
    (the predictor looks features up there).
    """
    from shipml.contract.validate import validate_table

    started = time.perf_counter()
    if contract.entity_key is None or not contract.aggregated_features:
        raise ShipmlError(f"the {contract.model!r} contract has no online features with an aggregation")
    as_of = _utc(as_of)
    loaded = _State.load(state_store, contract.model) if state_store is not None else None
    mode, reason, prior, start = _plan(contract, loaded, as_of, full or state_store is None)
    if state_store is None:
        reason = "no state store"

    columns = aggregation_columns(contract)
    raw = source.read(columns, start=start, end=as_of)
    checked = validate_table(contract, raw, only=set(columns))
    valid = checked.valid_table()
    times = epoch_us(valid.column(contract.event_time))
    in_range = times < _to_us(as_of)
    if start is not None:
        in_range &= times >= _to_us(start)
    import pyarrow as pa

    events = prepare_events(contract, valid.filter(pa.array(in_range)))

    entities, first_seen = _entities(events, prior)
    values = _values(contract, events, entities, first_seen, as_of)
    items_table = pa.table({contract.entity_key: entities, **values})
    items_check = validate_table(contract, items_table, only={contract.entity_key, *values})

    digests = _digests(values, len(entities))
    previous = dict(zip(prior.entities, prior.digests, strict=True))
    new_digests: list[str | None] = [previous.get(e) for e in entities]
    to_write: dict[str, dict[str, Any]] = {}
    unchanged = 0
    rows = items_table.to_pylist()
    for index, (entity, ok) in enumerate(zip(entities, items_check.valid, strict=True)):
        if not ok:
            continue
        if mode == "incremental" and previous.get(entity) == digests[index]:
            unchanged += 1
            continue
        item = rows[index]
        del item[contract.entity_key]
        to_write[entity] = item

    written, failed = _write(store, contract.model, to_write, write_batch)
    failed_set = set(failed)
    position = {e: i for i, e in enumerate(entities)}
    for entity in to_write:
        if entity not in failed_set:
            new_digests[position[entity]] = digests[position[entity]]

    if state_store is not None:
        meta = {
            "as_of": as_of.isoformat(),
            "definitions": definition_digest(contract),
            "version": str(STATE_VERSION),
        }
        _State(entities, first_seen, new_digests).save(state_store, contract.model, meta)

    return MaterializeReport(
        model=contract.model,
        mode=mode,  # type: ignore[arg-type]
        reason=reason,
        as_of=as_of,
        read_from=start,
        source=source.describe(),
        rows_read=raw.num_rows,
        rows_refused=checked.invalid_rows,
        rows_used=events.rows,
        refusals=checked.summary(limit=10) if not checked.ok else "",
        entities=len(entities),
        items_written=written,
        items_unchanged=unchanged,
        items_refused=items_check.invalid_rows,
        failed_keys=failed[:_MAX_REPORTED_KEYS],
        failed_count=len(failed),
        seconds=time.perf_counter() - started,
    )


def _entities(events: Any, prior: _State) -> tuple[list[str], np.ndarray]:
    """Every entity known (earlier state and new events) and its first event time, merged."""
    keys = events.dictionary.to_pylist()
    first = np.full(len(keys), np.iinfo(np.int64).max, dtype=np.int64)
    if events.rows:
        # events are sorted by (code, time): the first row of each code is its first event.
        codes, index = np.unique(events.codes, return_index=True)
        first[codes] = events.times[index]
    merged: dict[str, int] = dict(zip(prior.entities, prior.first_seen.tolist(), strict=True))
    for key, seen in zip(keys, first.tolist(), strict=True):
        merged[key] = min(seen, merged.get(key, seen))
    entities = sorted(merged)
    return entities, np.array([merged[e] for e in entities], dtype=np.int64)


def _values(
    contract: Contract, events: Any, entities: list[str], first_seen: np.ndarray, as_of: datetime
) -> dict[str, pa.Array]:
    from shipml.features.aggregate import to_feature_array

    features = contract.aggregated_features
    windowed = [f for f in features if f.aggregation.function != "days_since_first"]  # type: ignore[union-attr]
    at = np.full(len(entities), _to_us(as_of), dtype=np.int64)
    computed = aggregate_at(contract, events, entities, at, windowed)
    out: dict[str, pa.Array] = {}
    for feature in features:
        if feature.aggregation.function == "days_since_first":  # type: ignore[union-attr]
            seen = first_seen < at
            values = np.where(seen, whole_days(at, np.where(seen, first_seen, at)), np.nan)
        else:
            values = computed[feature.name]
        out[feature.name] = to_feature_array(feature, values)
    return out


def _digests(values: dict[str, pa.Array], count: int) -> list[str]:
    columns = [values[name].to_pylist() for name in sorted(values)]
    return [
        hashlib.blake2b(json.dumps([c[i] for c in columns]).encode(), digest_size=8).hexdigest()
        for i in range(count)
    ]


def _write(
    store: OnlineStore, group: str, items: dict[str, dict[str, Any]], batch: int
) -> tuple[int, list[str]]:
    """Write in batches (bounded memory per call); collect the keys the store could not write."""
    written, failed = 0, []
    keys = list(items)
    for first in range(0, len(keys), batch):
        chunk = {k: items[k] for k in keys[first : first + batch]}
        try:
            written += store.put_many(group, chunk)
        except OnlineStoreWriteError as exc:
            written += exc.written
            failed.extend(exc.failed_keys)
    return written, failed


__all__ = ["MaterializeReport", "definition_digest", "materialize", "state_key"]
