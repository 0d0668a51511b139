"""The monitor functions' bundle, built as synth builds it, running the drift job under a real CPython 3.12.

Only the bundle is on sys.path (`-I -S`), as on Lambda: a missing dependency fails here, and so does
any import of pyarrow, pandas, sklearn or torch on the monitor's path (it reads Firehose's JSON Lines
with the standard library). The first build downloads the pinned wheels (about 40 MB).
"""

from __future__ import annotations

import gzip
import json
import os
import platform
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shipml import artifact as artifacts
from stacks import lambda_bundle
from stacks.lambda_bundle import BundleSpec

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST_ARCHITECTURES = {"x86_64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}
AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _python312() -> Path | None:
    candidates = [os.environ.get("SHIPML_PYTHON312", "")]
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += sorted(str(p) for p in pyenv_root.glob("versions/3.12*/bin/python3.12"))
    candidates.append(shutil.which("python3.12") or "")
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


PYTHON312 = _python312()
HOST_ARCHITECTURE = HOST_ARCHITECTURES.get(platform.machine())

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        PYTHON312 is None, reason="needs CPython 3.12 (pyenv install 3.12, or SHIPML_PYTHON312)"
    ),
    pytest.mark.skipif(HOST_ARCHITECTURE is None, reason=f"no Lambda architecture for {platform.machine()}"),
]

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
    assert HOST_ARCHITECTURE is not None
    spec = BundleSpec(
        repo_root=REPO_ROOT,
        architecture=HOST_ARCHITECTURE,
        contract_path="examples/fraud/contract.yaml",
        budget_mb=150,
        requirements="functions/monitor/requirements.txt",
        sources=("shipml", "functions/__init__.py", "functions/monitor"),
    )
    out = tmp_path_factory.mktemp("monitor-bundle")
    report = lambda_bundle.build_bundle(spec, out)
    print(report.summary(), file=sys.stderr)
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

    done = subprocess.run(
        [str(PYTHON312), "-I", "-S", "-c", _DRIVER, str(bundle), str(folder)],
        capture_output=True,
        text=True,
        cwd=bundle,
        timeout=300,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert result["rows"] == 5_000 and result["verdict"] == "drift"
    assert {"amount", "merchant_category"} <= set(result["drifted"])
    assert result["detected"] == 1.0
    assert not [p for p in ("pyarrow", "pandas", "sklearn", "torch") if (bundle / p).exists()]
