"""Where a run's files live: S3 URIs on AWS, folders locally; one small interface for the steps.

The state machine passes URIs between states (`s3://bucket/pipeline/runs/<id>/evaluation.json`).
On AWS they are S3 objects. The local runner executes the very same definition, so the same URIs
arrive locally: `LocalRunStorage` maps the artifact bucket's URIs to the local blob folder (the
one the local registry stores models in) and accepts plain paths and file:// URIs as they are.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from shipml.pipeline.models import PipelineError


def split_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of an s3:// URI; `PipelineError` otherwise."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise PipelineError(f"not an s3:// URI: {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


class RunStorage(abc.ABC):
    """Reads and writes the files a run passes between its steps."""

    @abc.abstractmethod
    def read_bytes(self, uri: str) -> bytes:
        """Raise `PipelineError` naming the URI if there is nothing there."""

    @abc.abstractmethod
    def write_bytes(self, uri: str, data: bytes) -> None: ...

    @abc.abstractmethod
    def fetch(self, uri: str, dest: Path) -> Path:
        """Make the file or prefix at `uri` available under the folder `dest`; return the local path."""


class LocalRunStorage(RunStorage):
    """s3://{bucket}/key -> {blob_root}/key for the artifact bucket; local paths and file:// as they are."""

    def __init__(self, blob_root: Path, bucket: str | None) -> None:
        self.blob_root = Path(blob_root)
        self.bucket = bucket

    def path(self, uri: str) -> Path:
        """The local path a URI stands for."""
        parsed = urlparse(uri)
        if parsed.scheme == "s3":
            if self.bucket is None or parsed.netloc != self.bucket:
                raise PipelineError(
                    f"{uri}: the local runner maps only the artifact bucket ({self.bucket!r}) to a folder"
                )
            key = parsed.path.lstrip("/")
            if ".." in key.split("/"):
                raise PipelineError(f"{uri}: '..' is not allowed in a key")
            return self.blob_root / key
        if parsed.scheme == "file":
            return Path(parsed.path)
        if parsed.scheme:
            raise PipelineError(f"{uri}: unsupported URI scheme {parsed.scheme!r} (s3://, file:// or a path)")
        return Path(uri)

    def read_bytes(self, uri: str) -> bytes:
        try:
            return self.path(uri).read_bytes()
        except FileNotFoundError:
            raise PipelineError(f"{uri}: no such file") from None

    def write_bytes(self, uri: str, data: bytes) -> None:
        from shipml import atomic

        target = self.path(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic.atomic_path(target) as tmp:
            Path(tmp).write_bytes(data)

    def fetch(self, uri: str, dest: Path) -> Path:
        source = self.path(uri)
        if not source.exists():
            raise PipelineError(f"{uri}: no such file or folder")
        return source  # already local: no copy


class S3RunStorage(RunStorage):
    """Run files in S3 through an injected boto3 S3 client."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def read_bytes(self, uri: str) -> bytes:
        from botocore.exceptions import ClientError

        bucket, key = split_s3_uri(uri)
        try:
            return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise PipelineError(f"{uri}: no such object") from None
            raise

    def write_bytes(self, uri: str, data: bytes) -> None:
        bucket, key = split_s3_uri(uri)
        self.client.put_object(Bucket=bucket, Key=key, Body=data)

    def fetch(self, uri: str, dest: Path) -> Path:
        bucket, key = split_s3_uri(uri)
        dest.mkdir(parents=True, exist_ok=True)
        if not key.endswith("/"):
            from botocore.exceptions import ClientError

            target = dest / Path(key).name
            try:
                self.client.download_file(bucket, key, str(target))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    raise PipelineError(f"{uri}: no such object") from None
                raise
            return target
        found = False
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
            for item in page.get("Contents", []):
                relative = item["Key"][len(key) :]
                if not relative or relative.endswith("/"):
                    continue
                target = dest / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                self.client.download_file(bucket, item["Key"], str(target))
                found = True
        if not found:
            raise PipelineError(f"{uri}: no objects under this prefix")
        return dest
