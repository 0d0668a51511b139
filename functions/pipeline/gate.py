"""Gate: read Evaluate's report and judge the challenger against the champion (or the floors)."""

from __future__ import annotations

from typing import Any

from functions.pipeline._events import PlanEvent
from shipml.pipeline.environment import PipelineEnvironment
from shipml.pipeline.models import EvaluationReport
from shipml.pipeline.processing import REPORT_FILE
from shipml.pipeline.steps import gate


def handler(event: dict[str, Any], context: Any, env: PipelineEnvironment | None = None) -> dict[str, Any]:
    env = env or PipelineEnvironment.from_env()
    plan = PlanEvent.parse(event).plan
    report = EvaluationReport.model_validate_json(env.storage().read_bytes(plan.evaluation_uri + REPORT_FILE))
    return gate(report, env.gate).model_dump(mode="json")
