"""The registry unreachable at cold start, and while serving.

Documented behaviour (shipml/serving/models.py): a version that cannot be resolved or opened
leaves the holder without a model (503 with retry-after, the reason in /health) or with the one it
had; the holder tries again at the next refresh and serves as soon as the registry answers.

That holds for an unreachable registry too (`sqlite3.OperationalError` locally, botocore errors
on SageMaker/S3): `ModelHolder.refresh` keeps the current predictor, records the reason and logs
it, so `local_context` starts without a model and the poll thread keeps following `live`. The
tests below pin that.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from shipml.artifact import Artifact
from shipml.backends.ports import ModelVersion, Registry
from shipml.errors import RegistryError
from tests.faults.conftest import World, captured_rows


class UnreachableRegistry(Registry):
    """A registry in front of the real one that can be switched off, failing as SQLite does."""

    def __init__(self, inner: Registry, error: Exception) -> None:
        self.inner = inner
        self.error = error
        self.down = True
        self.calls = 0

    def _check(self) -> None:
        self.calls += 1
        if self.down:
            raise self.error

    def register(self, model_name: str, artifact_dir: Path, *, description: str = "") -> ModelVersion:
        self._check()
        return self.inner.register(model_name, artifact_dir, description=description)

    def models(self) -> list[str]:
        self._check()
        return self.inner.models()

    def list_versions(self, model_name: str) -> list[ModelVersion]:
        self._check()
        return self.inner.list_versions(model_name)

    def get_version(self, model_name: str, version: int) -> ModelVersion:
        self._check()
        return self.inner.get_version(model_name, version)

    def set_status(self, model_name, version, status) -> ModelVersion:  # noqa: ANN001 - the port's signature
        self._check()
        return self.inner.set_status(model_name, version, status)

    def set_alias(self, model_name: str, alias: str, version: int) -> ModelVersion:
        self._check()
        return self.inner.set_alias(model_name, alias, version)

    def get_alias(self, model_name: str, alias: str) -> ModelVersion | None:
        self._check()
        return self.inner.get_alias(model_name, alias)

    def open_artifact(self, version: ModelVersion) -> Artifact:
        self._check()
        return self.inner.open_artifact(version)


def _cold_start_then_recover(world: World, registry: UnreachableRegistry, request_body) -> None:
    context = world.context(registry=registry)  # the registry is down at cold start
    with world.client(context) as client:
        refused = client.post("/predict", json=request_body())
        health = client.get("/health")
        registry.down = False
        context.holder.refresh(force=True)  # what the poller does every --poll seconds
        served = client.post("/predict", json=request_body())

    assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
    assert health.status_code == 503 and health.json()["model_loaded"] is False
    assert "cannot resolve the model version" in health.json()["model_error"]
    assert served.status_code == 200 and served.json()["model_version"] == "fraud:1"
    assert len(captured_rows(world.root)) == 1  # the one answer; the refusal captured nothing


def test_a_registry_refusing_at_cold_start_answers_503_then_serves_when_it_is_back(
    world: World, request_body
) -> None:
    registry = UnreachableRegistry(world.backends.registry, RegistryError("the registry refused: throttled"))
    _cold_start_then_recover(world, registry, request_body)


def test_a_registry_unreachable_at_cold_start_answers_503_then_serves_when_it_is_back(
    world: World, request_body
) -> None:
    registry = UnreachableRegistry(
        world.backends.registry, sqlite3.OperationalError("unable to open database file")
    )
    _cold_start_then_recover(world, registry, request_body)


def test_a_registry_outage_while_serving_keeps_the_model_and_the_poller_alive(
    world: World, request_body, make_artifact
) -> None:
    registry = UnreachableRegistry(world.backends.registry, sqlite3.OperationalError("database is locked"))
    registry.down = False
    context = world.context(registry=registry)
    with world.client(context) as client:
        assert client.post("/predict", json=request_body()).json()["model_version"] == "fraud:1"
        registry.down = True
        context.holder.refresh(force=True)  # the poller's call, during the outage
        during = client.post("/predict", json=request_body())
        registry.down = False
        world.promote(make_artifact(seed=2))
        context.holder.refresh(force=True)
        after = client.post("/predict", json=request_body())

    assert during.status_code == 200 and during.json()["model_version"] == "fraud:1"
    assert after.json()["model_version"] == "fraud:2"
    assert len(captured_rows(world.root)) == 3
