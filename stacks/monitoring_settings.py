"""Typed settings of the monitoring construct, apart from it so that stacks/settings.py can embed
them (the `monitoring` object in cdk.json) without importing CDK constructs."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class MonitoringSettings(BaseModel):
    """Schedules and alarm thresholds of the monitoring construct (defaults fit the example)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    drift_schedule: str = Field(default="rate(1 day)", pattern=r"^(cron|rate)\(.+\)$")
    drift_window_hours: float = Field(default=24, gt=0, le=24 * 31)
    quality_schedule: str = Field(default="rate(1 day)", pattern=r"^(cron|rate)\(.+\)$")
    quality_window_hours: float = Field(default=24 * 7, gt=0, le=24 * 90)
    ground_truth_prefix: str | None = Field(default=None, description="Default: ground-truth/{model}/.")
    health_check_minutes: int = Field(default=5, ge=1, le=60)
    api_5xx_rate: float = Field(default=0.01, gt=0, le=1)
    api_p99_latency_ms: int = Field(default=1000, ge=1, le=29_000)
    serving_errors: int = Field(default=5, ge=1, description="Function errors in 5 minutes.")
    serving_throttles: int = Field(default=1, ge=1, description="Throttled invocations in 5 minutes.")
    fallback_rate: float = Field(default=0.05, gt=0, le=1)
    validation_failure_rate: float = Field(default=0.10, gt=0, le=1)
    quality_auc_floor: float = Field(default=0.70, gt=0, lt=1)
    quality_anomaly_std_devs: float = Field(default=2.0, gt=0)
    retrain_on_drift: bool = False
    drift_job_memory_mb: int = Field(default=3008, ge=512, le=10240)
