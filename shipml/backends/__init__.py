"""Ports and adapters. `build_backends(settings)` wires the adapters the settings choose."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shipml.backends.ports import (
    LIVE,
    ApprovalStatus,
    BlobStore,
    CaptureSink,
    MetricsSink,
    ModelVersion,
    Notifier,
    OnlineStore,
    Registry,
)
from shipml.errors import ShipmlError
from shipml.settings import Settings


@dataclass(frozen=True)
class Backends:
    blobs: BlobStore
    registry: Registry
    online: OnlineStore
    capture: CaptureSink
    metrics: MetricsSink
    notifier: Notifier


def local_backends(root: str | Path) -> Backends:
    """Every port on the local filesystem under `root` (created on first use)."""
    from shipml.backends import local

    root = Path(root)
    blobs = local.FolderBlobStore(root / "blobs")
    return Backends(
        blobs=blobs,
        registry=local.SqliteRegistry(root / "registry.db", blobs, root / "cache" / "models"),
        online=local.SqliteOnlineStore(root / "online.db"),
        capture=local.ParquetCaptureSink(root / "capture"),
        metrics=local.JsonLinesMetricsSink(root / "metrics" / "metrics.jsonl"),
        notifier=local.LogNotifier(root / "notifications.jsonl"),
    )


def build_backends(settings: Settings) -> Backends:
    if settings.backend == "local":
        return local_backends(settings.root)
    raise ShipmlError("the aws backend adapters are not available yet; use SHIPML_BACKEND=local")


__all__ = [
    "LIVE",
    "ApprovalStatus",
    "Backends",
    "BlobStore",
    "CaptureSink",
    "MetricsSink",
    "ModelVersion",
    "Notifier",
    "OnlineStore",
    "Registry",
    "build_backends",
    "local_backends",
]
