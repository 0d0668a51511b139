"""A serving app on the local backend with a live model, built once per module for the fuzzers."""

from __future__ import annotations

import pytest

from shipml.backends import LIVE, local_backends
from shipml.contract import Contract
from shipml.serving.app import ServingContext
from shipml.serving.factory import local_context
from shipml.settings import Settings
from tests.conftest import CONTRACT_PATH, artifact_for

KNOWN_CUSTOMER = "C00000042"


@pytest.fixture(scope="module")
def serving_context(contract: Contract, tmp_path_factory: pytest.TempPathFactory) -> ServingContext:
    """fraud:1 live in a fresh local root, one known customer in the online store."""
    folder = tmp_path_factory.mktemp("fuzz")
    settings = Settings(
        root=folder / "root",
        contract=CONTRACT_PATH,
        live_poll_seconds=3600,
        max_body_bytes=1_000_000,  # generated batches are large: let the
        # contract answer them (422), not the size limit (413, tested in test_serving_app.py)
    )
    backends = local_backends(settings.root)
    backends.registry.register(contract.model, artifact_for(CONTRACT_PATH, folder / "artifact"))
    backends.registry.approve(contract.model, 1)
    backends.registry.set_alias(contract.model, LIVE, 1)
    backends.online.put_many(
        contract.model,
        {KNOWN_CUSTOMER: {"txn_count_24h": 3, "mean_amount_30d": 80.0, "days_since_first_seen": 400}},
    )
    return local_context(settings, backends)
