"""Reading data files, and fingerprinting them for the model card.

pyarrow is imported inside the functions: serving imports `shipml` but never reads data files.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from shipml.errors import DataError

if TYPE_CHECKING:
    import pyarrow as pa

DATA_SUFFIXES = (".parquet", ".csv", ".jsonl", ".json")


def data_files(path: str | Path) -> list[Path]:
    """The data files at `path`: the file itself, or the data files of a folder, sorted."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in DATA_SUFFIXES)
        if files:
            return files
        raise DataError(f"{path}: no data files ({', '.join(DATA_SUFFIXES)}) in this folder")
    raise DataError(f"{path}: no such file or folder")


def read_table(path: str | Path) -> pa.Table:
    """Read a Parquet, CSV or JSON Lines file, or a folder of them, into one Arrow table."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    tables = []
    for file in data_files(path):
        try:
            if file.suffix == ".parquet":
                tables.append(pq.read_table(file))
            elif file.suffix == ".csv":
                tables.append(pacsv.read_csv(file))
            else:
                tables.append(pajson.read_json(file))
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{file}: cannot read it as {file.suffix[1:]}: {exc}") from None
    try:
        return pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    except pa.ArrowException as exc:
        raise DataError(f"{path}: the files do not share one schema: {exc}") from None


def fingerprint(path: str | Path) -> str:
    """SHA-256 over the names and bytes of the data files: the training-data fingerprint."""
    root = Path(path)
    digest = hashlib.sha256()
    for file in data_files(root):
        name = file.name if root.is_file() else str(file.relative_to(root))
        digest.update(name.encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()
