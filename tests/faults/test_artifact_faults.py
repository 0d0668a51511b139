"""A corrupt artifact: refused, and the previous model keeps serving.

Documented behaviour (shipml/serving/models.py, ModelHolder): a new version is loaded and verified
completely (every SHA-256 in the manifest, the digest recorded at registration) before one
reference is swapped; a version that fails is refused, the previous one keeps serving, and /health
says what was refused. With no previous model, the app answers 503. Every answer is captured.
"""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import pytest

from tests.faults.conftest import World, captured_rows


def _blob(world: World, version: int) -> Path:
    return world.root / "blobs" / "models" / "fraud" / str(version) / "model.tar.gz"


def _cache(world: World, version: int) -> Path:
    return world.root / "cache" / "models" / "fraud" / str(version)


def _tampered_model(packed: bytes) -> bytes:
    """The same archive with one byte of model.onnx changed (the manifest left as it was)."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(packed), mode="r:gz") as source,
        tarfile.open(fileobj=out, mode="w:gz") as target,
    ):
        for member in source.getmembers():
            data = source.extractfile(member).read()
            if member.name == "model.onnx":
                data = data[:-1] + bytes([data[-1] ^ 0xFF])
            member.size = len(data)
            target.addfile(member, io.BytesIO(data))
    return out.getvalue()


CORRUPTIONS = {
    "tampered_model": _tampered_model,
    "truncated_archive": lambda packed: packed[: len(packed) // 2],
    "not_an_archive": lambda packed: b"\x00" * 512,
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_a_corrupt_new_version_is_refused_and_the_previous_keeps_serving(
    world: World, request_body, make_artifact, corruption: str
) -> None:
    context = world.context()
    with world.client(context) as client:
        before = client.post("/predict", json=request_body())
        version = world.promote(make_artifact(seed=2))  # registered intact, then damaged at rest
        shutil.rmtree(_cache(world, version), ignore_errors=True)
        blob = _blob(world, version)
        blob.write_bytes(CORRUPTIONS[corruption](blob.read_bytes()))

        swapped = context.holder.refresh(force=True)
        after = [client.post("/predict", json=request_body()) for _ in range(3)]
        health = client.get("/health").json()

    assert swapped is False
    assert before.json()["model_version"] == "fraud:1"
    assert [a.status_code for a in after] == [200] * 3
    assert {a.json()["model_version"] for a in after} == {"fraud:1"}
    assert health["model_version"] == "fraud:1" and health["model_loaded"] is True
    assert health["model_error"].startswith("fraud:2 refused")
    rows = captured_rows(world.root)
    assert len(rows) == 4 and {r["model_version"] for r in rows} == {"fraud:1"}


def test_a_damaged_cache_is_replaced_from_the_registry_copy_and_the_new_version_serves(
    world: World, request_body, make_artifact
) -> None:
    context = world.context()
    version = world.promote(make_artifact(seed=2))
    world.backends.registry.open_artifact(world.backends.registry.get_version("fraud", version))
    model = _cache(world, version) / "model.onnx"
    model.write_bytes(model.read_bytes()[:100])  # the local copy damaged, the registry's intact

    with world.client(context) as client:
        context.holder.refresh(force=True)
        answer = client.post("/predict", json=request_body())

    assert answer.json()["model_version"] == "fraud:2"
    assert len(captured_rows(world.root)) == 1


def test_a_corrupt_artifact_at_cold_start_answers_503_and_captures_nothing(
    world: World, request_body
) -> None:
    blob = _blob(world, 1)
    blob.write_bytes(_tampered_model(blob.read_bytes()))
    shutil.rmtree(_cache(world, 1), ignore_errors=True)

    with world.client(world.context()) as client:
        refused = client.post("/predict", json=request_body())
        ping = client.get("/ping")
        health = client.get("/health").json()

    assert refused.status_code == 503 and ping.status_code == 503
    assert health["model_loaded"] is False and health["model_error"].startswith("fraud:1 refused")
    assert captured_rows(world.root) == []
