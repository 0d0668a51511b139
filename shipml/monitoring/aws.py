"""Wiring the monitoring jobs to AWS from the environment, once per Lambda execution environment.

The CDK construct sets these variables on the monitor functions:

| variable | what |
| --- | --- |
| SHIPML_MODEL | the model name |
| SHIPML_ARTIFACT_BUCKET | the artifact/data bucket: capture, ground truth, artifacts, reports |
| SHIPML_LIVE_PARAMETER | the SSM parameter holding the live version number |
| SHIPML_MONITOR_WINDOW_HOURS | the window the drift job reads (quality: SHIPML_QUALITY_WINDOW_HOURS) |
| SHIPML_GROUND_TRUTH_PREFIX | where label files arrive (default `ground-truth/{model}/`) |
| SHIPML_HEALTH_URL | the API's /health URL (health check) |
| SHIPML_HEALTH_AUTH | `iam` (SigV4-signed) or `none` |

Clients are built here, at the first invocation, never at import time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shipml.errors import ShipmlError

CACHE_DIR = Path("/tmp/shipml")  # noqa: S108 - Lambda's only writable folder


class MonitorSettings(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, protected_namespaces=())

    model: str = Field(alias="SHIPML_MODEL")
    bucket: str = Field(alias="SHIPML_ARTIFACT_BUCKET")
    live_parameter: str = Field(alias="SHIPML_LIVE_PARAMETER")
    window_hours: float = Field(default=24.0, gt=0, alias="SHIPML_MONITOR_WINDOW_HOURS")
    quality_window_hours: float = Field(default=24.0 * 7, gt=0, alias="SHIPML_QUALITY_WINDOW_HOURS")
    ground_truth_prefix: str | None = Field(default=None, alias="SHIPML_GROUND_TRUTH_PREFIX")
    namespace: str = Field(default="shipml", alias="SHIPML_METRICS_NAMESPACE")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MonitorSettings:
        try:
            return cls.model_validate(dict(os.environ if environ is None else environ))
        except ValidationError as exc:
            problems = "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors())
            raise ShipmlError(f"invalid monitor settings: {problems}") from None

    @property
    def labels_prefix(self) -> str:
        return self.ground_truth_prefix or f"ground-truth/{self.model}/"


class HealthSettings(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, protected_namespaces=())

    model: str = Field(alias="SHIPML_MODEL")
    url: str = Field(pattern=r"^https?://", alias="SHIPML_HEALTH_URL")
    auth: Literal["iam", "api_key", "none"] = Field(default="iam", alias="SHIPML_HEALTH_AUTH")
    # api_key mode: the id of the usage plan's key; its value is read from API Gateway at run time
    # (GetApiKey with includeValue), so it never sits in the function's configuration.
    api_key_id: str | None = Field(default=None, min_length=1, alias="SHIPML_HEALTH_API_KEY_ID")
    timeout_s: float = Field(default=10.0, gt=0, le=60, alias="SHIPML_HEALTH_TIMEOUT_S")
    namespace: str = Field(default="shipml", alias="SHIPML_METRICS_NAMESPACE")

    @model_validator(mode="after")
    def _key_for_api_key_mode(self) -> HealthSettings:
        if self.auth == "api_key" and not self.api_key_id:
            raise ValueError("SHIPML_HEALTH_AUTH=api_key needs SHIPML_HEALTH_API_KEY_ID")
        return self

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> HealthSettings:
        try:
            return cls.model_validate(dict(os.environ if environ is None else environ))
        except ValidationError as exc:
            problems = "; ".join(
                f"{e['loc'][0] if e['loc'] else 'settings'}: {e['msg']}" for e in exc.errors()
            )
            raise ShipmlError(f"invalid health-check settings: {problems}") from None


class JobEvent(BaseModel):
    """The scheduled event, or a manual one: optionally the window's end and length."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    end: datetime | None = None
    hours: float | None = Field(default=None, gt=0)


def parse_event(event: Any) -> JobEvent:
    if not isinstance(event, Mapping):
        return JobEvent()
    try:
        parsed = JobEvent.model_validate(dict(event))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ShipmlError(f"invalid monitor event: {problems}") from None
    if parsed.end is not None and parsed.end.tzinfo is None:
        raise ShipmlError("invalid monitor event: end: must carry a UTC offset")
    return parsed


class AwsMonitor:
    """The adapters of one execution environment: S3 (capture, labels, reports), SSM, CloudWatch."""

    def __init__(
        self, settings: MonitorSettings, *, session: Any = None, cache_dir: Path = CACHE_DIR
    ) -> None:
        import boto3

        from shipml.backends.aws.blob import S3BlobStore
        from shipml.monitoring.jobs import ParameterModelSource
        from shipml.monitoring.publish import CloudWatchMetricsSink
        from shipml.monitoring.window import BlobCapture

        session = session or boto3.session.Session()
        self.settings = settings
        self.blobs = S3BlobStore(session.client("s3"), settings.bucket)
        self.models = ParameterModelSource(
            session.client("ssm"), settings.live_parameter, self.blobs, settings.model, cache_dir
        )
        self.capture = BlobCapture(self.blobs)
        self.metrics = CloudWatchMetricsSink(session.client("cloudwatch"), settings.namespace)

    def drift(self, event: Any) -> dict[str, Any]:
        from shipml.monitoring.jobs import run_drift_job, window_bounds

        parsed = parse_event(event)
        start, end = window_bounds(parsed.end, parsed.hours or self.settings.window_hours)
        result = run_drift_job(
            models=self.models,
            capture=self.capture,
            blobs=self.blobs,
            metrics=self.metrics,
            start=start,
            end=end,
        )
        report = result.report
        return {
            "verdict": report.verdict,
            "summary": report.summary(),
            "model_version": report.model_version,
            "rows": report.rows,
            "drifted_features": report.drifted_features,
            "drifted_segments": report.drifted_segments,
            "problems": report.problems,
            "report": result.html_uri,
            "metrics": result.metrics,
        }

    def quality(self, event: Any) -> dict[str, Any]:
        from shipml.monitoring.jobs import run_quality_job, window_bounds

        parsed = parse_event(event)
        start, end = window_bounds(parsed.end, parsed.hours or self.settings.quality_window_hours)
        result = run_quality_job(
            models=self.models,
            capture=self.capture,
            labels=self.blobs,
            blobs=self.blobs,
            metrics=self.metrics,
            start=start,
            end=end,
            labels_prefix=self.settings.labels_prefix,
        )
        report = result.report
        return {
            "verdict": report.verdict,
            "summary": report.summary(),
            "model_version": report.model_version,
            "labelled_rows": report.labelled_rows,
            "degraded_slices": report.degraded_slices,
            "problems": report.problems,
            "report": result.json_uri,
            "metrics": result.metrics,
        }


def run_health_check(settings: HealthSettings, *, session: Any = None, send: Any = None) -> dict[str, Any]:
    """One health check of the API with the function's own credentials; metrics published."""
    import boto3

    from shipml.monitoring.health import (
        api_key_signer,
        check_health,
        publish_health,
        sigv4_signer,
        urllib_send,
    )
    from shipml.monitoring.publish import CloudWatchMetricsSink

    session = session or boto3.session.Session()
    sign = None
    if settings.auth == "iam":
        sign = sigv4_signer(session.get_credentials(), session.region_name)
    elif settings.auth == "api_key":
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            key = session.client("apigateway").get_api_key(apiKey=settings.api_key_id, includeValue=True)
        except (BotoCoreError, ClientError) as exc:
            # The checker stops reporting, which the health alarm treats as unhealthy.
            raise ShipmlError(f"cannot read the API key {settings.api_key_id}: {exc}") from None
        sign = api_key_signer(key["value"])
    result = check_health(settings.url, send=send or urllib_send(settings.timeout_s), sign=sign)
    publish_health(
        result, settings.model, CloudWatchMetricsSink(session.client("cloudwatch"), settings.namespace)
    )
    return result.model_dump()
