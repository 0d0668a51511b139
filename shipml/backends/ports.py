"""The ports: small interfaces that the runtime code talks to. Adapters live beside them.

| port          | local (default)        | aws (later)                           |
| ------------- | ---------------------- | ------------------------------------- |
| BlobStore     | a folder               | S3                                    |
| Registry      | SQLite + the BlobStore | SageMaker Model Registry + S3         |
| OnlineStore   | SQLite                 | DynamoDB                              |
| CaptureSink   | Parquet files          | Kinesis Data Firehose -> S3           |
| MetricsSink   | JSON Lines file        | CloudWatch (EMF)                      |
| Notifier      | the log + a file       | SNS                                   |
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from shipml.artifact import Artifact

LIVE = "live"


class BlobStore(abc.ABC):
    """Bytes under '/'-separated keys."""

    @abc.abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None: ...

    @abc.abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Raise `KeyError` if the key does not exist."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[str]: ...

    @abc.abstractmethod
    def uri(self, key: str) -> str:
        """Where the key lives, for people and for other services (file://, s3://)."""


class ApprovalStatus(StrEnum):
    # The names SageMaker Model Registry uses, so that both adapters speak the same language.
    pending = "PendingManualApproval"
    approved = "Approved"
    rejected = "Rejected"


class ModelVersion(BaseModel):
    model_config = ConfigDict(frozen=True, protected_namespaces=())

    model_name: str
    version: int
    status: ApprovalStatus
    artifact_uri: str
    digest: str
    created_at: datetime
    description: str = ""
    metrics: dict[str, Any] = {}
    aliases: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.model_name}:{self.version}"


class Registry(abc.ABC):
    """Model versions, their approval status, and aliases (`live`) pointing at approved versions."""

    @abc.abstractmethod
    def register(self, model_name: str, artifact_dir: Path, *, description: str = "") -> ModelVersion: ...

    @abc.abstractmethod
    def models(self) -> list[str]: ...

    @abc.abstractmethod
    def list_versions(self, model_name: str) -> list[ModelVersion]: ...

    @abc.abstractmethod
    def get_version(self, model_name: str, version: int) -> ModelVersion:
        """Raise `UnknownModelVersion` if there is no such version."""

    @abc.abstractmethod
    def set_status(self, model_name: str, version: int, status: ApprovalStatus) -> ModelVersion: ...

    @abc.abstractmethod
    def set_alias(self, model_name: str, alias: str, version: int) -> ModelVersion:
        """Point `alias` at an *approved* version; raise `RegistryError` otherwise."""

    @abc.abstractmethod
    def get_alias(self, model_name: str, alias: str) -> ModelVersion | None: ...

    @abc.abstractmethod
    def open_artifact(self, version: ModelVersion) -> Artifact:
        """Fetch, verify and open the artifact of a version (cached locally)."""

    @staticmethod
    def _open_cached(blobs: BlobStore, key: str, version: ModelVersion, cache_dir: Path) -> Artifact:
        """`open_artifact` for adapters that keep packed artifacts in a blob store: the copy
        unpacked under `cache_dir` when it is intact and has the registered digest, else the
        packed artifact fetched, unpacked there and checked against that digest."""
        from shipml import artifact as artifacts
        from shipml.errors import ArtifactError

        target = cache_dir / version.model_name / str(version.version)
        if target.is_dir():
            try:
                opened = artifacts.load_artifact(target)
                if opened.digest == version.digest:
                    return opened
            except ArtifactError:
                pass  # a damaged cache entry is replaced from the stored copy below
        try:
            packed = blobs.get_bytes(key)
        except KeyError:
            raise ArtifactError(f"{version.ref}: the artifact {blobs.uri(key)} is missing") from None
        opened = artifacts.unpack(packed, target)
        if opened.digest != version.digest:
            raise ArtifactError(
                f"{version.ref}: the stored artifact does not match the digest recorded at registration"
            )
        return opened

    def approve(self, model_name: str, version: int) -> ModelVersion:
        return self.set_status(model_name, version, ApprovalStatus.approved)

    def reject(self, model_name: str, version: int) -> ModelVersion:
        return self.set_status(model_name, version, ApprovalStatus.rejected)

    def resolve(self, model_name: str, ref: str | int) -> ModelVersion:
        """A version by number (`3`, `"3"`) or by alias (`"live"`)."""
        from shipml.errors import UnknownModelVersion

        if isinstance(ref, int) or str(ref).isdigit():
            return self.get_version(model_name, int(ref))
        found = self.get_alias(model_name, str(ref))
        if found is None:
            raise UnknownModelVersion(f"model {model_name!r} has no version with alias {ref!r}")
        return found


class OnlineStore(abc.ABC):
    """Latest feature values per entity, for low-latency lookups at serving time."""

    @abc.abstractmethod
    def get_many(self, group: str, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The items found (missing keys are absent from the result)."""

    @abc.abstractmethod
    def put_many(self, group: str, items: Mapping[str, Mapping[str, Any]]) -> int: ...

    def get(self, group: str, key: str) -> dict[str, Any] | None:
        return self.get_many(group, [key]).get(key)


class CaptureSink(abc.ABC):
    """Receives masked prediction records (inputs, outputs, model version) for monitoring."""

    @abc.abstractmethod
    def write(self, records: Sequence[Mapping[str, Any]]) -> None: ...

    def flush(self) -> None:  # noqa: B027 - optional hook, a no-op for unbuffered sinks
        """Make buffered records durable."""


class MetricsSink(abc.ABC):
    @abc.abstractmethod
    def put(
        self, name: str, value: float, *, unit: str = "None", dimensions: Mapping[str, str] | None = None
    ) -> None: ...


class Notifier(abc.ABC):
    @abc.abstractmethod
    def notify(self, subject: str, message: str, *, severity: str = "info") -> None: ...
