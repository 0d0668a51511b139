"""The scheduled materialisation: the schedule, the job, and grants no wider than the lake prefix,
the state prefix, the online table and the stack's key. cdk-nag and cfn-lint clean, both hosts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_lambda as lambda_
from aws_cdk.assertions import Match, Template
from cdk_nag import AwsSolutionsChecks
from cfnlint.api import ManualArgs, lint

from shipml.backends.aws.online import PARTITION_KEY, SORT_KEY
from stacks import constants
from stacks.features_construct import FeaturesConstruct
from stacks.foundation_construct import FoundationConstruct
from stacks.settings import DeploySettings

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/shipml-batch:1"


class Synthesized:
    def __init__(
        self, stack: cdk.Stack, features: FeaturesConstruct, foundation: FoundationConstruct, table
    ) -> None:
        self.stack, self.features, self.foundation, self.table = stack, features, foundation, table
        self.template = Template.from_stack(stack)

    def ref(self, construct) -> str:
        return self.stack.resolve(self.stack.get_logical_id(construct.node.default_child))

    def statements(self, role) -> list[dict[str, Any]]:
        policy_id = self.ref(role.node.find_child("DefaultPolicy"))
        return self.template.to_json()["Resources"][policy_id]["Properties"]["PolicyDocument"]["Statement"]


def _synth(context: dict[str, Any], outdir: Path, **options: Any) -> Synthesized:
    """A test stack: the foundation, an online table like the serving stack's, and the construct."""
    app = cdk.App(context=context, outdir=str(outdir))
    settings = DeploySettings.from_node(app.node)
    stack = cdk.Stack(app, "FeaturesTest")
    foundation = FoundationConstruct(stack, "Foundation", settings=settings)
    table = dynamodb.Table(
        stack,
        "OnlineTable",
        partition_key=dynamodb.Attribute(name=PARTITION_KEY, type=dynamodb.AttributeType.STRING),
        sort_key=dynamodb.Attribute(name=SORT_KEY, type=dynamodb.AttributeType.STRING),
        billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
        encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
        encryption_key=foundation.key,
        point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=True
        ),
        removal_policy=cdk.RemovalPolicy.DESTROY,
    )
    features = FeaturesConstruct(
        stack,
        "Features",
        model_name="fraud",
        bucket=foundation.bucket,
        key=foundation.key,
        table=table,
        contract_path="examples/fraud/contract.yaml",
        **options,
    )
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    app.synth()  # raises if cdk-nag reports a finding that is not acknowledged with a reason
    return Synthesized(stack, features, foundation, table)


@pytest.fixture(scope="module")
def on_lambda(cdk_context, tmp_path_factory) -> Synthesized:
    code = lambda_.Code.from_asset(str(REPO_ROOT / "functions" / "features"))
    return _synth(cdk_context, tmp_path_factory.mktemp("cdk.out"), code=code, schedule="cron(15 * * * ? *)")


@pytest.fixture(scope="module")
def on_processing(cdk_context, tmp_path_factory) -> Synthesized:
    return _synth(
        cdk_context, tmp_path_factory.mktemp("cdk.out"), host="processing", processing_image_uri=IMAGE
    )


def test_the_table_key_is_the_one_the_adapter_uses():
    assert (constants.ONLINE_TABLE_PARTITION_KEY, constants.ONLINE_TABLE_SORT_KEY) == (
        PARTITION_KEY,
        SORT_KEY,
    )


def test_the_schedule_invokes_the_function_with_the_scheduled_time(on_lambda: Synthesized):
    function_arn = {"Fn::GetAtt": [on_lambda.ref(on_lambda.features.function), "Arn"]}
    on_lambda.template.has_resource_properties(
        "AWS::Scheduler::Schedule",
        {
            "ScheduleExpression": "cron(15 * * * ? *)",
            "State": "ENABLED",
            "KmsKeyArn": {"Fn::GetAtt": [on_lambda.ref(on_lambda.foundation.key), "Arn"]},
            "Target": {
                "Arn": function_arn,
                "Input": json.dumps({"time": "<aws.scheduler.scheduled-time>"}, separators=(",", ":")),
                "RetryPolicy": Match.object_like({"MaximumRetryAttempts": 2}),
                "RoleArn": {"Fn::GetAtt": [on_lambda.ref(on_lambda.features.schedule_role), "Arn"]},
            },
        },
    )


def test_the_function_runs_one_at_a_time_with_its_settings_encrypted(on_lambda: Synthesized):
    on_lambda.template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Handler": "functions/features/handler.handler",
            "Runtime": "python3.12",
            "ReservedConcurrentExecutions": 1,
            "Timeout": 900,
            "KmsKeyArn": {"Fn::GetAtt": [on_lambda.ref(on_lambda.foundation.key), "Arn"]},
            "Environment": {
                "Variables": {
                    "SHIPML_CONTRACT": "examples/fraud/contract.yaml",
                    "SHIPML_LAKE_BUCKET": {"Ref": on_lambda.ref(on_lambda.foundation.bucket)},
                    "SHIPML_LAKE_PREFIX": "lake/transactions/",
                    "SHIPML_STATE_PREFIX": "features/state/",
                    "SHIPML_ONLINE_TABLE": {"Ref": on_lambda.ref(on_lambda.table)},
                }
            },
        },
    )


def _text(value: Any) -> str:
    """A CloudFormation string (maybe an Fn::Join) with every reference shown as <ref>."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(_text(part) for part in parts)
    return "<ref>"


def _grants(synth: Synthesized) -> dict[str, tuple[list[str], Any]]:
    """The job role's statements by Sid: (actions, resources)."""
    out = {}
    for statement in synth.statements(synth.features.role):
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        out[statement["Sid"]] = (sorted(actions), statement["Resource"], statement.get("Condition"))
    return out


@pytest.mark.parametrize("host", ["on_lambda", "on_processing"])
def test_the_job_reads_only_the_lake_writes_only_the_table_and_its_state(request, host):
    synth: Synthesized = request.getfixturevalue(host)
    bucket_arn = {"Fn::GetAtt": [synth.ref(synth.foundation.bucket), "Arn"]}
    grants = _grants(synth)

    assert grants["ReadLake"][:2] == (
        ["s3:GetObject"],
        {"Fn::Join": ["", [bucket_arn, "/lake/transactions/*"]]},
    )
    assert grants["ReadWriteState"][:2] == (
        ["s3:GetObject", "s3:PutObject"],
        {"Fn::Join": ["", [bucket_arn, "/features/state/*"]]},
    )
    assert grants["ListLakeAndState"] == (
        ["s3:ListBucket"],
        bucket_arn,
        {"StringLike": {"s3:prefix": ["lake/transactions/*", "features/state/*"]}},
    )
    assert grants["WriteOnlineTable"][:2] == (
        ["dynamodb:BatchWriteItem", "dynamodb:DescribeTable", "dynamodb:PutItem"],
        {"Fn::GetAtt": [synth.ref(synth.table), "Arn"]},
    )
    assert grants["UseStackKey"][1] == {"Fn::GetAtt": [synth.ref(synth.foundation.key), "Arn"]}
    # Nothing else: no read of the table, no other bucket path, no deletes, no wildcard actions
    every_action = [a for actions, _, _ in grants.values() for a in actions]
    assert not [a for a in every_action if a.endswith("*") and a != "kms:GenerateDataKey*"]
    assert not {"dynamodb:GetItem", "dynamodb:Query", "dynamodb:Scan", "s3:DeleteObject"} & set(every_action)
    expected = {"Logs", "ListLakeAndState", "ReadLake", "ReadWriteState", "WriteOnlineTable", "UseStackKey"}
    assert set(grants) == expected | ({"PullImage"} if host == "on_processing" else set())
    # and no managed policies on the role
    role_id = synth.ref(synth.features.role)
    assert "ManagedPolicyArns" not in synth.template.to_json()["Resources"][role_id]["Properties"]


def test_the_processing_host_starts_a_processing_job_from_the_schedule(on_processing: Synthesized):
    template = on_processing.template
    template.resource_count_is("AWS::Lambda::Function", 0)
    schedule = next(iter(template.find_resources("AWS::Scheduler::Schedule").values()))["Properties"]
    assert _text(schedule["Target"]["Arn"]) == "arn:<ref>:scheduler:::aws-sdk:sagemaker:createProcessingJob"
    job = json.loads(_text(schedule["Target"]["Input"]))
    assert job["AppSpecification"] == {
        "ImageUri": IMAGE,
        "ContainerEntrypoint": ["python3", "-m", "shipml.features.job"],
    }
    assert job["ProcessingJobName"] == "features-fraud-<aws.scheduler.execution-id>"
    assert job["Environment"]["SHIPML_AS_OF"] == "<aws.scheduler.scheduled-time>"
    statements = on_processing.statements(on_processing.features.schedule_role)
    pass_role = next(s for s in statements if s["Action"] == "iam:PassRole")
    assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
    assert pass_role["Resource"] == {"Fn::GetAtt": [on_processing.ref(on_processing.features.role), "Arn"]}


def test_bad_inputs_are_refused(cdk_context, tmp_path):
    with pytest.raises(ValueError, match="needs the function's code"):
        _synth(cdk_context, tmp_path / "a")
    with pytest.raises(ValueError, match="lake_prefix must be a relative prefix ending in '/'"):
        _synth(
            cdk_context, tmp_path / "b", host="processing", processing_image_uri=IMAGE, lake_prefix="/lake"
        )


@pytest.mark.parametrize("host", ["on_lambda", "on_processing"])
def test_cfn_lint_finds_nothing(request, host, tmp_path):
    synth: Synthesized = request.getfixturevalue(host)
    template = json.dumps(synth.template.to_json())
    matches = lint(template, config=ManualArgs(regions=["eu-west-1"], ignore_checks=["W3005"]))
    assert [str(m) for m in matches] == []
