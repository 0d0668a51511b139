"""BlobStore in a folder: keys map to files; writes are atomic."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from shipml import atomic
from shipml.backends.ports import BlobStore


class FolderBlobStore(BlobStore):
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        parts = PurePosixPath(key).parts
        if not parts or key.startswith("/") or any(p in ("..", ".") for p in parts):
            raise ValueError(f"invalid blob key {key!r}")
        return self.root.joinpath(*parts)

    def put_bytes(self, key: str, data: bytes) -> None:
        atomic.write_bytes(self._path(key), data)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        if not self.root.exists():
            return []
        keys = (p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())
        return sorted(k for k in keys if k.startswith(prefix) and not PurePosixPath(k).name.startswith("."))

    def uri(self, key: str) -> str:
        return self._path(key).resolve().as_uri()
