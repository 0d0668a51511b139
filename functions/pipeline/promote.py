"""PromoteLive: after a successful rollout, point the registry's `live` alias (the SSM parameter on AWS)."""

from __future__ import annotations

from typing import Any

from functions.pipeline._events import VersionEvent
from shipml.pipeline.environment import PipelineEnvironment
from shipml.pipeline.steps import promote


def handler(event: dict[str, Any], context: Any, env: PipelineEnvironment | None = None) -> dict[str, Any]:
    env = env or PipelineEnvironment.from_env()
    version = VersionEvent.parse(event).version
    return promote(env.registry(), env.settings.model, version).model_dump(mode="json")
