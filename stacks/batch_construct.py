"""Batch scoring: a Step Functions state machine over SageMaker Batch Transform, on a schedule.

    ResolveLiveVersion -> LiveModelDeployed?
      "0" (nothing deployed yet): NotifyNoLiveModel -> NoLiveModel (fails)
      a version: PlanRun -> CreateModel -> ScoreBatch (.sync) -> NotifyScored -> DeleteModel -> Scored
    ResolveLiveVersion / CreateModel / NotifyScored / DeleteModel error -> NotifyFailure -> BatchFailed
    ScoreBatch error -> DeleteModelAfterFailure -> NotifyFailure -> BatchFailed

The live version is read at run time from the SSM parameter the retraining pipeline writes, so a
scheduled run always scores with the model that is live then. CreateModel points SageMaker at the
registry's artifact, `s3://<bucket>/models/{model}/{version}/model.tar.gz` (SageMaker extracts it
into /opt/ml/model), and at the batch image: the one FastAPI app under uvicorn
(training/batch_image, `shipml.serving.container`), built by CDK as a Docker image asset at deploy
time (synth only stages the build context; nothing is built and Docker is not needed).

The transform job reads every object under the input prefix, split by line (CSV without a header,
or JSON Lines), sends MultiRecord mini-batches to /invocations, and joins each prediction to its
input row (DataProcessing JoinSource=Input) so the output keeps the row's id and columns. Output
lands under `{output_prefix}date=YYYY-MM-DD/model_version=N/`, encrypted with the stack key, as
are the instances' volumes.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Literal

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_sns as sns
from aws_cdk import aws_ssm as ssm
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from stacks import constants, nag
from stacks import sagemaker_common as common
from stacks.sagemaker_common import nag_arn
from stacks.sagemaker_instances import has_local_storage

REPO_ROOT = Path(__file__).resolve().parent.parent
IMAGE_DIR = "training/batch_image"
# The image's build context is the repository root, narrowed to what the Dockerfile copies.
IMAGE_CONTEXT_EXCLUDE = [
    "*",
    "!shipml/**",
    "!functions/inference/requirements.txt",
    f"!{IMAGE_DIR}/**",
    "**/__pycache__",
    "**/*.pyc",
]

InputFormat = Literal["text/csv", "application/jsonlines"]
LookedUpFeatures = Literal["input", "store"]

# The states, by their console names.
RESOLVE_LIVE_VERSION = "ResolveLiveVersion"
LIVE_MODEL_DEPLOYED = "LiveModelDeployed?"
NOTIFY_NO_LIVE_MODEL = "NotifyNoLiveModel"
NO_LIVE_MODEL = "NoLiveModel"
PLAN_RUN = "PlanRun"
CREATE_MODEL = "CreateModel"
SCORE_BATCH = "ScoreBatch"
NOTIFY_SCORED = "NotifyScored"
DELETE_MODEL = "DeleteModel"
SCORED = "Scored"
DELETE_MODEL_AFTER_FAILURE = "DeleteModelAfterFailure"
NOTIFY_FAILURE = "NotifyFailure"
BATCH_FAILED = "BatchFailed"

NO_MODEL_VERSION = "0"  # the live parameter's value before the first deploy
# The date of a run: the UTC day its execution started ("2026-01-15T03:00:00.123Z" -> "2026-01-15").
RUN_DATE = "States.ArrayGetItem(States.StringSplit($$.Execution.StartTime, 'T'), 0)"


def batch_name_prefix(model_name: str) -> str:
    """The name prefix of this model's batch SageMaker models and transform jobs (what IAM allows).

    A run appends a UUID (36 characters): at most 26 + 36 = 62 of the 63 SageMaker allows.
    """
    return f"shipml-{model_name[:12].rstrip('-')}-batch-"


@functools.cache
def transform_instance_types() -> frozenset[str]:
    """The instance types CreateTransformJob accepts, from botocore's service model (offline)."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    shape = model.operation_model("CreateTransformJob").input_shape
    return frozenset(shape.members["TransformResources"].members["InstanceType"].enum)


def _prefix(value: str, name: str) -> str:
    if not value or value.startswith("/") or not value.endswith("/") or "*" in value:
        raise ValueError(
            f"{name} {value!r} must be a bucket prefix like 'batch/input/' (relative, ending in /)"
        )
    return value


class BatchScoring(Construct):
    """The batch-scoring state machine, its SageMaker role, the batch image and the schedule.

    Keyword-only inputs; `schedule=None` leaves the machine to be started by hand (or by the
    retraining pipeline). `looked_up_features="store"` makes the container look the online features
    up in `online_table` (and turns network isolation off); "input" expects them as input columns.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        model_name: str,
        stage: str,
        bucket: s3.IBucket,
        key: kms.IKey,
        topic: sns.ITopic,
        live_parameter: ssm.IStringParameter | None = None,
        instance_type: str = "ml.m5.xlarge",
        instance_count: int = 1,
        schedule: str | None = "cron(0 2 * * ? *)",
        input_prefix: str | None = None,
        output_prefix: str | None = None,
        input_format: InputFormat = "application/jsonlines",
        looked_up_features: LookedUpFeatures = "input",
        online_table: dynamodb.ITable | None = None,
        max_concurrent_transforms: int = 4,
        max_payload_mb: int = 6,
        max_runtime: cdk.Duration = cdk.Duration.hours(6),
        removal_policy: cdk.RemovalPolicy = cdk.RemovalPolicy.DESTROY,
    ) -> None:
        super().__init__(scope, construct_id)
        if instance_count < 1 or max_concurrent_transforms < 1:
            raise ValueError("instance_count and max_concurrent_transforms must be at least 1")
        if not 1 <= max_payload_mb <= 100:
            raise ValueError(f"max_payload_mb {max_payload_mb} must be within SageMaker's 1..100")
        if instance_type not in transform_instance_types():
            raise ValueError(f"{instance_type} is not an instance type Batch Transform offers")
        if looked_up_features == "store" and online_table is None:
            raise ValueError('looked_up_features="store" needs the online_table to look the features up in')
        self.model_name = model_name
        self._stage = stage
        self._bucket, self._key, self._topic = bucket, key, topic
        self._instance_type, self._instance_count = instance_type, instance_count
        self.input_prefix = _prefix(input_prefix or f"batch/{model_name}/input/", "input_prefix")
        self.output_prefix = _prefix(output_prefix or f"batch/{model_name}/output/", "output_prefix")
        self.input_format = input_format
        self._looked_up = looked_up_features
        self._online_table = online_table
        self._max_concurrent, self._max_payload_mb = max_concurrent_transforms, max_payload_mb
        self._max_runtime = max_runtime
        self._removal_policy = removal_policy
        stack = cdk.Stack.of(self)
        self._partition, self._region, self._account = stack.partition, stack.region, stack.account
        self.name_prefix = batch_name_prefix(model_name)
        if live_parameter is not None:
            self.live_parameter_name = live_parameter.parameter_name
            self._live_parameter_arn = live_parameter.parameter_arn
        else:
            self.live_parameter_name = constants.live_parameter_name(model_name, stage)
            self._live_parameter_arn = self._arn("ssm", f"parameter{self.live_parameter_name}")

        self.image = self._build_image()
        self.sagemaker_role = self._build_sagemaker_role()
        self.state_machine = self._build_state_machine()
        self.schedule = self._build_schedule(schedule) if schedule else None

    # --- shared pieces ----------------------------------------------------------------------------

    def _arn(self, service: str, resource: str) -> str:
        return f"arn:{self._partition}:{service}:{self._region}:{self._account}:{resource}"

    @property
    def input_uri(self) -> str:
        return f"s3://{self._bucket.bucket_name}/{self.input_prefix}"

    def _build_image(self) -> ecr_assets.DockerImageAsset:
        # Staged at synth (a copy of the narrowed context), built and pushed by `cdk deploy`.
        return ecr_assets.DockerImageAsset(
            self,
            "BatchImage",
            directory=str(REPO_ROOT),
            file=f"{IMAGE_DIR}/Dockerfile",
            exclude=IMAGE_CONTEXT_EXCLUDE,
            ignore_mode=cdk.IgnoreMode.DOCKER,
            # SageMaker's CPU batch instances (ml.m5, ml.c5, ...) are x86_64.
            platform=ecr_assets.Platform.LINUX_AMD64,
        )

    def _build_sagemaker_role(self) -> iam.Role:
        role = common.sagemaker_execution_role(
            self, f"SageMaker models and transform jobs of the shipml {self.model_name} batch scoring"
        )
        artifacts = f"models/{self.model_name}/*"
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject"],
                resources=[
                    self._bucket.arn_for_objects(artifacts),
                    self._bucket.arn_for_objects(f"{self.input_prefix}*"),
                ],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[self._bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{self.input_prefix}*"]}},
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:PutObject", "s3:AbortMultipartUpload"],
                resources=[self._bucket.arn_for_objects(f"{self.output_prefix}*")],
            )
        )
        # The artifact and inputs are KMS-encrypted; volumes and outputs are encrypted with the key
        # (SageMaker makes grants for the volumes).
        log_groups = self._arn("logs", common.SAGEMAKER_LOG_GROUPS)
        common.grant_sagemaker_runtime(role, key=self._key, log_groups_arn=log_groups)
        # grant_pull adds ecr:GetAuthorizationToken on Resource "*": ECR's login token is account-wide
        # (no resource-level permissions); the pulls themselves are scoped to the image's repository.
        self.image.repository.grant_pull(role)
        if self._online_table is not None and self._looked_up == "store":
            role.add_to_policy(
                iam.PolicyStatement(
                    actions=["dynamodb:BatchGetItem"], resources=[self._online_table.table_arn]
                )
            )
            if self._online_table.encryption_key is not None:
                self._online_table.encryption_key.grant_decrypt(role)
        for prefix in (artifacts, f"{self.input_prefix}*", f"{self.output_prefix}*"):
            nag.acknowledge(
                role,
                nag.arn_wildcard_finding("AwsSolutions-IAM5", self._bucket, f"/{prefix}"),
                "Batch Transform reads this model's artifacts and every object under the batch input "
                "prefix, and writes under the batch output prefix: object names are chosen per run.",
            )
        nag.acknowledge(
            role,
            f"AwsSolutions-IAM5[Resource::{nag_arn(log_groups)}]",
            "SageMaker writes transform-job logs to log groups it names itself under /aws/sagemaker/.",
        )
        nag.acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::*]",
            "ecr:GetAuthorizationToken and cloudwatch:PutMetricData (limited by namespace) have no "
            "resource-level permissions.",
        )
        return role

    # --- parameters of the SageMaker calls ---------------------------------------------------------

    def _container_environment(self) -> dict[str, Any]:
        environment: dict[str, Any] = {
            "SHIPML_MODEL_VERSION.$": "$.live.version",
            "SHIPML_LOOKED_UP_FEATURES": self._looked_up,
        }
        if self._looked_up == "store" and self._online_table is not None:
            environment["SHIPML_ONLINE_TABLE"] = self._online_table.table_name
        return environment

    def create_model_parameters(self) -> dict[str, Any]:
        """CreateModel: the batch image over the live version's artifact (`$.run`, `$.live` at run time)."""
        return {
            "ModelName.$": "$.run.name",
            "ExecutionRoleArn": self.sagemaker_role.role_arn,
            "PrimaryContainer": {
                "Image": self.image.image_uri,
                "Mode": "SingleModel",
                "ModelDataUrl.$": "$.run.model_data_url",
                "Environment": self._container_environment(),
            },
            # With looked-up features in the input the container needs no network at all.
            "EnableNetworkIsolation": self._looked_up == "input",
        }

    def transform_job_parameters(self) -> dict[str, Any]:
        """CreateTransformJob: the input prefix, split by line, MultiRecord, joined to the input rows."""
        resources: dict[str, Any] = {
            "InstanceType": self._instance_type,
            "InstanceCount": self._instance_count,
        }
        if not has_local_storage(self._instance_type):
            resources["VolumeKmsKeyId"] = self._key.key_arn
        return {
            "TransformJobName.$": "$.run.name",
            "ModelName.$": "$.run.name",
            "MaxConcurrentTransforms": self._max_concurrent,
            "MaxPayloadInMB": self._max_payload_mb,
            "BatchStrategy": "MultiRecord",
            "ModelClientConfig": {"InvocationsTimeoutInSeconds": 600, "InvocationsMaxRetries": 1},
            "TransformInput": {
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": self.input_uri}},
                "ContentType": self.input_format,
                "CompressionType": "None",
                "SplitType": "Line",
            },
            "TransformOutput": {
                "S3OutputPath.$": "$.run.output_uri",
                "Accept": self.input_format,
                "AssembleWith": "Line",
                "KmsKeyId": self._key.key_arn,
            },
            "TransformResources": resources,
            # Each output line is its input row joined with the prediction (CSV: columns appended;
            # JSON Lines: the prediction under "SageMakerOutput"), so the row keeps its id.
            "DataProcessing": {"InputFilter": "$", "JoinSource": "Input", "OutputFilter": "$"},
        }

    def _run_plan(self) -> dict[str, Any]:
        bucket = self._bucket.bucket_name
        return {
            "name.$": f"States.Format('{self.name_prefix}{{}}', States.UUID())",
            "date.$": RUN_DATE,
            "model_data_url.$": (
                f"States.Format('s3://{bucket}/models/{self.model_name}/{{}}/model.tar.gz', $.live.version)"
            ),
            "output_uri.$": (
                f"States.Format('s3://{bucket}/{self.output_prefix}date={{}}/model_version={{}}/', "
                f"{RUN_DATE}, $.live.version)"
            ),
        }

    # --- states -----------------------------------------------------------------------------------

    def _sagemaker_step(
        self,
        state: str,
        api: str,
        parameters: dict[str, Any],
        selector: dict[str, Any],
        result_path: str,
        *,
        timeout: cdk.Duration | None = None,
    ) -> sfn.CustomState:
        resource = f"arn:{self._partition}:states:::sagemaker:{api}"
        return common.sagemaker_task(
            self, state, resource, parameters, selector, result_path, timeout=timeout
        )

    def _delete_model(self, state: str) -> tasks.CallAwsService:
        return tasks.CallAwsService(
            self,
            state,
            state_name=state,
            service="sagemaker",
            action="deleteModel",
            parameters={"ModelName": sfn.JsonPath.string_at("$.run.name")},
            iam_action="sagemaker:DeleteModel",
            iam_resources=[self._arn("sagemaker", f"model/{self.name_prefix}*")],
            result_path=sfn.JsonPath.DISCARD,
        )

    def _notify(self, state: str, subject: str, message: str) -> tasks.SnsPublish:
        return common.notify_step(self, state, self._topic, subject, message)

    def _build_state_machine(self) -> sfn.StateMachine:
        subject = f"shipml {self.model_name} ({self._stage}) batch scoring"
        resolve = tasks.CallAwsService(
            self,
            RESOLVE_LIVE_VERSION,
            state_name=RESOLVE_LIVE_VERSION,
            service="ssm",
            action="getParameter",
            parameters={"Name": self.live_parameter_name},
            iam_action="ssm:GetParameter",
            iam_resources=[self._live_parameter_arn],
            result_selector={"version.$": "$.Parameter.Value"},
            result_path="$.live",
        )
        plan = sfn.Pass(self, PLAN_RUN, parameters=self._run_plan(), result_path="$.run")
        create_model = self._sagemaker_step(
            CREATE_MODEL, "createModel", self.create_model_parameters(), {"arn.$": "$.ModelArn"}, "$.model"
        )
        score = self._sagemaker_step(
            SCORE_BATCH,
            "createTransformJob.sync",
            self.transform_job_parameters(),
            {
                "job_name.$": "$.TransformJobName",
                "status.$": "$.TransformJobStatus",
                "output_uri.$": "$.TransformOutput.S3OutputPath",
            },
            "$.transform",
            timeout=self._max_runtime,
        )
        notify_scored = self._notify(
            NOTIFY_SCORED,
            f"{subject}: scored",
            f"States.Format('Run {{}}: scored {self.input_uri} with {self.model_name} version {{}} "
            "into {}', $$.Execution.Name, $.live.version, $.transform.output_uri)",
        )
        delete_model = self._delete_model(DELETE_MODEL)
        notify_no_model = self._notify(
            NOTIFY_NO_LIVE_MODEL,
            f"{subject}: no live model",
            f"States.Format('Run {{}}: nothing scored; no {self.model_name} version is live yet.', "
            "$$.Execution.Name)",
        )
        notify_failure = self._notify(
            NOTIFY_FAILURE,
            f"{subject}: failed",
            "States.Format('Run {} failed. {}: {}', $$.Execution.Name, $.error.Error, $.error.Cause)",
        )
        batch_failed = sfn.Fail(self, BATCH_FAILED, error_path="$.error.Error", cause_path="$.error.Cause")
        notify_failure.add_catch(batch_failed, errors=["States.ALL"], result_path="$.notify_error")
        notify_failure.next(batch_failed)

        # The transform job's model exists once CreateModel succeeded: remove it on the way out.
        cleanup = self._delete_model(DELETE_MODEL_AFTER_FAILURE)
        cleanup.add_catch(notify_failure, errors=["States.ALL"], result_path="$.cleanup_error")
        cleanup.next(notify_failure)

        for step in (resolve, create_model, notify_scored, delete_model, notify_no_model):
            step.add_catch(notify_failure, errors=["States.ALL"], result_path="$.error")
        score.add_catch(cleanup, errors=["States.ALL"], result_path="$.error")

        no_live_model = sfn.Fail(
            self,
            NO_LIVE_MODEL,
            error="NoLiveModel",
            cause="No model version is live yet; nothing was scored.",
        )
        deployed = (
            sfn.Choice(self, LIVE_MODEL_DEPLOYED)
            .when(
                sfn.Condition.string_equals("$.live.version", NO_MODEL_VERSION),
                notify_no_model.next(no_live_model),
            )
            .otherwise(
                plan.next(create_model)
                .next(score)
                .next(notify_scored)
                .next(delete_model)
                .next(sfn.Succeed(self, SCORED))
            )
        )
        machine = common.logged_state_machine(
            self,
            state_machine_name=f"shipml-{self.model_name}-{self._stage}-batch",
            comment=f"Scores {self.input_prefix} with the live {self.model_name} model (Batch Transform)",
            definition=resolve.next(deployed),
            timeout=self._max_runtime.plus(cdk.Duration.hours(1)),
            key=self._key,
            removal_policy=self._removal_policy,
        )
        self._grant_state_machine(machine)
        return machine

    def _grant_state_machine(self, machine: sfn.StateMachine) -> None:
        role = machine.role
        models = self._arn("sagemaker", f"model/{self.name_prefix}*")
        jobs = self._arn("sagemaker", f"transform-job/{self.name_prefix}*")
        role.add_to_principal_policy(
            iam.PolicyStatement(actions=["sagemaker:CreateModel"], resources=[models])
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=[
                    "sagemaker:CreateTransformJob",
                    "sagemaker:DescribeTransformJob",
                    "sagemaker:StopTransformJob",
                ],
                resources=[jobs],
            )
        )
        # `.sync` follows the job through a managed EventBridge rule.
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["events:PutTargets", "events:PutRule", "events:DescribeRule"],
                resources=[self._arn("events", "rule/StepFunctionsGetEventsForSageMakerTransformJobsRule")],
            )
        )
        common.grant_pass_role_and_topic_key(machine, self.sagemaker_role, self._key)
        for arn in (models, jobs):
            nag.acknowledge(
                machine,
                f"AwsSolutions-IAM5[Resource::{nag_arn(arn)}]",
                "This model's batch models and transform jobs only: one name per run under this prefix "
                "(`.sync` creates, describes and stops the job; the model is deleted after the run).",
            )
        common.acknowledge_state_machine_logging(machine)

    def _build_schedule(self, expression: str) -> scheduler.Schedule:
        return common.start_on_schedule(
            self,
            self.state_machine,
            expression,
            f"Scores the {self.model_name} batch input on schedule",
            key=self._key,
        )
