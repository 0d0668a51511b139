"""Scheduled drift job: the capture window in S3 against the live model's baseline -> report + metrics."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger

from shipml.monitoring.aws import AwsMonitor, MonitorSettings

logger = Logger(service="shipml-monitor-drift")
_runtime: dict[str, AwsMonitor] = {}


@logger.inject_lambda_context(log_event=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if "monitor" not in _runtime:
        _runtime["monitor"] = AwsMonitor(MonitorSettings.from_env())
    result = _runtime["monitor"].drift(event)
    logger.info(result["summary"], extra={"verdict": result["verdict"], "report": result["report"]})
    return result
