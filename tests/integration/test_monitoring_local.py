"""`shipml monitor` on the local backend, end to end: replayed traffic -> drift report, quality, status."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from shipml.backends import LIVE, local_backends
from shipml.cli import app
from shipml.monitoring.cli import monitor_app

REQUEST_FIELDS = (
    "transaction_id",
    "customer_id",
    "card_number",
    "amount",
    "currency",
    "merchant_category",
    "country",
    "channel",
    "card_present",
    "event_time",
)


@pytest.fixture(scope="module")
def cli():
    # The one line shipml/cli.py needs: app.add_typer(monitor_app, name="monitor").
    if not any(group.name == "monitor" for group in app.registered_groups):
        app.add_typer(monitor_app, name="monitor")

    def run(root: Path, *args: str, code: int = 0) -> str:
        result = CliRunner().invoke(app, ["--root", str(root), *args], env={"COLUMNS": "200"})
        assert result.exit_code == code, result.output
        return result.output

    return run


@pytest.fixture(scope="module")
def live_root(tmp_path_factory, monitoring_world) -> Path:
    root = tmp_path_factory.mktemp("monitor-root")
    backends = local_backends(root)
    backends.registry.register("fraud", monitoring_world.artifact_dir)
    backends.registry.approve("fraud", 1)
    backends.registry.set_alias("fraud", LIVE, 1)
    return root


@pytest.fixture(scope="module")
def drifted_file(tmp_path_factory, monitoring_world) -> Path:
    path = tmp_path_factory.mktemp("drifted") / "drifted.parquet"
    pq.write_table(monitoring_world.drifted, path)
    return path


def test_before_any_traffic_the_drift_job_says_the_window_is_empty(cli, tmp_path, monitoring_world) -> None:
    backends = local_backends(tmp_path)
    backends.registry.register("fraud", monitoring_world.artifact_dir)
    backends.registry.approve("fraud", 1)
    backends.registry.set_alias("fraud", LIVE, 1)

    output = cli(tmp_path, "monitor", "drift")

    assert "insufficient data" in output and "the window is empty" in output


def test_without_a_live_model_the_command_fails_plainly(cli, tmp_path) -> None:
    output = cli(tmp_path, "monitor", "drift", code=1)

    assert "nothing to monitor" in output


def test_replayed_drifted_traffic_gives_a_drift_report_quality_and_status(
    cli, live_root, drifted_file, tmp_path
) -> None:
    labels = tmp_path / "labels.jsonl"
    output = cli(live_root, "monitor", "replay", str(drifted_file), "--labels-out", str(labels))
    assert "captured 20,000 rows scored by fraud:1" in output

    drift = cli(live_root, "monitor", "drift")

    assert "drift fraud:1: drift on 20,000 rows" in drift
    report = Path(drift.split("report: ")[-1].strip())
    html = report.read_text()
    assert html.startswith("<!DOCTYPE html>") and html.count("<svg") >= 3
    points = [json.loads(line) for line in (live_root / "metrics" / "metrics.jsonl").read_text().splitlines()]
    detected = [p for p in points if p["name"] == "DriftDetected"]
    assert detected[-1]["value"] == 1.0 and detected[-1]["dimensions"] == {"model": "fraud"}
    assert {p["dimensions"].get("feature") for p in points if p["name"] == "DriftFeaturePsi"} >= {
        "amount",
        "merchant_category",
    }

    quality = cli(live_root, "monitor", "quality", "--labels", str(labels))
    assert "quality degraded on 20,000 labelled rows" in quality and "country=FR" in quality

    status = cli(live_root, "monitor", "status")
    assert "live model: fraud:1" in status
    assert "drift: drift for fraud:1" in status and "quality: degraded for fraud:1" in status


def test_unknown_and_duplicate_labels_are_reported_by_the_command(cli, live_root, tmp_path) -> None:
    labels = tmp_path / "odd.jsonl"
    labels.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"request_id": "nobody", "is_fraud": True},
                {"request_id": "nobody", "is_fraud": True},
                {"request_id": "x", "is_fraud": "perhaps"},
            ]
        )
    )

    output = cli(live_root, "monitor", "quality", "--labels", str(labels), "--json")
    report = json.loads(output)

    assert report["verdict"] == "insufficient_data"
    assert report["labels"]["unknown"] == 1 and report["labels"]["duplicates"] == 1
    assert report["labels"]["invalid"] == 1


def test_replay_writes_the_records_the_serving_app_captures(tmp_path, monitoring_world) -> None:
    from shipml.serving.app import create_app
    from shipml.serving.factory import local_context
    from shipml.settings import Settings

    root = tmp_path / "served"
    backends = local_backends(root)
    backends.registry.register("fraud", monitoring_world.artifact_dir)
    backends.registry.approve("fraud", 1)
    backends.registry.set_alias("fraud", LIVE, 1)
    rows = monitoring_world.clean.slice(0, 3)
    records = [
        {
            k: (v.isoformat() if k == "event_time" else v)
            for k, v in r.items()
            if k in REQUEST_FIELDS and v is not None
        }
        for r in rows.to_pylist()
    ]
    settings = Settings(root=root, contract=monitoring_world.artifact_dir / "contract.yaml", hash_key="test")
    context = local_context(settings, backends)
    with TestClient(create_app(context)) as client:
        assert client.post("/predict/batch", json={"records": records}).status_code == 200
    served = pa.concat_tables(pq.read_table(p) for p in (root / "capture").rglob("*.parquet"))
    replayed, _ = monitoring_world.capture(rows)

    assert sorted(replayed.column_names) == sorted(served.column_names)
    for name in served.column_names:
        if pa.types.is_null(served.schema.field(name).type):
            continue
        assert replayed.schema.field(name).type == served.schema.field(name).type, name
    assert (
        replayed.column("customer_id").to_pylist() == served.column("customer_id").to_pylist()
    )  # same hashing
    assert replayed.column("card_number").to_pylist() == served.column("card_number").to_pylist()  # same mask
