"""Typed deploy settings, read from the CDK context (cdk.json's "context" block plus `-c key=value`).

cdk.json holds every default at the top level of "context" and a "stages" block with per-stage
overrides. The selected stage (`stage`, e.g. `-c stage=prod`) must be one of the keys of "stages";
its overrides are applied on top of the top-level values. A per-stage value therefore wins over the
same key given with `-c`: change those in cdk.json's "stages" block.

Values passed with `-c` arrive as strings; pydantic's lax mode turns "2" into 2 and "false" into
False, so the command line needs no JSON quoting.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Literal, Self

import aws_cdk as cdk
from aws_cdk import aws_logs as logs
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from stacks import constants
from stacks.monitoring_settings import MonitoringSettings
from stacks.stream_settings import StreamDeploySettings

if TYPE_CHECKING:
    from constructs import Node

STAGES_KEY = "stages"

# SageMaker caps MaxRuntimeInSeconds at 28 days.
_MAX_TRAINING_RUNTIME_S = 28 * 24 * 3600
# API Gateway REST integrations time out after 29 s; a longer function timeout would only hide that.
_MAX_API_TIMEOUT_S = 29
# Lambda's synchronous invocation payload limit (6 MB) bounds what a request body can be.
_MAX_LAMBDA_PAYLOAD_BYTES = 6_000_000
# The retention periods CloudWatch Logs accepts, in days, with their CDK names.
_LOG_RETENTION = {
    1: "ONE_DAY", 3: "THREE_DAYS", 5: "FIVE_DAYS", 7: "ONE_WEEK", 14: "TWO_WEEKS", 30: "ONE_MONTH",
    60: "TWO_MONTHS", 90: "THREE_MONTHS", 120: "FOUR_MONTHS", 150: "FIVE_MONTHS", 180: "SIX_MONTHS",
    365: "ONE_YEAR", 400: "THIRTEEN_MONTHS", 545: "EIGHTEEN_MONTHS", 731: "TWO_YEARS", 1096: "THREE_YEARS",
    1827: "FIVE_YEARS", 2192: "SIX_YEARS", 2557: "SEVEN_YEARS", 2922: "EIGHT_YEARS", 3288: "NINE_YEARS",
    3653: "TEN_YEARS",
}  # fmt: skip


class SettingsError(ValueError):
    """The CDK context does not describe a valid deployment; the message names the setting."""


class DeploySettings(BaseModel):
    """Everything the stacks need to know about one deployment of one model in one stage."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stage: str = Field(pattern=r"^[a-z][a-z0-9-]{0,15}$", description="Deployment stage, e.g. dev or prod.")
    model_name: str = Field(
        pattern=r"^[a-z][a-z0-9-]{0,31}$",
        description="Short model name; part of the stack name and resource names.",
    )
    contract_path: PurePosixPath = Field(description="The model's contract YAML, relative to the repo root.")
    account: str | None = Field(
        default=None,
        pattern=r"^\d{12}$",
        description="AWS account id; unset gives an environment-agnostic stack (synth needs no account).",
    )
    region: str | None = Field(
        default=None,
        pattern=r"^[a-z]{2}(-[a-z]+)+-\d$",
        description="AWS region; unset gives an environment-agnostic stack.",
    )
    removal_policy: Literal["destroy", "retain"] = Field(
        description="What happens to stateful resources (buckets, keys) when the stack is deleted.",
    )
    deletion_protection: bool = Field(
        description="Turn on stack termination protection and resource deletion protection.",
    )
    training_instance_type: str = Field(
        pattern=r"^ml\.[a-z0-9]+\.[a-z0-9]+$", description="SageMaker training instance type."
    )
    training_instance_count: int = Field(
        ge=1, le=64, description="Instances per training job (torchrun nodes)."
    )
    training_max_runtime_s: int = Field(
        ge=60, le=_MAX_TRAINING_RUNTIME_S, description="Training job MaxRuntimeInSeconds."
    )
    use_spot: bool = Field(description="Train on managed spot capacity (resumes from checkpoints).")
    retrain_schedule: str = Field(
        pattern=r"^(cron|rate)\(.+\)$",
        description="EventBridge schedule expression for retraining, e.g. cron(0 3 ? * MON *).",
    )
    alarm_email: str = Field(default="", description="E-mail subscribed to notifications; empty for none.")

    # Real-time serving: the function.
    lambda_architecture: Literal["arm64", "x86_64"] = Field(
        description="CPU architecture of the serving function; the bundle's wheels follow it.",
    )
    lambda_memory_mb: int = Field(
        ge=128, le=10240, description="Serving function memory (CPU scales with it)."
    )
    lambda_timeout_s: int = Field(
        ge=1,
        le=_MAX_API_TIMEOUT_S,
        description="Serving function timeout; API Gateway stops waiting at 29 s.",
    )
    lambda_reserved_concurrency: int = Field(
        ge=0, description="Concurrency reserved for (and capping) the serving function; 0 = unreserved."
    )
    provisioned_concurrency_min: int = Field(
        ge=0, description="Provisioned concurrency on the live alias, auto-scaled from here; 0 = off."
    )
    provisioned_concurrency_max: int = Field(
        ge=0, description="Upper bound of provisioned-concurrency scaling."
    )
    provisioned_concurrency_utilization: float = Field(
        default=0.7,
        gt=0.1,
        le=0.9,
        description="Target utilization of provisioned concurrency for auto scaling.",
    )
    snapstart: bool = Field(
        description="SnapStart on published versions (Python 3.12+; not with provisioned concurrency).",
    )
    tracing: bool = Field(
        default=True,
        description="X-Ray active tracing of the serving function and its API stage (Powertools Tracer); "
        "off, the function never imports the X-Ray SDK (about 0.15 s of each cold start).",
    )
    lambda_bundle_budget_mb: int = Field(
        ge=10, le=250, description="Largest unzipped serving bundle allowed; synth fails above it."
    )
    log_retention_days: int = Field(description="Retention of the function's and the API's log groups.")
    features_schedule: str = Field(
        default="rate(1 hour)",
        pattern=r"^(cron|rate)\(.+\)$",
        description="EventBridge Scheduler expression of the online-feature materialisation job.",
    )
    features_host: Literal["lambda", "processing"] = Field(
        default="lambda",
        description="Where materialisation runs: Lambda, or SageMaker Processing for big lakes.",
    )
    features_processing_image_uri: str | None = Field(
        default=None, description="Container image with shipml installed, for features_host=processing."
    )
    batch_instance_type: str = Field(
        default="ml.m5.xlarge",
        pattern=r"^ml\.[a-z0-9]+\.[a-z0-9]+$",
        description="Batch Transform instance type.",
    )
    batch_instance_count: int = Field(default=1, ge=1, le=100, description="Batch Transform instance count.")
    batch_schedule: str = Field(
        default="",
        pattern=r"^$|^(cron|rate)\(.+\)$",
        description="EventBridge Scheduler expression of batch scoring; empty: run it from the console only.",
    )
    batch_input_format: Literal["application/jsonlines", "text/csv"] = Field(
        default="application/jsonlines", description="Input format of batch scoring (split by line)."
    )
    monitoring: MonitoringSettings = Field(
        default_factory=MonitoringSettings, description="Monitoring schedules and alarm thresholds."
    )
    stream: StreamDeploySettings | None = Field(
        default=None, description="The stream consumer (Kinesis or Kafka); unset: none is deployed."
    )
    features_bundle_budget_mb: int = Field(
        default=250,
        ge=10,
        le=250,
        description="Largest unzipped materialisation bundle (it carries pyarrow).",
    )
    max_body_bytes: int = Field(
        ge=1024,
        le=_MAX_LAMBDA_PAYLOAD_BYTES,
        description="Largest request body the app accepts (413 above); SHIPML_MAX_BODY_BYTES.",
    )
    # Real-time serving: the API.
    api_auth: Literal["iam", "api_key"] = Field(
        description="How callers authenticate: SigV4-signed requests (iam) or API keys with a usage plan.",
    )
    api_throttle_rate: float = Field(gt=0, le=10_000, description="Steady-state requests per second (stage).")
    api_throttle_burst: int = Field(ge=1, le=5_000, description="Burst of requests allowed above the rate.")
    api_quota_per_day: int = Field(
        default=0, ge=0, description="Requests per API key per day in api_key mode; 0 = no quota."
    )
    # Real-time serving: how a new version (code or model) reaches the live alias.
    canary_percent: int = Field(ge=1, le=99, description="Share of traffic the new version gets first.")
    canary_minutes: int = Field(ge=1, le=2880, description="How long the canary runs before the full shift.")
    rollback_errors_per_minute: int = Field(
        ge=1, description="Function errors on the live alias in one minute that roll a deployment back."
    )
    rollback_p99_latency_ms: int = Field(
        ge=1, le=_MAX_API_TIMEOUT_S * 1000, description="p99 duration on the live alias that rolls back."
    )
    # Prediction capture (Firehose -> S3).
    capture_buffer_seconds: int = Field(ge=0, le=900, description="Firehose buffering interval.")
    capture_buffer_mb: int = Field(ge=1, le=128, description="Firehose buffering size.")

    @field_validator("contract_path")
    @classmethod
    def _contract_is_yaml(cls, value: PurePosixPath) -> PurePosixPath:
        # The file itself is not opened here: synth must not depend on which files exist yet.
        if value.is_absolute() or value.suffix not in {".yaml", ".yml"}:
            raise ValueError("must be a relative path to a .yaml or .yml file")
        return value

    @field_validator("alarm_email")
    @classmethod
    def _email_or_empty(cls, value: str) -> str:
        value = value.strip()
        local, at, domain = value.partition("@")
        if value and not (local and at and "." in domain and " " not in value):
            raise ValueError("must be an e-mail address or empty")
        return value

    @field_validator("log_retention_days")
    @classmethod
    def _known_retention(cls, value: int) -> int:
        if value not in _LOG_RETENTION:
            raise ValueError(f"must be one of CloudWatch Logs' retention periods: {sorted(_LOG_RETENTION)}")
        return value

    # Cross-field rules are checked on the later field (pydantic validates in declaration order),
    # so that the error names a setting instead of the whole model.
    @field_validator("provisioned_concurrency_max")
    @classmethod
    def _max_not_below_min(cls, value: int, info: ValidationInfo) -> int:
        minimum = info.data.get("provisioned_concurrency_min")
        if minimum is None:
            return value
        if minimum == 0 and value != 0:
            raise ValueError("must be 0 when provisioned_concurrency_min is 0 (provisioned concurrency off)")
        if value < minimum:
            raise ValueError(f"must be at least provisioned_concurrency_min ({minimum})")
        reserved = info.data.get("lambda_reserved_concurrency")
        if reserved and value > reserved:
            raise ValueError(f"cannot exceed lambda_reserved_concurrency ({reserved})")
        return value

    @field_validator("snapstart")
    @classmethod
    def _snapstart_without_provisioned_concurrency(cls, value: bool, info: ValidationInfo) -> bool:
        minimum = info.data.get("provisioned_concurrency_min")
        if value and minimum:
            raise ValueError(
                f"SnapStart cannot be combined with provisioned concurrency (provisioned_concurrency_min="
                f"{minimum}); turn one of them off"
            )
        return value

    @property
    def provisioned_concurrency(self) -> bool:
        """Whether the live alias keeps provisioned concurrency (auto-scaled between min and max)."""
        return self.provisioned_concurrency_min > 0

    @property
    def stack_name(self) -> str:
        """The CloudFormation stack name, e.g. `shipml-fraud-dev`."""
        return constants.stack_name(self.model_name, self.stage)

    @property
    def cdk_removal_policy(self) -> cdk.RemovalPolicy:
        """`removal_policy` as the CDK enum the constructs take."""
        return cdk.RemovalPolicy.RETAIN if self.removal_policy == "retain" else cdk.RemovalPolicy.DESTROY

    @property
    def cdk_log_retention(self) -> logs.RetentionDays:
        """`log_retention_days` as the CDK enum log groups take."""
        return logs.RetentionDays[_LOG_RETENTION[self.log_retention_days]]

    @property
    def env(self) -> cdk.Environment | None:
        """The stack environment, or None for an environment-agnostic stack."""
        if self.account is None and self.region is None:
            return None
        return cdk.Environment(account=self.account, region=self.region)

    @property
    def tags(self) -> dict[str, str]:
        """Tags for the stack; CloudFormation propagates them to every resource that supports tags."""
        return {
            constants.TAG_PROJECT: constants.PROJECT,
            constants.TAG_STAGE: self.stage,
            constants.TAG_MODEL: self.model_name,
        }

    @classmethod
    def from_context(cls, context: Mapping[str, Any]) -> Self:
        """Build the settings from a plain context mapping (cdk.json "context" merged with `-c`).

        Raises SettingsError naming the offending setting, or the unknown stage and the known ones.
        """
        stage = context.get("stage")
        stages = context.get(STAGES_KEY)
        if not isinstance(stages, Mapping) or not stages:
            raise SettingsError(
                f"setting '{STAGES_KEY}' must map each stage name to its overrides "
                "(run app.py through `npx cdk synth`, which passes cdk.json's context)"
            )
        if not isinstance(stage, str) or stage not in stages:
            known = ", ".join(sorted(stages))
            raise SettingsError(f"setting 'stage': unknown stage {stage!r}; cdk.json defines: {known}")
        overrides = stages[stage] or {}
        if not isinstance(overrides, Mapping):
            raise SettingsError(f"setting '{STAGES_KEY}.{stage}' must be a mapping of setting overrides")
        if "stage" in overrides:
            raise SettingsError(f"setting '{STAGES_KEY}.{stage}.stage': a stage cannot rename itself")

        # The context also holds CDK feature flags and the like: take only the keys we model,
        # but let stage overrides through unfiltered so a misspelt override is reported.
        values = {name: context[name] for name in cls.model_fields if context.get(name) is not None}
        values.update(overrides)
        try:
            return cls(**values)
        except ValidationError as exc:
            raise SettingsError(_describe(exc, stage=stage, overridden=set(overrides))) from None

    @classmethod
    def from_node(cls, node: Node) -> Self:
        """Build the settings from a construct's context (what the CDK CLI passes to the app)."""
        keys = [*cls.model_fields, STAGES_KEY]
        return cls.from_context({key: node.try_get_context(key) for key in keys})


def _describe(exc: ValidationError, *, stage: str, overridden: set[str]) -> str:
    """One line per invalid setting, naming where in cdk.json it came from."""
    lines = []
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"]) or "?"
        where = f"{STAGES_KEY}.{stage}.{name}" if name in overridden else name
        shown = "" if error["type"] == "missing" else f" (got {error.get('input')!r})"
        lines.append(f"setting '{where}': {error['msg']}{shown}")
    return "invalid deploy settings:\n  " + "\n  ".join(lines)
