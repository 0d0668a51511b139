"""Register: add the trained artifact to the registry as a new version, approved if so configured."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from functions.pipeline._events import RegisterEvent
from shipml import artifact as artifacts
from shipml.pipeline.environment import PipelineEnvironment
from shipml.pipeline.steps import describe_run, register


def handler(event: dict[str, Any], context: Any, env: PipelineEnvironment | None = None) -> dict[str, Any]:
    env = env or PipelineEnvironment.from_env()
    parsed = RegisterEvent.parse(event)
    with tempfile.TemporaryDirectory(prefix="shipml-register-", dir=env.workdir()) as tmp:
        unpacked = artifacts.unpack(env.storage().read_bytes(parsed.model_uri), Path(tmp) / "artifact")
        registered = register(
            env.registry(),
            env.settings.model,
            unpacked.path,
            description=describe_run(parsed.plan),
            auto_approve=env.auto_approve,
        )
    return registered.model_dump(mode="json")
