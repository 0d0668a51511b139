"""Typed settings of the stream consumer, apart from its construct so that stacks/settings.py can
embed them without importing CDK constructs (which import the settings: a cycle)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class StreamDeploySettings(BaseModel):
    """How the stream consumer is deployed: the source, the output, and the event source mapping."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Literal["kinesis", "msk", "kafka"] = Field(
        default="kinesis", description="Kinesis Data Streams, Amazon MSK, or self-managed Kafka."
    )
    source_stream_arn: str | None = Field(
        default=None,
        pattern=r"^arn:aws[a-z-]*:kinesis:[a-z0-9-]+:\d{12}:stream/[A-Za-z0-9_.-]+$",
        description="An existing Kinesis stream to read; unset: the construct creates one (KMS, on demand).",
    )
    kafka_topic: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9._-]{1,249}$", description="Kafka topic."
    )
    msk_cluster_arn: str | None = Field(
        default=None, pattern=r"^arn:aws[a-z-]*:kafka:", description="The MSK cluster (source=msk)."
    )
    kafka_bootstrap_servers: tuple[str, ...] = Field(
        default=(), description="host:port of self-managed brokers (source=kafka)."
    )
    kafka_secret_arn: str | None = Field(
        default=None,
        pattern=r"^arn:aws[a-z-]*:secretsmanager:",
        description="SASL/SCRAM credentials for Kafka (required for self-managed Kafka).",
    )
    output: Literal["kinesis", "dynamodb"] = Field(
        default="kinesis",
        description="Where decisions go: a Kinesis stream or a DynamoDB table (created here).",
    )
    starting_position: Literal["latest", "trim_horizon"] = Field(
        default="latest", description="Where a new mapping starts reading."
    )
    batch_size: int = Field(default=500, ge=1, le=10_000, description="Records per invocation at most.")
    max_batching_window_s: int = Field(
        default=1, ge=0, le=300, description="How long the mapping gathers records before invoking."
    )
    parallelization_factor: int = Field(
        default=1,
        ge=1,
        le=10,
        description="Concurrent batches per Kinesis shard (order kept per partition key).",
    )
    bisect_on_error: bool = Field(
        default=True, description="Split a failing batch in two and retry each half."
    )
    max_record_age_s: int = Field(
        default=3_600, ge=60, le=604_800, description="Records older than this go to the failure destination."
    )
    retry_attempts: int = Field(
        default=3, ge=0, le=10_000, description="Retries of a failing batch before the failure destination."
    )
    memory_mb: int = Field(default=1024, ge=128, le=10_240, description="Consumer function memory.")
    timeout_s: int = Field(default=60, ge=1, le=900, description="Consumer function timeout.")
    iterator_age_alarm_ms: int = Field(
        default=60_000,
        ge=1_000,
        description="Alarm when the oldest unread record is older than this (Kinesis).",
    )
    offset_lag_alarm: int = Field(
        default=10_000, ge=1, description="Alarm when the consumer is this many records behind (Kafka)."
    )
    dlq_depth_alarm: int = Field(default=1, ge=1, description="Alarm when this many dead letters wait.")
    dlq_retention_days: int = Field(default=14, ge=1, le=14, description="How long dead letters are kept.")

    @model_validator(mode="after")
    def _source_is_complete(self) -> StreamDeploySettings:
        if self.source != "kinesis" and not self.kafka_topic:
            raise ValueError(f"source={self.source} needs kafka_topic")
        if self.source == "msk" and not self.msk_cluster_arn:
            raise ValueError("source=msk needs msk_cluster_arn")
        if self.source == "kafka" and not (self.kafka_bootstrap_servers and self.kafka_secret_arn):
            raise ValueError("source=kafka needs kafka_bootstrap_servers and kafka_secret_arn")
        if self.source != "kinesis" and self.parallelization_factor != 1:
            raise ValueError("parallelization_factor applies to Kinesis only; Kafka scales by partitions")
        return self
