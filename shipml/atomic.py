"""Atomic writes: a reader sees the old content or the new, never half of it.

Everything shipml writes to the local disk (artifacts, registry blobs, data files, reports) goes
through here: write into a temporary sibling, flush it, then rename it into place.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _sibling(path: Path, suffix: str = ".tmp") -> Path:
    # Same folder as the target: os.replace is atomic only within one file system. Not mkstemp:
    # its file is private (0600) and would stay so after the rename.
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}{suffix}")


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically (same-folder temporary file, fsync, rename)."""
    with atomic_path(path) as tmp, tmp.open("xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file path (not yet created) next to `path`; on success rename it into
    place, else remove it. For writers that want a file name (pyarrow's ParquetWriter, torch.save).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary folder next to `path`; on success rename it to `path`, else remove it.

    An existing `path` is an error unless `replace` is true (then the old folder is swapped out).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not replace:
        raise FileExistsError(f"{path} already exists")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / "x")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
