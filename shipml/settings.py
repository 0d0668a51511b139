"""Runtime settings: one object, read from the environment once, at the edge of a process.

Nothing reads the environment at import time; the CLI, the app and the Lambda handlers call
`Settings.from_env()` once and pass the result down.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shipml.errors import ShipmlError

ENV_PREFIX = "SHIPML_"
M = TypeVar("M", bound=BaseModel)


class Settings(BaseModel):
    """Where shipml keeps its state and which model it works on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Annotated[Literal["local", "aws"], Field(description="Which adapters back the ports.")] = "local"
    root: Annotated[Path, Field(description="Root folder of the local backend.")] = Path(".shipml")
    model: Annotated[str, Field(description="The model name, as in its contract.")] = "fraud"
    contract: Annotated[Path, Field(description="Path of the contract file.")] = Path(
        "examples/fraud/contract.yaml"
    )
    hash_key: Annotated[str, Field(description="Key for hashing PII fields (HMAC-SHA256).", repr=False)] = (
        "shipml-local"
    )
    live_poll_seconds: Annotated[
        float, Field(gt=0, description="How often a server rechecks the live alias.")
    ] = 5.0
    model_version: Annotated[
        str,
        Field(
            pattern=r"^(live|[0-9]+)$",
            description="The version a server loads: a number pins it; 'live' follows the live alias.",
        ),
    ] = "live"
    max_body_bytes: Annotated[
        int, Field(gt=0, description="Largest request body the app accepts (413 above).")
    ] = 262_144
    # The aws backend: resource names, passed to the Lambda functions by the CDK stacks.
    artifact_bucket: Annotated[str | None, Field(description="S3 bucket of artifacts and data (aws).")] = None
    online_table: Annotated[str | None, Field(description="DynamoDB table of online features (aws).")] = None
    capture_stream: Annotated[
        str | None, Field(description="Firehose delivery stream for capture (aws).")
    ] = None
    topic_arn: Annotated[str | None, Field(description="SNS topic for notifications (aws).")] = None
    live_parameter: Annotated[
        str | None, Field(description="SSM parameter holding the live model version number (aws).")
    ] = None
    hash_key_secret: Annotated[
        str | None, Field(description="Secrets Manager secret holding the PII hash key (aws).")
    ] = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from SHIPML_* variables (e.g. SHIPML_ROOT), then explicit overrides."""
        return settings_from_env(cls, ENV_PREFIX, environ, overrides, what="settings")


def settings_from_env(
    model: type[M],
    prefix: str,
    environ: Mapping[str, str] | None,
    overrides: Mapping[str, object],
    *,
    what: str,
) -> M:
    """Validate `model` from `prefix`+FIELD environment variables, then non-None overrides.

    A bad value is a `ShipmlError` naming each variable and its rule.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for name in model.model_fields:
        key = prefix + name.upper()
        if key in environ:
            values[name] = environ[key]
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{prefix}{'.'.join(map(str, e['loc'])).upper() or 'SETTINGS'}: {e['msg']}" for e in exc.errors()
        )
        raise ShipmlError(f"invalid {what}: {problems}") from None
