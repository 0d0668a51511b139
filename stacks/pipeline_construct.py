"""The retraining pipeline: a Step Functions state machine over SageMaker jobs and Lambda steps.

    PrepareRun -> ValidateData -> Train -> Evaluate -> Gate -> GatePassed?
      passed:    Register -> Approved? -> Deploy -> RolloutDone?
                   RolloutDone? -(InProgress)-> WaitForRollout -> CheckRollout -> RolloutDone?
                   RolloutDone? -(Succeeded)-> PromoteLive -> NotifyPromoted -> Promoted
                   RolloutDone? -(Failed)-> NotifyRollback -> RolledBack
                 not approved: NotifyAwaitingApproval -> AwaitingApproval
      rejected:  NotifyRejected -> ChampionKept (fails the run: the champion stays live)
    any task error -> NotifyFailure -> RunFailed

ValidateData and Evaluate are SageMaker Processing jobs and Train a SageMaker training job, all
`.sync`, on the PyTorch deep-learning container (resolved offline with sagemaker's `image_uris`,
one URI per region in a CfnMapping, so the stack stays environment-agnostic). The code travels as
one `sourcedir.tar.gz` asset built at synth (shipml/, training/ and the contract). The light steps
are Lambda functions running the handlers in `functions/pipeline/`. Nothing moves the live model
except PromoteLive, after a successful rollout.

The same synthesized definition runs locally: `stacks/export_pipeline_definition.py` writes it
with its CloudFormation references replaced by local stand-ins, and `shipml retrain` interprets it.
"""

from __future__ import annotations

import functools
import gzip
import io
import re
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_codedeploy as codedeploy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_sns as sns
from aws_cdk import aws_ssm as ssm
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from shipml.pipeline.steps import job_prefix
from stacks import constants, nag
from stacks import sagemaker_common as common
from stacks.sagemaker_common import nag_arn
from stacks.sagemaker_instances import has_local_storage
from stacks.settings import DeploySettings

REPO_ROOT = Path(__file__).resolve().parent.parent

# The PyTorch deep-learning container; training/requirements.txt is installed on top of it.
IMAGE_FRAMEWORK = "pytorch"
IMAGE_VERSION = "2.9.0"
IMAGE_PY_VERSION = "py312"
DEFAULT_PROCESSING_INSTANCE_TYPE = "ml.m5.xlarge"
ROLLOUT_POLL_SECONDS = 60
LAUNCHER_PROGRAM = "training/launcher.py"

PROCESSING_CODE_DIR = "/opt/ml/processing/input/code"
# CDK names a file asset's object `<hash>.gz` (its last suffix), so the archive is found as *.gz.
PROCESSING_CODE_GLOB = "*.gz"
# Processing jobs get the code as the same tar.gz the training toolkit unpacks; this unpacks it,
# installs the pinned requirements, and runs the module named in ContainerArguments ("$0" "$@").
PROCESSING_BOOTSTRAP = (
    "set -eu; mkdir -p /opt/ml/code; "
    f"tar -xzf {PROCESSING_CODE_DIR}/{PROCESSING_CODE_GLOB} -C /opt/ml/code; cd /opt/ml/code; "
    "python3 -m pip install --quiet --no-cache-dir -r processing-requirements.txt; "
    'exec python3 -m "$0" "$@"'
)


# The states, by their console names.
PREPARE_RUN = "PrepareRun"
VALIDATE_DATA = "ValidateData"
TRAIN = "Train"
EVALUATE = "Evaluate"
GATE = "Gate"
GATE_PASSED = "GatePassed?"
REGISTER = "Register"
APPROVED = "Approved?"
DEPLOY = "Deploy"
ROLLOUT_DONE = "RolloutDone?"
WAIT_FOR_ROLLOUT = "WaitForRollout"
CHECK_ROLLOUT = "CheckRollout"
PROMOTE_LIVE = "PromoteLive"
NOTIFY_PROMOTED = "NotifyPromoted"
PROMOTED = "Promoted"
NOTIFY_ROLLBACK = "NotifyRollback"
ROLLED_BACK = "RolledBack"
NOTIFY_AWAITING_APPROVAL = "NotifyAwaitingApproval"
AWAITING_APPROVAL = "AwaitingApproval"
NOTIFY_REJECTED = "NotifyRejected"
CHAMPION_KEPT = "ChampionKept"
NOTIFY_FAILURE = "NotifyFailure"
RUN_FAILED = "RunFailed"

#: Lambda handlers of the light steps (module paths under the code asset).
HANDLERS = {
    PREPARE_RUN: "functions.pipeline.prepare_run.handler",
    GATE: "functions.pipeline.gate.handler",
    REGISTER: "functions.pipeline.register.handler",
    DEPLOY: "functions.pipeline.start_rollout.handler",
    CHECK_ROLLOUT: "functions.pipeline.check_rollout.handler",
    PROMOTE_LIVE: "functions.pipeline.promote.handler",
}

LAMBDA_RETRY_ERRORS = ["Lambda.TooManyRequestsException"]


@dataclass(frozen=True)
class ServingTarget:
    """Where a promoted model goes live: the serving function, its `live` alias, the CodeDeploy
    application and deployment group that shift the alias (canary), and the live SSM parameter."""

    function: lambda_.IFunction
    alias: lambda_.IAlias
    application: codedeploy.ILambdaApplication
    deployment_group: codedeploy.ILambdaDeploymentGroup
    live_parameter: ssm.IStringParameter


@dataclass(frozen=True)
class TrainingVpc:
    """An optional VPC for the SageMaker jobs (private subnets, and the security groups to use)."""

    subnet_ids: list[str]
    security_group_ids: list[str]


@functools.lru_cache(maxsize=8)
def image_uris_by_region(instance_type: str, processing_instance_type: str) -> dict[str, dict[str, str]]:
    """The PyTorch DLC URI for training and for processing, per commercial region, resolved offline."""
    from sagemaker.core import image_uris

    config = image_uris.config_for_framework(IMAGE_FRAMEWORK)
    regions = config["training"]["versions"][IMAGE_VERSION]["registries"]
    out: dict[str, dict[str, str]] = {}
    for region in sorted(regions):
        if not re.fullmatch(r"[a-z]{2}-[a-z]+-\d", region) or region.startswith(("cn-", "us-gov-")):
            continue  # the standard partition only: GovCloud, China and isolated regions differ
        out[region] = {
            kind: image_uris.retrieve(
                IMAGE_FRAMEWORK,
                region=region,
                version=IMAGE_VERSION,
                py_version=IMAGE_PY_VERSION,
                instance_type=itype,
                image_scope="training",
            )
            for kind, itype in (("training", instance_type), ("processing", processing_instance_type))
        }
    return out


def _pinned(requirement: str) -> str:
    for line in (REPO_ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        if line.split("==")[0].strip() == requirement:
            return line.strip()
    raise ValueError(f"{requirement} is not pinned in requirements.txt")


def build_source_archive(dest: Path, contract_path: str) -> Path:
    """A deterministic `sourcedir.tar.gz`: shipml/, training/, the contract, and the requirements.

    Deterministic (sorted entries, zero mtimes, fixed owner, gzip without a timestamp) so that the
    asset hash changes only when the code does.
    """
    files: dict[str, bytes] = {}
    for package in ("shipml", "training"):
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            files[path.relative_to(REPO_ROOT).as_posix()] = path.read_bytes()
    files[contract_path] = (REPO_ROOT / contract_path).read_bytes()
    requirements = (REPO_ROOT / "training" / "requirements.txt").read_bytes()
    files["requirements.txt"] = requirements  # the training toolkit installs this one
    files["processing-requirements.txt"] = requirements + (_pinned("onnxruntime") + "\n").encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode, info.uid, info.gid = len(files[name]), 0, 0o644, 0, 0
            tar.addfile(info, io.BytesIO(files[name]))
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        gz.write(buffer.getvalue())
    return dest


class TrainingPipeline(Construct):
    """The retraining state machine, its roles, its Lambda steps and its schedule."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: DeploySettings,
        bucket: s3.IBucket,
        key: kms.IKey,
        topic: sns.ITopic,
        serving: ServingTarget | None = None,
        vpc: TrainingVpc | None = None,
        processing_instance_type: str = DEFAULT_PROCESSING_INSTANCE_TYPE,
        handler_code: lambda_.Code | None = None,
        auto_approve: bool = True,
    ) -> None:
        super().__init__(scope, construct_id)
        self._settings = settings
        self._bucket, self._key, self._topic = bucket, key, topic
        self._serving, self._vpc = serving, vpc
        self._processing_instance_type = processing_instance_type
        self._auto_approve = auto_approve
        stack = cdk.Stack.of(self)
        self._partition, self._region, self._account = stack.partition, stack.region, stack.account
        self.model_name = settings.model_name
        self.live_parameter_name = constants.live_parameter_name(settings.model_name, settings.stage)

        self.source = self._build_source_asset()
        self.images = self._build_image_mapping()
        self.sagemaker_role = self._build_sagemaker_role()
        self._handler_code = handler_code or self._default_handler_code()
        self.functions: dict[str, lambda_.Function] = {}
        self.state_machine = self._build_state_machine()
        self.schedule = self._build_schedule()

    # --- shared pieces ----------------------------------------------------------------------------

    def _build_source_asset(self) -> s3_assets.Asset:
        staging = Path(tempfile.mkdtemp(prefix="shipml-sourcedir-"))
        archive = build_source_archive(staging / "sourcedir.tar.gz", self._settings.contract_path.as_posix())
        return s3_assets.Asset(self, "TrainingCode", path=str(archive))

    def _build_image_mapping(self) -> cdk.CfnMapping:
        return cdk.CfnMapping(
            self,
            "TrainingImages",
            mapping=image_uris_by_region(
                self._settings.training_instance_type, self._processing_instance_type
            ),
        )

    def _image(self, kind: str) -> str:
        return self.images.find_in_map(cdk.Aws.REGION, kind)

    def _arn(self, service: str, resource: str) -> str:
        return f"arn:{self._partition}:{service}:{self._region}:{self._account}:{resource}"

    def _object_prefixes(self) -> dict[str, str]:
        """The bucket prefixes the pipeline touches: the data lake's training data, runs, artifacts."""
        return {
            "training data": f"datasets/{self.model_name}/*",
            "run files": f"pipeline/{self.model_name}/*",
            "artifacts": f"models/{self.model_name}/*",
        }

    def _job_prefix(self, kind: str) -> str:
        return job_prefix(self.model_name, kind)

    def _default_handler_code(self) -> lambda_.Code:
        # Sources only (the construct tests); the stack passes a full bundle as `handler_code`.
        return lambda_.Code.from_asset(
            str(REPO_ROOT),
            exclude=["*", "!shipml", "!shipml/**", "!functions", "!functions/**", "**/__pycache__"],
        )

    def _acknowledge_objects(self, scope: Construct, prefixes: list[str], reason: str) -> None:
        for prefix in prefixes:
            nag.acknowledge(
                scope, nag.arn_wildcard_finding("AwsSolutions-IAM5", self._bucket, f"/{prefix}"), reason
            )

    def _build_sagemaker_role(self) -> iam.Role:
        role = common.sagemaker_execution_role(
            self, f"SageMaker jobs of the {self._settings.stack_name} retraining pipeline"
        )
        prefixes = self._object_prefixes()
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject"],
                resources=[self._bucket.arn_for_objects(p) for p in prefixes.values()]
                # The code asset: exactly one object.
                + [f"{self.source.bucket.bucket_arn}/{self.source.s3_object_key}"],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(actions=["s3:ListBucket"], resources=[self._bucket.bucket_arn])
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:PutObject"], resources=[self._bucket.arn_for_objects(prefixes["run files"])]
            )
        )
        # Volumes and outputs are encrypted with the stack key; SageMaker makes grants for the volumes.
        log_groups = self._arn("logs", common.SAGEMAKER_LOG_GROUPS)
        common.grant_sagemaker_runtime(role, key=self._key, log_groups_arn=log_groups)
        # Resource "*": ECR's login token is account-wide (no resource-level permissions); the pulls
        # below are scoped to the training image's repository.
        role.add_to_policy(iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"]))
        role.add_to_policy(
            iam.PolicyStatement(
                actions=[
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchCheckLayerAvailability",
                ],
                # The deep-learning containers live in AWS-owned accounts that differ by region.
                resources=[
                    f"arn:{self._partition}:ecr:{self._region}:*:repository/{IMAGE_FRAMEWORK}-training"
                ],
            )
        )
        if self._vpc is not None:
            role.add_to_policy(
                iam.PolicyStatement(
                    actions=[
                        "ec2:CreateNetworkInterface",
                        "ec2:CreateNetworkInterfacePermission",
                        "ec2:DeleteNetworkInterface",
                        "ec2:DeleteNetworkInterfacePermission",
                        "ec2:DescribeNetworkInterfaces",
                        "ec2:DescribeVpcs",
                        "ec2:DescribeDhcpOptions",
                        "ec2:DescribeSubnets",
                        "ec2:DescribeSecurityGroups",
                    ],
                    resources=["*"],
                )
            )
        self._acknowledge_objects(
            role,
            list(prefixes.values()),
            "SageMaker jobs read the model's training data, run files and artifacts (a run's output and "
            "the champion), and write only under the run prefix.",
        )
        nag.acknowledge(
            role,
            f"AwsSolutions-IAM5[Resource::{nag_arn(log_groups)}]",
            "SageMaker writes job logs to log groups it names itself under /aws/sagemaker/.",
        )
        nag.acknowledge(
            role,
            f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:ecr:<AWS::Region>:*:repository/"
            f"{IMAGE_FRAMEWORK}-training]",
            "The deep-learning container repository lives in an AWS-owned account that differs by region.",
        )
        nag.acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::*]",
            "ecr:GetAuthorizationToken, cloudwatch:PutMetricData (limited by namespace) and the VPC "
            "network-interface actions have no resource-level permissions.",
        )
        return role

    # --- Lambda steps -----------------------------------------------------------------------------

    def _function(self, state: str, *, timeout_s: int = 60, memory_mb: int = 512) -> lambda_.Function:
        log_group = logs.LogGroup(
            self,
            f"{state}Logs",
            retention=logs.RetentionDays.ONE_MONTH,
            removal_policy=self._settings.cdk_removal_policy,
            # Encrypted with the stack's key like every store of the stack.
            encryption_key=self._key,
        )
        role = iam.Role(
            self,
            f"{state}Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"The {state} step of the {self._settings.stack_name} retraining pipeline",
        )
        log_group.grant_write(role)
        environment = {
            "SHIPML_BACKEND": "aws",
            "SHIPML_MODEL": self.model_name,
            "SHIPML_STAGE": self._settings.stage,
            "SHIPML_CONTRACT": self._settings.contract_path.as_posix(),
            "SHIPML_TRAINING_CONTRACT": self._settings.contract_path.as_posix(),
            "SHIPML_ARTIFACT_BUCKET": self._bucket.bucket_name,
            "SHIPML_LIVE_PARAMETER": self.live_parameter_name,
            "SHIPML_AUTO_APPROVE": "true" if self._auto_approve else "false",
            "POWERTOOLS_SERVICE_NAME": f"shipml-pipeline-{state.lower()}",
        }
        function = lambda_.Function(
            self,
            f"{state}Function",
            runtime=lambda_.Runtime.PYTHON_3_12,
            architecture=lambda_.Architecture.ARM_64,
            handler=HANDLERS[state],
            code=self._handler_code,
            role=role,
            log_group=log_group,
            timeout=cdk.Duration.seconds(timeout_s),
            memory_size=memory_mb,
            # Active tracing grants xray:PutTraceSegments and xray:PutTelemetryRecords on Resource "*":
            # X-Ray has no resource-level permissions for them.
            tracing=lambda_.Tracing.ACTIVE,
            environment=environment,
            description=f"shipml retraining pipeline: {state}",
        )
        nag.acknowledge(
            function,
            "AwsSolutions-L1",
            "Pinned to Python 3.12 like the serving function, whose cp312 dependency bundle the steps share.",
        )
        nag.acknowledge_design(
            function,
            nag.NIST_LAMBDA_OUTSIDE_VPC,
            nag.NIST_LAMBDA_SYNC_NO_DLQ,
            nag.NIST_LAMBDA_NO_RESERVED_CONCURRENCY,
        )
        nag.acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::*]",
            "X-Ray's PutTraceSegments and PutTelemetryRecords have no resource-level permissions.",
        )
        self.functions[state] = function
        return function

    def _registry_statements(self) -> list[iam.PolicyStatement]:
        group = f"shipml-{self.model_name}-{self._settings.stage}"
        return [
            iam.PolicyStatement(
                actions=["sagemaker:CreateModelPackageGroup", "sagemaker:ListModelPackages"],
                resources=[self._arn("sagemaker", f"model-package-group/{group}")],
            ),
            iam.PolicyStatement(
                actions=[
                    "sagemaker:CreateModelPackage",
                    "sagemaker:DescribeModelPackage",
                    "sagemaker:UpdateModelPackage",
                    "sagemaker:DeleteModelPackage",
                ],
                resources=[
                    self._arn("sagemaker", f"model-package/{group}/*"),
                    self._arn("sagemaker", f"model-package-group/{group}"),
                ],
            ),
            iam.PolicyStatement(
                actions=["ssm:GetParameter"],
                resources=[self._arn("ssm", f"parameter{self.live_parameter_name}")],
            ),
        ]

    def _grant_registry(self, function: lambda_.Function) -> None:
        for statement in self._registry_statements():
            function.add_to_role_policy(statement)
        group = f"shipml-{self.model_name}-{self._settings.stage}"
        nag.acknowledge(
            function.role,  # type: ignore[arg-type]
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:"
            f"model-package/{group}/*]",
            "The versions of this model's package group only (SageMaker numbers them).",
        )

    def _grant_objects(self, function: lambda_.Function, *, read: list[str], write: list[str]) -> None:
        role = function.role
        assert role is not None
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject"], resources=[self._bucket.arn_for_objects(p) for p in read]
            )
        )
        actions = ["kms:Decrypt"]
        if write:
            role.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=["s3:PutObject"], resources=[self._bucket.arn_for_objects(p) for p in write]
                )
            )
            actions.append("kms:GenerateDataKey")
        role.add_to_principal_policy(iam.PolicyStatement(actions=actions, resources=[self._key.key_arn]))
        self._acknowledge_objects(
            role,  # type: ignore[arg-type]
            sorted(set(read) | set(write)),
            "Objects under this model's own prefixes of the artifact bucket: run files, or artifacts.",
        )

    def _build_functions(self) -> None:
        prefixes = self._object_prefixes()
        prepare = self._function(PREPARE_RUN)
        prepare.add_environment("SHIPML_TRAINING_SOURCE_URI", self.source.s3_object_url)
        self._grant_registry(prepare)

        gate = self._function(GATE)
        self._grant_objects(gate, read=[prefixes["run files"]], write=[])

        register = self._function(REGISTER, timeout_s=300, memory_mb=1024)
        self._grant_objects(
            register, read=[prefixes["run files"], prefixes["artifacts"]], write=[prefixes["artifacts"]]
        )
        self._grant_registry(register)

        deploy = self._function(DEPLOY, timeout_s=300)
        check = self._function(CHECK_ROLLOUT)
        promote = self._function(PROMOTE_LIVE)
        self._grant_registry(promote)
        promote.add_to_role_policy(
            iam.PolicyStatement(
                actions=["ssm:PutParameter"],
                resources=[self._arn("ssm", f"parameter{self.live_parameter_name}")],
            )
        )
        if self._serving is not None:
            self._wire_serving(deploy, check)

    def _wire_serving(self, deploy: lambda_.Function, check: lambda_.Function) -> None:
        serving = self._serving
        assert serving is not None
        variables = {
            "SHIPML_SERVING_FUNCTION": serving.function.function_name,
            "SHIPML_SERVING_ALIAS": serving.alias.alias_name,
            "SHIPML_CODEDEPLOY_APPLICATION": serving.application.application_name,
            "SHIPML_CODEDEPLOY_GROUP": serving.deployment_group.deployment_group_name,
        }
        for function in (deploy, check):
            for name, value in variables.items():
                function.add_environment(name, value)
        function_arn = serving.function.function_arn
        deploy.add_to_role_policy(
            iam.PolicyStatement(
                actions=[
                    "lambda:GetFunctionConfiguration",
                    "lambda:UpdateFunctionConfiguration",
                    "lambda:PublishVersion",
                ],
                resources=[function_arn],
            )
        )
        deploy.add_to_role_policy(
            iam.PolicyStatement(actions=["lambda:GetAlias"], resources=[serving.alias.function_arn])
        )
        deploy.add_to_role_policy(
            iam.PolicyStatement(
                actions=["codedeploy:CreateDeployment", "codedeploy:GetDeployment"],
                resources=[serving.deployment_group.deployment_group_arn],
            )
        )
        deploy.add_to_role_policy(
            iam.PolicyStatement(
                actions=["codedeploy:GetDeploymentConfig"],
                resources=[serving.deployment_group.deployment_config.deployment_config_arn],
            )
        )
        deploy.add_to_role_policy(
            iam.PolicyStatement(
                actions=["codedeploy:RegisterApplicationRevision", "codedeploy:GetApplicationRevision"],
                resources=[serving.application.application_arn],
            )
        )
        check.add_to_role_policy(
            iam.PolicyStatement(
                actions=["codedeploy:GetDeployment"],
                resources=[serving.deployment_group.deployment_group_arn],
            )
        )
        # The live parameter is the serving construct's; PromoteLive writes it only after a rollout.
        name = serving.live_parameter.parameter_name
        if not cdk.Token.is_unresolved(name) and name != self.live_parameter_name:
            raise ValueError(
                f"the serving live parameter is {serving.live_parameter.parameter_name}, the pipeline "
                f"writes {self.live_parameter_name}"
            )
        serving.live_parameter.grant_write(self.functions[PROMOTE_LIVE])

    # --- states -----------------------------------------------------------------------------------

    def _lambda_step(
        self, state: str, payload: dict[str, Any], selector: dict[str, Any], result_path: str
    ) -> tasks.LambdaInvoke:
        step = tasks.LambdaInvoke(
            self,
            state,
            state_name=state,
            lambda_function=self.functions[state],
            payload=sfn.TaskInput.from_object(payload),
            result_selector=selector,
            result_path=result_path,
            retry_on_service_exceptions=True,
        )
        step.add_retry(
            errors=LAMBDA_RETRY_ERRORS, interval=cdk.Duration.seconds(2), max_attempts=6, backoff_rate=2
        )
        return step

    def _notify(self, state: str, subject: str, message: str) -> tasks.SnsPublish:
        return common.notify_step(self, state, self._topic, subject, message)

    def _sagemaker_step(
        self, state: str, api: str, parameters: dict[str, Any], selector: dict[str, Any], result_path: str
    ) -> sfn.CustomState:
        resource = f"arn:{self._partition}:states:::sagemaker:{api}.sync"
        return common.sagemaker_task(self, state, resource, parameters, selector, result_path)

    def _volume_key(self, instance_type: str) -> dict[str, str]:
        return {} if has_local_storage(instance_type) else {"VolumeKmsKeyId": self._key.key_arn}

    def _processing_parameters(
        self,
        *,
        name_path: str,
        module: list[str],
        extra_inputs: list[dict[str, Any]],
        output_path: str,
        environment: dict[str, Any],
    ) -> dict[str, Any]:
        parameters: dict[str, Any] = {
            "ProcessingJobName.$": name_path,
            "RoleArn": self.sagemaker_role.role_arn,
            "AppSpecification": {
                "ImageUri": self._image("processing"),
                "ContainerEntrypoint": ["/bin/sh", "-c", PROCESSING_BOOTSTRAP],
                "ContainerArguments": module,
            },
            "ProcessingResources": {
                "ClusterConfig": {
                    "InstanceCount": 1,
                    "InstanceType": self._processing_instance_type,
                    "VolumeSizeInGB": 50,
                    **self._volume_key(self._processing_instance_type),
                }
            },
            "ProcessingInputs": [
                {
                    "InputName": "code",
                    "S3Input": {
                        "S3Uri": self.source.s3_object_url,
                        "LocalPath": PROCESSING_CODE_DIR,
                        "S3DataType": "S3Prefix",
                        "S3InputMode": "File",
                        "S3DataDistributionType": "FullyReplicated",
                    },
                },
                {
                    "InputName": "data",
                    "S3Input": {
                        "S3Uri.$": "$.plan.data_uri",
                        "LocalPath": "/opt/ml/processing/input/data",
                        "S3DataType": "S3Prefix",
                        "S3InputMode": "File",
                        "S3DataDistributionType": "FullyReplicated",
                    },
                },
                *extra_inputs,
            ],
            "ProcessingOutputConfig": {
                "Outputs": [
                    {
                        "OutputName": "report",
                        "S3Output": {
                            "S3Uri.$": output_path,
                            "LocalPath": "/opt/ml/processing/output/report",
                            "S3UploadMode": "EndOfJob",
                        },
                    }
                ],
                "KmsKeyId": self._key.key_arn,
            },
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
            "Environment": {
                "SHIPML_CONTRACT": self._settings.contract_path.as_posix(),
                "SHIPML_CHAMPION_URI.$": "$.plan.champion_uri",
                **environment,
            },
        }
        if self._vpc is not None:
            parameters["NetworkConfig"] = {
                "EnableNetworkIsolation": False,
                "VpcConfig": {
                    "Subnets": self._vpc.subnet_ids,
                    "SecurityGroupIds": self._vpc.security_group_ids,
                },
            }
        return parameters

    def _training_parameters(self) -> dict[str, Any]:
        settings = self._settings
        stopping: dict[str, Any] = {"MaxRuntimeInSeconds": settings.training_max_runtime_s}
        if settings.use_spot:
            # Spot capacity may take a while: wait up to as long again as the run itself.
            stopping["MaxWaitTimeInSeconds"] = 2 * settings.training_max_runtime_s
        parameters: dict[str, Any] = {
            "TrainingJobName.$": "$.plan.training_job_name",
            "RoleArn": self.sagemaker_role.role_arn,
            "AlgorithmSpecification": {"TrainingImage": self._image("training"), "TrainingInputMode": "File"},
            "HyperParameters.$": "$.plan.hyperparameters",
            "InputDataConfig": [
                {
                    "ChannelName": "train",
                    "DataSource": {
                        "S3DataSource": {
                            "S3DataType": "S3Prefix",
                            "S3Uri.$": "$.plan.data_uri",
                            "S3DataDistributionType": "FullyReplicated",
                        }
                    },
                    "InputMode": "File",
                }
            ],
            "OutputDataConfig": {"S3OutputPath.$": "$.plan.model_output_uri", "KmsKeyId": self._key.key_arn},
            "ResourceConfig": {
                "InstanceType": settings.training_instance_type,
                "InstanceCount": settings.training_instance_count,
                "VolumeSizeInGB": 100,
                **self._volume_key(settings.training_instance_type),
            },
            "StoppingCondition": stopping,
            "EnableManagedSpotTraining": settings.use_spot,
            "CheckpointConfig": {"S3Uri.$": "$.plan.checkpoint_uri", "LocalPath": "/opt/ml/checkpoints"},
            "Environment": {"SHIPML_MODEL": self.model_name},
        }
        if self._vpc is not None:
            parameters["VpcConfig"] = {
                "Subnets": self._vpc.subnet_ids,
                "SecurityGroupIds": self._vpc.security_group_ids,
            }
        return parameters

    def _build_state_machine(self) -> sfn.StateMachine:
        self._build_functions()
        job_selector = {"job_name.$": "$.ProcessingJobName", "status.$": "$.ProcessingJobStatus"}

        prepare = self._lambda_step(
            PREPARE_RUN,
            {"input.$": "$$.Execution.Input", "execution_name.$": "$$.Execution.Name"},
            {"plan.$": "$.Payload"},
            "$",
        )
        validate = self._sagemaker_step(
            VALIDATE_DATA,
            "createProcessingJob",
            self._processing_parameters(
                name_path="$.plan.validation_job_name",
                module=["training.validate_data"],
                extra_inputs=[],
                output_path="$.plan.validation_uri",
                environment={},
            ),
            job_selector,
            "$.validation",
        )
        train = self._sagemaker_step(
            TRAIN,
            "createTrainingJob",
            self._training_parameters(),
            {
                "job_name.$": "$.TrainingJobName",
                "status.$": "$.TrainingJobStatus",
                "model_uri.$": "$.ModelArtifacts.S3ModelArtifacts",
            },
            "$.training",
        )
        evaluate = self._sagemaker_step(
            EVALUATE,
            "createProcessingJob",
            self._processing_parameters(
                name_path="$.plan.evaluation_job_name",
                module=["shipml.pipeline.processing", "evaluate"],
                extra_inputs=[
                    {
                        "InputName": "model",
                        "S3Input": {
                            "S3Uri.$": "$.training.model_uri",
                            "LocalPath": "/opt/ml/processing/input/model",
                            "S3DataType": "S3Prefix",
                            "S3InputMode": "File",
                            "S3DataDistributionType": "FullyReplicated",
                        },
                    }
                ],
                output_path="$.plan.evaluation_uri",
                environment={
                    "SHIPML_CHAMPION_VERSION.$": "States.Format('{}', $.plan.champion_version)",
                    "SHIPML_HOLDOUT_FRACTION.$": "$.plan.hyperparameters.holdout_fraction",
                },
            ),
            job_selector,
            "$.evaluation",
        )
        gate = self._lambda_step(
            GATE,
            {"plan.$": "$.plan"},
            {"passed.$": "$.Payload.passed", "basis.$": "$.Payload.basis", "summary.$": "$.Payload.summary"},
            "$.gate",
        )
        register = self._lambda_step(
            REGISTER,
            {"plan.$": "$.plan", "model_uri.$": "$.training.model_uri"},
            {
                "version.$": "$.Payload.version",
                "status.$": "$.Payload.status",
                "approved.$": "$.Payload.approved",
            },
            "$.registered",
        )
        rollout_selector = {
            "status.$": "$.Payload.status",
            "version.$": "$.Payload.version",
            "deployment_id.$": "$.Payload.deployment_id",
            "function_version.$": "$.Payload.function_version",
            "previous_function_version.$": "$.Payload.previous_function_version",
            "detail.$": "$.Payload.detail",
        }
        deploy = self._lambda_step(
            DEPLOY, {"version.$": "$.registered.version"}, rollout_selector, "$.rollout"
        )
        check = self._lambda_step(CHECK_ROLLOUT, {"rollout.$": "$.rollout"}, rollout_selector, "$.rollout")
        promote = self._lambda_step(
            PROMOTE_LIVE,
            {"version.$": "$.registered.version"},
            {"message.$": "$.Payload.message"},
            "$.promotion",
        )
        subject = f"shipml {self.model_name} ({self._settings.stage}) retraining"
        notify_promoted = self._notify(
            NOTIFY_PROMOTED,
            f"{subject}: promoted",
            "States.Format('Run {}: {}', $$.Execution.Name, $.promotion.message)",
        )
        notify_rollback = self._notify(
            NOTIFY_ROLLBACK,
            f"{subject}: rollout failed",
            "States.Format('Run {}: the rollout of version {} failed; the live model is unchanged. {}', "
            "$$.Execution.Name, $.rollout.version, $.rollout.detail)",
        )
        notify_awaiting = self._notify(
            NOTIFY_AWAITING_APPROVAL,
            f"{subject}: awaiting approval",
            "States.Format('Run {}: version {} is registered as {}; approve it to deploy it.', "
            "$$.Execution.Name, $.registered.version, $.registered.status)",
        )
        notify_rejected = self._notify(
            NOTIFY_REJECTED,
            f"{subject}: challenger rejected",
            "States.Format('Run {}: the gate kept the champion. {}', $$.Execution.Name, $.gate.summary)",
        )
        notify_failure = self._notify(
            NOTIFY_FAILURE,
            f"{subject}: failed",
            "States.Format('Run {} failed; the live model is unchanged. {}: {}', "
            "$$.Execution.Name, $.error.Error, $.error.Cause)",
        )
        run_failed = sfn.Fail(self, RUN_FAILED, error_path="$.error.Error", cause_path="$.error.Cause")
        notify_failure.add_catch(run_failed, errors=["States.ALL"], result_path="$.notify_error")
        notify_failure.next(run_failed)

        for step in (
            prepare,
            validate,
            train,
            evaluate,
            gate,
            register,
            deploy,
            check,
            promote,
            notify_promoted,
            notify_rollback,
            notify_awaiting,
            notify_rejected,
        ):
            step.add_catch(notify_failure, errors=["States.ALL"], result_path="$.error")

        rollout_done = (
            sfn.Choice(self, ROLLOUT_DONE)
            .when(
                sfn.Condition.string_equals("$.rollout.status", "Succeeded"),
                promote.next(notify_promoted).next(sfn.Succeed(self, PROMOTED)),
            )
            .when(
                sfn.Condition.string_equals("$.rollout.status", "InProgress"),
                sfn.Wait(
                    self,
                    WAIT_FOR_ROLLOUT,
                    time=sfn.WaitTime.duration(cdk.Duration.seconds(ROLLOUT_POLL_SECONDS)),
                ).next(check),
            )
            .otherwise(
                notify_rollback.next(
                    sfn.Fail(
                        self,
                        ROLLED_BACK,
                        error="RolloutFailed",
                        cause="The rollout failed or was rolled back; the live model is unchanged.",
                    )
                )
            )
        )
        check.next(rollout_done)
        approved = (
            sfn.Choice(self, APPROVED)
            .when(sfn.Condition.boolean_equals("$.registered.approved", True), deploy.next(rollout_done))
            .otherwise(notify_awaiting.next(sfn.Succeed(self, AWAITING_APPROVAL)))
        )
        gate_passed = (
            sfn.Choice(self, GATE_PASSED)
            .when(sfn.Condition.boolean_equals("$.gate.passed", True), register.next(approved))
            .otherwise(
                notify_rejected.next(
                    sfn.Fail(
                        self,
                        CHAMPION_KEPT,
                        error="GateRejected",
                        cause="The challenger did not pass the gate; the champion stays live.",
                    )
                )
            )
        )
        chain = prepare.next(validate).next(train).next(evaluate).next(gate).next(gate_passed)

        machine = common.logged_state_machine(
            self,
            state_machine_name=f"{self._settings.stack_name}-retrain",
            comment=f"Retrains, gates and promotes the {self.model_name} model",
            definition=chain,
            timeout=cdk.Duration.seconds(3 * self._settings.training_max_runtime_s + 4 * 3600),
            key=self._key,
            removal_policy=self._settings.cdk_removal_policy,
        )
        self._grant_state_machine(machine)
        return machine

    def _grant_state_machine(self, machine: sfn.StateMachine) -> None:
        role = machine.role
        processing = [
            self._arn("sagemaker", f"processing-job/{self._job_prefix(k)}*") for k in ("validate", "evaluate")
        ]
        training = [self._arn("sagemaker", f"training-job/{self._job_prefix('train')}*")]
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=[
                    "sagemaker:CreateProcessingJob",
                    "sagemaker:DescribeProcessingJob",
                    "sagemaker:StopProcessingJob",
                ],
                resources=processing,
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=[
                    "sagemaker:CreateTrainingJob",
                    "sagemaker:DescribeTrainingJob",
                    "sagemaker:StopTrainingJob",
                ],
                resources=training,
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["events:PutTargets", "events:PutRule", "events:DescribeRule"],
                resources=[
                    self._arn("events", "rule/StepFunctionsGetEventsForSageMakerTrainingJobsRule"),
                    self._arn("events", "rule/StepFunctionsGetEventsForSageMakerProcessingJobsRule"),
                ],
            )
        )
        common.grant_pass_role_and_topic_key(machine, self.sagemaker_role, self._key)
        for arn in (*processing, *training):
            nag.acknowledge(
                machine,
                f"AwsSolutions-IAM5[Resource::{nag_arn(arn)}]",
                "Jobs of this model only: one name per run under this job-name prefix (`.sync` starts, "
                "describes and stops them).",
            )
        for function in self.functions.values():
            logical_id = cdk.Stack.of(self).resolve(
                cdk.Stack.of(self).get_logical_id(function.node.default_child)
            )
            nag.acknowledge(
                machine,
                f"AwsSolutions-IAM5[Resource::<{logical_id}.Arn>:*]",
                "LambdaInvoke grants the step function and its versions/aliases (ARN:*), nothing else.",
            )
        common.acknowledge_state_machine_logging(machine)

    def _build_schedule(self) -> scheduler.Schedule:
        return common.start_on_schedule(
            self,
            self.state_machine,
            self._settings.retrain_schedule,
            f"Retrains the {self.model_name} model on schedule",
        )
