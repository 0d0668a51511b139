"""Benchmark of the feature materialisation: local rows/s, and items/s written to moto's DynamoDB.

Baselines measured in the same run:
- materialisation against the same three features computed directly with pandas (groupby and
  boolean masks, as of the same time) on the same data;
- DynamoDB BatchWriteItem (chunks of 25, through `DynamoDbOnlineStore.put_many`) against one
  PutItem call per item, both on moto.

Usage: python bench/features.py [--rows 200000] [--items 5000]
The last line is one JSON object with `materialize_rows_per_s` and `dynamodb_items_per_s`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

AS_OF = datetime(2026, 1, 31, tzinfo=UTC)
REGION = "eu-west-1"


def pandas_baseline(path: Path) -> float:
    """Seconds for the same features, written directly in pandas."""
    import numpy as np
    import pandas as pd

    started = time.perf_counter()  # after the imports: only the computation is timed
    frame = pd.read_parquet(path, columns=["customer_id", "event_time", "amount"])
    at = pd.Timestamp(AS_OF)
    before = frame[frame.event_time < at]
    count = before[before.event_time >= at - pd.Timedelta(hours=24)].groupby("customer_id").size()
    mean = before[before.event_time >= at - pd.Timedelta(days=30)].groupby("customer_id").amount.mean()
    days = np.floor((at - before.groupby("customer_id").event_time.min()) / pd.Timedelta(days=1))
    pd.concat([count, mean, days], axis=1)
    return time.perf_counter() - started


def materialize_local(path: Path, root: Path) -> tuple[float, int, int]:
    from shipml.backends.local import SqliteOnlineStore
    from shipml.contract import load_contract
    from shipml.features.lake import PathSource
    from shipml.features.materialize import materialize

    contract = load_contract(Path(__file__).resolve().parents[1] / "examples" / "fraud" / "contract.yaml")
    store = SqliteOnlineStore(root / "online.db")
    import pyarrow.parquet  # noqa: F401 - warm the import, as pandas_baseline's are warm

    started = time.perf_counter()
    report = materialize(contract, PathSource(path), store, as_of=AS_OF)
    return time.perf_counter() - started, report.rows_read, report.items_written


def dynamodb(items: int) -> tuple[float, float]:
    """(BatchWriteItem items/s, PutItem items/s) on moto."""
    import boto3
    from moto import mock_aws

    from shipml.backends.aws.online import DynamoDbOnlineStore, to_item
    from tests.builders import create_online_table

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    values = {
        f"C{n:08d}": {"txn_count_24h": n % 17, "mean_amount_30d": n / 7, "days_since_first_seen": n % 400}
        for n in range(items)
    }
    with mock_aws():
        client = boto3.client("dynamodb", region_name=REGION)
        for table in ("batch", "single"):
            create_online_table(client, table)
        started = time.perf_counter()
        DynamoDbOnlineStore(client, "batch").put_many("fraud", values)
        batch_rate = items / (time.perf_counter() - started)
        baseline_items = max(items // 5, 100)
        started = time.perf_counter()
        for key, value in list(values.items())[:baseline_items]:
            client.put_item(TableName="single", Item=to_item("fraud", key, value))
        single_rate = baseline_items / (time.perf_counter() - started)
    return batch_rate, single_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=5_000)
    args = parser.parse_args()

    from shipml.data.synth import generate

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = root / "transactions.parquet"
        generate(path, args.rows, seed=7)
        baseline_s = pandas_baseline(path)
        seconds, rows, written = materialize_local(path, root)
    rows_per_s = rows / seconds
    pandas_rows_per_s = args.rows / baseline_s
    print(
        f"local materialisation: {rows:,} rows -> {written:,} items in {seconds:.2f} s "
        f"= {rows_per_s:,.0f} rows/s"
    )
    print(
        "  baseline, the same features in plain pandas (no validation, no writes): "
        f"{pandas_rows_per_s:,.0f} rows/s"
    )
    print(f"  ratio materialisation / pandas baseline: {rows_per_s / pandas_rows_per_s:.2f}")

    batch_rate, single_rate = dynamodb(args.items)
    print(f"moto DynamoDB BatchWriteItem (25 per call): {batch_rate:,.0f} items/s for {args.items:,} items")
    print(f"  baseline, one PutItem per item: {single_rate:,.0f} items/s")
    print(f"  ratio batch / single: {batch_rate / single_rate:.2f}")
    print(
        json.dumps(
            {
                "materialize_rows_per_s": round(rows_per_s),
                "dynamodb_items_per_s": round(batch_rate),
                "pandas_baseline_rows_per_s": round(pandas_rows_per_s),
                "materialize_vs_pandas": round(rows_per_s / pandas_rows_per_s, 3),
                "put_item_baseline_items_per_s": round(single_rate),
                "batch_vs_put_item": round(batch_rate / single_rate, 3),
                "rows": args.rows,
                "items": args.items,
            }
        )
    )


if __name__ == "__main__":
    main()
