"""The pieces the model-serving functions share: real-time serving (`stacks/serving_construct.py`) and the
stream consumer (`stacks/stream_construct.py`); `ARCHITECTURES` serves the monitor functions too.

Each function creates its resources directly in the `scope` it is given, under the construct ids the
constructs used before, so logical IDs do not depend on which construct calls it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks import constants, lambda_bundle
from stacks.capture_construct import CaptureConstruct
from stacks.online_features_construct import OnlineFeaturesConstruct

if TYPE_CHECKING:
    # Annotations only: stacks/settings.py imports the stream construct, which imports this module.
    from stacks.settings import DeploySettings

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The `lambda_architecture` setting as CDK's architecture.
ARCHITECTURES = {"arm64": lambda_.Architecture.ARM_64, "x86_64": lambda_.Architecture.X86_64}


def settings_bundle(settings: DeploySettings, **spec: Any) -> lambda_bundle.BundleSpec:
    """The bundle of a function that serves the model: the settings' architecture, contract and budget.

    `spec` names what differs from the serving bundle (requirements, sources, code_dir).
    """
    return lambda_bundle.BundleSpec(
        repo_root=REPO_ROOT,
        architecture=settings.lambda_architecture,
        contract_path=settings.contract_path.as_posix(),
        budget_mb=settings.lambda_bundle_budget_mb,
        **spec,
    )


def function_log_group_and_role(
    scope: Construct, settings: DeploySettings, key: kms.IKey, description: str
) -> tuple[logs.LogGroup, iam.Role]:
    """The function's log group ("FunctionLogs") and its own role ("FunctionRole"), which may write there.

    Our own role instead of the default one with AWSLambdaBasicExecutionRole: it may write to this
    function's log group only, and every other permission is granted by resource. The logs can hold
    request metadata and errors: encrypted with the stack's key like every store.
    """
    log_group = logs.LogGroup(
        scope,
        "FunctionLogs",
        retention=settings.cdk_log_retention,
        removal_policy=settings.cdk_removal_policy,
        encryption_key=key,
    )
    role = iam.Role(
        scope,
        "FunctionRole",
        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        description=description,
    )
    log_group.grant_write(role)
    return log_group, role


def grant_model_inputs(
    role: iam.IRole,
    *,
    bucket: s3.IBucket,
    key: kms.IKey,
    online_features: OnlineFeaturesConstruct,
    capture: CaptureConstruct,
) -> None:
    """What scoring a request needs: the artifacts (no listing, no other prefix), the stack key to
    decrypt them, the online features to look up, and the capture to put the scored record on."""
    role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["s3:GetObject"], resources=[bucket.arn_for_objects(f"{constants.ARTIFACT_PREFIX}*")]
        )
    )
    key.grant_decrypt(role)
    online_features.grant_lookup(role)
    capture.grant_put(role)
