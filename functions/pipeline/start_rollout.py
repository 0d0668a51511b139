"""Deploy: start shifting serving to the new version (CodeDeploy on AWS; nothing to shift locally)."""

from __future__ import annotations

from typing import Any

from functions.pipeline._events import VersionEvent
from shipml.pipeline.environment import PipelineEnvironment
from shipml.pipeline.rollout import local_rollout, start_rollout


def handler(event: dict[str, Any], context: Any, env: PipelineEnvironment | None = None) -> dict[str, Any]:
    env = env or PipelineEnvironment.from_env()
    version = VersionEvent.parse(event).version
    if env.serving is None:
        return local_rollout(version).model_dump(mode="json")
    rollout = start_rollout(
        env.serving, version, lambda_client=env.client("lambda"), codedeploy_client=env.client("codedeploy")
    )
    return rollout.model_dump(mode="json")
