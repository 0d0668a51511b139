"""OnlineStore in SQLite: one row per (feature group, entity key), the values as JSON."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shipml.backends.ports import OnlineStore

_BATCH = 500  # SQLite's bound-parameter limit is well above this


class SqliteOnlineStore(OnlineStore):
    def __init__(self, db_path: str | Path) -> None:
        self.db_path = Path(db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        db = self._db()
        db.execute(
            "CREATE TABLE IF NOT EXISTS features (grp TEXT NOT NULL, entity TEXT NOT NULL, "
            "item TEXT NOT NULL, PRIMARY KEY (grp, entity))"
        )
        db.commit()

    def _db(self) -> sqlite3.Connection:
        # One connection per thread: serving looks features up from a thread pool.
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.db_path, timeout=5)
            db.execute("PRAGMA journal_mode = WAL")
            self._local.db = db
        return db

    def get_many(self, group: str, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        unique = list(dict.fromkeys(str(k) for k in keys))
        db = self._db()
        if len(unique) == 1:  # a real-time request: one statement SQLite keeps prepared
            row = db.execute(
                "SELECT item FROM features WHERE grp = ? AND entity = ?", (group, unique[0])
            ).fetchone()
            return {unique[0]: json.loads(row[0])} if row else {}
        for start in range(0, len(unique), _BATCH):
            chunk = unique[start : start + _BATCH]
            marks = ",".join("?" * len(chunk))
            rows = db.execute(
                f"SELECT entity, item FROM features WHERE grp = ? AND entity IN ({marks})", (group, *chunk)
            )
            found.update({entity: json.loads(item) for entity, item in rows})
        return found

    def put_many(self, group: str, items: Mapping[str, Mapping[str, Any]]) -> int:
        db = self._db()
        with db:
            db.executemany(
                "INSERT INTO features VALUES (?, ?, ?) "
                "ON CONFLICT (grp, entity) DO UPDATE SET item = excluded.item",
                ((group, str(key), json.dumps(dict(value), default=str)) for key, value in items.items()),
            )
        return len(items)
