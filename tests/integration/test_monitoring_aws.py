"""The monitor functions end to end on moto: S3 capture (as Firehose delivers it) -> CloudWatch metrics."""

from __future__ import annotations

import gzip
import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from shipml import artifact as artifacts

REGION = "eu-west-1"
BUCKET = "shipml-fraud-dev-artifacts"
PARAMETER = "/shipml/fraud/dev/live-model-version"
AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class LambdaContext:
    function_name = "shipml-monitor"
    memory_limit_in_mb = 3008
    invoked_function_arn = "arn:aws:lambda:eu-west-1:111122223333:function:shipml-monitor"
    aws_request_id = "req-1"


@pytest.fixture
def aws(moto_aws, monkeypatch, tmp_path):
    for name, value in {
        "SHIPML_MODEL": "fraud",
        "SHIPML_ARTIFACT_BUCKET": BUCKET,
        "SHIPML_LIVE_PARAMETER": PARAMETER,
        "SHIPML_MONITOR_WINDOW_HOURS": "24",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("shipml.monitoring.aws.CACHE_DIR", tmp_path / "cache")
    moto_aws.client("s3").create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    return moto_aws


def _deploy(session, world, version: str = "1") -> None:
    session.client("s3").put_object(
        Bucket=BUCKET, Key=f"models/fraud/{version}/model.tar.gz", Body=artifacts.pack(world.artifact_dir)
    )
    session.client("ssm").put_parameter(Name=PARAMETER, Value=version, Type="String", Overwrite=True)


def _deliver(session, records: list[dict], *, part: int = 0) -> str:
    """Write records as Firehose does: gzip'd JSON Lines under capture/date=YYYY-MM-DD/."""
    key = f"capture/date={AT:%Y-%m-%d}/shipml-fraud-dev-capture-1-{AT:%Y-%m-%d-%H-%M-%S}-{part:04d}.gz"
    body = gzip.compress("".join(json.dumps(r, default=str) + "\n" for r in records).encode())
    session.client("s3").put_object(Bucket=BUCKET, Key=key, Body=body)
    return key


def _latest(session, name: str, **dimensions: str) -> float | None:
    stats = session.client("cloudwatch").get_metric_statistics(
        Namespace="shipml",
        MetricName=name,
        Dimensions=[{"Name": k, "Value": v} for k, v in {"model": "fraud", **dimensions}.items()],
        StartTime=datetime.now(UTC) - timedelta(hours=1),
        EndTime=datetime.now(UTC) + timedelta(hours=1),
        Period=3600,
        Statistics=["Maximum"],
    )["Datapoints"]
    return stats[0]["Maximum"] if stats else None


@pytest.fixture(scope="module")
def drifted_records(monitoring_world) -> tuple[list[dict], list[dict]]:
    captured, labels = monitoring_world.capture(monitoring_world.drifted)
    return captured.to_pylist(), labels.to_pylist()


def test_drift_job_reads_s3_capture_and_publishes_cloudwatch_metrics(
    aws, monitoring_world, drifted_records, monkeypatch
) -> None:
    from functions.monitor import drift

    monkeypatch.setattr(drift, "_runtime", {})
    records, _ = drifted_records
    _deploy(aws, monitoring_world)
    _deliver(aws, records[:12_000], part=0)
    _deliver(aws, records[12_000:], part=1)
    # Rows of the previous version in the same window are left out, and said so.
    _deliver(aws, [{**r, "model_version": "fraud:0"} for r in records[:300]], part=2)

    result = drift.handler({"end": (AT + timedelta(hours=1)).isoformat()}, LambdaContext())

    assert result["verdict"] == "drift"
    assert result["rows"] == len(records)
    assert set(result["drifted_features"]) >= {"amount", "mean_amount_30d", "merchant_category"}
    assert any("300 captured rows left out: model version fraud:0" in p for p in result["problems"])
    assert result["report"].startswith(f"s3://{BUCKET}/monitoring/fraud/drift/")
    keys = [
        o["Key"] for o in aws.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="monitoring/")["Contents"]
    ]
    assert len(keys) == 2 and {k.rsplit(".", 1)[1] for k in keys} == {"html", "json"}
    assert _latest(aws, "DriftDetected") == 1.0
    assert _latest(aws, "DriftWindowRows") == len(records)
    assert _latest(aws, "DriftFeaturePsi", feature="merchant_category") > 0.2
    assert _latest(aws, "DriftFeaturePsi", feature="channel") < 0.05


def test_drift_job_on_an_empty_window_publishes_no_drift_value(aws, monitoring_world, monkeypatch) -> None:
    from functions.monitor import drift

    monkeypatch.setattr(drift, "_runtime", {})
    _deploy(aws, monitoring_world)

    result = drift.handler({"end": AT.isoformat(), "hours": 6}, LambdaContext())

    assert result["verdict"] == "insufficient_data"
    assert "the window is empty" in result["problems"][0]
    assert _latest(aws, "DriftInsufficientData") == 1.0
    assert _latest(aws, "DriftDetected") is None  # never a silent "0 = no drift" on no data


def test_drift_job_without_a_live_model_fails_with_a_clear_error(aws, monkeypatch) -> None:
    from functions.monitor import drift
    from shipml.monitoring.jobs import MonitoringError

    monkeypatch.setattr(drift, "_runtime", {})
    aws.client("ssm").put_parameter(Name=PARAMETER, Value="0", Type="String")

    with pytest.raises(MonitoringError, match="no live version of 'fraud'"):
        drift.handler({}, LambdaContext())


def test_quality_job_joins_s3_labels_and_publishes_auc(
    aws, monitoring_world, drifted_records, monkeypatch
) -> None:
    from functions.monitor import quality

    monkeypatch.setattr(quality, "_runtime", {})
    records, labels = drifted_records
    _deploy(aws, monitoring_world)
    _deliver(aws, records)
    lines = [json.dumps(r) for r in labels] + [
        json.dumps(labels[0]),
        json.dumps({"request_id": "ghost", "is_fraud": 1}),
    ]
    aws.client("s3").put_object(
        Bucket=BUCKET, Key="ground-truth/fraud/2026-03-02.jsonl", Body="\n".join(lines)
    )

    result = quality.handler({"end": (AT + timedelta(hours=1)).isoformat()}, LambdaContext())

    assert result["labelled_rows"] == len(records)
    assert "country=FR" in result["degraded_slices"]
    assert any("1 duplicate labels" in p for p in result["problems"])
    assert any("1 labels for request ids not among the captured rows" in p for p in result["problems"])
    assert 0.8 < _latest(aws, "QualityAuc") < 1.0
    assert _latest(aws, "QualityDegraded") == 1.0
    assert _latest(aws, "LabelsUnknown") == 1.0
    assert _latest(aws, "QualitySegmentAuc", segment="country", segment_value="FR") is not None


class _Health(BaseHTTPRequestHandler):
    status = 200
    seen: list[dict] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        type(self).seen.append(dict(self.headers))
        body = json.dumps({"status": "ok" if self.status == 200 else "degraded", "model_version": "fraud:1"})
        self.send_response(self.status)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def health_server():
    server = HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    _Health.status, _Health.seen = 200, []


@pytest.mark.parametrize(("status", "healthy"), [(200, 1.0), (503, 0.0)])
def test_health_check_signs_its_call_and_publishes_the_result(
    aws, health_server, monkeypatch, status, healthy
) -> None:
    from functions.monitor import health

    _Health.status = status
    monkeypatch.setenv("SHIPML_HEALTH_URL", f"http://127.0.0.1:{health_server.server_port}/v1/health")
    monkeypatch.setenv("SHIPML_HEALTH_AUTH", "iam")

    result = health.handler({}, LambdaContext())

    assert result["healthy"] is bool(healthy) and result["status"] == status
    assert _Health.seen[-1]["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=")
    assert f"/{REGION}/execute-api/aws4_request" in _Health.seen[-1]["Authorization"]
    assert _latest(aws, "HealthCheckSuccess") == healthy


def test_health_check_sends_the_usage_plan_key_in_api_key_mode(aws, health_server, monkeypatch) -> None:
    from functions.monitor import health

    key = aws.client("apigateway").create_api_key(name="serving-client", enabled=True)
    monkeypatch.setenv("SHIPML_HEALTH_URL", f"http://127.0.0.1:{health_server.server_port}/v1/health")
    monkeypatch.setenv("SHIPML_HEALTH_AUTH", "api_key")
    monkeypatch.setenv("SHIPML_HEALTH_API_KEY_ID", key["id"])

    result = health.handler({}, LambdaContext())

    assert result["healthy"] is True
    headers = {k.lower(): v for k, v in _Health.seen[-1].items()}
    assert headers["x-api-key"] == key["value"] and "authorization" not in headers
    assert _latest(aws, "HealthCheckSuccess") == 1.0


def test_health_check_settings_name_what_api_key_mode_lacks(aws, monkeypatch) -> None:
    from shipml.errors import ShipmlError
    from shipml.monitoring.aws import HealthSettings, run_health_check

    with pytest.raises(ShipmlError, match="SHIPML_HEALTH_AUTH=api_key needs SHIPML_HEALTH_API_KEY_ID"):
        HealthSettings.from_env(
            {"SHIPML_MODEL": "fraud", "SHIPML_HEALTH_URL": "https://x", "SHIPML_HEALTH_AUTH": "api_key"}
        )
    settings = HealthSettings.from_env(
        {
            "SHIPML_MODEL": "fraud",
            "SHIPML_HEALTH_URL": "https://x",
            "SHIPML_HEALTH_AUTH": "api_key",
            "SHIPML_HEALTH_API_KEY_ID": "nokey123",
        }
    )
    with pytest.raises(ShipmlError, match="cannot read the API key nokey123"):
        run_health_check(settings, session=aws)


def test_health_check_reports_an_api_that_does_not_answer(aws, monkeypatch) -> None:
    from functions.monitor import health

    monkeypatch.setenv("SHIPML_HEALTH_URL", "http://127.0.0.1:9/v1/health")  # discard port: refused
    monkeypatch.setenv("SHIPML_HEALTH_AUTH", "none")
    monkeypatch.setenv("SHIPML_HEALTH_TIMEOUT_S", "2")

    result = health.handler({}, LambdaContext())

    assert result["healthy"] is False and result["status"] is None and "no answer" in result["detail"]
    assert _latest(aws, "HealthCheckSuccess") == 0.0


def test_a_bad_event_is_refused_naming_the_field(aws, monkeypatch) -> None:
    from functions.monitor import drift
    from shipml.errors import ShipmlError

    monkeypatch.setattr(drift, "_runtime", {})
    with pytest.raises(ShipmlError, match="hours"):
        drift.handler({"hours": -1}, LambdaContext())
