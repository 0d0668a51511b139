"""A local serving world for the fault tests: fraud:1 live, an app, and capture to count.

"Count in = count out": every record answered with a prediction must be in capture, once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from shipml.backends import LIVE, Backends, local_backends
from shipml.serving.app import ServingContext, create_app
from shipml.serving.factory import local_context
from shipml.settings import Settings

KNOWN_CUSTOMER = "C00000042"
ONLINE_FEATURES = ["txn_count_24h", "mean_amount_30d", "days_since_first_seen"]


def captured_rows(root: Path) -> list[dict]:
    """Every record under <root>/capture (flush the sink first)."""
    import pyarrow.parquet as pq

    rows: list[dict] = []
    for part in sorted((Path(root) / "capture").rglob("*.parquet")):
        rows.extend(pq.read_table(part).to_pylist())
    return rows


@dataclasses.dataclass
class World:
    settings: Settings
    backends: Backends

    @property
    def root(self) -> Path:
        return self.settings.root

    def context(self, **backends_changes) -> ServingContext:
        """The serving context of the local host, with some ports swapped for fakes."""
        return local_context(self.settings, dataclasses.replace(self.backends, **backends_changes))

    def client(self, context: ServingContext) -> TestClient:
        return TestClient(create_app(context), raise_server_exceptions=False)

    def promote(self, artifact_dir: Path) -> int:
        registry = self.backends.registry
        version = registry.register("fraud", artifact_dir).version
        registry.approve("fraud", version)
        registry.set_alias("fraud", LIVE, version)
        return version


@pytest.fixture
def world(tmp_path: Path, contract_path: Path, make_artifact: Callable[..., Path]) -> World:
    settings = Settings(root=tmp_path / "root", contract=contract_path, live_poll_seconds=0.01)
    backends = local_backends(settings.root)
    world = World(settings, backends)
    world.promote(make_artifact(seed=1))
    backends.online.put_many(
        "fraud", {KNOWN_CUSTOMER: {"txn_count_24h": 3, "mean_amount_30d": 80.0, "days_since_first_seen": 400}}
    )
    return world
