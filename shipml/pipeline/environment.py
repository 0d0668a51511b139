"""What a pipeline step's host knows: settings, and the adapters built from them at the edge.

Lambda handlers and the local runner build one `PipelineEnvironment` per invocation (handlers
from their environment variables, the runner from the local settings) and pass it to the steps.
Clients are made here, on first use, never at import time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shipml.backends.ports import Registry
from shipml.errors import ShipmlError
from shipml.pipeline.models import GateSettings, PipelineError
from shipml.pipeline.rollout import ServingTarget
from shipml.pipeline.storage import LocalRunStorage, RunStorage, S3RunStorage
from shipml.settings import Settings

#: Lambda's writable folder; the registry's artifact cache lives there on AWS.
LAMBDA_TMP = Path("/tmp")  # noqa: S108 - the only writable path in Lambda


def _flag(value: str | None, default: bool, name: str) -> bool:
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes"):
        return True
    if lowered in ("0", "false", "no"):
        return False
    raise PipelineError(f"{name} must be true or false, got {value!r}")


@dataclass
class PipelineEnvironment:
    """Settings of the pipeline's light steps, and their adapters (built lazily, once)."""

    settings: Settings
    stage: str
    gate: GateSettings
    auto_approve: bool = True
    training_contract: str = "examples/fraud/contract.yaml"
    serving: ServingTarget | None = None
    training_source_uri: str | None = None
    clients: dict[str, Any] = field(default_factory=dict)
    _registry: Registry | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PipelineEnvironment:
        """From SHIPML_* variables (the Lambda functions' environment, set by the CDK construct)."""
        environ = os.environ if environ is None else environ
        settings = Settings.from_env(environ)
        serving_keys = {
            "function_name": "SHIPML_SERVING_FUNCTION",
            "alias": "SHIPML_SERVING_ALIAS",
            "application": "SHIPML_CODEDEPLOY_APPLICATION",
            "deployment_group": "SHIPML_CODEDEPLOY_GROUP",
        }
        given = {k: environ[v] for k, v in serving_keys.items() if environ.get(v)}
        if given and not {"function_name", "application", "deployment_group"} <= set(given):
            missing = [
                serving_keys[k]
                for k in ("function_name", "application", "deployment_group")
                if k not in given
            ]
            raise PipelineError(f"a serving target needs {', '.join(missing)} as well")
        return cls(
            settings=settings,
            stage=environ.get("SHIPML_STAGE", "local"),
            gate=GateSettings.from_env(environ),
            auto_approve=_flag(environ.get("SHIPML_AUTO_APPROVE"), True, "SHIPML_AUTO_APPROVE"),
            training_contract=environ.get("SHIPML_TRAINING_CONTRACT") or settings.contract.as_posix(),
            serving=ServingTarget(**given) if given else None,
            training_source_uri=environ.get("SHIPML_TRAINING_SOURCE_URI") or None,
        )

    def client(self, service: str) -> Any:
        """A boto3 client, made on first use (tests put Stubber-wrapped ones in `clients`)."""
        if service not in self.clients:
            import boto3

            self.clients[service] = boto3.client(service)
        return self.clients[service]

    @property
    def bucket(self) -> str:
        if not self.settings.artifact_bucket:
            raise ShipmlError("SHIPML_ARTIFACT_BUCKET is not set: the pipeline needs the artifact bucket")
        return self.settings.artifact_bucket

    def registry(self) -> Registry:
        if self._registry is None:
            if self.settings.backend == "local":
                from shipml.backends import local_backends

                self._registry = local_backends(self.settings.root).registry
            else:
                from shipml.backends.aws.blob import S3BlobStore
                from shipml.backends.aws.registry import SageMakerRegistry

                self._registry = SageMakerRegistry(
                    sagemaker_client=self.client("sagemaker"),
                    ssm_client=self.client("ssm"),
                    blobs=S3BlobStore(self.client("s3"), self.bucket),
                    stage=self.stage,
                    cache_dir=LAMBDA_TMP / "shipml-models",
                )
        return self._registry

    def storage(self) -> RunStorage:
        if self.settings.backend == "local":
            return LocalRunStorage(self.settings.root / "blobs", self.settings.artifact_bucket)
        return S3RunStorage(self.client("s3"))

    def workdir(self) -> Path:
        """A scratch folder for downloads (Lambda: /tmp; local: under the root)."""
        base = self.settings.root / "tmp" if self.settings.backend == "local" else LAMBDA_TMP
        base.mkdir(parents=True, exist_ok=True)
        return base
