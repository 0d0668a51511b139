"""Registry in SQLite, with artifacts packed into the BlobStore.

One row per version; the version number is allocated inside a write transaction, so two
concurrent registrations never get the same number. Aliases are rows of their own and may point
only at approved versions. Opening a version unpacks its archive into a cache folder once and
checks the manifest digest against the one recorded at registration.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from shipml import artifact as artifacts
from shipml.artifact import Artifact
from shipml.backends.ports import LIVE, ApprovalStatus, BlobStore, ModelVersion, Registry
from shipml.errors import RegistryError, UnknownModelVersion

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    model_name  TEXT NOT NULL,
    version     INTEGER NOT NULL,
    status      TEXT NOT NULL,
    artifact_key TEXT NOT NULL,
    digest      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    metrics     TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (model_name, version)
);
CREATE TABLE IF NOT EXISTS aliases (
    model_name TEXT NOT NULL,
    alias      TEXT NOT NULL,
    version    INTEGER NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (model_name, alias),
    FOREIGN KEY (model_name, version) REFERENCES versions (model_name, version)
);
"""


def _summary(metrics: dict) -> dict:
    """The headline numbers kept in the registry row (the full metrics stay in the card)."""
    overall = metrics.get("overall", {})
    return {k: overall.get(k) for k in ("auc", "log_loss", "precision", "recall", "rows") if k in overall}


class SqliteRegistry(Registry):
    def __init__(self, db_path: str | Path, blobs: BlobStore, cache_dir: str | Path) -> None:
        self.db_path = Path(db_path)
        self.blobs = blobs
        self.cache_dir = Path(cache_dir)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.db_path, timeout=30)
        try:
            db.executescript(_SCHEMA)  # executescript manages its own transaction
        finally:
            db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        finally:
            db.close()

    def _row_to_version(self, db: sqlite3.Connection, row: sqlite3.Row) -> ModelVersion:
        aliases = tuple(
            r["alias"]
            for r in db.execute(
                "SELECT alias FROM aliases WHERE model_name = ? AND version = ? ORDER BY alias",
                (row["model_name"], row["version"]),
            )
        )
        return ModelVersion(
            model_name=row["model_name"],
            version=row["version"],
            status=ApprovalStatus(row["status"]),
            artifact_uri=self.blobs.uri(row["artifact_key"]),
            digest=row["digest"],
            created_at=datetime.fromisoformat(row["created_at"]),
            description=row["description"],
            metrics=json.loads(row["metrics"]),
            aliases=aliases,
        )

    def _fetch(self, db: sqlite3.Connection, model_name: str, version: int) -> sqlite3.Row:
        row = db.execute(
            "SELECT * FROM versions WHERE model_name = ? AND version = ?", (model_name, version)
        ).fetchone()
        if row is None:
            known = [
                r[0] for r in db.execute("SELECT version FROM versions WHERE model_name = ?", (model_name,))
            ]
            hint = f"known versions: {known}" if known else "it has no registered versions"
            raise UnknownModelVersion(f"model {model_name!r} has no version {version} ({hint})")
        return row

    def register(self, model_name: str, artifact_dir: Path, *, description: str = "") -> ModelVersion:
        loaded = artifacts.load_artifact(artifact_dir)
        if loaded.card.model_name != model_name:
            raise RegistryError(
                f"the artifact at {artifact_dir} is a {loaded.card.model_name!r} model, not {model_name!r}"
            )
        packed = artifacts.pack(artifact_dir)
        with self._tx() as db:
            (latest,) = db.execute(
                "SELECT COALESCE(MAX(version), 0) FROM versions WHERE model_name = ?", (model_name,)
            ).fetchone()
            version = latest + 1
            key = artifacts.artifact_key(model_name, version)
            # The blob is written inside the transaction: if it fails, no row points at nothing.
            self.blobs.put_bytes(key, packed)
            db.execute(
                "INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    model_name,
                    version,
                    ApprovalStatus.pending.value,
                    key,
                    loaded.digest,
                    datetime.now(UTC).isoformat(),
                    description,
                    json.dumps(_summary(loaded.card.metrics)),
                ),
            )
            return self._row_to_version(db, self._fetch(db, model_name, version))

    def models(self) -> list[str]:
        with self._tx() as db:
            return [r[0] for r in db.execute("SELECT DISTINCT model_name FROM versions ORDER BY model_name")]

    def list_versions(self, model_name: str) -> list[ModelVersion]:
        with self._tx() as db:
            rows = db.execute("SELECT * FROM versions WHERE model_name = ? ORDER BY version", (model_name,))
            return [self._row_to_version(db, r) for r in rows.fetchall()]

    def get_version(self, model_name: str, version: int) -> ModelVersion:
        with self._tx() as db:
            return self._row_to_version(db, self._fetch(db, model_name, version))

    def set_status(self, model_name: str, version: int, status: ApprovalStatus) -> ModelVersion:
        with self._tx() as db:
            self._fetch(db, model_name, version)
            if status != ApprovalStatus.approved:
                aliases = [
                    r[0]
                    for r in db.execute(
                        "SELECT alias FROM aliases WHERE model_name = ? AND version = ?",
                        (model_name, version),
                    )
                ]
                if aliases:
                    raise RegistryError(
                        f"{model_name}:{version} is aliased as {aliases}; point the alias elsewhere first"
                    )
            db.execute(
                "UPDATE versions SET status = ? WHERE model_name = ? AND version = ?",
                (status.value, model_name, version),
            )
            return self._row_to_version(db, self._fetch(db, model_name, version))

    def set_alias(self, model_name: str, alias: str, version: int) -> ModelVersion:
        with self._tx() as db:
            row = self._fetch(db, model_name, version)
            if row["status"] != ApprovalStatus.approved.value:
                raise RegistryError(
                    f"{model_name}:{version} is {row['status']}; only an Approved version can be {alias!r}"
                )
            db.execute(
                "INSERT INTO aliases VALUES (?, ?, ?, ?) "
                "ON CONFLICT (model_name, alias) DO UPDATE SET version = excluded.version, "
                "updated_at = excluded.updated_at",
                (model_name, alias, version, datetime.now(UTC).isoformat()),
            )
            return self._row_to_version(db, row)

    def get_alias(self, model_name: str, alias: str = LIVE) -> ModelVersion | None:
        with self._tx() as db:
            found = db.execute(
                "SELECT version FROM aliases WHERE model_name = ? AND alias = ?", (model_name, alias)
            ).fetchone()
            if found is None:
                return None
            return self._row_to_version(db, self._fetch(db, model_name, found[0]))

    def open_artifact(self, version: ModelVersion) -> Artifact:
        with self._tx() as db:
            key = self._fetch(db, version.model_name, version.version)["artifact_key"]
        return self._open_cached(self.blobs, key, version, self.cache_dir)
