"""The embedded default backend: files and SQLite under one root folder, nothing to start."""

from shipml.backends.local.blob import FolderBlobStore
from shipml.backends.local.online import SqliteOnlineStore
from shipml.backends.local.registry import SqliteRegistry
from shipml.backends.local.sinks import JsonLinesMetricsSink, LogNotifier, ParquetCaptureSink

__all__ = [
    "FolderBlobStore",
    "JsonLinesMetricsSink",
    "LogNotifier",
    "ParquetCaptureSink",
    "SqliteOnlineStore",
    "SqliteRegistry",
]
