"""Registry on SageMaker Model Registry, S3 and SSM Parameter Store.

- a model is a model package group `shipml-{model}-{stage}`; a version is a versioned model
  package in it (SageMaker numbers them 1, 2, ...), whose approval status is the registry's status;
- the artifact is packed to `models/{model}/{version}/model.tar.gz` in the artifact bucket (the
  BlobStore), which is the package's ModelDataUrl; the manifest digest and the headline metrics
  are the package's CustomerMetadataProperties;
- an alias is the SSM String parameter `/shipml/{model}/{stage}/{alias}-model-version` holding
  the version number (the serving functions read `live` from there).

The version number is predicted (the highest one + 1) so that the artifact can be written at its
key before the package exists; if SageMaker assigns another number (a concurrent registration),
the package is deleted again and `RegistryError` says so. The pipeline runs one execution at a time
per model, so this is a guard, not a path.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from shipml import artifact as artifacts
from shipml.artifact import Artifact
from shipml.backends.ports import LIVE, ApprovalStatus, BlobStore, ModelVersion, Registry
from shipml.errors import RegistryError, UnknownModelVersion

GROUP_PREFIX = "shipml-"
DIGEST_KEY = "shipml:digest"
METRICS_KEY = "shipml:metrics"
ARTIFACT_KEY = "shipml:artifact-key"
_SUMMARY_METRICS = ("auc", "log_loss", "precision", "recall", "rows")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class SageMakerRegistry(Registry):
    """The `Registry` port on SageMaker Model Registry (+ S3 through the BlobStore, + SSM for aliases)."""

    def __init__(
        self,
        *,
        sagemaker_client: Any,
        ssm_client: Any,
        blobs: BlobStore,
        stage: str,
        cache_dir: str | Path,
    ) -> None:
        self.sagemaker = sagemaker_client
        self.ssm = ssm_client
        self.blobs = blobs
        self.stage = stage
        self.cache_dir = Path(cache_dir)

    # --- names ------------------------------------------------------------------------------------

    def group_name(self, model_name: str) -> str:
        return f"{GROUP_PREFIX}{model_name}-{self.stage}"

    def parameter_name(self, model_name: str, alias: str) -> str:
        """The SSM parameter of an alias: `/shipml/{model}/{stage}/{alias}-model-version`."""
        return f"/shipml/{model_name}/{self.stage}/{alias}-model-version"

    artifact_key = staticmethod(artifacts.artifact_key)

    # --- reading ----------------------------------------------------------------------------------

    def _packages(self, model_name: str) -> list[dict[str, Any]]:
        summaries: list[dict[str, Any]] = []
        paginator = self.sagemaker.get_paginator("list_model_packages")
        try:
            for page in paginator.paginate(
                ModelPackageGroupName=self.group_name(model_name), ModelPackageType="Versioned"
            ):
                summaries.extend(page.get("ModelPackageSummaryList", []))
        except ClientError as exc:
            if _code(exc) in ("ValidationException", "ResourceNotFound"):
                return []
            raise
        return sorted(summaries, key=lambda s: s.get("ModelPackageVersion", 0))

    def _arn(self, model_name: str, version: int) -> str:
        for summary in self._packages(model_name):
            if summary.get("ModelPackageVersion") == version:
                return summary["ModelPackageArn"]
        known = [s.get("ModelPackageVersion") for s in self._packages(model_name)]
        hint = f"known versions: {known}" if known else "it has no registered versions"
        raise UnknownModelVersion(f"model {model_name!r} has no version {version} ({hint})")

    def _aliases_of(self, model_name: str, version: int) -> tuple[str, ...]:
        # Only `live` is looked up per version: listing every alias would need a parameter scan.
        return (LIVE,) if self._alias_version(model_name, LIVE) == version else ()

    def _alias_version(self, model_name: str, alias: str) -> int | None:
        try:
            value = self.ssm.get_parameter(Name=self.parameter_name(model_name, alias))["Parameter"]["Value"]
        except ClientError as exc:
            if _code(exc) == "ParameterNotFound":
                return None
            raise
        if not value.isdigit():
            raise RegistryError(
                f"{self.parameter_name(model_name, alias)} holds {value!r}, not a version number"
            )
        return int(value)

    def _describe(self, model_name: str, arn: str, *, aliases: tuple[str, ...] | None = None) -> ModelVersion:
        described = self.sagemaker.describe_model_package(ModelPackageName=arn)
        metadata = described.get("CustomerMetadataProperties") or {}
        version = int(described["ModelPackageVersion"])
        created = described.get("CreationTime") or datetime.now(UTC)
        if isinstance(created, datetime) and created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        return ModelVersion(
            model_name=model_name,
            version=version,
            status=ApprovalStatus(described.get("ModelApprovalStatus", ApprovalStatus.pending.value)),
            artifact_uri=self.blobs.uri(metadata.get(ARTIFACT_KEY) or self.artifact_key(model_name, version)),
            digest=metadata.get(DIGEST_KEY, ""),
            created_at=created,
            description=described.get("ModelPackageDescription", ""),
            metrics=json.loads(metadata.get(METRICS_KEY) or "{}"),
            aliases=self._aliases_of(model_name, version) if aliases is None else aliases,
        )

    def models(self) -> list[str]:
        names: list[str] = []
        suffix = f"-{self.stage}"
        paginator = self.sagemaker.get_paginator("list_model_package_groups")
        for page in paginator.paginate(NameContains=GROUP_PREFIX):
            for group in page.get("ModelPackageGroupSummaryList", []):
                name = group["ModelPackageGroupName"]
                if name.startswith(GROUP_PREFIX) and name.endswith(suffix):
                    names.append(name[len(GROUP_PREFIX) : -len(suffix)])
        return sorted(names)

    def list_versions(self, model_name: str) -> list[ModelVersion]:
        live = self._alias_version(model_name, LIVE)
        return [
            self._describe(
                model_name,
                s["ModelPackageArn"],
                aliases=(LIVE,) if s.get("ModelPackageVersion") == live else (),
            )
            for s in self._packages(model_name)
        ]

    def get_version(self, model_name: str, version: int) -> ModelVersion:
        return self._describe(model_name, self._arn(model_name, version))

    def get_alias(self, model_name: str, alias: str = LIVE) -> ModelVersion | None:
        version = self._alias_version(model_name, alias)
        if version is None:
            return None
        found = self._describe(model_name, self._arn(model_name, version), aliases=())
        return found.model_copy(update={"aliases": (alias,)})

    # --- writing ----------------------------------------------------------------------------------

    def _ensure_group(self, model_name: str) -> None:
        try:
            self.sagemaker.create_model_package_group(
                ModelPackageGroupName=self.group_name(model_name),
                ModelPackageGroupDescription=f"shipml: versions of the {model_name!r} model ({self.stage})",
            )
        except ClientError as exc:
            # Already there: creating it is how we find out, without a describe-then-create race.
            if _code(exc) not in ("ValidationException", "ConflictException", "ResourceInUse"):
                raise

    def register(self, model_name: str, artifact_dir: Path, *, description: str = "") -> ModelVersion:
        loaded = artifacts.load_artifact(artifact_dir)
        if loaded.card.model_name != model_name:
            raise RegistryError(
                f"the artifact at {artifact_dir} is a {loaded.card.model_name!r} model, not {model_name!r}"
            )
        self._ensure_group(model_name)
        packages = self._packages(model_name)
        expected = (packages[-1]["ModelPackageVersion"] if packages else 0) + 1
        key = self.artifact_key(model_name, expected)
        self.blobs.put_bytes(key, artifacts.pack(artifact_dir))
        overall = (loaded.card.metrics or {}).get("overall", {})
        summary = {k: overall[k] for k in _SUMMARY_METRICS if k in overall}
        created = self.sagemaker.create_model_package(
            ModelPackageGroupName=self.group_name(model_name),
            ModelPackageDescription=description[:1024],
            ModelApprovalStatus=ApprovalStatus.pending.value,
            InferenceSpecification={
                "Containers": [{"Image": "shipml/onnx-serving", "ModelDataUrl": self.blobs.uri(key)}],
                "SupportedContentTypes": ["application/json"],
                "SupportedResponseMIMETypes": ["application/json"],
            },
            CustomerMetadataProperties={
                DIGEST_KEY: loaded.digest,
                METRICS_KEY: json.dumps(summary)[:1024],
                ARTIFACT_KEY: key,
            },
        )
        arn = created["ModelPackageArn"]
        found = self._describe(model_name, arn, aliases=())
        if found.version != expected:
            self.sagemaker.delete_model_package(ModelPackageName=arn)
            raise RegistryError(
                f"model {model_name!r}: another registration took version {expected} at the same time; retry"
            )
        return found

    def set_status(self, model_name: str, version: int, status: ApprovalStatus) -> ModelVersion:
        arn = self._arn(model_name, version)
        if status != ApprovalStatus.approved and self._alias_version(model_name, LIVE) == version:
            raise RegistryError(
                f"{model_name}:{version} is aliased as ['{LIVE}']; point the alias elsewhere first"
            )
        self.sagemaker.update_model_package(ModelPackageArn=arn, ModelApprovalStatus=status.value)
        return self._describe(model_name, arn)

    def set_alias(self, model_name: str, alias: str, version: int) -> ModelVersion:
        found = self._describe(model_name, self._arn(model_name, version), aliases=())
        if found.status != ApprovalStatus.approved:
            raise RegistryError(
                f"{model_name}:{version} is {found.status.value}; only an Approved version can be {alias!r}"
            )
        self.ssm.put_parameter(
            Name=self.parameter_name(model_name, alias),
            Value=str(version),
            Type="String",
            Overwrite=True,
            Description=f"shipml: the {alias!r} version of the {model_name!r} model",
        )
        return found.model_copy(update={"aliases": (alias,)})

    def open_artifact(self, version: ModelVersion) -> Artifact:
        key = self.artifact_key(version.model_name, version.version)
        return self._open_cached(self.blobs, key, version, self.cache_dir)
