"""PrepareRun: validate the execution input (naming any bad field) and plan the run."""

from __future__ import annotations

from typing import Any

from functions.pipeline._events import PrepareRunEvent
from shipml.pipeline.environment import PipelineEnvironment
from shipml.pipeline.models import RunRequest
from shipml.pipeline.steps import prepare_run


def handler(event: dict[str, Any], context: Any, env: PipelineEnvironment | None = None) -> dict[str, Any]:
    env = env or PipelineEnvironment.from_env()
    parsed = PrepareRunEvent.parse(event)
    plan = prepare_run(
        RunRequest.parse(parsed.input),
        execution_name=parsed.execution_name,
        model_name=env.settings.model,
        bucket=env.bucket,
        contract_path=env.training_contract,
        registry=env.registry(),
        training_source_uri=env.training_source_uri,
    )
    return plan.model_dump(mode="json")
