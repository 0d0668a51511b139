"""The drift and quality jobs: the live model's card + a capture window -> report, saved and published.

The same functions run from `shipml monitor` (local backend) and from the scheduled Lambda
functions in `functions/monitor/` (S3, SSM, CloudWatch); only the adapters passed in differ.
Reports are saved to the blob store as HTML (drift) and JSON under
`monitoring/{model}/{drift|quality}/{window end}-v{version}.{html|json}`, and their metrics go to the
`MetricsSink`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from shipml.artifact import Artifact, artifact_key, unpack
from shipml.backends.ports import LIVE, BlobStore, MetricsSink, Registry
from shipml.errors import ArtifactError, ShipmlError
from shipml.monitoring.drift import DriftReport, compute_drift
from shipml.monitoring.publish import drift_points, publish, quality_points
from shipml.monitoring.quality import (
    GROUND_TRUTH_PREFIX,
    QualityReport,
    QualityRules,
    compute_quality,
    read_labels,
)
from shipml.monitoring.report import render_html
from shipml.monitoring.window import REQUEST_ID, CaptureSource, column_kinds, monitored_columns

REPORT_PREFIX = "monitoring/"


class MonitoringError(ShipmlError):
    """A monitoring job cannot run (no live model, an unreadable artifact)."""


class ModelSource(Protocol):
    """Which model version the monitors watch, and its artifact (card and contract)."""

    def current(self) -> tuple[str, Artifact]:
        """(version ref like `fraud:3`, the verified artifact); `MonitoringError` if there is none."""


@dataclass(frozen=True)
class RegistryModelSource:
    """Local: a version of the registry, by number or alias (`live`)."""

    registry: Registry
    model: str
    version: str = LIVE

    def current(self) -> tuple[str, Artifact]:
        try:
            found = self.registry.resolve(self.model, self.version)
        except ShipmlError as exc:
            raise MonitoringError(f"nothing to monitor: {exc}") from None
        return found.ref, self.registry.open_artifact(found)


@dataclass(frozen=True)
class ParameterModelSource:
    """AWS: the live version number from its SSM parameter, the artifact from S3 (as serving reads them)."""

    ssm_client: Any
    parameter: str
    blobs: BlobStore
    model: str
    cache_dir: Path

    def current(self) -> tuple[str, Artifact]:
        version = str(self.ssm_client.get_parameter(Name=self.parameter)["Parameter"]["Value"]).strip()
        if not version.isdigit() or version == "0":
            raise MonitoringError(
                f"nothing to monitor: no live version of {self.model!r} ({self.parameter}={version!r})"
            )
        key = artifact_key(self.model, version)
        try:
            data = self.blobs.get_bytes(key)
        except KeyError:
            raise MonitoringError(f"{self.model}:{version}: no artifact at {self.blobs.uri(key)}") from None
        try:
            return f"{self.model}:{version}", unpack(data, self.cache_dir / self.model / version)
        except ArtifactError as exc:
            raise MonitoringError(str(exc)) from None


def window_bounds(end: datetime | None, hours: float) -> tuple[datetime, datetime]:
    """`[end - hours, end)`, in UTC; `end` defaults to now."""
    if hours <= 0:
        raise MonitoringError(f"the window must be longer than 0 hours, got {hours}")
    end = (end or datetime.now(UTC)).astimezone(UTC)
    return end - timedelta(hours=hours), end


def report_key(model: str, kind: str, end: datetime, ref: str, suffix: str) -> str:
    version = ref.rsplit(":", 1)[-1]
    return f"{REPORT_PREFIX}{model}/{kind}/{end:%Y-%m-%dT%H%M%SZ}-v{version}.{suffix}"


@dataclass(frozen=True)
class DriftJobResult:
    report: DriftReport
    html_uri: str
    json_uri: str
    metrics: int


def run_drift_job(
    *,
    models: ModelSource,
    capture: CaptureSource,
    blobs: BlobStore,
    metrics: MetricsSink,
    start: datetime,
    end: datetime,
    segments: bool = True,
) -> DriftJobResult:
    """Drift of the capture window against the watched version's baseline: report saved, metrics published."""
    ref, artifact = models.current()
    contract = artifact.contract
    window = capture.window(kinds=monitored_columns(contract), model_version=ref, start=start, end=end)
    report = compute_drift(
        contract, artifact.card.baseline, window, segments=segments, source=capture.describe()
    )
    html_key = report_key(contract.model, "drift", end, ref, "html")
    json_key = report_key(contract.model, "drift", end, ref, "json")
    blobs.put_bytes(html_key, render_html(report).encode("utf-8"))
    blobs.put_bytes(json_key, report.model_dump_json(indent=2).encode("utf-8"))
    published = publish(drift_points(report), metrics)
    return DriftJobResult(report, blobs.uri(html_key), blobs.uri(json_key), published)


@dataclass(frozen=True)
class QualityJobResult:
    report: QualityReport
    json_uri: str
    metrics: int


def run_quality_job(
    *,
    models: ModelSource,
    capture: CaptureSource,
    labels: BlobStore,
    blobs: BlobStore,
    metrics: MetricsSink,
    start: datetime,
    end: datetime,
    labels_prefix: str = GROUND_TRUTH_PREFIX,
    rules: QualityRules | None = None,
) -> QualityJobResult:
    """Join the labels under `labels_prefix` with the capture window, measure, save and publish."""
    ref, artifact = models.current()
    contract = artifact.contract
    kinds = column_kinds(contract, [contract.outputs.score, *(s.feature for s in contract.segments)])
    window = capture.window(
        kinds=kinds, model_version=ref, start=start, end=end, key_names=(REQUEST_ID, contract.id)
    )
    records, files = read_labels(labels, labels_prefix, target=contract.target, id_field=contract.id)
    report = compute_quality(
        contract,
        window,
        records,
        rules=rules or QualityRules(min_rows=contract.drift.min_samples),
        card_metrics=artifact.card.metrics,
        label_files=files,
        labels_source=labels.uri(labels_prefix),
    )
    json_key = report_key(contract.model, "quality", end, ref, "json")
    blobs.put_bytes(json_key, report.model_dump_json(indent=2).encode("utf-8"))
    published = publish(quality_points(report), metrics)
    return QualityJobResult(report, blobs.uri(json_key), published)


def latest_reports(blobs: BlobStore, model: str, kind: str, count: int = 5) -> list[str]:
    """The keys of the newest saved reports of one kind (JSON), newest first."""
    keys = [k for k in blobs.list(f"{REPORT_PREFIX}{model}/{kind}/") if k.endswith(".json")]
    return sorted(keys, reverse=True)[:count]
