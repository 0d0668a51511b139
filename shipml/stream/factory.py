"""Wiring the stream consumer from settings, once per process (cold start), from the serving pieces.

The model, online store, capture and metrics follow `Settings.backend` exactly as the serving
factory wires them (local: the SQLite registry's pinned version or `live`; aws: S3 artifacts and
the live-version parameter, DynamoDB, Firehose, EMF). The decision output and the dead-letter queue
follow `StreamSettings`. The serving factory is not imported: it imports FastAPI, which the stream
bundle does not carry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TextIO

from shipml.backends import local_backends
from shipml.backends.ports import CaptureSink, MetricsSink, OnlineStore
from shipml.contract import Contract, Masker, load_contract
from shipml.errors import ShipmlError
from shipml.serving.models import ModelHolder, ModelSource, PinnedBlobModelSource, RegistryModelSource
from shipml.settings import Settings
from shipml.stream.consumer import StreamConsumer
from shipml.stream.lookups import PrefetchedOnlineStore
from shipml.stream.ports import DeadLetterSink, DecisionSink, JsonLinesDeadLetterSink, JsonLinesDecisionSink
from shipml.stream.settings import StreamSettings

# An online lookup for a stream batch (up to thousands of keys, 100 per BatchGetItem) has no caller
# waiting on it, so it gets more time than the API's per-request budget before features default.
STREAM_LOOKUP_BUDGET_MS = 2_000
_CACHE_DIR = Path("/tmp/shipml")  # noqa: S108 - Lambda's only writable folder


def build_consumer(
    settings: Settings,
    stream: StreamSettings,
    *,
    session: Any = None,
    output: DecisionSink | None = None,
    dead_letters: DeadLetterSink | None = None,
    cache_dir: Path = _CACHE_DIR,
) -> StreamConsumer:
    """The consumer for these settings; `output` and `dead_letters` replace the configured ones."""
    contract = load_contract(settings.contract)
    if settings.backend == "aws":
        session = session or _session()
        source, online, capture, metrics, hash_key = _aws_parts(settings, contract, session, cache_dir)
    else:
        backends = local_backends(settings.root)
        source = RegistryModelSource(backends.registry, settings.model, settings.model_version)
        online, capture, metrics, hash_key = (
            backends.online,
            backends.capture,
            backends.metrics,
            settings.hash_key.encode(),
        )
    lookups = PrefetchedOnlineStore(online) if contract.online_features else None
    holder = ModelHolder(source, contract, online=lookups, poll_seconds=settings.live_poll_seconds)
    holder.refresh(force=True)
    if settings.backend == "aws" and (
        (output is None and stream.output == "jsonl") or (dead_letters is None and not stream.dlq_url)
    ):
        # A file in a Lambda's /tmp is no output: decisions and dead letters would vanish with it.
        raise ShipmlError(
            "the aws backend needs SHIPML_STREAM_OUTPUT (kinesis or dynamodb) and SHIPML_STREAM_DLQ_URL"
        )
    needs_aws = (output is None and stream.output != "jsonl") or (dead_letters is None and stream.dlq_url)
    if needs_aws and session is None:
        session = _session()
    return StreamConsumer(
        contract=contract,
        holder=holder,
        output=output or _output(stream, settings, session),
        dead_letters=dead_letters or _dead_letters(stream, settings, session),
        capture=capture,
        metrics=metrics,
        masker=Masker(contract, hash_key=hash_key),
        lookups=lookups,
    )


def _session() -> Any:
    import boto3

    return boto3.session.Session()


def _aws_parts(
    settings: Settings, contract: Contract, session: Any, cache_dir: Path
) -> tuple[ModelSource, OnlineStore, CaptureSink, MetricsSink, bytes]:
    from botocore.config import Config

    from shipml.backends.aws.blob import S3BlobStore
    from shipml.backends.aws.clients import make_client, pii_hash_key
    from shipml.backends.aws.online import DynamoDbOnlineStore
    from shipml.backends.aws.sinks import EmfMetricsSink, FirehoseCaptureSink
    from shipml.stream.aws import LiveParameterModelSource

    missing = [n for n in ("artifact_bucket", "online_table", "capture_stream") if not getattr(settings, n)]
    if missing:
        raise ShipmlError(f"the aws backend needs {', '.join('SHIPML_' + n.upper() for n in missing)}")
    quick = Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 3, "mode": "standard"})
    blobs = S3BlobStore(session.client("s3", config=quick), settings.artifact_bucket)
    models = cache_dir / "models"
    source: ModelSource
    if settings.model_version == "live":
        if not settings.live_parameter:
            raise ShipmlError("SHIPML_MODEL_VERSION=live on aws needs SHIPML_LIVE_PARAMETER")
        ssm = session.client("ssm", config=quick)
        source = LiveParameterModelSource(ssm, settings.live_parameter, blobs, settings.model, models)
    else:
        source = PinnedBlobModelSource(blobs, settings.model, settings.model_version, models)
    online = DynamoDbOnlineStore(
        session.client("dynamodb"), settings.online_table, budget_ms=STREAM_LOOKUP_BUDGET_MS
    )
    capture = FirehoseCaptureSink(session.client("firehose", config=quick), settings.capture_stream)
    metrics = EmfMetricsSink(
        namespace="shipml", service=settings.model, default_dimensions={"model": settings.model}
    )
    secrets = make_client(session, "secretsmanager", config=quick) if settings.hash_key_secret else None
    return source, online, capture, metrics, pii_hash_key(settings, secrets)


def _output(stream: StreamSettings, settings: Settings, session: Any) -> DecisionSink:
    if stream.output == "kinesis":
        from shipml.stream.aws import KinesisDecisionSink

        return KinesisDecisionSink(
            session.client("kinesis"), str(stream.output_stream), max_attempts=stream.write_attempts
        )
    if stream.output == "dynamodb":
        from shipml.stream.aws import DynamoDbDecisionSink

        return DynamoDbDecisionSink(
            session.client("dynamodb"), str(stream.output_table), max_attempts=stream.write_attempts
        )
    path = (
        Path(stream.output_file) if stream.output_file else Path(settings.root) / "stream" / "decisions.jsonl"
    )
    return JsonLinesDecisionSink(_append(path))


def _dead_letters(stream: StreamSettings, settings: Settings, session: Any) -> DeadLetterSink:
    if stream.dlq_url:
        from shipml.stream.aws import SqsDeadLetterSink

        return SqsDeadLetterSink(
            session.client("sqs"),
            stream.dlq_url,
            max_message_bytes=stream.max_dlq_message_bytes,
            max_attempts=stream.write_attempts,
        )
    return JsonLinesDeadLetterSink(_append(Path(settings.root) / "stream" / "dead-letters.jsonl"))


def _append(path: Path) -> TextIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("a", encoding="utf-8")
