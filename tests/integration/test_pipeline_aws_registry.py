"""The SageMaker Model Registry adapter against moto: versions, approval, artifacts in S3, `live` in SSM."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipml.backends.aws.blob import S3BlobStore
from shipml.backends.aws.registry import SageMakerRegistry
from shipml.backends.ports import ApprovalStatus
from shipml.errors import ArtifactError, RegistryError, UnknownModelVersion

BUCKET = "shipml-artifacts"


@pytest.fixture
def aws(moto_aws):
    s3 = moto_aws.client("s3")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    return {"s3": s3, "sagemaker": moto_aws.client("sagemaker"), "ssm": moto_aws.client("ssm")}


@pytest.fixture
def registry(aws, tmp_path: Path) -> SageMakerRegistry:
    return SageMakerRegistry(
        sagemaker_client=aws["sagemaker"],
        ssm_client=aws["ssm"],
        blobs=S3BlobStore(aws["s3"], BUCKET),
        stage="dev",
        cache_dir=tmp_path / "cache",
    )


def test_register_creates_the_group_a_pending_version_and_the_artifact(registry, aws, make_artifact) -> None:
    first = registry.register("fraud", make_artifact(seed=1, auc=0.91), description="run a")
    second = registry.register("fraud", make_artifact(seed=2), description="run b")

    assert (first.version, second.version) == (1, 2)
    assert first.status == ApprovalStatus.pending
    assert first.artifact_uri == f"s3://{BUCKET}/models/fraud/1/model.tar.gz"
    assert first.metrics == {"auc": 0.91, "rows": 100}
    assert first.description == "run a"
    head = aws["s3"].head_object(Bucket=BUCKET, Key="models/fraud/2/model.tar.gz")
    assert head["ContentLength"] > 0
    groups = aws["sagemaker"].list_model_package_groups()["ModelPackageGroupSummaryList"]
    assert [g["ModelPackageGroupName"] for g in groups] == ["shipml-fraud-dev"]
    assert registry.models() == ["fraud"]


def test_live_is_the_ssm_parameter_and_needs_an_approved_version(registry, aws, make_artifact) -> None:
    registry.register("fraud", make_artifact())
    with pytest.raises(RegistryError, match="PendingManualApproval"):
        registry.set_alias("fraud", "live", 1)
    assert registry.get_alias("fraud", "live") is None

    registry.approve("fraud", 1)
    live = registry.set_alias("fraud", "live", 1)

    parameter = aws["ssm"].get_parameter(Name="/shipml/fraud/dev/live-model-version")["Parameter"]
    assert (parameter["Value"], parameter["Type"]) == ("1", "String")
    assert live.aliases == ("live",)
    assert registry.get_alias("fraud", "live").version == 1
    assert [v.aliases for v in registry.list_versions("fraud")] == [("live",)]


def test_a_live_version_cannot_be_rejected(registry, make_artifact) -> None:
    registry.register("fraud", make_artifact())
    registry.approve("fraud", 1)
    registry.set_alias("fraud", "live", 1)

    with pytest.raises(RegistryError, match="point the alias elsewhere"):
        registry.reject("fraud", 1)


def test_status_changes_are_stored_in_sagemaker(registry, aws, make_artifact) -> None:
    registry.register("fraud", make_artifact())

    registry.reject("fraud", 1)

    packages = aws["sagemaker"].list_model_packages(ModelPackageGroupName="shipml-fraud-dev")
    assert packages["ModelPackageSummaryList"][0]["ModelApprovalStatus"] == "Rejected"
    assert registry.get_version("fraud", 1).status == ApprovalStatus.rejected


def test_open_artifact_verifies_the_digest(registry, aws, make_artifact) -> None:
    registry.register("fraud", make_artifact(seed=1))
    version = registry.get_version("fraud", 1)

    opened = registry.open_artifact(version)

    assert opened.digest == version.digest and opened.card.model_name == "fraud"
    # Replace the object with another valid artifact: the digest no longer matches the registration.
    other = registry.blobs.get_bytes("models/fraud/1/model.tar.gz")
    registry.register("fraud", make_artifact(seed=9))
    aws["s3"].put_object(
        Bucket=BUCKET,
        Key="models/fraud/1/model.tar.gz",
        Body=aws["s3"].get_object(Bucket=BUCKET, Key="models/fraud/2/model.tar.gz")["Body"].read(),
    )
    assert other != registry.blobs.get_bytes("models/fraud/1/model.tar.gz")
    for cached in (registry.cache_dir / "fraud" / "1").iterdir():
        cached.unlink()
    with pytest.raises(ArtifactError, match="does not match the digest"):
        registry.open_artifact(version)


def test_unknown_versions_are_named(registry, make_artifact) -> None:
    with pytest.raises(UnknownModelVersion, match="no registered versions"):
        registry.get_version("fraud", 3)
    registry.register("fraud", make_artifact())
    with pytest.raises(UnknownModelVersion, match=r"known versions: \[1\]"):
        registry.get_version("fraud", 3)


def test_an_artifact_of_another_model_is_refused(registry, make_artifact) -> None:
    with pytest.raises(RegistryError, match="not 'churn'"):
        registry.register("churn", make_artifact())
