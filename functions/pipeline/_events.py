"""The events the state machine sends to the pipeline handlers."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from shipml.pipeline.models import PipelineError, Rollout, RunPlan, describe_validation_error


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def parse(cls, event: Any) -> Any:
        try:
            return cls.model_validate(event)
        except ValidationError as exc:
            raise PipelineError(f"invalid {cls.__name__} event: " + describe_validation_error(exc)) from None


class PrepareRunEvent(_Event):
    input: Any = None
    execution_name: str


class PlanEvent(_Event):
    plan: RunPlan


class RegisterEvent(_Event):
    plan: RunPlan
    model_uri: str


class VersionEvent(_Event):
    version: int


class RolloutEvent(_Event):
    rollout: Rollout
