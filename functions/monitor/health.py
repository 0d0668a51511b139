"""Scheduled health check: GET the serving API's /health (SigV4-signed) and publish the result."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger

from shipml.monitoring.aws import HealthSettings, run_health_check

logger = Logger(service="shipml-monitor-health")


@logger.inject_lambda_context(log_event=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    result = run_health_check(HealthSettings.from_env())
    if not result["healthy"]:
        logger.warning("the serving API is unhealthy", extra=result)
    return result
