"""A window of captured predictions, as columns ready for the drift and quality statistics.

Captured records (see `score()` in shipml/serving/app.py) carry `request_id`, `time` (ISO UTC),
`model_version` (`fraud:3`), every request field and online feature (PII masked or hashed), the
score and label columns and `fallbacks`. Two places hold them:

- the local backend: Parquet parts under `<root>/capture/date=YYYY-MM-DD/part-*.parquet`
  (`LocalCaptureFolder`, read with pyarrow, imported lazily);
- AWS: Firehose delivers JSON Lines (gzip'd) under the data bucket's `capture/date=YYYY-MM-DD/`
  (`BlobCapture` over any `BlobStore`; parsed with the standard library, so the monitor Lambda
  needs no pyarrow).

Either way the result is a `CapturedWindow`: rows of the live model version inside
`[start, end)` only, every other row counted in `excluded` by reason (another model version, no
version, outside the window), never silently dropped. Numeric features become float64 arrays (NaN
for missing), timestamps the UTC hour of day (as in the baseline), categorical and boolean features
integer codes into a vocabulary (-1 for missing; booleans as "True"/"False", as in the baseline).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from shipml.backends.ports import BlobStore
from shipml.contract.schema import Contract, FieldType

if TYPE_CHECKING:
    import pyarrow as pa

CAPTURE_PREFIX = "capture/"
#: Columns every captured record has besides the contract's fields.
REQUEST_ID = "request_id"
TIME = "time"
MODEL_VERSION = "model_version"

Kind = Literal["numeric", "hour", "categorical"]


@dataclass(frozen=True)
class Column:
    """One column: float64 values (NaN = missing) or int codes into `vocabulary` (-1 = missing)."""

    values: np.ndarray
    vocabulary: tuple[str, ...] | None = None

    @property
    def categorical(self) -> bool:
        return self.vocabulary is not None

    def missing(self) -> np.ndarray:
        """A boolean mask of the missing values."""
        return self.values < 0 if self.categorical else np.isnan(self.values)


@dataclass
class CapturedWindow:
    """The captured rows of one model version in `[start, end)`, as columns."""

    model_version: str
    start: datetime
    end: datetime
    rows: int
    columns: dict[str, Column]
    keys: dict[str, np.ndarray] = field(default_factory=dict)  # request_id, the contract's id (objects)
    excluded: dict[str, int] = field(default_factory=dict)
    files: int = 0
    problems: list[str] = field(default_factory=list)


def column_kinds(contract: Contract, names: Iterable[str]) -> dict[str, Kind]:
    """How each named field is read: numbers as numeric, timestamps as the hour, the rest as categories.

    The contract's score output is numeric; unknown names are skipped.
    """
    kinds: dict[str, Kind] = {}
    for name in names:
        if name == contract.outputs.score:
            kinds[name] = "numeric"
            continue
        try:
            feature = contract.feature(name)
        except KeyError:
            continue
        if feature.is_numeric:
            kinds[name] = "numeric"
        elif feature.type == FieldType.timestamp:
            kinds[name] = "hour"
        else:
            kinds[name] = "categorical"
    return kinds


def monitored_columns(contract: Contract) -> dict[str, Kind]:
    """The columns the monitors read: monitored features, segment features and the score."""
    names = [f.name for f in contract.monitored_features]
    names += [s.feature for s in contract.segments if s.feature not in names]
    return column_kinds(contract, [*names, contract.outputs.score])


def day_range(start: datetime, end: datetime) -> list[date]:
    """The capture partitions (UTC dates) that may hold rows of `[start, end)`."""
    first, last = start.astimezone(UTC).date(), (end - timedelta(microseconds=1)).astimezone(UTC).date()
    return [first + timedelta(days=d) for d in range((last - first).days + 1)]


def partition_names(start: datetime, end: datetime) -> list[str]:
    """The names of the capture partitions that may hold rows of `[start, end)`: `date=YYYY-MM-DD`,
    the layout of both the local capture folder and Firehose's prefix."""
    return [f"date={day:%Y-%m-%d}" for day in day_range(start, end)]


def _with_read_report(window: CapturedWindow, *, files: int, problems: list[str]) -> CapturedWindow:
    """The window with what reading it met: how many capture files it read, and what it skipped."""
    window.files = files
    window.problems += problems
    return window


# --- from Python records (JSON Lines: the Lambda path) ----------------------------------------------


def _hour(value: Any) -> float:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return np.nan
    else:
        return np.nan
    if moment.tzinfo is None:
        return np.nan  # the contract refuses naive timestamps; one here is unreadable, not a UTC guess
    return float(moment.astimezone(UTC).hour)


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return np.nan
    return float(value)


def _category(value: Any) -> str | None:
    # str(True) == "True": the baseline's spelling of booleans.
    return None if value is None else str(value)


def _codes(values: list[str | None]) -> Column:
    index: dict[str, int] = {}
    codes = np.fromiter(
        (-1 if v is None else index.setdefault(v, len(index)) for v in values),
        dtype=np.int32,
        count=len(values),
    )
    return Column(codes, tuple(index))


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class _RecordColumns:
    """Accumulates the needed fields of records one at a time (no list of dicts kept in memory)."""

    def __init__(self, kinds: Mapping[str, Kind], keys: Iterable[str]) -> None:
        self.kinds = dict(kinds)
        self.key_names = list(keys)
        self.values: dict[str, list[Any]] = {name: [] for name in self.kinds}
        self.keys: dict[str, list[Any]] = {name: [] for name in self.key_names}

    def add(self, record: Mapping[str, Any]) -> None:
        for name, kind in self.kinds.items():
            value = record.get(name)
            if kind == "numeric":
                self.values[name].append(_number(value))
            elif kind == "hour":
                self.values[name].append(_hour(value))
            else:
                self.values[name].append(_category(value))
        for name in self.key_names:
            value = record.get(name)
            self.keys[name].append(None if value is None else str(value))

    def columns(self) -> dict[str, Column]:
        out = {}
        for name, kind in self.kinds.items():
            if kind == "categorical":
                out[name] = _codes(self.values[name])
            else:
                out[name] = Column(np.asarray(self.values[name], dtype=np.float64))
        return out


def window_from_records(
    records: Iterable[Mapping[str, Any]],
    *,
    kinds: Mapping[str, Kind],
    model_version: str,
    start: datetime,
    end: datetime,
    key_names: Iterable[str] = (),
) -> CapturedWindow:
    """A window from captured records (dicts), keeping the rows of `model_version` in `[start, end)`."""
    collected = _RecordColumns(kinds, key_names)
    excluded: dict[str, int] = {}
    rows = 0
    for record in records:
        moment = _parse_time(record.get(TIME))
        if moment is None:
            excluded["no readable time"] = excluded.get("no readable time", 0) + 1
            continue
        if not start <= moment < end:
            excluded["outside the window"] = excluded.get("outside the window", 0) + 1
            continue
        version = record.get(MODEL_VERSION)
        if version != model_version:
            reason = f"model version {version}" if version else "no model version"
            excluded[reason] = excluded.get(reason, 0) + 1
            continue
        collected.add(record)
        rows += 1
    return CapturedWindow(
        model_version=model_version,
        start=start,
        end=end,
        rows=rows,
        columns=collected.columns(),
        keys={k: np.array(v, dtype=object) for k, v in collected.keys.items()},
        excluded=excluded,
    )


# --- from an Arrow table (Parquet: the local path, the bench) ---------------------------------------


def _arrow_column(table: pa.Table, name: str, kind: Kind) -> Column:
    import pyarrow as pa
    import pyarrow.compute as pc

    rows = table.num_rows
    if name not in table.column_names:
        if kind == "categorical":
            return Column(np.full(rows, -1, dtype=np.int32), ())
        return Column(np.full(rows, np.nan))
    column = table.column(name)
    if kind == "categorical":
        if pa.types.is_boolean(column.type):
            codes = pc.fill_null(pc.cast(column, pa.int32()), -1)
            return Column(codes.to_numpy().astype(np.int32), ("False", "True"))
        if pa.types.is_null(column.type):
            return Column(np.full(rows, -1, dtype=np.int32), ())
        encoded = pc.dictionary_encode(pc.cast(column, pa.string())).combine_chunks()
        codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int32)
        return Column(codes, tuple(encoded.dictionary.to_pylist()))
    if kind == "hour":
        if pa.types.is_timestamp(column.type):
            stamps = pc.cast(column, pa.timestamp("us", tz="UTC"))
        elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            try:
                stamps = pc.cast(column, pa.timestamp("us", tz="UTC"))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                # A value Arrow cannot read: fall back to the record-by-record parser (NaN for it).
                return Column(np.array([_hour(v) for v in column.to_pylist()], dtype=np.float64))
        else:
            return Column(np.full(rows, np.nan))
        return Column(pc.cast(pc.hour(stamps), pa.float64()).to_numpy(zero_copy_only=False))
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        return Column(np.array([_number(v) for v in column.to_pylist()], dtype=np.float64))
    return Column(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False))


def window_from_arrow(
    table: pa.Table,
    *,
    kinds: Mapping[str, Kind],
    model_version: str,
    start: datetime,
    end: datetime,
    key_names: Iterable[str] = (),
) -> CapturedWindow:
    """A window from a table of captured records (the same rules as `window_from_records`)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    key_names = list(key_names)
    # Only the columns read below: filtering a wide table (ids, masked PII) costs more than the statistics.
    needed = {*kinds, *key_names, TIME, MODEL_VERSION}
    table = table.select([name for name in table.column_names if name in needed])
    excluded: dict[str, int] = {}
    if table.num_rows and TIME in table.column_names:
        try:
            times = pc.cast(table.column(TIME), pa.timestamp("us", tz="UTC"))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            times = pa.chunked_array(
                [
                    pa.array(
                        [_parse_time(v) for v in table.column(TIME).to_pylist()],
                        type=pa.timestamp("us", tz="UTC"),
                    )
                ]
            )
        unreadable = times.null_count
        if unreadable:
            excluded["no readable time"] = unreadable
        inside = pc.and_(
            pc.greater_equal(times, pa.scalar(start, pa.timestamp("us", tz="UTC"))),
            pc.less(times, pa.scalar(end, pa.timestamp("us", tz="UTC"))),
        )
        inside = pc.fill_null(inside, False)
        kept = pc.sum(inside).as_py() or 0
        outside = table.num_rows - unreadable - kept
        if outside:
            excluded["outside the window"] = outside
        if kept < table.num_rows:
            table = table.filter(inside)
    elif table.num_rows:
        excluded["no readable time"] = table.num_rows
        table = table.slice(0, 0)
    if table.num_rows:
        if MODEL_VERSION in table.column_names:
            versions = pc.cast(table.column(MODEL_VERSION), pa.string())
            counts = pc.value_counts(versions).to_pylist()
            for item in counts:
                if item["values"] != model_version:
                    reason = f"model version {item['values']}" if item["values"] else "no model version"
                    excluded[reason] = excluded.get(reason, 0) + item["counts"]
            if any(item["values"] != model_version for item in counts):
                table = table.filter(pc.fill_null(pc.equal(versions, model_version), False))
        else:
            excluded["no model version"] = table.num_rows
            table = table.slice(0, 0)
    keys = {}
    for name in key_names:
        if name in table.column_names:
            keys[name] = np.array(
                [None if v is None else str(v) for v in table.column(name).to_pylist()], dtype=object
            )
        else:
            keys[name] = np.full(table.num_rows, None, dtype=object)
    return CapturedWindow(
        model_version=model_version,
        start=start,
        end=end,
        rows=table.num_rows,
        columns={name: _arrow_column(table, name, kind) for name, kind in kinds.items()},
        keys=keys,
        excluded=excluded,
    )


# --- where the records are ---------------------------------------------------------------------------


class CaptureSource(Protocol):
    """Where captured records are read from."""

    def window(
        self,
        *,
        kinds: Mapping[str, Kind],
        model_version: str,
        start: datetime,
        end: datetime,
        key_names: Iterable[str] = (),
    ) -> CapturedWindow: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class LocalCaptureFolder:
    """The local backend's capture: Parquet parts under `<folder>/date=YYYY-MM-DD/`."""

    folder: Path

    def describe(self) -> str:
        return str(self.folder)

    def files(self, start: datetime, end: datetime) -> list[Path]:
        found: list[Path] = []
        for partition in partition_names(start, end):
            found += sorted((self.folder / partition).glob("part-*.parquet"))
        return found

    def window(
        self,
        *,
        kinds: Mapping[str, Kind],
        model_version: str,
        start: datetime,
        end: datetime,
        key_names: Iterable[str] = (),
    ) -> CapturedWindow:
        import pyarrow as pa
        import pyarrow.parquet as pq

        files = self.files(start, end)
        problems: list[str] = []
        tables = []
        for path in files:
            try:
                tables.append(pq.read_table(path))
            except (OSError, pa.ArrowInvalid) as exc:
                problems.append(f"{path.name}: unreadable Parquet part, skipped ({exc})")
        table = (
            pa.concat_tables(tables, promote_options="permissive")
            if tables
            else pa.table({TIME: pa.array([], pa.string())})
        )
        window = window_from_arrow(
            table, kinds=kinds, model_version=model_version, start=start, end=end, key_names=key_names
        )
        return _with_read_report(window, files=len(files), problems=problems)


def _lines(data: bytes) -> Iterator[bytes]:
    if data[:2] == b"\x1f\x8b":  # Firehose's GZIP compression
        data = gzip.decompress(data)
    yield from data.splitlines()


@dataclass(frozen=True)
class BlobCapture:
    """Capture delivered as JSON Lines (optionally gzip'd) under `prefix` in a blob store (S3 on AWS)."""

    blobs: BlobStore
    prefix: str = CAPTURE_PREFIX

    def describe(self) -> str:
        return self.blobs.uri(self.prefix)

    def keys(self, start: datetime, end: datetime) -> list[str]:
        found: list[str] = []
        for partition in partition_names(start, end):
            found += self.blobs.list(f"{self.prefix}{partition}/")
        return found

    def window(
        self,
        *,
        kinds: Mapping[str, Kind],
        model_version: str,
        start: datetime,
        end: datetime,
        key_names: Iterable[str] = (),
    ) -> CapturedWindow:
        keys = self.keys(start, end)
        problems: list[str] = []
        unreadable = {"lines": 0}

        def records() -> Iterator[dict[str, Any]]:
            for key in keys:
                try:
                    data = self.blobs.get_bytes(key)
                    for line in _lines(data):
                        if not line.strip():
                            continue
                        try:
                            record = json.loads(line)
                        except ValueError:
                            unreadable["lines"] += 1
                            continue
                        if isinstance(record, dict):
                            yield record
                        else:
                            unreadable["lines"] += 1
                except (OSError, EOFError, KeyError) as exc:
                    problems.append(f"{key}: unreadable capture object, skipped ({exc})")

        window = window_from_records(
            records(), kinds=kinds, model_version=model_version, start=start, end=end, key_names=key_names
        )
        if unreadable["lines"]:
            problems.append(f"{unreadable['lines']} captured lines are not JSON objects and were skipped")
        return _with_read_report(window, files=len(keys), problems=problems)
