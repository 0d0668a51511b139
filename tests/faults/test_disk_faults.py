"""A full disk locally (ENOSPC): nothing half-written is left, no record is lost.

Documented behaviour (shipml/atomic.py): every local write goes to a temporary sibling that is
renamed into place only when complete, and removed on failure; a reader sees the old content or
the new, never half. Capture (shipml/backends/local/sinks.py) keeps its buffer when a part cannot
be written, so the records go out with the next flush once there is space again.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from shipml import atomic
from shipml.backends.local import ParquetCaptureSink
from tests.faults.conftest import World, captured_rows


class FullDisk:
    """Makes the chosen writer fail with ENOSPC after writing part of its bytes, until `free()`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.failures = 0

    def _enospc(self) -> OSError:
        self.failures += 1
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def parquet(self) -> None:
        import pyarrow.parquet as pq

        def write_table(table, where, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003 - pq's signature
            Path(where).write_bytes(b"PAR1" + b"\x00" * 100)  # a half-written part...
            raise self._enospc()  # ...then the disk is full

        self.monkeypatch.setattr(pq, "write_table", write_table)

    def fsync(self) -> None:
        def fsync(fd: int) -> None:
            raise self._enospc()  # the data did not reach the disk

        self.monkeypatch.setattr(os, "fsync", fsync)

    def free(self) -> None:
        self.monkeypatch.undo()


def _all_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_capture_on_a_full_disk_leaves_no_half_part_and_writes_every_record_once_space_is_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = ParquetCaptureSink(tmp_path / "capture", buffer_rows=1000)
    sink.write([{"request_id": f"r{i}", "score": i / 10} for i in range(5)])
    disk = FullDisk(monkeypatch)
    disk.parquet()

    with pytest.raises(OSError, match="No space left"):
        sink.flush()
    assert disk.failures == 1
    assert _all_files(tmp_path / "capture") == []  # not even the hidden temporary part

    disk.free()
    sink.write([{"request_id": "r5", "score": 0.5}])
    sink.flush()
    rows = captured_rows(tmp_path)
    assert sorted(r["request_id"] for r in rows) == [f"r{i}" for i in range(6)]


def test_a_full_disk_on_the_request_path_still_answers_and_capture_catches_up(
    world: World, request_body, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = ParquetCaptureSink(world.root / "capture", buffer_rows=2)
    disk = FullDisk(monkeypatch)
    with world.client(world.context(capture=sink)) as client:
        disk.parquet()
        during = [client.post("/predict", json=request_body(transaction_id=f"T{i}")) for i in range(4)]
        disk.free()
        after = client.post("/predict", json=request_body(transaction_id="T4"))

    assert [a.status_code for a in during] == [200] * 4 and after.status_code == 200
    assert sorted(r["transaction_id"] for r in captured_rows(world.root)) == [f"T{i}" for i in range(5)]


def test_an_atomic_write_on_a_full_disk_keeps_the_old_content_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "reports" / "drift.json"
    atomic.write_text(target, '{"old": true}')
    disk = FullDisk(monkeypatch)
    disk.fsync()

    with pytest.raises(OSError, match="No space left"):
        atomic.write_text(target, '{"new": true, "padding": "' + "x" * 10_000 + '"}')

    disk.free()
    assert target.read_text() == '{"old": true}'
    assert _all_files(tmp_path) == [target]


def test_registering_on_a_full_disk_records_no_version_and_leaves_no_blob(
    world: World, make_artifact, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shipml.backends import LIVE

    artifact = make_artifact(seed=2)
    blobs_before = _all_files(world.root / "blobs")
    disk = FullDisk(monkeypatch)
    disk.fsync()

    with pytest.raises(OSError, match="No space left"):
        world.backends.registry.register("fraud", artifact)

    disk.free()
    registry = world.backends.registry
    assert [v.version for v in registry.list_versions("fraud")] == [1]
    assert registry.get_alias("fraud", LIVE).version == 1
    assert _all_files(world.root / "blobs") == blobs_before
    assert registry.register("fraud", artifact).version == 2  # and it works once there is space


def test_writing_an_artifact_on_a_full_disk_leaves_no_folder(
    tmp_path: Path, make_artifact, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write_bytes = Path.write_bytes

    def write_bytes(self: Path, data: bytes) -> int:
        if self.name == "model.onnx":
            real_write_bytes(self, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    target = tmp_path / "artifacts" / "model-2"
    with pytest.raises(OSError, match="No space left"):
        make_artifact(dest=target)

    assert not target.exists()
    assert list((tmp_path / "artifacts").iterdir()) == []  # no half folder, no hidden temporary
