"""The shipml stack as app.py synthesizes it: the properties that matter, cdk-nag and cfn-lint clean."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Match
from cfnlint.api import ManualArgs, lint
from constructs import Construct

from stacks import constants

from .conftest import SynthesizedApp
from .synthesized import findings

DENY_INSECURE_TRANSPORT = Match.object_like(
    {"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
)
# CDK adds DependsOn entries that CloudFormation already infers from references.
CFN_LINT_IGNORED = ["W3005"]


def _logical_id(synthesized: SynthesizedApp, construct: Construct) -> str:
    """The logical id CloudFormation knows an L2 construct's resource by."""
    return synthesized.stack.resolve(synthesized.stack.get_logical_id(construct.node.default_child))


def _key_arn(synthesized: SynthesizedApp) -> dict[str, Any]:
    return {"Fn::GetAtt": [_logical_id(synthesized, synthesized.stack.foundation.key), "Arn"]}


def test_key_rotation_is_on(dev: SynthesizedApp) -> None:
    dev.template.resource_count_is("AWS::KMS::Key", 1)
    dev.template.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})
    dev.template.has_resource_properties("AWS::KMS::Alias", {"AliasName": "alias/shipml-fraud-dev"})


def test_artifact_bucket_is_encrypted_with_the_stack_key(dev: SynthesizedApp) -> None:
    bucket_id = _logical_id(dev, dev.stack.foundation.bucket)

    properties = dev.template.to_json()["Resources"][bucket_id]["Properties"]

    assert properties["BucketEncryption"]["ServerSideEncryptionConfiguration"] == [
        {
            "BucketKeyEnabled": True,
            "ServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": _key_arn(dev)},
        }
    ]


def test_artifact_bucket_logs_to_the_access_logs_bucket(dev: SynthesizedApp) -> None:
    logs_id = _logical_id(dev, dev.stack.foundation.access_logs_bucket)

    dev.template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "LoggingConfiguration": {
                "DestinationBucketName": {"Ref": logs_id},
                "LogFilePrefix": constants.ACCESS_LOGS_PREFIX,
            }
        },
    )
    # S3 delivers access logs only to a bucket encrypted with SSE-S3.
    dev.template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
                ]
            },
            "LoggingConfiguration": Match.absent(),
        },
    )


def test_every_bucket_blocks_public_access_and_is_versioned(dev: SynthesizedApp) -> None:
    dev.template.resource_count_is("AWS::S3::Bucket", 2)
    dev.template.all_resources_properties(
        "AWS::S3::Bucket",
        {
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "VersioningConfiguration": {"Status": "Enabled"},
        },
    )


@pytest.mark.parametrize("bucket", ["bucket", "access_logs_bucket"])
def test_every_bucket_denies_requests_without_tls(dev: SynthesizedApp, bucket: str) -> None:
    bucket_id = _logical_id(dev, getattr(dev.stack.foundation, bucket))

    dev.template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "Bucket": {"Ref": bucket_id},
            "PolicyDocument": {"Statement": Match.array_with([DENY_INSECURE_TRANSPORT])},
        },
    )


def test_topic_is_encrypted_with_the_stack_key_and_requires_tls(dev: SynthesizedApp) -> None:
    topic_id = _logical_id(dev, dev.stack.foundation.topic)

    dev.template.has_resource_properties("AWS::SNS::Topic", {"KmsMasterKeyId": _key_arn(dev)})
    dev.template.has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "Topics": [{"Ref": topic_id}],
            "PolicyDocument": {"Statement": Match.array_with([DENY_INSECURE_TRANSPORT])},
        },
    )


def test_no_subscription_without_an_alarm_email(dev: SynthesizedApp) -> None:
    dev.template.resource_count_is("AWS::SNS::Subscription", 0)


def test_alarm_email_is_subscribed_to_the_topic(synth_app: Callable[..., SynthesizedApp]) -> None:
    synthesized = synth_app({"alarm_email": "ml-oncall@example.com"})

    synthesized.template.has_resource_properties(
        "AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": "ml-oncall@example.com"}
    )


def test_dev_deletes_its_data_with_the_stack(dev: SynthesizedApp) -> None:
    for resource_type in ("AWS::S3::Bucket", "AWS::KMS::Key"):
        dev.template.all_resources(
            resource_type, {"DeletionPolicy": "Delete", "UpdateReplacePolicy": "Delete"}
        )
    assert dev.stack.termination_protection is False


def test_prod_retains_its_data_and_is_protected(prod: SynthesizedApp) -> None:
    for resource_type in ("AWS::S3::Bucket", "AWS::KMS::Key"):
        prod.template.all_resources(
            resource_type, {"DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain"}
        )
    assert prod.stack.termination_protection is True
    assert prod.stack.stack_name == "shipml-fraud-prod"


def test_stack_is_named_tagged_and_environment_agnostic(dev: SynthesizedApp) -> None:
    assert dev.stack.stack_name == "shipml-fraud-dev"
    assert dev.stack.tags.tag_values() == {"project": "shipml", "stage": "dev", "model": "fraud"}
    assert cdk.Token.is_unresolved(dev.stack.account)
    assert cdk.Token.is_unresolved(dev.stack.region)


def test_outputs_name_the_bucket_topic_and_key(dev: SynthesizedApp) -> None:
    outputs = dev.template.to_json()["Outputs"]

    assert {
        constants.OUTPUT_ARTIFACT_BUCKET,
        constants.OUTPUT_NOTIFICATION_TOPIC,
        constants.OUTPUT_ENCRYPTION_KEY,
    } <= set(outputs)


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_cdk_nag_reports_no_finding(request: pytest.FixtureRequest, stage: str) -> None:
    synthesized: SynthesizedApp = request.getfixturevalue(stage)

    assert findings(synthesized.validation_report) == []


def test_cdk_nag_fails_synth_on_an_unacknowledged_finding(synth_app: Callable[..., SynthesizedApp]) -> None:
    # Proves the check above can fail: a bucket without access logs is an AwsSolutions-S1 error.
    def add_unlogged_bucket(stack: cdk.Stack) -> None:
        s3.Bucket(stack, "UnloggedBucket", enforce_ssl=True)

    with pytest.raises(RuntimeError, match=r"(?s)UnloggedBucket.*AwsSolutions-S1\b"):
        synth_app(extend=add_unlogged_bucket)


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_cfn_lint_finds_nothing(request: pytest.FixtureRequest, stage: str) -> None:
    synthesized: SynthesizedApp = request.getfixturevalue(stage)

    matches = lint(
        json.dumps(synthesized.template.to_json()),
        config=ManualArgs(regions=["us-east-1", "eu-west-1"], ignore_checks=CFN_LINT_IGNORED),
    )

    assert [str(match) for match in matches] == []
