"""The monitor functions' bundle, built as synth builds it, running the drift job under a real CPython 3.12.

Only the bundle is on sys.path (`-I -S`), as on Lambda: a missing dependency fails here, and so does
any import of pyarrow, pandas, sklearn or torch on the monitor's path (it reads Firehose's JSON Lines
with the standard library). The first build downloads the pinned wheels (about 40 MB).
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shipml import artifact as artifacts
from tests.builders import build_host_bundle, bundle_test_marks, run_in_bundle

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

pytestmark = bundle_test_marks()

# Runs inside the bundle's interpreter: argv = bundle dir, the blob-store folder.
_DRIVER = r"""
import json, sys
from datetime import datetime, timedelta, timezone
bundle, folder = sys.argv[1], sys.argv[2]
sys.path.insert(0, bundle)
import functions.monitor.drift, functions.monitor.quality, functions.monitor.health  # the handlers import
from pathlib import Path
from shipml.backends.local import FolderBlobStore
from shipml.backends.ports import MetricsSink
from shipml.monitoring.jobs import ParameterModelSource, run_drift_job
from shipml.monitoring.window import BlobCapture

class Ssm:
    def get_parameter(self, Name):
        return {"Parameter": {"Value": "1"}}

class Points(MetricsSink):
    def __init__(self):
        self.points = []
    def put(self, name, value, *, unit="None", dimensions=None):
        self.points.append((name, value))

blobs = FolderBlobStore(folder)
metrics = Points()
end = datetime(2026, 3, 1, 13, tzinfo=timezone.utc)
result = run_drift_job(
    models=ParameterModelSource(Ssm(), "/p", blobs, "fraud", Path(folder) / "cache"),
    capture=BlobCapture(blobs), blobs=blobs, metrics=metrics, start=end - timedelta(days=1), end=end,
)
heavy = sorted(m for m in ("pyarrow", "pandas", "sklearn", "torch", "onnxruntime") if m in sys.modules)
print(json.dumps({"verdict": result.report.verdict, "rows": result.report.rows,
                  "drifted": result.report.drifted_features, "heavy": heavy,
                  "detected": dict(metrics.points).get("DriftDetected")}))
"""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("monitor-bundle")
    build_host_bundle(
        out,
        contract_path="examples/fraud/contract.yaml",
        budget_mb=150,
        requirements="functions/monitor/requirements.txt",
        sources=("shipml", "functions/__init__.py", "functions/monitor"),
    )
    return out


def test_the_drift_job_runs_in_the_bundle_without_pyarrow(bundle, monitoring_world, tmp_path) -> None:
    records, _ = monitoring_world.capture(monitoring_world.drifted.slice(0, 5_000))
    folder = tmp_path / "bucket"
    (folder / "models" / "fraud" / "1").mkdir(parents=True)
    (folder / "models" / "fraud" / "1" / "model.tar.gz").write_bytes(
        artifacts.pack(monitoring_world.artifact_dir)
    )
    part = folder / "capture" / f"date={AT:%Y-%m-%d}" / "shipml-fraud-dev-capture-1-0000.gz"
    part.parent.mkdir(parents=True)
    part.write_bytes(
        gzip.compress("".join(json.dumps(r, default=str) + "\n" for r in records.to_pylist()).encode())
    )

    result = run_in_bundle(bundle, _DRIVER, str(folder), timeout=300)

    assert result["heavy"] == []
    assert result["rows"] == 5_000 and result["verdict"] == "drift"
    assert {"amount", "merchant_category"} <= set(result["drifted"])
    assert result["detected"] == 1.0
    assert not [p for p in ("pyarrow", "pandas", "sklearn", "torch") if (bundle / p).exists()]
