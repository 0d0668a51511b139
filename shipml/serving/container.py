"""The SageMaker container host: the one app, on port 8080, over the model SageMaker extracted.

SageMaker Batch Transform runs `docker run <image> serve`, extracts the model's ModelDataUrl (the
registry's `models/{model}/{version}/model.tar.gz`) into /opt/ml/model, waits for GET /ping to
answer 200 and then POSTs mini-batches of lines to /invocations. This module builds the serving
context for that host and starts uvicorn; the routes, validation and scoring are the same
`create_app` every other host serves.

What differs from the other hosts, and why:

- The model is the one folder SageMaker extracted: verified once (every checksum) at start, never
  swapped. Its version number comes from SHIPML_MODEL_VERSION (set by the batch state machine);
  each output row carries it.
- Looked-up features (online or http), SHIPML_LOOKED_UP_FEATURES:
  `input` (the default): they are columns of the input rows, as a batch dataset built with
  point-in-time features has them. Each is checked by its own contract rules; a row without one
  gets the contract's default, and is refused (naming the column) when the contract has none.
  `store`: rows carry request fields only and the features are looked up in the DynamoDB table
  SHIPML_ONLINE_TABLE (a network call per mini-batch: the model must not be network-isolated),
  or, with no table configured, take their `on_missing` default, flagged in `fallbacks`.
- No capture: the job's output (each input row joined with its prediction) is the record of what
  was scored. Metrics go to stdout as JSON lines, which SageMaker ships to the job's log.
- The body limit follows MaxPayloadInMB (SAGEMAKER_MAX_PAYLOAD_IN_MB, set by SageMaker).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import IO, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shipml.artifact import Artifact, load_artifact
from shipml.backends.ports import CaptureSink, MetricsSink, OnlineStore
from shipml.contract import Contract, Masker
from shipml.contract.schema import Feature, Source
from shipml.errors import ShipmlError, UnknownModelVersion
from shipml.serving.app import ServingContext, create_app
from shipml.serving.models import ModelHolder

log = logging.getLogger("shipml.serving.container")

MODEL_DIR = Path("/opt/ml/model")
PORT = 8080
# SageMaker's default MaxPayloadInMB; a MultiRecord mini-batch is at most this big.
DEFAULT_MAX_PAYLOAD_MB = 6
# Headroom over the payload limit for the request line and headers SageMaker adds.
_BODY_HEADROOM_BYTES = 64 * 1024
_MB = 1024 * 1024
# A batch mini-batch may wait on DynamoDB far longer than a real-time request's budget.
STORE_BUDGET_MS = 5_000
USAGE = "usage: python -m shipml.serving.container serve"


class LookedUpFeatures(StrEnum):
    """Where the container finds the features the contract looks up by the entity key."""

    input = "input"
    store = "store"


class ContainerSettings(BaseModel):
    """The container's settings, read once from its environment (SageMaker's and ours)."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    model_dir: Annotated[Path, Field(description="The extracted artifact (SHIPML_MODEL_DIR).")] = MODEL_DIR
    model_version: Annotated[
        str | None,
        Field(
            pattern=r"^[0-9]+$",
            description="The registry version of the artifact (SHIPML_MODEL_VERSION); "
            "without it the version is named by the artifact's digest.",
        ),
    ] = None
    looked_up_features: Annotated[
        LookedUpFeatures, Field(description="input: columns of the rows; store: the online store.")
    ] = LookedUpFeatures.input
    online_table: Annotated[
        str | None, Field(description="DynamoDB table of online features, for `store` (SHIPML_ONLINE_TABLE).")
    ] = None
    port: Annotated[int, Field(gt=0, lt=65536, description="SAGEMAKER_BIND_TO_PORT, else 8080.")] = PORT
    max_payload_mb: Annotated[
        int, Field(gt=0, le=100, description="SageMaker's MaxPayloadInMB (SAGEMAKER_MAX_PAYLOAD_IN_MB).")
    ] = DEFAULT_MAX_PAYLOAD_MB
    workers: Annotated[
        int,
        Field(
            gt=0,
            le=256,
            description="uvicorn worker processes (SHIPML_WORKERS, else SAGEMAKER_MAX_CONCURRENT_TRANSFORMS, "
            "else the CPU count); each holds its own onnxruntime session.",
        ),
    ] = 1

    @property
    def max_body_bytes(self) -> int:
        return self.max_payload_mb * _MB + _BODY_HEADROOM_BYTES

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ContainerSettings:
        """Settings from SHIPML_* and SageMaker's SAGEMAKER_* variables; a bad value names its variable."""
        env = os.environ if environ is None else environ
        sources = {
            "model_dir": ("SHIPML_MODEL_DIR",),
            "model_version": ("SHIPML_MODEL_VERSION",),
            "looked_up_features": ("SHIPML_LOOKED_UP_FEATURES",),
            "online_table": ("SHIPML_ONLINE_TABLE",),
            "port": ("SAGEMAKER_BIND_TO_PORT",),
            "max_payload_mb": ("SAGEMAKER_MAX_PAYLOAD_IN_MB",),
            "workers": ("SHIPML_WORKERS", "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS"),
        }
        values: dict[str, Any] = {"workers": os.cpu_count() or 1}
        read_from: dict[str, str] = {}
        for name, variables in sources.items():
            for variable in variables:
                if env.get(variable):
                    values[name] = env[variable]
                    read_from[name] = variable
                    break
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{read_from.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']}" for e in exc.errors()
            )
            raise ShipmlError(f"invalid container settings: {problems}") from None


def carried_features_contract(contract: Contract) -> Contract:
    """The contract as a batch input reads it: each looked-up feature is an input column instead.

    The column keeps every rule of the feature (type, range, categories), so it is validated like
    any request field; it is optional when the contract gives a default for a missing value and
    required (a row without it is refused, naming the column) when the contract says `reject`.
    The model's inputs and their order do not change.
    """
    features: list[Feature] = []
    for feature in contract.features:
        if feature.looked_up:
            fields = feature.model_dump(
                exclude={"aggregation", "http_source", "response_field", "on_missing"}
            )
            fields.update(source=Source.request.value, required=feature.on_missing == "reject")
            feature = Feature.model_validate(fields)
        features.append(feature)
    data = contract.model_dump()
    data["features"] = [f.model_dump() for f in features]
    data["http_sources"] = []  # nothing is looked up any more
    return Contract.model_validate(data)


class ExtractedModelSource:
    """A `ModelSource` over the artifact folder SageMaker extracted (/opt/ml/model).

    The folder does not change during a container's life, so it is verified (every checksum) once,
    on first use, and the same version serves until the container stops. `view` may present the
    artifact's contract as this host reads it (see `carried_features_contract`).
    """

    def __init__(
        self,
        model_dir: Path,
        model_version: str | None = None,
        *,
        view: Callable[[Contract], Contract] | None = None,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.model_version = model_version
        self.view = view
        self._artifact: Artifact | None = None
        self._lock = threading.Lock()

    def artifact(self) -> Artifact:
        """The verified artifact, its contract as this host reads it; `ArtifactError` if it is corrupt."""
        with self._lock:
            if self._artifact is None:
                artifact = load_artifact(self.model_dir)
                if self.view is not None:
                    artifact = replace(artifact, contract=self.view(artifact.contract))
                self._artifact = artifact
            return self._artifact

    def resolve(self) -> str | None:
        artifact = self.artifact()
        version = self.model_version or f"sha256-{artifact.digest[:12]}"
        return f"{artifact.card.model_name}:{version}"

    def open(self, ref: str) -> Artifact:
        if ref != self.resolve():
            raise UnknownModelVersion(f"{ref}: this container serves only {self.resolve()}")
        return self.artifact()


class DiscardCapture(CaptureSink):
    """Capture is off on the batch host: the job's output already holds every prediction."""

    def write(self, records: Sequence[Mapping[str, Any]]) -> None:
        return None


class StdoutMetricsSink(MetricsSink):
    """One JSON line per data point on stdout, which SageMaker ships to the job's CloudWatch log."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def put(
        self, name: str, value: float, *, unit: str = "None", dimensions: Mapping[str, str] | None = None
    ) -> None:
        line = json.dumps(
            {"metric": name, "value": value, "unit": unit, "dimensions": dict(dimensions or {})},
            separators=(",", ":"),
        )
        stream = self._stream or sys.stdout  # looked up per call: a replaced sys.stdout is honoured
        with self._lock:
            stream.write(line + "\n")
            stream.flush()

    def flush(self) -> None:
        return None


def container_context(
    settings: ContainerSettings,
    *,
    online: OnlineStore | None = None,
    metrics: MetricsSink | None = None,
    session: Any = None,
) -> ServingContext:
    """The serving context of the batch container. Raises `ArtifactError` if the model folder is corrupt.

    `online` replaces the DynamoDB store of `store` mode (tests pass a fake of the port).
    """
    looked_up = settings.looked_up_features
    source = ExtractedModelSource(
        settings.model_dir,
        settings.model_version,
        view=carried_features_contract if looked_up == LookedUpFeatures.input else None,
    )
    contract = source.artifact().contract
    if looked_up == LookedUpFeatures.store and online is None and settings.online_table:
        online = _dynamodb_store(settings.online_table, session)
    holder = ModelHolder(source, contract, online=online if looked_up == LookedUpFeatures.store else None)
    holder.refresh(force=True)
    status = holder.status()
    if not status.loaded:
        raise ShipmlError(f"the model in {settings.model_dir} cannot serve: {status.error}")
    log.info(
        "serving %s from %s (looked-up features: %s)", status.version, settings.model_dir, looked_up.value
    )
    return ServingContext(
        contract=contract,
        holder=holder,
        capture=DiscardCapture(),
        metrics=metrics or StdoutMetricsSink(),
        # The masked records are only ever given to the discarding sink; a per-process key keeps
        # the hashing honest without a secret the job would have to fetch.
        masker=Masker(contract, hash_key=secrets.token_bytes(32)),
        max_body_bytes=settings.max_body_bytes,
    )


def _dynamodb_store(table: str, session: Any) -> OnlineStore:
    import boto3

    from shipml.backends.aws.online import DynamoDbOnlineStore

    session = session or boto3.session.Session()
    return DynamoDbOnlineStore(session.client("dynamodb"), table, budget_ms=STORE_BUDGET_MS)


def create_container_app() -> Any:
    """The app of one uvicorn worker process, configured from the environment (uvicorn's factory)."""
    return create_app(container_context(ContainerSettings.from_env()))


def main(argv: Sequence[str] | None = None) -> int:
    """`serve`: check the model, then run uvicorn on 0.0.0.0:8080 with the configured workers."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args != ["serve"]:
        print(
            f"{USAGE} (SageMaker runs the image with 'serve'; got {' '.join(args) or 'nothing'})",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = ContainerSettings.from_env()
        # Fail here, once, with the reason in the job log, rather than in every worker behind a 503 /ping.
        ExtractedModelSource(settings.model_dir, settings.model_version).artifact()
    except ShipmlError as exc:
        print(f"shipml container: {exc}", file=sys.stderr)
        return 1
    import uvicorn

    uvicorn.run(
        "shipml.serving.container:create_container_app",
        factory=True,
        host="0.0.0.0",  # noqa: S104 - SageMaker reaches the container on its own network interface
        port=settings.port,
        workers=settings.workers,
        access_log=False,  # one line per mini-batch adds nothing the metrics do not say
        log_level="info",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
