"""Which model a process serves, and swapping it without a request ever seeing half of one.

A `ModelSource` answers "which version should be live now?" and opens that version's verified
artifact. `ModelHolder` keeps the current `Predictor` as one immutable reference: a new version
is loaded completely (checksums verified, onnxruntime session built) before the reference is
swapped, so a request uses either the old predictor or the new one. If the new artifact is
corrupt, the previous version keeps serving and the error is reported by /health.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from shipml.artifact import Artifact, artifact_key, unpack
from shipml.backends.ports import LIVE, BlobStore, OnlineStore, Registry
from shipml.contract import Contract
from shipml.errors import ArtifactError, UnknownModelVersion
from shipml.predict import Predictor

log = logging.getLogger("shipml.serving")

NO_MODEL = "0"  # the aws live parameter's value before the first deploy


class ModelSource(Protocol):
    def resolve(self) -> str | None:
        """The version that should serve now ("fraud:3"), or None when there is none yet."""

    def open(self, ref: str) -> Artifact:
        """The verified artifact of that version."""


class RegistryModelSource:
    """Local host: a pinned version number, or the registry's `live` alias."""

    def __init__(self, registry: Registry, model: str, version: str = LIVE) -> None:
        self.registry = registry
        self.model = model
        self.version = version

    def resolve(self) -> str | None:
        try:
            return self.registry.resolve(self.model, self.version).ref
        except UnknownModelVersion:
            return None

    def open(self, ref: str) -> Artifact:
        number = int(ref.rsplit(":", 1)[1])
        return self.registry.open_artifact(self.registry.get_version(self.model, number))


class PinnedBlobModelSource:
    """Lambda: the version is pinned by configuration (each published Lambda version pins one);
    the artifact is fetched from the blob store (S3) and unpacked into a local cache folder."""

    def __init__(self, blobs: BlobStore, model: str, version: str, cache_dir: Path) -> None:
        self.blobs = blobs
        self.model = model
        self.version = version
        self.cache_dir = cache_dir

    def resolve(self) -> str | None:
        return None if self.version == NO_MODEL else f"{self.model}:{self.version}"

    def open(self, ref: str) -> Artifact:
        version = ref.rsplit(":", 1)[1]
        key = artifact_key(self.model, version)
        try:
            data = self.blobs.get_bytes(key)
        except KeyError:
            raise ArtifactError(f"{ref}: no artifact at {self.blobs.uri(key)}") from None
        return unpack(data, self.cache_dir / self.model / version)


@dataclass(frozen=True)
class ModelStatus:
    version: str | None
    loaded: bool
    error: str | None
    loaded_at: float | None


class ModelHolder:
    """The predictor a process serves now, refreshed from a `ModelSource` at most every N seconds."""

    def __init__(
        self,
        source: ModelSource,
        contract: Contract,
        *,
        online: OnlineStore | None,
        http_sources: Mapping[str, Any] | None = None,
        poll_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.contract = contract
        self.online = online
        self.http_sources = http_sources
        self.poll_seconds = poll_seconds
        self._clock = clock
        self._predictor: Predictor | None = None
        self._error: str | None = None
        self._loaded_at: float | None = None
        self._checked_at = float("-inf")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def predictor(self) -> Predictor | None:
        """The current predictor: one reference read, so a request never sees a half-swapped model."""
        return self._predictor

    def status(self) -> ModelStatus:
        current = self._predictor
        return ModelStatus(
            version=current.model_version if current else None,
            loaded=current is not None,
            error=self._error,
            loaded_at=self._loaded_at,
        )

    def refresh(self, *, force: bool = False) -> bool:
        """Load the version the source names if it changed; return whether the model was swapped."""
        with self._lock:
            now = self._clock()
            if not force and now - self._checked_at < self.poll_seconds:
                return False
            self._checked_at = now
            try:
                ref = self.source.resolve()
            except Exception as exc:  # noqa: BLE001 - an unreachable registry must not take the host down
                self._error = f"cannot resolve the model version: {exc}"
                return False
            current = self._predictor
            if ref is None or (current is not None and current.model_version == ref):
                if ref is None and current is None:
                    self._error = "no model version is deployed yet"
                return False
            try:
                artifact = self.source.open(ref)
                if artifact.contract != self.contract:
                    raise ArtifactError(f"{ref} was trained on a different contract than this app serves")
                predictor = Predictor(
                    artifact, model_version=ref, online=self.online, http_sources=self.http_sources
                )
            except Exception as exc:  # noqa: BLE001 - the same for a registry that fails mid-download
                # Refused: the previous version (if any) keeps serving.
                self._error = f"{ref} refused: {exc}"
                log.error("model %s refused; keeping %s: %s", ref, current and current.model_version, exc)
                return False
            self._predictor = predictor  # the atomic swap
            self._error = None
            self._loaded_at = time.time()
            log.info("serving %s (was %s)", ref, current and current.model_version)
            return True

    def start_polling(self) -> None:
        """Follow the source in a background thread (the local server following `live`)."""
        if self._thread is not None:
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(self.poll_seconds):
                self.refresh(force=True)

        self._thread = threading.Thread(target=loop, name="shipml-model-poll", daemon=True)
        self._thread.start()

    def stop_polling(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
