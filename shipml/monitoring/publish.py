"""Drift and quality results as metrics, through the `MetricsSink` port.

Names and dimensions are constants here: the CloudWatch alarms and dashboard
(`stacks/monitoring_construct.py`) import them, so a renamed metric cannot leave an alarm watching
nothing. Cardinality is bounded on purpose: per feature (the contract's monitored features), per
segment value only for values the baseline knows (at most 50 per segment, see `shipml.stats`),
and never per feature *and* segment value: a segment's metric is its largest PSI.

`CloudWatchMetricsSink` is the sink for scheduled jobs: it calls PutMetricData in batches (a
job publishes a few hundred points once, where EMF through the logs suits the request path).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shipml.backends.ports import MetricsSink
from shipml.monitoring.drift import DriftReport
from shipml.monitoring.quality import QualityReport

NAMESPACE = "shipml"
MODEL = "model"
FEATURE = "feature"
SEGMENT = "segment"
SEGMENT_VALUE = "segment_value"

# Drift (dimensions: model; `*_FEATURE_*` add feature; `*_SEGMENT_*` add segment and segment_value).
DRIFT_DETECTED = "DriftDetected"  # 1 when the verdict is drift, else 0: what the drift alarm watches
DRIFT_MAX_PSI = "DriftMaxPsi"
DRIFT_WINDOW_ROWS = "DriftWindowRows"
DRIFT_INSUFFICIENT_DATA = "DriftInsufficientData"  # 1 when the window could not be judged
DRIFTED_FEATURES = "DriftedFeatures"
DRIFTED_SEGMENTS = "DriftedSegments"
PREDICTION_DRIFT_PSI = "PredictionDriftPsi"
DRIFT_FEATURE_PSI = "DriftFeaturePsi"
DRIFT_FEATURE_JS = "DriftFeatureJsDistance"
DRIFT_FEATURE_WASSERSTEIN = "DriftFeatureWasserstein"
DRIFT_FEATURE_MISSING_DELTA = "DriftFeatureMissingRateDelta"
DRIFT_SEGMENT_MAX_PSI = "DriftSegmentMaxPsi"

# Quality (dimensions: model; `*_SEGMENT_*` add segment and segment_value).
QUALITY_AUC = "QualityAuc"
QUALITY_PRECISION = "QualityPrecision"
QUALITY_RECALL = "QualityRecall"
QUALITY_CALIBRATION_ERROR = "QualityCalibrationError"
QUALITY_LOG_LOSS = "QualityLogLoss"
QUALITY_LABELLED_ROWS = "QualityLabelledRows"
QUALITY_DEGRADED = "QualityDegraded"
QUALITY_SEGMENT_AUC = "QualitySegmentAuc"
QUALITY_SEGMENT_CALIBRATION_ERROR = "QualitySegmentCalibrationError"
LABELS_UNKNOWN = "LabelsUnknown"
LABELS_DUPLICATE = "LabelsDuplicate"
LABELS_INVALID = "LabelsInvalid"

# Health checks of the serving API (dimension: model).
HEALTH_CHECK_SUCCESS = "HealthCheckSuccess"
HEALTH_CHECK_LATENCY = "HealthCheckLatency"

# What the serving app emits (shipml/serving/app.py) with dimensions model and service (Powertools
# adds `service`; the aws serving context sets it to the model name).
SERVING_PREDICTIONS = "Predictions"
SERVING_FALLBACKS = "Fallbacks"
SERVING_VALIDATION_FAILURES = "ValidationFailures"


@dataclass(frozen=True)
class MetricPoint:
    name: str
    value: float
    unit: str = "None"
    dimensions: Mapping[str, str] | None = None


def drift_points(report: DriftReport) -> list[MetricPoint]:
    """The metrics of a drift report."""
    model = {MODEL: report.model}
    points = [
        MetricPoint(DRIFT_WINDOW_ROWS, report.rows, "Count", model),
        MetricPoint(
            DRIFT_INSUFFICIENT_DATA,
            float(report.verdict in ("insufficient_data", "no_baseline")),
            "Count",
            model,
        ),
    ]
    if report.verdict not in ("drift", "no_drift"):
        return points  # no verdict: publish no drift value, so nothing reads "0 drift" on no data
    points += [
        MetricPoint(DRIFT_DETECTED, float(report.verdict == "drift"), "Count", model),
        MetricPoint(DRIFTED_FEATURES, len(report.drifted_features), "Count", model),
        MetricPoint(DRIFTED_SEGMENTS, len(report.drifted_segments), "Count", model),
    ]
    if report.max_psi is not None:
        points.append(MetricPoint(DRIFT_MAX_PSI, report.max_psi, "None", model))
    if report.prediction is not None and report.prediction.psi is not None:
        points.append(MetricPoint(PREDICTION_DRIFT_PSI, report.prediction.psi, "None", model))
    for item in report.features:
        dims = {**model, FEATURE: item.feature}
        if item.psi is not None:
            points.append(MetricPoint(DRIFT_FEATURE_PSI, item.psi, "None", dims))
        if item.js_distance is not None:
            points.append(MetricPoint(DRIFT_FEATURE_JS, item.js_distance, "None", dims))
        if item.wasserstein is not None:
            points.append(MetricPoint(DRIFT_FEATURE_WASSERSTEIN, item.wasserstein, "None", dims))
        points.append(MetricPoint(DRIFT_FEATURE_MISSING_DELTA, item.missing_rate_delta, "None", dims))
    for segment in report.segments:
        if segment.status == "compared" and segment.max_psi is not None:
            dims = {**model, SEGMENT: segment.segment, SEGMENT_VALUE: segment.value}
            points.append(MetricPoint(DRIFT_SEGMENT_MAX_PSI, segment.max_psi, "None", dims))
    return points


def quality_points(report: QualityReport) -> list[MetricPoint]:
    """The metrics of a quality report."""
    model = {MODEL: report.model}
    points = [
        MetricPoint(QUALITY_LABELLED_ROWS, report.labelled_rows, "Count", model),
        MetricPoint(LABELS_UNKNOWN, report.labels.unknown, "Count", model),
        MetricPoint(LABELS_DUPLICATE, report.labels.duplicates + report.labels.conflicting, "Count", model),
        MetricPoint(LABELS_INVALID, report.labels.invalid, "Count", model),
    ]
    if report.verdict == "insufficient_data" or report.overall is None:
        return points
    overall = report.overall
    points.append(MetricPoint(QUALITY_DEGRADED, float(report.verdict == "degraded"), "Count", model))
    for name, value in (
        (QUALITY_AUC, overall.auc),
        (QUALITY_PRECISION, overall.precision),
        (QUALITY_RECALL, overall.recall),
        (QUALITY_CALIBRATION_ERROR, overall.calibration_error),
        (QUALITY_LOG_LOSS, overall.log_loss),
    ):
        if value is not None:
            points.append(MetricPoint(name, value, "None", model))
    for item in report.segments:
        if item.status != "measured":
            continue
        dims = {**model, SEGMENT: item.segment or "", SEGMENT_VALUE: item.value or ""}
        if item.auc is not None:
            points.append(MetricPoint(QUALITY_SEGMENT_AUC, item.auc, "None", dims))
        if item.calibration_error is not None:
            points.append(
                MetricPoint(QUALITY_SEGMENT_CALIBRATION_ERROR, item.calibration_error, "None", dims)
            )
    return points


def publish(points: list[MetricPoint], sink: MetricsSink) -> int:
    """Put every point into the sink and flush it; return how many were published."""
    for point in points:
        sink.put(point.name, point.value, unit=point.unit, dimensions=point.dimensions)
    flush = getattr(sink, "flush", None)
    if callable(flush):
        flush()
    return len(points)


class CloudWatchMetricsSink(MetricsSink):
    """MetricsSink on CloudWatch PutMetricData, buffered and sent in batches on `flush`."""

    BATCH = 500  # PutMetricData takes up to 1,000 metrics (and 1 MB) per call

    def __init__(self, client: Any, namespace: str = NAMESPACE, *, clock: Any = None) -> None:
        self.client = client
        self.namespace = namespace
        self._clock = clock or (lambda: datetime.now(UTC))
        self._buffer: list[dict[str, Any]] = []

    def put(
        self, name: str, value: float, *, unit: str = "None", dimensions: Mapping[str, str] | None = None
    ) -> None:
        self._buffer.append(
            {
                "MetricName": name,
                "Dimensions": [{"Name": k, "Value": str(v)} for k, v in (dimensions or {}).items()],
                "Value": float(value),
                "Unit": unit,
                "Timestamp": self._clock(),
            }
        )

    def flush(self) -> None:
        pending, self._buffer = self._buffer, []
        for first in range(0, len(pending), self.BATCH):
            self.client.put_metric_data(
                Namespace=self.namespace, MetricData=pending[first : first + self.BATCH]
            )
