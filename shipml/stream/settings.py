"""The stream consumer's own settings (SHIPML_STREAM_*), beside the shared `shipml.settings.Settings`.

Kept apart so that the stream capability adds no fields to the settings every other host reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shipml.settings import settings_from_env

STREAM_ENV_PREFIX = "SHIPML_STREAM_"


class StreamSettings(BaseModel):
    """Where the consumer reads from and writes to. Read once per process, at the edge."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Annotated[
        Literal["kinesis", "kafka"],
        Field(description="The event source: Kinesis Data Streams, or Kafka (Amazon MSK or self-managed)."),
    ] = "kinesis"
    output: Annotated[
        Literal["kinesis", "dynamodb", "jsonl"],
        Field(description="Where decisions go: a Kinesis stream, a DynamoDB table, or a JSON Lines file."),
    ] = "jsonl"
    output_stream: Annotated[str | None, Field(description="The output Kinesis stream (output=kinesis).")] = (
        None
    )
    output_table: Annotated[str | None, Field(description="The output DynamoDB table (output=dynamodb).")] = (
        None
    )
    output_file: Annotated[
        str | None,
        Field(
            description="The output JSON Lines file (output=jsonl); default <root>/stream/decisions.jsonl."
        ),
    ] = None
    dlq_url: Annotated[
        str | None,
        Field(description="The SQS dead-letter queue; unset: <root>/stream/dead-letters.jsonl."),
    ] = None
    write_attempts: Annotated[
        int,
        Field(
            ge=1, le=10, description="Attempts per output or dead-letter write before a record is retried."
        ),
    ] = 4
    max_dlq_message_bytes: Annotated[
        int, Field(ge=1024, le=1_048_576, description="The dead-letter queue's message size limit.")
    ] = 262_144

    @model_validator(mode="after")
    def _output_is_named(self) -> StreamSettings:
        if self.output == "kinesis" and not self.output_stream:
            raise ValueError("output=kinesis needs SHIPML_STREAM_OUTPUT_STREAM")
        if self.output == "dynamodb" and not self.output_table:
            raise ValueError("output=dynamodb needs SHIPML_STREAM_OUTPUT_TABLE")
        return self

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> StreamSettings:
        """Settings from SHIPML_STREAM_* variables (e.g. SHIPML_STREAM_SOURCE), then explicit overrides."""
        return settings_from_env(cls, STREAM_ENV_PREFIX, environ, overrides, what="stream settings")
