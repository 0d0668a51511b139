"""Lambda handler of the scheduled materialisation: EventBridge Scheduler -> here -> shipml.features.

Thin: settings are read once per container, clients built on the first invocation (never at
import time), the work is `shipml.features.job.run_job`, and the report is logged and returned.
"""

from __future__ import annotations

import json
import logging
from functools import cache
from typing import Any

from shipml.features.job import MaterializeJobSettings, MaterializeRequest, run_job

logger = logging.getLogger("shipml.features")
logger.setLevel(logging.INFO)


@cache
def _settings() -> MaterializeJobSettings:
    return MaterializeJobSettings.from_env()


@cache
def _clients() -> tuple[Any, Any]:
    import boto3

    from shipml.backends.aws.online import batch_client

    return boto3.client("s3"), batch_client()


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Run one materialisation; the event's `time` (scheduled events) or `as_of` picks the point in time."""
    s3, dynamodb = _clients()
    report = run_job(_settings(), MaterializeRequest.model_validate(event or {}), s3=s3, dynamodb=dynamodb)
    body = report.model_dump(mode="json")
    logger.info(json.dumps({"message": "materialised", **body}))
    if report.failed_count:
        # Fail the invocation so that the schedule's retry policy and the error alarm see it;
        # the state kept the failed keys' old digests, so the next run writes them again.
        raise RuntimeError(f"{report.failed_count} items could not be written: {report.failed_keys[:10]}")
    return body
