"""CheckRollout: where the CodeDeploy deployment stands (polled by the state machine's Wait loop)."""

from __future__ import annotations

from typing import Any

from functions.pipeline._events import RolloutEvent
from shipml.pipeline.environment import PipelineEnvironment
from shipml.pipeline.rollout import check_rollout


def handler(event: dict[str, Any], context: Any, env: PipelineEnvironment | None = None) -> dict[str, Any]:
    env = env or PipelineEnvironment.from_env()
    rollout = RolloutEvent.parse(event).rollout
    if rollout.deployment_id is None:
        return rollout.model_dump(mode="json")
    return check_rollout(rollout, codedeploy_client=env.client("codedeploy")).model_dump(mode="json")
