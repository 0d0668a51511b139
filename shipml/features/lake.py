"""Where the transactions history comes from: a local path, or Parquet objects under a blob prefix.

A source reads the events of a time range `[start, end)`, only the columns asked for. Objects
under a blob prefix may be partitioned by day (`.../event_date=2026-01-05/part-0.parquet`); a
partition outside the range is skipped without being fetched, which is what makes an incremental
run read only its window. Rows are filtered by their own `event_time` too, so partitioning is an
optimisation, never a correctness assumption.

`S3Prefix` is the S3 side of the `BlobStore` port, restricted to one bucket and prefix: it is all
the materialisation job needs (read the lake, keep its state), and its IAM grants stay that narrow.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from shipml.backends.ports import BlobStore
from shipml.errors import DataError

if TYPE_CHECKING:
    import pyarrow as pa

_PARTITION = re.compile(r"(?:^|/)event_date=(\d{4}-\d{2}-\d{2})(?:/|$)")


class EventSource(Protocol):
    """The history of events (transactions) that online features are computed from."""

    def read(self, columns: Sequence[str], *, start: datetime | None, end: datetime) -> pa.Table:
        """The given columns of events in [start, end) (start None: from the beginning).

        Partitions are pruned by day; the caller filters rows by their validated event time.
        """
        ...

    def describe(self) -> str:
        """Where the events come from, for reports."""
        ...


def _in_days(key: str, start: datetime | None, end: datetime) -> bool:
    """Whether an object's `event_date=` partition (if any) may hold events in [start, end)."""
    match = _PARTITION.search(key)
    if match is None:
        return True
    day = date.fromisoformat(match.group(1))
    if day > end.date():
        return False
    return start is None or day >= start.date()


def _select(table: pa.Table, columns: Sequence[str], where: str) -> pa.Table:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise DataError(f"{where}: the events lack the column(s) {', '.join(missing)}")
    return table.select(list(columns))


class PathSource:
    """Events in a local Parquet/CSV/JSON Lines file or folder (what `shipml data generate` writes)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def describe(self) -> str:
        return str(self.path)

    def read(self, columns: Sequence[str], *, start: datetime | None, end: datetime) -> pa.Table:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from shipml.data import data_files, read_table

        files = [f for f in data_files(self.path) if _in_days(f.as_posix(), start, end)]
        if not files:
            raise DataError(f"{self.path}: no event files in the range")
        tables = []
        for file in files:
            try:
                table = pq.read_table(file, columns=list(columns)) if file.suffix == ".parquet" else None
            except (pa.ArrowInvalid, KeyError):
                table = None  # a missing column: read it whole so that the error names the column
            except (pa.ArrowException, OSError) as exc:
                raise DataError(f"{file}: cannot read it as parquet: {exc}") from None
            if table is None:
                table = read_table(file)
            tables.append(_select(table, columns, str(file)))
        return pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]


class BlobSource:
    """Events in Parquet objects under a prefix of a blob store (the data lake: S3, or a folder)."""

    def __init__(self, blobs: BlobStore, prefix: str) -> None:
        self.blobs = blobs
        self.prefix = prefix

    def describe(self) -> str:
        return self.blobs.uri(self.prefix)

    def read(self, columns: Sequence[str], *, start: datetime | None, end: datetime) -> pa.Table:
        import pyarrow as pa
        import pyarrow.parquet as pq

        keys = sorted(k for k in self.blobs.list(self.prefix) if k.endswith(".parquet"))
        keys = [k for k in keys if _in_days(k, start, end)]
        if not keys:
            raise DataError(f"{self.describe()}: no Parquet objects in the range")
        tables = []
        for key in keys:
            try:
                table = pq.read_table(pa.BufferReader(self.blobs.get_bytes(key)))
            except pa.ArrowException as exc:
                raise DataError(f"{self.blobs.uri(key)}: cannot read it as parquet: {exc}") from None
            tables.append(_select(table, columns, self.blobs.uri(key)))
        return pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]


class S3Prefix(BlobStore):
    """The BlobStore port on S3, confined to `s3://bucket/prefix/` (the client is injected)."""

    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""

    def _key(self, key: str) -> str:
        return self.prefix + key.lstrip("/")

    def put_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            raise KeyError(key) from None

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except self.client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def list(self, prefix: str = "") -> list[str]:
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
            keys.extend(item["Key"][len(self.prefix) :] for item in page.get("Contents", []))
        return keys

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"
