"""The BatchScoring construct in a test stack with the foundation: states, SageMaker parameters
(checked against botocore's service model), IAM, KMS, schedule, the image asset, cdk-nag, cfn-lint,
and the resolve-the-live-version part of the state machine executed by moto."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import boto3
import botocore.session
import pytest
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ssm as ssm
from aws_cdk.assertions import Match, Template
from cdk_nag import AwsSolutionsChecks
from cfnlint.api import ManualArgs, lint
from moto import mock_aws

from stacks import batch_construct as bc
from stacks.foundation_construct import FoundationConstruct
from stacks.sagemaker_common import SAGEMAKER_RETRY_ERRORS
from stacks.settings import DeploySettings

# The recursive Parameters-vs-input-shape checker the pipeline tests wrote; shared rather than copied.
from tests.infrastructure.sagemaker_shapes import shape_problems
from tests.infrastructure.synthesized import SynthesizedStateMachine

REPO_ROOT = Path(__file__).resolve().parents[2]
SESSION = botocore.session.get_session()
SAGEMAKER = SESSION.get_service_model("sagemaker")
SSM = SESSION.get_service_model("ssm")
LIVE_PARAMETER = "/shipml/fraud/dev/live-model-version"
CFN_LINT_IGNORED = ["W3005"]  # CDK's redundant DependsOn
SUCCESS_PATH = [
    "ResolveLiveVersion",
    "LiveModelDeployed?",
    "PlanRun",
    "CreateModel",
    "ScoreBatch",
    "NotifyScored",
    "DeleteModel",
    "Scored",
]


@dataclass(frozen=True)
class Synthesized(SynthesizedStateMachine):
    stack: cdk.Stack
    batch: bc.BatchScoring
    live: ssm.StringParameter
    template: Template
    outdir: Path

    @property
    def definition(self) -> dict[str, Any]:
        (machine,) = [
            r for r in self.json["Resources"].values() if r["Type"] == "AWS::StepFunctions::StateMachine"
        ]
        return json.loads(render(machine["Properties"]["DefinitionString"]))

    def logical_id(self, construct: Any) -> str:
        return self.stack.resolve(self.stack.get_logical_id(construct.node.default_child))


def render(value: Any, stand_ins: dict[str, str] | None = None) -> str:
    """A CloudFormation string (Fn::Join of literals and references) with each reference written
    `<LogicalId>` / `<LogicalId.Attribute>`, or replaced by `stand_ins[LogicalId]`."""
    stand_ins = stand_ins or {}
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(render(p, stand_ins) for p in parts)
    if "Ref" in value:
        name = value["Ref"]
        return stand_ins.get(name, "aws" if name == "AWS::Partition" else f"<{name}>")
    if "Fn::GetAtt" in value:
        name, attribute = value["Fn::GetAtt"]
        return stand_ins.get(name, f"<{name}.{attribute}>")
    if "Fn::Sub" in value:
        return f"<Sub:{value['Fn::Sub']}>"
    raise AssertionError(f"unexpected intrinsic {value}")


@pytest.fixture(scope="module")
def synth(
    cdk_context: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., Synthesized]:
    def build(**options: Any) -> Synthesized:
        outdir = tmp_path_factory.mktemp("cdk.out")
        app = cdk.App(context=cdk_context, outdir=str(outdir))
        settings = DeploySettings.from_context(cdk_context)
        stack = cdk.Stack(app, "BatchTest")
        foundation = FoundationConstruct(stack, "Foundation", settings=settings)
        # Stand-in for the live parameter the serving construct owns.
        live = ssm.StringParameter(stack, "LiveParameter", parameter_name=LIVE_PARAMETER, string_value="0")
        if options.pop("with_online_table", False):
            options["online_table"] = dynamodb.Table(
                stack,
                "OnlineTable",
                partition_key=dynamodb.Attribute(name="entity", type=dynamodb.AttributeType.STRING),
                sort_key=dynamodb.Attribute(name="feature_group", type=dynamodb.AttributeType.STRING),
                encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
                encryption_key=foundation.key,
                billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
                point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                    point_in_time_recovery_enabled=True
                ),
            )
        batch = bc.BatchScoring(
            stack,
            "Batch",
            model_name="fraud",
            stage="dev",
            bucket=foundation.bucket,
            key=foundation.key,
            topic=foundation.topic,
            live_parameter=live,
            **options,
        )
        cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
        app.synth()
        return Synthesized(stack, batch, live, Template.from_stack(stack), outdir)

    return build


@pytest.fixture(scope="module")
def default(synth) -> Synthesized:
    """JSON Lines input carrying the online features, ml.m5.xlarge x 1, nightly."""
    return synth(instance_type="ml.m5.xlarge", instance_count=1, schedule="cron(0 2 * * ? *)")


@pytest.fixture(scope="module")
def csv_store(synth) -> Synthesized:
    """CSV, online features from the DynamoDB table, an instance type with local NVMe storage (a GPU one:
    the only kind Batch Transform offers with it), no schedule."""
    return synth(
        instance_type="ml.g4dn.xlarge",
        instance_count=3,
        schedule=None,
        input_format="text/csv",
        looked_up_features="store",
        with_online_table=True,
        input_prefix="datasets/fraud/to-score/",
        output_prefix="scores/fraud/",
        max_concurrent_transforms=8,
        max_payload_mb=4,
    )


VARIANTS = ["default", "csv_store"]


# --- states and transitions ----------------------------------------------------------------------


def test_the_success_path_reads_well_in_the_console(default: Synthesized) -> None:
    states = default.states
    path, current = [], default.definition["StartAt"]
    while current:
        path.append(current)
        state = states[current]
        current = state.get("Default") if state["Type"] == "Choice" else state.get("Next")

    assert path == SUCCESS_PATH
    assert states["Scored"]["Type"] == "Succeed"


def test_no_live_model_notifies_and_fails_without_scoring(default: Synthesized) -> None:
    states = default.states

    assert states["LiveModelDeployed?"]["Choices"] == [
        {"Variable": "$.live.version", "StringEquals": "0", "Next": "NotifyNoLiveModel"}
    ]
    assert states["NotifyNoLiveModel"]["Next"] == "NoLiveModel"
    assert states["NoLiveModel"] == {
        "Type": "Fail",
        "Error": "NoLiveModel",
        "Cause": "No model version is live yet; nothing was scored.",
    }


def test_every_task_catches_everything_and_the_failure_is_notified(default: Synthesized) -> None:
    states = default.states
    tasks = {name: s for name, s in states.items() if s["Type"] == "Task"}
    expected = {
        "ResolveLiveVersion": ("NotifyFailure", "$.error"),
        "CreateModel": ("NotifyFailure", "$.error"),
        # The transform job's model exists by then: it is deleted before the failure is notified.
        "ScoreBatch": ("DeleteModelAfterFailure", "$.error"),
        "NotifyScored": ("NotifyFailure", "$.error"),
        "DeleteModel": ("NotifyFailure", "$.error"),
        "NotifyNoLiveModel": ("NotifyFailure", "$.error"),
        # Cleanup may fail (the model may not exist): the original error is kept for the message.
        "DeleteModelAfterFailure": ("NotifyFailure", "$.cleanup_error"),
        "NotifyFailure": ("BatchFailed", "$.notify_error"),
    }

    assert set(tasks) == set(expected)
    for name, (target, result_path) in expected.items():
        assert tasks[name]["Catch"] == [
            {"ErrorEquals": ["States.ALL"], "Next": target, "ResultPath": result_path}
        ], name
    assert states["DeleteModelAfterFailure"]["Next"] == "NotifyFailure"
    assert states["NotifyFailure"]["Next"] == "BatchFailed"
    assert states["BatchFailed"] == {
        "Type": "Fail",
        "ErrorPath": "$.error.Error",
        "CausePath": "$.error.Cause",
    }
    assert "$.error.Cause" in states["NotifyFailure"]["Parameters"]["Message.$"]


def test_the_transform_is_followed_to_the_end_within_a_time_limit(default: Synthesized) -> None:
    states = default.states

    assert states["ScoreBatch"]["Resource"] == "arn:aws:states:::sagemaker:createTransformJob.sync"
    assert states["CreateModel"]["Resource"] == "arn:aws:states:::sagemaker:createModel"
    assert states["ScoreBatch"]["TimeoutSeconds"] == 6 * 3600
    assert default.definition["TimeoutSeconds"] == 7 * 3600
    assert states["ScoreBatch"]["Retry"] == [
        {"ErrorEquals": SAGEMAKER_RETRY_ERRORS, "IntervalSeconds": 30, "MaxAttempts": 3, "BackoffRate": 2}
    ]


def test_the_live_version_is_read_at_run_time_from_the_live_parameter(default: Synthesized) -> None:
    resolve = default.states["ResolveLiveVersion"]

    assert resolve["Resource"] == "arn:aws:states:::aws-sdk:ssm:getParameter"
    # The parameter is the serving construct's (a stand-in here): referenced, not named by hand.
    assert resolve["Parameters"] == {"Name": f"<{default.logical_id(default.live)}>"}
    assert resolve["ResultSelector"] == {"version.$": "$.Parameter.Value"}
    assert (
        shape_problems(resolve["Parameters"], SSM.operation_model("GetParameter").input_shape, "Resolve")
        == []
    )


def test_the_run_plan_names_the_artifact_and_a_dated_versioned_output(default: Synthesized) -> None:
    plan = default.states["PlanRun"]["Parameters"]
    bucket = f"<{default.logical_id(default.batch._bucket)}>"
    run_date = "States.ArrayGetItem(States.StringSplit($$.Execution.StartTime, 'T'), 0)"

    assert plan == {
        "name.$": "States.Format('shipml-fraud-batch-{}', States.UUID())",
        "date.$": run_date,
        "model_data_url.$": f"States.Format('s3://{bucket}/models/fraud/{{}}/model.tar.gz', $.live.version)",
        "output_uri.$": (
            f"States.Format('s3://{bucket}/batch/fraud/output/date={{}}/model_version={{}}/', "
            f"{run_date}, $.live.version)"
        ),
    }


def test_run_names_fit_sagemaker_limits_for_any_model_name() -> None:
    uuid = "0" * 36
    for model in ("fraud", "a-very-long-model-name-indeed", "m" * 64):
        name = bc.batch_name_prefix(model) + uuid
        assert re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", name), name


# --- SageMaker parameters against botocore's service model ----------------------------------------


def _api_calls(synthesized: Synthesized) -> dict[str, tuple[str, dict[str, Any]]]:
    apis = {
        "createModel": "CreateModel",
        "createTransformJob": "CreateTransformJob",
        "deleteModel": "DeleteModel",
    }
    out = {}
    for name, state in synthesized.states.items():
        resource = state.get("Resource", "")
        if ":sagemaker:" in resource:
            action = resource.rsplit(":", 1)[1].removesuffix(".sync")
            out[name] = (apis[action], state["Parameters"])
    return out


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_sagemaker_call_matches_its_api(request: pytest.FixtureRequest, variant: str) -> None:
    synthesized: Synthesized = request.getfixturevalue(variant)
    calls = _api_calls(synthesized)

    assert {name: api for name, (api, _) in calls.items()} == {
        "CreateModel": "CreateModel",
        "ScoreBatch": "CreateTransformJob",
        "DeleteModel": "DeleteModel",
        "DeleteModelAfterFailure": "DeleteModel",
    }
    for name, (api, parameters) in calls.items():
        assert shape_problems(parameters, SAGEMAKER.operation_model(api).input_shape, name) == []


def test_the_transform_splits_by_line_batches_records_and_joins_each_row_to_its_input(
    default: Synthesized,
) -> None:
    parameters = default.states["ScoreBatch"]["Parameters"]
    bucket = f"<{default.logical_id(default.batch._bucket)}>"

    assert parameters["BatchStrategy"] == "MultiRecord"
    assert parameters["TransformInput"] == {
        "DataSource": {
            "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/batch/fraud/input/"}
        },
        "ContentType": "application/jsonlines",
        "CompressionType": "None",
        "SplitType": "Line",
    }
    assert parameters["DataProcessing"] == {"InputFilter": "$", "JoinSource": "Input", "OutputFilter": "$"}
    assert parameters["TransformOutput"]["Accept"] == "application/jsonlines"
    assert parameters["TransformOutput"]["AssembleWith"] == "Line"
    assert parameters["TransformOutput"]["S3OutputPath.$"] == "$.run.output_uri"
    assert (parameters["MaxConcurrentTransforms"], parameters["MaxPayloadInMB"]) == (4, 6)
    assert parameters["TransformJobName.$"] == parameters["ModelName.$"] == "$.run.name"


def test_instance_type_count_format_and_prefixes_come_from_the_inputs(csv_store: Synthesized) -> None:
    parameters = csv_store.states["ScoreBatch"]["Parameters"]

    assert parameters["TransformResources"]["InstanceType"] == "ml.g4dn.xlarge"
    assert parameters["TransformResources"]["InstanceCount"] == 3
    assert (
        parameters["TransformInput"]["ContentType"] == parameters["TransformOutput"]["Accept"] == "text/csv"
    )
    assert parameters["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"].endswith(
        "/datasets/fraud/to-score/"
    )
    assert (
        "/scores/fraud/date={}/model_version={}/" in csv_store.states["PlanRun"]["Parameters"]["output_uri.$"]
    )
    assert (parameters["MaxConcurrentTransforms"], parameters["MaxPayloadInMB"]) == (8, 4)


def test_the_model_is_the_batch_image_over_the_live_artifact(default: Synthesized) -> None:
    parameters = default.states["CreateModel"]["Parameters"]
    role = default.logical_id(default.batch.sagemaker_role)

    assert parameters["ExecutionRoleArn"] == f"<{role}.Arn>"
    assert parameters["PrimaryContainer"]["ModelDataUrl.$"] == "$.run.model_data_url"
    assert parameters["PrimaryContainer"]["Image"].startswith("<Sub:${AWS::AccountId}.dkr.ecr.")
    # The container serves the version it was given and reads the looked-up features from the input.
    assert parameters["PrimaryContainer"]["Environment"] == {
        "SHIPML_MODEL_VERSION.$": "$.live.version",
        "SHIPML_LOOKED_UP_FEATURES": "input",
    }
    assert parameters["EnableNetworkIsolation"] is True


def test_store_mode_reaches_the_online_table_and_only_reads_it(csv_store: Synthesized) -> None:
    parameters = csv_store.states["CreateModel"]["Parameters"]
    table = csv_store.logical_id(csv_store.batch._online_table)

    assert parameters["EnableNetworkIsolation"] is False
    assert parameters["PrimaryContainer"]["Environment"] == {
        "SHIPML_MODEL_VERSION.$": "$.live.version",
        "SHIPML_LOOKED_UP_FEATURES": "store",
        "SHIPML_ONLINE_TABLE": f"<{table}>",
    }
    statements = _statements(csv_store, csv_store.batch.sagemaker_role)
    dynamo = [s for s in statements if any(a.startswith("dynamodb:") for a in _actions(s))]
    assert [(_actions(s), s["Resource"]) for s in dynamo] == [
        (["dynamodb:BatchGetItem"], {"Fn::GetAtt": [table, "Arn"]})
    ]


def test_store_mode_without_a_table_and_bad_prefixes_are_refused(cdk_context: dict[str, Any]) -> None:
    app = cdk.App(context=cdk_context)
    stack = cdk.Stack(app, "Refusals")
    foundation = FoundationConstruct(stack, "Foundation", settings=DeploySettings.from_context(cdk_context))
    common = {"model_name": "fraud", "stage": "dev", "bucket": foundation.bucket, "key": foundation.key}

    with pytest.raises(ValueError, match="online_table"):
        bc.BatchScoring(stack, "A", topic=foundation.topic, looked_up_features="store", **common)
    with pytest.raises(ValueError, match="input_prefix '/abs/' must be a bucket prefix"):
        bc.BatchScoring(stack, "B", topic=foundation.topic, input_prefix="/abs/", **common)
    with pytest.raises(ValueError, match="output_prefix 'no-slash'"):
        bc.BatchScoring(stack, "C", topic=foundation.topic, output_prefix="no-slash", **common)
    with pytest.raises(ValueError, match="max_payload_mb 200"):
        bc.BatchScoring(stack, "D", topic=foundation.topic, max_payload_mb=200, **common)
    with pytest.raises(ValueError, match="ml.c5d.2xlarge is not an instance type Batch Transform offers"):
        bc.BatchScoring(stack, "E", topic=foundation.topic, instance_type="ml.c5d.2xlarge", **common)


# --- KMS -------------------------------------------------------------------------------------------


def test_output_and_volumes_are_encrypted_with_the_stack_key(default: Synthesized) -> None:
    parameters = default.states["ScoreBatch"]["Parameters"]
    key = f"<{default.logical_id(default.batch._key)}.Arn>"

    assert parameters["TransformOutput"]["KmsKeyId"] == key
    assert parameters["TransformResources"]["VolumeKmsKeyId"] == key


def test_instances_with_local_storage_take_no_volume_key_but_the_output_stays_encrypted(
    csv_store: Synthesized,
) -> None:
    parameters = csv_store.states["ScoreBatch"]["Parameters"]

    # SageMaker refuses a VolumeKmsKeyId for NVMe instance storage (encrypted by the hardware).
    assert "VolumeKmsKeyId" not in parameters["TransformResources"]
    assert parameters["TransformOutput"]["KmsKeyId"] == f"<{csv_store.logical_id(csv_store.batch._key)}.Arn>"


# --- IAM -----------------------------------------------------------------------------------------


def _statements(synthesized: Synthesized, role: Any) -> list[dict[str, Any]]:
    role_id = synthesized.logical_id(role)
    out = []
    for resource in synthesized.json["Resources"].values():
        if resource["Type"] == "AWS::IAM::Policy" and {"Ref": role_id} in resource["Properties"]["Roles"]:
            out += resource["Properties"]["PolicyDocument"]["Statement"]
    return out


def _actions(statement: dict[str, Any]) -> list[str]:
    actions = statement["Action"]
    return [actions] if isinstance(actions, str) else actions


def _resources(statement: dict[str, Any]) -> list[str]:
    resources = statement["Resource"]
    return [render(r) for r in (resources if isinstance(resources, list) else [resources])]


@pytest.mark.parametrize("variant", VARIANTS)
def test_pass_role_is_granted_for_the_sagemaker_role_only(
    request: pytest.FixtureRequest, variant: str
) -> None:
    synthesized: Synthesized = request.getfixturevalue(variant)
    role = synthesized.logical_id(synthesized.batch.sagemaker_role)
    passing = [
        s
        for r in synthesized.json["Resources"].values()
        if r["Type"] == "AWS::IAM::Policy"
        for s in r["Properties"]["PolicyDocument"]["Statement"]
        if any(a in ("iam:PassRole", "iam:*", "*") for a in _actions(s))
    ]

    assert passing == [
        {
            "Action": "iam:PassRole",
            "Condition": {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            "Effect": "Allow",
            "Resource": {"Fn::GetAtt": [role, "Arn"]},
        }
    ]


def test_the_state_machine_manages_only_this_models_batch_jobs(default: Synthesized) -> None:
    statements = _statements(default, default.batch.state_machine.role)
    sagemaker = {a: _resources(s) for s in statements for a in _actions(s) if a.startswith("sagemaker:")}

    assert sagemaker == {
        "sagemaker:CreateModel": [
            "arn:aws:sagemaker:<AWS::Region>:<AWS::AccountId>:model/shipml-fraud-batch-*"
        ],
        "sagemaker:DeleteModel": [
            "arn:aws:sagemaker:<AWS::Region>:<AWS::AccountId>:model/shipml-fraud-batch-*"
        ],
        **{
            f"sagemaker:{verb}TransformJob": [
                "arn:aws:sagemaker:<AWS::Region>:<AWS::AccountId>:transform-job/shipml-fraud-batch-*"
            ]
            for verb in ("Create", "Describe", "Stop")
        },
    }
    (ssm_read,) = [s for s in statements if "ssm:GetParameter" in _actions(s)]
    assert _resources(ssm_read) == [
        f"arn:aws:ssm:<AWS::Region>:<AWS::AccountId>:parameter<{default.logical_id(default.live)}>"
    ]
    events = [s for s in statements if "events:PutRule" in _actions(s)]
    assert _resources(events[0]) == [
        "arn:aws:events:<AWS::Region>:<AWS::AccountId>:rule/StepFunctionsGetEventsForSageMakerTransformJobsRule"
    ]


def test_the_sagemaker_role_reads_artifacts_and_input_and_writes_only_the_output_prefix(
    default: Synthesized,
) -> None:
    statements = _statements(default, default.batch.sagemaker_role)
    bucket = f"<{default.logical_id(default.batch._bucket)}.Arn>"
    s3 = {a: sorted(_resources(s)) for s in statements for a in _actions(s) if a.startswith("s3:")}

    assert s3 == {
        "s3:GetObject": sorted([f"{bucket}/models/fraud/*", f"{bucket}/batch/fraud/input/*"]),
        "s3:ListBucket": [bucket],
        "s3:PutObject": [f"{bucket}/batch/fraud/output/*"],
        "s3:AbortMultipartUpload": [f"{bucket}/batch/fraud/output/*"],
    }
    (listing,) = [s for s in statements if "s3:ListBucket" in _actions(s)]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["batch/fraud/input/*"]}}
    pulls = [s for s in statements if "ecr:BatchGetImage" in _actions(s)]
    assert len(pulls) == 1 and "container-assets" in json.dumps(pulls[0]["Resource"])


# --- schedule ------------------------------------------------------------------------------------


def test_the_schedule_starts_the_state_machine_and_is_encrypted(default: Synthesized) -> None:
    default.template.has_resource_properties(
        "AWS::Scheduler::Schedule",
        {
            "ScheduleExpression": "cron(0 2 * * ? *)",
            "State": "ENABLED",
            "KmsKeyArn": {"Fn::GetAtt": [default.logical_id(default.batch._key), "Arn"]},
            "Target": Match.object_like(
                {
                    "Arn": {"Ref": default.logical_id(default.batch.state_machine)},
                    "Input": '{"reason":"scheduled"}',
                }
            ),
        },
    )


def test_without_a_schedule_nothing_starts_the_machine_on_its_own(csv_store: Synthesized) -> None:
    csv_store.template.resource_count_is("AWS::Scheduler::Schedule", 0)
    assert csv_store.batch.schedule is None


def test_the_state_machine_logs_everything_and_traces(default: Synthesized) -> None:
    default.template.has_resource_properties(
        "AWS::StepFunctions::StateMachine",
        {
            "TracingConfiguration": {"Enabled": True},
            "LoggingConfiguration": Match.object_like({"Level": "ALL", "IncludeExecutionData": True}),
            "StateMachineName": "shipml-fraud-dev-batch",
        },
    )


# --- the image asset -----------------------------------------------------------------------------


def test_the_image_is_an_asset_staged_from_exactly_what_the_dockerfile_copies(default: Synthesized) -> None:
    manifest = json.loads((default.outdir / "BatchTest.assets.json").read_text())
    (image,) = manifest["dockerImages"].values()
    staged = default.outdir / image["source"]["directory"]
    files = sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file())
    dockerfile = (REPO_ROOT / bc.IMAGE_DIR / "Dockerfile").read_text()
    copied = re.findall(r"^COPY\s+(\S+)\s", dockerfile, flags=re.MULTILINE)

    assert image["source"]["dockerFile"] == "training/batch_image/Dockerfile"
    assert image["source"]["platform"] == "linux/amd64"
    assert {f.split("/")[0] for f in files} == {"shipml", "functions", "training"}
    assert [f for f in files if not f.startswith("shipml/")] == [
        "functions/inference/requirements.txt",
        "training/batch_image/Dockerfile",
        "training/batch_image/requirements.txt",
    ]
    assert "shipml/serving/container.py" in files and not any("__pycache__" in f for f in files)
    for source in copied:
        assert (staged / source).exists(), f"the Dockerfile copies {source}, which the context lacks"


# --- cdk-nag, cfn-lint ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_cdk_nag_reports_nothing_unacknowledged(request: pytest.FixtureRequest, variant: str) -> None:
    synthesized: Synthesized = request.getfixturevalue(variant)
    assert synthesized.violations() == []


@pytest.mark.parametrize("variant", VARIANTS)
def test_cfn_lint_finds_nothing(request: pytest.FixtureRequest, variant: str) -> None:
    synthesized: Synthesized = request.getfixturevalue(variant)
    matches = lint(
        json.dumps(synthesized.json),
        config=ManualArgs(regions=["us-east-1", "eu-west-1"], ignore_checks=CFN_LINT_IGNORED),
    )
    assert [str(m) for m in matches] == []


# --- the definition executed (moto runs the SSM and SNS steps; it cannot run SageMaker .sync) -------


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        yield


def _execute(
    synthesized: Synthesized, live_version: str | None
) -> tuple[dict[str, Any], list[str], list[str]]:
    """Run the synthesized definition in moto; return the execution, the states entered, the messages sent."""
    sns, ssm_client = boto3.client("sns"), boto3.client("ssm")
    sfn, sqs = boto3.client("stepfunctions"), boto3.client("sqs")
    topic = sns.create_topic(Name="notifications")["TopicArn"]
    queue = sqs.create_queue(QueueName="inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    if live_version is not None:
        ssm_client.put_parameter(Name=LIVE_PARAMETER, Value=live_version, Type="String")
    (machine,) = [
        r for r in synthesized.json["Resources"].values() if r["Type"] == "AWS::StepFunctions::StateMachine"
    ]
    definition = render(
        machine["Properties"]["DefinitionString"],
        {
            synthesized.logical_id(synthesized.batch._topic): topic,
            synthesized.logical_id(synthesized.live): LIVE_PARAMETER,
        },
    )
    arn = sfn.create_state_machine(
        name="batch", definition=definition, roleArn="arn:aws:iam::123456789012:role/batch"
    )["stateMachineArn"]
    execution = sfn.start_execution(stateMachineArn=arn, input="{}")["executionArn"]
    for _ in range(200):
        described = sfn.describe_execution(executionArn=execution)
        if described["status"] != "RUNNING":
            break
        time.sleep(0.05)
    events = sfn.get_execution_history(executionArn=execution)["events"]
    entered = [e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e]
    messages = [
        json.loads(m["Body"])["Subject"]
        for m in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
    ]
    return described, entered, messages


def test_with_no_live_version_the_run_is_announced_and_fails_before_any_sagemaker_call(
    default: Synthesized, aws: None
) -> None:
    described, entered, messages = _execute(default, live_version="0")

    assert described["status"] == "FAILED" and described["error"] == "NoLiveModel"
    assert entered == ["ResolveLiveVersion", "LiveModelDeployed?", "NotifyNoLiveModel", "NoLiveModel"]
    assert messages == ["shipml fraud (dev) batch scoring: no live model"]


def test_a_missing_live_parameter_is_caught_and_notified(default: Synthesized, aws: None) -> None:
    described, entered, messages = _execute(default, live_version=None)

    assert described["status"] == "FAILED" and described["error"].endswith("ParameterNotFoundException")
    assert entered == ["ResolveLiveVersion", "NotifyFailure", "BatchFailed"]
    assert messages == ["shipml fraud (dev) batch scoring: failed"]
