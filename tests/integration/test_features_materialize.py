"""Materialisation on the local backend: values equal pandas, reruns change nothing, incremental
runs equal full ones, bad rows are counted and not written, failed writes are reported by key."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from shipml.backends.local import FolderBlobStore, SqliteOnlineStore
from shipml.backends.ports import OnlineStore
from shipml.errors import OnlineStoreWriteError
from shipml.features.lake import PathSource
from shipml.features.materialize import materialize

DAY_20 = datetime(2026, 1, 20, tzinfo=UTC)
DAY_25 = datetime(2026, 1, 25, 6, 30, tzinfo=UTC)


def table_of(store: SqliteOnlineStore) -> dict[str, dict[str, Any]]:
    """Everything in the store's features table, by (group, entity)."""
    import json
    import sqlite3

    with sqlite3.connect(store.db_path) as db:
        return {f"{g}/{e}": json.loads(i) for g, e, i in db.execute("SELECT grp, entity, item FROM features")}


def expected_by_pandas(path: Path, as_of: datetime) -> pd.DataFrame:
    """The example contract's three aggregations, written directly in pandas."""
    frame = pd.read_parquet(path, columns=["customer_id", "event_time", "amount"])
    at = pd.Timestamp(as_of)
    before = frame[frame.event_time < at]
    out = pd.DataFrame(index=sorted(before.customer_id.unique()))
    out["txn_count_24h"] = (
        before[before.event_time >= at - pd.Timedelta(hours=24)].groupby("customer_id").size()
    )
    out["txn_count_24h"] = out["txn_count_24h"].fillna(0).astype(int)
    out["mean_amount_30d"] = (
        before[before.event_time >= at - pd.Timedelta(days=30)].groupby("customer_id").amount.mean()
    )
    first = before.groupby("customer_id").event_time.min()
    out["days_since_first_seen"] = np.floor((at - first) / pd.Timedelta(days=1)).astype(int)
    return out


def test_materialised_values_equal_pandas(contract, sample_data, tmp_path):
    store = SqliteOnlineStore(tmp_path / "online.db")

    report = materialize(contract, PathSource(sample_data), store, as_of=DAY_25)

    expected = expected_by_pandas(sample_data, DAY_25)
    got = store.get_many("fraud", list(expected.index))
    assert report.mode == "full" and report.rows_read == 2000 and report.rows_refused == 0
    assert report.entities == len(expected) == report.items_written
    for key, row in expected.iterrows():
        item = got[key]
        assert item["txn_count_24h"] == row.txn_count_24h
        assert item["days_since_first_seen"] == row.days_since_first_seen
        if pd.isna(row.mean_amount_30d):
            assert item["mean_amount_30d"] is None
        else:
            assert item["mean_amount_30d"] == pytest.approx(row.mean_amount_30d, rel=1e-12)


def test_reruns_are_idempotent_and_incremental_runs_equal_full_ones(contract, sample_data, tmp_path):
    # Given a full run at day 20 then an incremental one at day 25 (state in a blob store)
    incremental_store = SqliteOnlineStore(tmp_path / "a.db")
    blobs = FolderBlobStore(tmp_path / "blobs")
    first = materialize(contract, PathSource(sample_data), incremental_store, as_of=DAY_20, state_store=blobs)
    second = materialize(
        contract, PathSource(sample_data), incremental_store, as_of=DAY_25, state_store=blobs
    )
    after_second = table_of(incremental_store)

    # When the incremental run is repeated, and a full run is done twice elsewhere
    rerun = materialize(contract, PathSource(sample_data), incremental_store, as_of=DAY_25, state_store=blobs)
    full_store = SqliteOnlineStore(tmp_path / "b.db")
    materialize(contract, PathSource(sample_data), full_store, as_of=DAY_25)
    full_table = table_of(full_store)
    materialize(contract, PathSource(sample_data), full_store, as_of=DAY_25)

    # Then
    assert (first.mode, second.mode, rerun.mode) == ("full", "incremental", "incremental")
    assert second.read_from == DAY_20 - timedelta(days=30)  # the longest window before the last run
    assert rerun.items_written == 0 and rerun.items_unchanged == rerun.entities
    assert table_of(incremental_store) == after_second  # a rerun changes nothing
    assert table_of(full_store) == full_table  # nor does a full rerun
    assert after_second == full_table  # incremental == full, to the bit


def test_incremental_runs_read_only_their_window_of_a_partitioned_lake(contract, sample_table, tmp_path):
    # Given the lake partitioned by day, and a state as of day 20
    lake = tmp_path / "lake"
    days = pa.compute.strftime(sample_table.column("event_time"), format="%Y-%m-%d").to_pylist()
    for day in sorted(set(days)):
        folder = lake / f"event_date={day}"
        folder.mkdir(parents=True)
        mask = pa.array([d == day for d in days])
        pq.write_table(sample_table.filter(mask), folder / "part-0.parquet")
    blobs = FolderBlobStore(tmp_path / "blobs")
    store = SqliteOnlineStore(tmp_path / "online.db")
    full = materialize(contract, PathSource(lake), store, as_of=DAY_20, state_store=blobs)

    # When an incremental run goes to day 25, one that is only an hour later re-reads 30 days
    later = materialize(contract, PathSource(lake), store, as_of=DAY_25, state_store=blobs)

    # Then it read the partitions from day 20 - 30 days only, i.e. not the days after day 25
    assert full.rows_read == int(sum(1 for d in days if d <= "2026-01-20"))
    assert later.rows_read == int(sum(1 for d in days if "2025-12-21" <= d <= "2026-01-25"))
    assert later.rows_read < sample_table.num_rows


def test_bad_source_rows_are_counted_and_reported_not_written(contract, sample_table, tmp_path):
    # Given three broken rows: a negative amount, a key breaking the pattern, and a naive-looking time string
    rows = sample_table.slice(0, 300).select(["customer_id", "event_time", "amount"])
    amounts = rows.column("amount").to_pylist()
    keys = rows.column("customer_id").to_pylist()
    amounts[0] = -10.0
    keys[1] = "robert'); DROP TABLE"
    rows = rows.set_column(0, "customer_id", pa.array(keys)).set_column(2, "amount", pa.array(amounts))
    path = tmp_path / "bad.parquet"
    pq.write_table(rows, path)
    store = SqliteOnlineStore(tmp_path / "online.db")

    report = materialize(contract, PathSource(path), store, as_of=DAY_25)

    assert report.rows_read == 300 and report.rows_refused == 2 and report.rows_used == 298
    assert "amount: min x1" in report.refusals and "customer_id: pattern x1" in report.refusals
    assert not any(key.startswith("fraud/robert") for key in table_of(store))


class FlakyStore(OnlineStore):
    """A store that refuses some keys, as a partially failing BatchWriteItem would."""

    def __init__(self, refuse: set[str]) -> None:
        self.refuse = refuse
        self.items: dict[str, dict[str, Any]] = {}

    def get_many(self, group: str, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {k: self.items[k] for k in keys if k in self.items}

    def put_many(self, group: str, items: Mapping[str, Mapping[str, Any]]) -> int:
        ok = {k: dict(v) for k, v in items.items() if k not in self.refuse}
        self.items.update(ok)
        failed = [k for k in items if k in self.refuse]
        if failed:
            raise OnlineStoreWriteError("some failed", written=len(ok), failed_keys=failed)
        return len(ok)


def test_failed_keys_are_reported_and_written_again_by_the_next_run(contract, sample_data, tmp_path):
    # Given a store that refuses two keys on the first run
    entities = sorted(expected_by_pandas(sample_data, DAY_20).index)
    store = FlakyStore(set(entities[:2]))
    blobs = FolderBlobStore(tmp_path / "blobs")

    first = materialize(
        contract, PathSource(sample_data), store, as_of=DAY_20, state_store=blobs, write_batch=100
    )

    assert first.failed_keys == entities[:2] and first.failed_count == 2
    assert first.items_written == first.entities - 2
    assert "failed keys: " + ", ".join(entities[:2]) in first.summary()

    # When the store recovers, a rerun at the same time writes exactly the two that failed
    store.refuse = set()
    second = materialize(contract, PathSource(sample_data), store, as_of=DAY_20, state_store=blobs)
    assert second.items_written == 2 and second.failed_count == 0
    assert set(store.items) == set(entities)


def test_the_cli_command_materializes_into_the_local_store(contract_path, sample_data, tmp_path, monkeypatch):
    import typer

    from shipml.features.cli import materialize_command

    app = typer.Typer()
    app.command()(materialize_command)
    root = tmp_path / "root"
    env = {"SHIPML_ROOT": str(root), "SHIPML_CONTRACT": str(contract_path)}
    monkeypatch.setattr("shipml.cli.state", type("S", (), {})(), raising=False)  # no global options set

    result = CliRunner().invoke(
        app, ["--data", str(sample_data), "--as-of", "2026-01-25T07:30:00+01:00"], env=env
    )

    assert result.exit_code == 0, result.output
    assert "full materialisation of 'fraud' as of 2026-01-25T06:30:00+00:00" in result.output
    expected = expected_by_pandas(sample_data, DAY_25)
    item = SqliteOnlineStore(root / "online.db").get("fraud", expected.index[0])
    assert item["txn_count_24h"] == expected.iloc[0].txn_count_24h
    bad = CliRunner().invoke(app, ["--data", str(sample_data), "--as-of", "2026-01-25T07:30:00"], env=env)
    assert bad.exit_code != 0 and "must carry a UTC offset" in str(bad.exception)
