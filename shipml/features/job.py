"""The scheduled materialisation job on AWS: settings from the environment, clients injected.

The Lambda handler (`functions/features/handler.py`) and a SageMaker Processing container run the
same `run_job`; only the host differs (Lambda for a lake that fits its 15 minutes and 10 GB, a
Processing job for more, as the deploy settings choose).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shipml.errors import ShipmlError
from shipml.features.materialize import MaterializeReport, materialize


class MaterializeJobSettings(BaseModel):
    """What the job needs to know, from SHIPML_* environment variables set by the CDK construct."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    contract: Annotated[Path, Field(description="The contract file, bundled with the function.")]
    lake_bucket: Annotated[str, Field(min_length=3, description="Bucket of the data lake.")]
    lake_prefix: Annotated[str, Field(description="Prefix of the transactions (Parquet) in the lake.")]
    state_prefix: Annotated[str, Field(description="Prefix where the job keeps its state.")]
    online_table: Annotated[str, Field(min_length=3, description="The DynamoDB online feature table.")]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MaterializeJobSettings:
        environ = os.environ if environ is None else environ
        names = {name: f"SHIPML_{name.upper()}" for name in cls.model_fields}
        try:
            return cls.model_validate({n: environ[v] for n, v in names.items() if v in environ})
        except ValidationError as exc:
            problems = "; ".join(
                f"{names.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']}" for e in exc.errors()
            )
            raise ShipmlError(f"invalid materialisation settings: {problems}") from None


class MaterializeRequest(BaseModel):
    """The job's input: an EventBridge scheduled event (its `time`), or `{"as_of": ..., "full": ...}`."""

    model_config = ConfigDict(extra="ignore")

    as_of: datetime | None = None
    time: datetime | None = None
    full: bool = False

    def moment(self, now: datetime) -> datetime:
        chosen = self.as_of or self.time or now
        if chosen.tzinfo is None:
            raise ShipmlError("as_of must carry a UTC offset")
        return chosen.astimezone(UTC)


def run_job(
    settings: MaterializeJobSettings,
    request: MaterializeRequest,
    *,
    s3: Any,
    dynamodb: Any,
    now: datetime | None = None,
) -> MaterializeReport:
    """Materialise the contract's online features from the lake into the DynamoDB table."""
    from shipml.backends.aws.online import DynamoDbOnlineStore
    from shipml.contract import load_contract
    from shipml.features.lake import BlobSource, S3Prefix

    contract = load_contract(settings.contract)
    lake = BlobSource(S3Prefix(s3, settings.lake_bucket, settings.lake_prefix), "")
    state = S3Prefix(s3, settings.lake_bucket, settings.state_prefix)
    store = DynamoDbOnlineStore(dynamodb, settings.online_table)
    return materialize(
        contract,
        lake,
        store,
        as_of=request.moment(now or datetime.now(UTC)),
        state_store=state,
        full=request.full,
    )


def main(environ: Mapping[str, str] | None = None) -> int:
    """Entry point of the SageMaker Processing host (`python3 -m shipml.features.job`).

    Reads the same SHIPML_* settings as the Lambda, plus SHIPML_AS_OF (the scheduled time) and
    SHIPML_FULL; prints the report as JSON; exits 1 if some items could not be written.
    """
    import json

    import boto3

    from shipml.backends.aws.online import batch_client

    environ = os.environ if environ is None else environ
    settings = MaterializeJobSettings.from_env(environ)
    request = MaterializeRequest(
        as_of=environ.get("SHIPML_AS_OF") or None, full=environ.get("SHIPML_FULL", "").lower() == "true"
    )
    report = run_job(settings, request, s3=boto3.client("s3"), dynamodb=batch_client())
    print(json.dumps(report.model_dump(mode="json")))
    return 1 if report.failed_count else 0


if __name__ == "__main__":
    raise SystemExit(main())
