"""Wiring the serving context from settings, once per process (cold start).

Local: the model comes from the SQLite registry (a pinned version, or `live`, followed by polling);
aws: the version is pinned by the Lambda configuration and its artifact fetched from S3.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shipml.backends import Backends, local_backends
from shipml.backends.ports import OnlineStore
from shipml.contract import Contract, Masker, load_contract
from shipml.errors import FeatureSourceUnavailable, ShipmlError
from shipml.serving.app import ServingContext
from shipml.serving.models import ModelHolder, PinnedBlobModelSource, RegistryModelSource
from shipml.settings import Settings

HEALTH_KEY = "__health__"


def online_check(online: OnlineStore, group: str):  # noqa: ANN201 - returns a probe closure
    """A probe for /health: one lookup of a key that need not exist."""

    def probe() -> str:
        try:
            online.get_many(group, [HEALTH_KEY])
            return "ok"
        except (FeatureSourceUnavailable, OSError) as exc:
            return f"error: {exc}"

    return probe


def _http_sources(contract: Contract, secrets_client: Any) -> dict[str, Any]:
    """The contract's external HTTP feature sources, built once (cold start)."""
    if not contract.http_features:
        return {}
    from shipml.features.http import build_http_sources

    try:
        return build_http_sources(contract, secrets_client=secrets_client)
    except ValueError as exc:
        raise ShipmlError(f"cannot set up the http feature sources: {exc}") from None


def local_context(settings: Settings, backends: Backends | None = None) -> ServingContext:
    """The local host: registry-backed model (following `live` unless a version is pinned)."""
    backends = backends or local_backends(settings.root)
    contract = load_contract(settings.contract)
    source = RegistryModelSource(backends.registry, settings.model, settings.model_version)
    holder = ModelHolder(
        source,
        contract,
        online=backends.online,
        http_sources=_http_sources(contract, None),
        poll_seconds=settings.live_poll_seconds,
    )
    holder.refresh(force=True)
    return ServingContext(
        contract=contract,
        holder=holder,
        capture=backends.capture,
        metrics=backends.metrics,
        masker=Masker(contract, hash_key=settings.hash_key.encode()),
        max_body_bytes=settings.max_body_bytes,
        online_check=online_check(backends.online, contract.model),
    )


def aws_context(
    settings: Settings, *, session: Any = None, cache_dir: Path = Path("/tmp/shipml")
) -> ServingContext:  # noqa: S108 - Lambda's only writable folder
    """The Lambda host: S3 artifact pinned by SHIPML_MODEL_VERSION, DynamoDB, Firehose, EMF.

    `session`: a botocore session (a new one when None; see `shipml.backends.aws.clients`)."""
    from botocore.config import Config

    from shipml.backends.aws.blob import S3BlobStore
    from shipml.backends.aws.clients import make_client, new_session, pii_hash_key
    from shipml.backends.aws.online import DynamoDbOnlineStore, serving_client
    from shipml.backends.aws.sinks import EmfMetricsSink, FirehoseCaptureSink

    missing = [n for n in ("artifact_bucket", "online_table", "capture_stream") if not getattr(settings, n)]
    if missing:
        raise ShipmlError(f"the aws backend needs {', '.join('SHIPML_' + n.upper() for n in missing)}")
    session = session or new_session()
    contract = load_contract(settings.contract)
    quick = Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 3, "mode": "standard"})
    blobs = S3BlobStore(make_client(session, "s3", config=quick), settings.artifact_bucket)
    version = settings.model_version
    if version == "live":
        # Pinned deployments pass a number; "live" reads the pointer once, at cold start.
        if not settings.live_parameter:
            raise ShipmlError("SHIPML_MODEL_VERSION=live on aws needs SHIPML_LIVE_PARAMETER")
        ssm = make_client(session, "ssm", config=quick)
        version = ssm.get_parameter(Name=settings.live_parameter)["Parameter"]["Value"]
    budget_ms = contract.serving.latency_budget_ms
    # Timeouts split the contract's latency budget, so a lookup never outlives it.
    online = DynamoDbOnlineStore(
        serving_client(budget_ms, session=session), settings.online_table, budget_ms=budget_ms
    )
    secrets = (
        make_client(session, "secretsmanager", config=quick)
        if settings.hash_key_secret or contract.http_sources
        else None
    )
    hash_key = pii_hash_key(settings, secrets)
    source = PinnedBlobModelSource(blobs, settings.model, version, cache_dir / "models")
    holder = ModelHolder(
        source,
        contract,
        online=online,
        http_sources=_http_sources(contract, secrets),
        poll_seconds=settings.live_poll_seconds,
    )
    holder.refresh(force=True)
    return ServingContext(
        contract=contract,
        holder=holder,
        capture=FirehoseCaptureSink(make_client(session, "firehose", config=quick), settings.capture_stream),
        metrics=EmfMetricsSink(
            namespace="shipml", service=settings.model, default_dimensions={"model": settings.model}
        ),
        masker=Masker(contract, hash_key=hash_key),
        max_body_bytes=settings.max_body_bytes,
        online_check=online_check(online, contract.model),
    )


def build_context(settings: Settings) -> ServingContext:
    return aws_context(settings) if settings.backend == "aws" else local_context(settings)
