"""The TrainingPipeline construct in a test stack with the foundation: states, parameters, IAM, cdk-nag."""

from __future__ import annotations

import fnmatch
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import botocore.session
import pytest
from aws_cdk import aws_codedeploy as codedeploy
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_ssm as ssm
from aws_cdk.assertions import Match, Template
from cdk_nag import AwsSolutionsChecks

from shipml.pipeline.steps import job_prefix
from stacks import pipeline_construct as pc
from stacks.export_pipeline_definition import export_from_template
from stacks.foundation_construct import FoundationConstruct
from stacks.sagemaker_common import SAGEMAKER_RETRY_ERRORS
from stacks.settings import DeploySettings
from tests.infrastructure.sagemaker_shapes import shape_problems
from tests.infrastructure.synthesized import SynthesizedStateMachine

REPO_ROOT = Path(__file__).resolve().parents[2]
SAGEMAKER = botocore.session.get_session().get_service_model("sagemaker")
API_OF = {"createTrainingJob": "CreateTrainingJob", "createProcessingJob": "CreateProcessingJob"}
TASK_TYPES = {"Task"}


@dataclass(frozen=True)
class Synthesized(SynthesizedStateMachine):
    stack: cdk.Stack
    pipeline: pc.TrainingPipeline
    template: Template
    settings: DeploySettings
    outdir: Path

    @property
    def definition(self) -> dict[str, Any]:
        return export_from_template(self.json)["definition"]


def _serving_target(stack: cdk.Stack) -> pc.ServingTarget:
    # Imported resources: the serving construct owns the real ones; the pipeline only needs their names.
    function = lambda_.Function.from_function_attributes(
        stack,
        "Serving",
        function_arn="arn:aws:lambda:eu-west-1:111122223333:function:shipml-fraud-dev-serving",
        same_environment=True,
    )
    version = lambda_.Version.from_version_arn(stack, "ServingVersion", f"{function.function_arn}:7")
    alias = lambda_.Alias.from_alias_attributes(stack, "LiveAlias", alias_name="live", alias_version=version)
    application = codedeploy.LambdaApplication.from_lambda_application_name(
        stack, "App", "shipml-fraud-dev-serving"
    )
    group = codedeploy.LambdaDeploymentGroup.from_lambda_deployment_group_attributes(
        stack,
        "Group",
        application=application,
        deployment_group_name="shipml-fraud-dev-serving",
        deployment_config=codedeploy.LambdaDeploymentConfig.CANARY_10_PERCENT_5_MINUTES,
    )
    parameter = ssm.StringParameter.from_string_parameter_name(
        stack, "LiveParameter", "/shipml/fraud/dev/live-model-version"
    )
    return pc.ServingTarget(
        function=function,
        alias=alias,
        application=application,
        deployment_group=group,
        live_parameter=parameter,
    )


@pytest.fixture(scope="module")
def synth(
    cdk_context: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., Synthesized]:
    def build(
        overrides: dict[str, Any] | None = None, *, serving: bool = True, vpc: bool = False
    ) -> Synthesized:
        context = {**cdk_context, **(overrides or {})}
        outdir = tmp_path_factory.mktemp("cdk.out")
        app = cdk.App(context=context, outdir=str(outdir))
        settings = DeploySettings.from_context(context)
        stack = cdk.Stack(app, "PipelineTest")
        foundation = FoundationConstruct(stack, "Foundation", settings=settings)
        pipeline = pc.TrainingPipeline(
            stack,
            "Pipeline",
            settings=settings,
            bucket=foundation.bucket,
            key=foundation.key,
            topic=foundation.topic,
            serving=_serving_target(stack) if serving else None,
            vpc=pc.TrainingVpc(subnet_ids=["subnet-1", "subnet-2"], security_group_ids=["sg-1"])
            if vpc
            else None,
        )
        cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
        app.synth()
        return Synthesized(stack, pipeline, Template.from_stack(stack), settings, outdir)

    return build


@pytest.fixture(scope="module")
def dev(synth) -> Synthesized:
    """cdk.json's dev settings (ml.g5.12xlarge x 2, spot) with a serving target."""
    return synth()


@pytest.fixture(scope="module")
def on_demand_in_vpc(synth) -> Synthesized:
    """On-demand, an instance type without local storage, in a VPC, no serving target."""
    return synth({"training_instance_type": "ml.p3.16xlarge", "use_spot": False}, serving=False, vpc=True)


# --- states and transitions ----------------------------------------------------------------------


def test_the_happy_path_reads_well_in_the_console(dev: Synthesized) -> None:
    states = dev.states
    path, current = [], dev.definition["StartAt"]
    while current and states[current]["Type"] == "Task":
        path.append(current)
        current = states[current].get("Next")

    assert path == ["PrepareRun", "ValidateData", "Train", "Evaluate", "Gate"]
    assert current == "GatePassed?"


def _choice_targets(state: dict[str, Any]) -> dict[str, str]:
    targets = {
        json.dumps({k: v for k, v in c.items() if k != "Next"}, sort_keys=True): c["Next"]
        for c in state["Choices"]
    }
    targets["default"] = state["Default"]
    return targets


def test_choices_route_promotion_rejection_approval_and_rollout(dev: Synthesized) -> None:
    states = dev.states

    assert _choice_targets(states["GatePassed?"]) == {
        '{"BooleanEquals": true, "Variable": "$.gate.passed"}': "Register",
        "default": "NotifyRejected",
    }
    assert _choice_targets(states["Approved?"]) == {
        '{"BooleanEquals": true, "Variable": "$.registered.approved"}': "Deploy",
        "default": "NotifyAwaitingApproval",
    }
    assert _choice_targets(states["RolloutDone?"]) == {
        '{"StringEquals": "Succeeded", "Variable": "$.rollout.status"}': "PromoteLive",
        '{"StringEquals": "InProgress", "Variable": "$.rollout.status"}': "WaitForRollout",
        "default": "NotifyRollback",
    }
    assert (
        states["WaitForRollout"]["Next"] == "CheckRollout"
        and states["CheckRollout"]["Next"] == "RolloutDone?"
    )
    assert (states["NotifyRejected"]["Next"], states["ChampionKept"]["Type"]) == ("ChampionKept", "Fail")
    assert (states["PromoteLive"]["Next"], states["NotifyPromoted"]["Next"]) == ("NotifyPromoted", "Promoted")


def test_every_task_catches_everything_to_the_failure_path(dev: Synthesized) -> None:
    states = dev.states
    tasks = {name: s for name, s in states.items() if s["Type"] == "Task"}

    assert len(tasks) == 14
    for name, state in tasks.items():
        expected = "RunFailed" if name == "NotifyFailure" else "NotifyFailure"
        assert state["Catch"] == [
            {
                "ErrorEquals": ["States.ALL"],
                "Next": expected,
                "ResultPath": "$.notify_error" if name == "NotifyFailure" else "$.error",
            }
        ], name
    assert states["NotifyFailure"]["Next"] == "RunFailed"
    assert states["RunFailed"] == {"Type": "Fail", "ErrorPath": "$.error.Error", "CausePath": "$.error.Cause"}


def test_only_promote_live_moves_the_live_model(dev: Synthesized) -> None:
    # Reaching PromoteLive needs the gate passed, an approved version and a successful rollout.
    states = dev.states
    sources = {name for name, s in states.items() if s.get("Next") == "PromoteLive"}
    sources |= {
        name
        for name, s in states.items()
        if s["Type"] == "Choice" and "PromoteLive" in _choice_targets(s).values()
    }

    assert sources == {"RolloutDone?"}
    assert states["PromoteLive"]["Parameters"]["FunctionName"].endswith(
        dev.stack.resolve(dev.stack.get_logical_id(dev.pipeline.functions["PromoteLive"].node.default_child))
    )


def test_tasks_retry_throttling_and_transient_errors_with_backoff(dev: Synthesized) -> None:
    states = dev.states
    train_retry = states["Train"]["Retry"]
    lambda_errors = {e for r in states["Gate"]["Retry"] for e in r["ErrorEquals"]}

    assert train_retry == [
        {"ErrorEquals": SAGEMAKER_RETRY_ERRORS, "IntervalSeconds": 30, "MaxAttempts": 3, "BackoffRate": 2}
    ]
    assert {"Lambda.ServiceException", "Lambda.TooManyRequestsException"} <= lambda_errors
    assert all(r["BackoffRate"] >= 2 for s in states.values() for r in s.get("Retry", []))


# --- SageMaker parameters against botocore's service model ----------------------------------------


def _sagemaker_tasks(synthesized: Synthesized) -> dict[str, tuple[str, dict[str, Any]]]:
    out = {}
    for name, state in synthesized.states.items():
        resource = state.get("Resource", "")
        if ":sagemaker:" in resource:
            api = resource.rsplit(":", 1)[1].removesuffix(".sync")
            out[name] = (API_OF[api], state["Parameters"])
    return out


@pytest.mark.parametrize("variant", ["dev", "on_demand_in_vpc"])
def test_every_sagemaker_task_matches_its_api(request: pytest.FixtureRequest, variant: str) -> None:
    synthesized: Synthesized = request.getfixturevalue(variant)
    found = _sagemaker_tasks(synthesized)

    assert {name: api for name, (api, _) in found.items()} == {
        "ValidateData": "CreateProcessingJob",
        "Train": "CreateTrainingJob",
        "Evaluate": "CreateProcessingJob",
    }
    for name, (api, parameters) in found.items():
        assert shape_problems(parameters, SAGEMAKER.operation_model(api).input_shape, name) == []


def test_the_shape_check_catches_a_misspelt_or_mistyped_parameter(dev: Synthesized) -> None:
    _, parameters = _sagemaker_tasks(dev)["Train"]
    shape = SAGEMAKER.operation_model("CreateTrainingJob").input_shape
    misspelt = {**parameters, "StoppingConditions": parameters["StoppingCondition"]}
    mistyped = {**parameters, "ResourceConfig": {**parameters["ResourceConfig"], "InstanceCount": "2"}}
    missing = {k: v for k, v in parameters.items() if k != "RoleArn"}

    assert shape_problems(misspelt, shape, "Train") == [
        "Train.StoppingConditions: not a member of CreateTrainingJobRequest"
    ]
    assert shape_problems(mistyped, shape, "Train") == [
        "Train.ResourceConfig.InstanceCount: expected an integer, got '2'"
    ]
    assert shape_problems(missing, shape, "Train") == ["Train.RoleArn: required by CreateTrainingJobRequest"]


# --- training settings ---------------------------------------------------------------------------


def _key_arn(synthesized: Synthesized) -> str:
    """The stack key's ARN as the exported definition shows it (the local stand-in of its GetAtt)."""
    key = synthesized.stack.node.find_child("Foundation").key
    logical_id = synthesized.stack.resolve(synthesized.stack.get_logical_id(key.node.default_child))
    return f"arn:aws:kms:eu-west-1:000000000000:key/{logical_id}"


def test_train_uses_the_instances_spot_checkpoints_and_kms_of_the_settings(dev: Synthesized) -> None:
    _, train = _sagemaker_tasks(dev)["Train"]

    assert train["ResourceConfig"]["InstanceType"] == "ml.g5.12xlarge"
    assert train["ResourceConfig"]["InstanceCount"] == 2
    assert train["EnableManagedSpotTraining"] is True
    assert train["StoppingCondition"] == {"MaxRuntimeInSeconds": 14400, "MaxWaitTimeInSeconds": 28800}
    assert train["CheckpointConfig"] == {
        "S3Uri.$": "$.plan.checkpoint_uri",
        "LocalPath": "/opt/ml/checkpoints",
    }
    assert train["OutputDataConfig"]["KmsKeyId"] == _key_arn(dev)
    # g5 instances have NVMe instance storage, which SageMaker encrypts itself and refuses a key for.
    assert "VolumeKmsKeyId" not in train["ResourceConfig"]
    assert train["HyperParameters.$"] == "$.plan.hyperparameters"
    assert train["AlgorithmSpecification"]["TrainingImage"].endswith("/pytorch-training:2.9.0-gpu-py312")
    assert "VpcConfig" not in train


def test_on_demand_without_instance_storage_in_a_vpc(on_demand_in_vpc: Synthesized) -> None:
    _, train = _sagemaker_tasks(on_demand_in_vpc)["Train"]
    _, validate = _sagemaker_tasks(on_demand_in_vpc)["ValidateData"]

    assert train["EnableManagedSpotTraining"] is False
    assert train["StoppingCondition"] == {"MaxRuntimeInSeconds": 14400}
    assert train["ResourceConfig"]["VolumeKmsKeyId"] == _key_arn(on_demand_in_vpc)
    assert train["VpcConfig"] == {"Subnets": ["subnet-1", "subnet-2"], "SecurityGroupIds": ["sg-1"]}
    assert validate["NetworkConfig"]["VpcConfig"]["Subnets"] == ["subnet-1", "subnet-2"]
    assert validate["ProcessingResources"]["ClusterConfig"]["VolumeKmsKeyId"] == _key_arn(on_demand_in_vpc)


def test_processing_jobs_run_the_shipml_entry_points_on_the_code_asset(dev: Synthesized) -> None:
    tasks = _sagemaker_tasks(dev)
    validate, evaluate = tasks["ValidateData"][1], tasks["Evaluate"][1]

    assert validate["AppSpecification"]["ContainerArguments"] == ["training.validate_data"]
    assert evaluate["AppSpecification"]["ContainerArguments"] == ["shipml.pipeline.processing", "evaluate"]
    assert validate["AppSpecification"]["ContainerEntrypoint"][:2] == ["/bin/sh", "-c"]
    inputs = {i["InputName"]: i["S3Input"] for i in evaluate["ProcessingInputs"]}
    assert inputs["model"]["S3Uri.$"] == "$.training.model_uri"
    assert inputs["data"]["S3Uri.$"] == "$.plan.data_uri"
    # The bootstrap unpacks the asset by a glob: it must match the object's name as CDK uploads it.
    assert fnmatch.fnmatch(inputs["code"]["S3Uri"].rsplit("/", 1)[1], pc.PROCESSING_CODE_GLOB)
    assert (
        f"{pc.PROCESSING_CODE_DIR}/{pc.PROCESSING_CODE_GLOB}"
        in validate["AppSpecification"]["ContainerEntrypoint"][2]
    )
    assert validate["ProcessingOutputConfig"]["KmsKeyId"] == _key_arn(dev)


def test_the_image_is_the_pytorch_container_of_the_stack_region(dev: Synthesized) -> None:
    from sagemaker.core import image_uris

    mapping = next(iter(dev.json["Mappings"].values()))

    assert mapping["eu-west-1"]["training"] == image_uris.retrieve(
        "pytorch",
        region="eu-west-1",
        version=pc.IMAGE_VERSION,
        py_version=pc.IMAGE_PY_VERSION,
        instance_type="ml.g5.12xlarge",
        image_scope="training",
    )
    assert mapping["us-east-1"]["processing"].endswith("-cpu-py312")


def test_the_code_asset_is_deterministic(tmp_path: Path) -> None:
    first = pc.build_source_archive(tmp_path / "a.tar.gz", "examples/fraud/contract.yaml").read_bytes()
    second = pc.build_source_archive(tmp_path / "b.tar.gz", "examples/fraud/contract.yaml").read_bytes()

    assert first == second


# --- IAM -----------------------------------------------------------------------------------------


def _policy_statements(synthesized: Synthesized, role_construct: Any) -> list[dict[str, Any]]:
    role_id = synthesized.stack.resolve(synthesized.stack.get_logical_id(role_construct.node.default_child))
    statements = []
    for resource in synthesized.json["Resources"].values():
        if resource["Type"] == "AWS::IAM::Policy" and {"Ref": role_id} in resource["Properties"]["Roles"]:
            statements += resource["Properties"]["PolicyDocument"]["Statement"]
    return statements


def test_sagemaker_role_reads_the_models_prefixes_and_writes_only_run_files(dev: Synthesized) -> None:
    statements = _policy_statements(dev, dev.pipeline.sagemaker_role)
    s3 = [s for s in statements if any(str(a).startswith("s3:") for a in _list(s["Action"]))]
    text = json.dumps(s3)

    assert {a for s in s3 for a in _list(s["Action"])} == {"s3:GetObject", "s3:ListBucket", "s3:PutObject"}
    put = next(s for s in s3 if s["Action"] == "s3:PutObject")
    assert json.dumps(put["Resource"]).count("/pipeline/fraud/*") == 1
    for prefix in ("/datasets/fraud/*", "/pipeline/fraud/*", "/models/fraud/*"):
        assert prefix in text
    assert '"/*"' not in text  # never the whole bucket
    dev.template.has_resource_properties(
        "AWS::IAM::Role",
        {
            "AssumeRolePolicyDocument": {
                "Statement": [Match.object_like({"Principal": {"Service": "sagemaker.amazonaws.com"}})]
            }
        },
    )


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_state_machine_role_starts_only_this_models_jobs_and_passes_only_the_sagemaker_role(
    dev: Synthesized,
) -> None:
    statements = _policy_statements(dev, dev.pipeline.state_machine.role)
    role_id = dev.stack.resolve(dev.stack.get_logical_id(dev.pipeline.sagemaker_role.node.default_child))

    create_training = next(s for s in statements if "sagemaker:CreateTrainingJob" in _list(s["Action"]))
    create_processing = next(s for s in statements if "sagemaker:CreateProcessingJob" in _list(s["Action"]))
    pass_role = [s for s in statements if "iam:PassRole" in _list(s["Action"])]

    assert json.dumps(create_training["Resource"]).endswith(
        f':training-job/{job_prefix("fraud", "train")}*"]]}}'
    )
    assert f"processing-job/{job_prefix('fraud', 'validate')}*" in json.dumps(create_processing["Resource"])
    assert f"processing-job/{job_prefix('fraud', 'evaluate')}*" in json.dumps(create_processing["Resource"])
    assert pass_role == [
        {
            "Action": "iam:PassRole",
            "Condition": {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            "Effect": "Allow",
            "Resource": {"Fn::GetAtt": [role_id, "Arn"]},
        }
    ]


def test_job_names_of_a_run_fall_under_the_allowed_prefixes() -> None:
    from shipml.pipeline.steps import job_name, run_id_for

    run_id = run_id_for("a" * 80)
    for model in ("fraud", "a-very-long-model-name-x"):
        for kind in ("train", "validate", "evaluate"):
            name = job_name(model, kind, run_id)
            assert name.startswith(job_prefix(model, kind)) and len(name) <= 63


def test_deploy_may_shift_only_the_serving_function_and_promote_may_write_only_live(dev: Synthesized) -> None:
    deploy = _policy_statements(dev, dev.pipeline.functions["Deploy"].role)
    promote = _policy_statements(dev, dev.pipeline.functions["PromoteLive"].role)
    text = json.dumps(deploy)

    assert "function:shipml-fraud-dev-serving" in text
    assert (
        "codedeploy:CreateDeployment" in text
        and "deploymentgroup:shipml-fraud-dev-serving/shipml-fraud-dev-serving" in text
    )
    put = [s for s in promote if "ssm:PutParameter" in _list(s["Action"])]
    assert put and all(
        "parameter/shipml/fraud/dev/live-model-version" in json.dumps(s["Resource"]) for s in put
    )


def test_deploy_knows_its_serving_target(dev: Synthesized, on_demand_in_vpc: Synthesized) -> None:
    def variables(synthesized: Synthesized) -> dict[str, Any]:
        function = synthesized.pipeline.functions["Deploy"]
        logical_id = synthesized.stack.resolve(synthesized.stack.get_logical_id(function.node.default_child))
        return synthesized.json["Resources"][logical_id]["Properties"]["Environment"]["Variables"]

    assert variables(dev)["SHIPML_SERVING_ALIAS"] == "live"
    assert variables(dev)["SHIPML_CODEDEPLOY_GROUP"] == "shipml-fraud-dev-serving"
    assert "SHIPML_SERVING_FUNCTION" not in variables(on_demand_in_vpc)


# --- schedule, logging, nag ----------------------------------------------------------------------


def test_the_schedule_starts_an_execution_with_the_cron_of_the_settings(dev: Synthesized) -> None:
    machine_id = dev.stack.resolve(dev.stack.get_logical_id(dev.pipeline.state_machine.node.default_child))

    dev.template.has_resource_properties(
        "AWS::Scheduler::Schedule",
        {
            "ScheduleExpression": "cron(0 3 ? * MON *)",
            "State": "ENABLED",
            "Target": Match.object_like({"Arn": {"Ref": machine_id}, "Input": '{"reason":"scheduled"}'}),
        },
    )


def test_the_state_machine_logs_and_traces(dev: Synthesized) -> None:
    dev.template.has_resource_properties(
        "AWS::StepFunctions::StateMachine",
        {
            "TracingConfiguration": {"Enabled": True},
            "LoggingConfiguration": Match.object_like({"Level": "ALL"}),
        },
    )


@pytest.mark.parametrize("variant", ["dev", "on_demand_in_vpc"])
def test_cdk_nag_reports_no_unacknowledged_finding(request: pytest.FixtureRequest, variant: str) -> None:
    assert request.getfixturevalue(variant).violations() == []


# --- the local runner's copy ---------------------------------------------------------------------


def test_the_exported_definition_has_no_cloudformation_left_and_names_every_handler(dev: Synthesized) -> None:
    document = export_from_template(dev.json)
    text = json.dumps(document["definition"])

    assert "Fn::" not in text and '"Ref"' not in text
    handlers = {f["handler"] for f in document["functions"].values()}
    assert handlers == set(pc.HANDLERS.values())
    used = {
        s["Parameters"]["FunctionName"]
        for s in document["definition"]["States"].values()
        if s.get("Resource", "").endswith("lambda:invoke")
    }
    assert used <= set(document["functions"])
    assert document["stand_ins"]["artifact_bucket"].startswith("local-")


def test_handlers_import_nothing_heavy() -> None:
    modules = ", ".join(h.rsplit(".", 1)[0] for h in pc.HANDLERS.values())
    heavy = "('torch', 'pandas', 'sklearn', 'pyarrow')"
    code = f"import sys, {modules}; print(sorted(m for m in {heavy} if m in sys.modules))"

    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )

    assert done.stdout.strip() == "[]"
