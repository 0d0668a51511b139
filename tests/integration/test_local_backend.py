"""The local adapters: registry versions, approval and the live alias; blob store; online store."""

from __future__ import annotations

import threading

import pytest

from shipml.backends import LIVE, ApprovalStatus, local_backends
from shipml.errors import ArtifactError, RegistryError, UnknownModelVersion


@pytest.fixture
def backends(tmp_path):
    return local_backends(tmp_path / "root")


def test_versions_are_numbered_and_start_pending(backends, make_artifact):
    registry = backends.registry
    first = registry.register("fraud", make_artifact(auc=0.81), description="first")
    second = registry.register("fraud", make_artifact(auc=0.85))
    assert (first.version, second.version) == (1, 2)
    assert first.status == ApprovalStatus.pending
    assert first.metrics["auc"] == 0.81 and first.description == "first"
    assert [v.version for v in registry.list_versions("fraud")] == [1, 2]
    assert registry.models() == ["fraud"]
    assert first.artifact_uri.startswith("file://") and first.artifact_uri.endswith(
        "models/fraud/1/model.tar.gz"
    )


def test_only_an_approved_version_can_go_live(backends, make_artifact):
    registry = backends.registry
    registry.register("fraud", make_artifact())
    with pytest.raises(RegistryError, match="PendingManualApproval; only an Approved version can be 'live'"):
        registry.set_alias("fraud", LIVE, 1)
    assert registry.get_alias("fraud", LIVE) is None
    registry.approve("fraud", 1)
    live = registry.set_alias("fraud", LIVE, 1)
    assert live.aliases == (LIVE,)
    assert registry.resolve("fraud", "live").version == 1


def test_alias_moves_and_a_live_version_cannot_be_rejected(backends, make_artifact):
    registry = backends.registry
    for seed in (1, 2):
        registry.register("fraud", make_artifact(seed=seed))
        registry.approve("fraud", seed)
    registry.set_alias("fraud", LIVE, 1)
    with pytest.raises(RegistryError, match="aliased as"):
        registry.reject("fraud", 1)
    registry.set_alias("fraud", LIVE, 2)
    assert registry.get_version("fraud", 1).aliases == ()
    assert registry.reject("fraud", 1).status == ApprovalStatus.rejected


def test_unknown_versions_and_aliases_are_clear_errors(backends, make_artifact):
    registry = backends.registry
    with pytest.raises(UnknownModelVersion, match="has no registered versions"):
        registry.get_version("fraud", 1)
    registry.register("fraud", make_artifact())
    with pytest.raises(UnknownModelVersion, match=r"no version 7 \(known versions: \[1\]\)"):
        registry.approve("fraud", 7)
    with pytest.raises(UnknownModelVersion, match="no version with alias 'live'"):
        registry.resolve("fraud", "live")


def test_registering_a_tampered_artifact_is_refused(backends, make_artifact):
    path = make_artifact()
    (path / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        backends.registry.register("fraud", path)
    assert backends.registry.list_versions("fraud") == []


def test_registering_under_another_name_is_refused(backends, make_artifact):
    with pytest.raises(RegistryError, match="is a 'fraud' model, not 'churn'"):
        backends.registry.register("churn", make_artifact())


def test_open_artifact_verifies_and_caches(backends, make_artifact):
    registry = backends.registry
    version = registry.register("fraud", make_artifact())
    opened = registry.open_artifact(version)
    assert opened.digest == version.digest
    # A damaged cache entry is replaced from the stored archive.
    (opened.path / "model.onnx").write_bytes(b"garbage")
    assert registry.open_artifact(version).digest == version.digest


def test_a_corrupt_stored_archive_is_refused(backends, make_artifact):
    version = backends.registry.register("fraud", make_artifact())
    backends.blobs.put_bytes("models/fraud/1/model.tar.gz", b"corrupt")
    with pytest.raises(ArtifactError, match="cannot be read"):
        backends.registry.open_artifact(version)


def test_concurrent_registrations_get_distinct_versions(backends, make_artifact):
    paths = [make_artifact(seed=i) for i in range(6)]
    results = []

    def register(path):
        results.append(backends.registry.register("fraud", path).version)

    threads = [threading.Thread(target=register, args=(p,)) for p in paths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [1, 2, 3, 4, 5, 6]


def test_blob_store_keys(backends):
    blobs = backends.blobs
    blobs.put_bytes("a/b/c.txt", b"hello")
    assert blobs.get_bytes("a/b/c.txt") == b"hello" and blobs.exists("a/b/c.txt")
    assert blobs.list("a/") == ["a/b/c.txt"]
    with pytest.raises(KeyError):
        blobs.get_bytes("a/missing")
    for bad in ("../escape", "/abs", "a/../b", ""):
        with pytest.raises(ValueError, match="invalid blob key"):
            blobs.put_bytes(bad, b"x")


def test_online_store_round_trip(backends):
    online = backends.online
    written = online.put_many("fraud", {"C1": {"txn_count_24h": 3}, "C2": {"txn_count_24h": 5}})
    assert written == 2
    online.put_many("fraud", {"C1": {"txn_count_24h": 4}})
    assert online.get_many("fraud", ["C1", "C2", "C3"]) == {
        "C1": {"txn_count_24h": 4},
        "C2": {"txn_count_24h": 5},
    }
    assert online.get("other_group", "C1") is None
    many = {f"K{i}": {"v": i} for i in range(1_200)}
    online.put_many("big", many)
    assert len(online.get_many("big", list(many))) == 1_200


def test_capture_metrics_and_notifications_are_readable_files(backends, tmp_path):
    import pyarrow.parquet as pq

    backends.capture.write([{"id": "T1", "score": 0.1}, {"id": "T2", "score": 0.9}])
    backends.capture.flush()
    parts = list((tmp_path / "root" / "capture").rglob("*.parquet"))
    assert len(parts) == 1 and pq.read_table(parts[0]).num_rows == 2
    backends.metrics.put("Latency", 3.5, unit="Milliseconds", dimensions={"model": "fraud"})
    backends.metrics.flush()
    assert '"name": "Latency"' in (tmp_path / "root" / "metrics" / "metrics.jsonl").read_text()
    backends.notifier.notify("promoted", "fraud:1 is live")
    assert "fraud:1 is live" in (tmp_path / "root" / "notifications.jsonl").read_text()
