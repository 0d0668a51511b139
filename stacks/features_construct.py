"""Scheduled materialisation: EventBridge Scheduler runs the job that fills the online feature table.

Two hosts, chosen by `host` (data size decides: a Lambda has 15 minutes and 10 GB of memory):

- `lambda`: the schedule invokes a function (`functions/features/handler.handler`) with the
  scheduled time; one run at a time (reserved concurrency 1);
- `processing`: the schedule calls SageMaker `CreateProcessingJob` directly (a universal target,
  no function in between); the container runs `python3 -m shipml.features.job`.

Either way the job's role reads only the lake prefix, reads and writes only its own state prefix,
writes only the online table (BatchWriteItem), and uses the stack's KMS key for both. Nothing else.
"""

from __future__ import annotations

from typing import Literal

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as targets
from constructs import Construct

from stacks import nag

HANDLER = "functions/features/handler.handler"
_MAX_PROCESSING_NAME = 63


class FeaturesConstruct(Construct):
    """The materialisation job, its schedule, and its narrow grants.

    `code` is the function's deployment package (the source tree with pyarrow, numpy, pydantic and
    pyyaml: functions/features/requirements.txt); it is unused with `host="processing"`, where
    `processing_image_uri` names a container image with shipml installed.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        model_name: str,
        bucket: s3.IBucket,
        key: kms.IKey,
        table: dynamodb.ITable,
        contract_path: str,
        code: lambda_.Code | None = None,
        schedule: str = "rate(1 hour)",
        lake_prefix: str = "lake/transactions/",
        state_prefix: str = "features/state/",
        host: Literal["lambda", "processing"] = "lambda",
        memory_mb: int = 3008,
        timeout: cdk.Duration | None = None,
        processing_image_uri: str | None = None,
        processing_instance_type: str = "ml.m5.xlarge",
        log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH,
        removal_policy: cdk.RemovalPolicy = cdk.RemovalPolicy.DESTROY,
    ) -> None:
        super().__init__(scope, construct_id)
        if host == "lambda" and code is None:
            raise ValueError("host='lambda' needs the function's code")
        if host == "processing" and not processing_image_uri:
            raise ValueError("host='processing' needs processing_image_uri")
        for name, prefix in (("lake_prefix", lake_prefix), ("state_prefix", state_prefix)):
            if not prefix.endswith("/") or prefix.startswith("/"):
                raise ValueError(f"{name} must be a relative prefix ending in '/', got {prefix!r}")
        self._bucket, self._key, self._table = bucket, key, table
        self._lake_prefix, self._state_prefix = lake_prefix, state_prefix
        self.environment = {
            "SHIPML_CONTRACT": contract_path,
            "SHIPML_LAKE_BUCKET": bucket.bucket_name,
            "SHIPML_LAKE_PREFIX": lake_prefix,
            "SHIPML_STATE_PREFIX": state_prefix,
            "SHIPML_ONLINE_TABLE": table.table_name,
        }
        # Encrypted with the stack's key like every store of the stack.
        self.log_group = logs.LogGroup(
            self, "Logs", retention=log_retention, removal_policy=removal_policy, encryption_key=key
        )
        self.function: lambda_.Function | None = None
        # The schedule's own role, here rather than the one CDK would add at the stack's root, so
        # that its grants (and their acknowledgements) stay with this capability.
        self.schedule_role = iam.Role(
            self, "ScheduleRole", assumed_by=iam.ServicePrincipal("scheduler.amazonaws.com")
        )
        if host == "lambda":
            self.role = self._build_role("lambda.amazonaws.com")
            self.function = self._build_function(code, memory_mb, timeout or cdk.Duration.minutes(15))
            target: scheduler.IScheduleTarget = targets.LambdaInvoke(
                self.function,
                input=scheduler.ScheduleTargetInput.from_object(
                    {"time": scheduler.ContextAttribute.scheduled_time}
                ),
                retry_attempts=2,
                max_event_age=cdk.Duration.hours(1),
                role=self.schedule_role,
            )
            nag.acknowledge(
                self.schedule_role,
                nag.arn_wildcard_finding("AwsSolutions-IAM5", self.function, ":*"),
                "CDK's Lambda target grants invoke on the function and its versions (ARN:*); one function.",
            )
        else:
            self.role = self._build_role("sagemaker.amazonaws.com")
            self._grant_image_pull()
            target = self._processing_target(
                model_name,
                processing_image_uri or "",
                processing_instance_type,
                timeout or cdk.Duration.hours(2),
            )
        self._grant_data_access(self.role)
        self.schedule = scheduler.Schedule(
            self,
            "Schedule",
            schedule=scheduler.ScheduleExpression.expression(schedule),
            target=target,
            description=f"Materialise the online features of {model_name}",
            key=key,
        )

    # ---------------------------------------------------------------------------------- roles

    def _build_role(self, service: str) -> iam.Role:
        # No managed policies: every permission below is scoped to one resource.
        role = iam.Role(self, "JobRole", assumed_by=iam.ServicePrincipal(service))
        role.add_to_policy(
            iam.PolicyStatement(
                sid="Logs",
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.log_group.log_group_arn, f"{self.log_group.log_group_arn}:*"],
            )
        )
        return role

    def _grant_data_access(self, role: iam.Role) -> None:
        bucket, lake, state = self._bucket, self._lake_prefix, self._state_prefix
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ListLakeAndState",
                actions=["s3:ListBucket"],
                resources=[bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{lake}*", f"{state}*"]}},
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadLake", actions=["s3:GetObject"], resources=[bucket.arn_for_objects(f"{lake}*")]
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadWriteState",
                actions=["s3:GetObject", "s3:PutObject"],
                resources=[bucket.arn_for_objects(f"{state}*")],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteOnlineTable",
                actions=["dynamodb:BatchWriteItem", "dynamodb:PutItem", "dynamodb:DescribeTable"],
                resources=[self._table.table_arn],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="UseStackKey",
                actions=["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey*"],
                resources=[self._key.key_arn],
            )
        )
        nag.acknowledge(
            role,
            nag.arn_wildcard_finding("AwsSolutions-IAM5", bucket, f"/{lake}*"),
            "The job reads the lake's transaction objects, whose names (date partitions) it does not choose.",
        )
        nag.acknowledge(
            role,
            nag.arn_wildcard_finding("AwsSolutions-IAM5", bucket, f"/{state}*"),
            "The job keeps its state object (per model) under its own state prefix.",
        )
        nag.acknowledge(
            role,
            nag.arn_wildcard_finding("AwsSolutions-IAM5", self.log_group, ":*"),
            "Log streams of the job's own log group; Lambda and SageMaker name the streams.",
        )
        nag.acknowledge(
            role,
            "AwsSolutions-IAM5[Action::kms:GenerateDataKey*]",
            "GenerateDataKey and GenerateDataKeyWithoutPlaintext on the stack's one key "
            "(S3 and DynamoDB use them).",
        )

    def _grant_image_pull(self) -> None:
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="PullImage",
                actions=[
                    "ecr:GetAuthorizationToken",
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchCheckLayerAvailability",
                ],
                resources=["*"],
            )
        )
        nag.acknowledge(
            self.role,
            "AwsSolutions-IAM5[Resource::*]",
            "ecr:GetAuthorizationToken has no resource-level permissions; "
            "the image may live in any repository.",
        )

    # -------------------------------------------------------------------------------- lambda

    def _build_function(
        self, code: lambda_.Code | None, memory_mb: int, timeout: cdk.Duration
    ) -> lambda_.Function:
        function = lambda_.Function(
            self,
            "Function",
            runtime=lambda_.Runtime.PYTHON_3_12,
            architecture=lambda_.Architecture.ARM_64,
            handler=HANDLER,
            code=code,  # type: ignore[arg-type]
            memory_size=memory_mb,
            timeout=timeout,
            role=self.role,
            environment=self.environment,
            environment_encryption=self._key,
            log_group=self.log_group,
            # One run at a time: two overlapping runs would race on the state object.
            reserved_concurrent_executions=1,
            description="Materialises the contract's online features from the lake into the online table",
        )
        nag.acknowledge(
            function,
            "AwsSolutions-L1",
            "Pinned to Python 3.12 like the serving function: the bundle's binary wheels (pyarrow, numpy, "
            "pydantic-core) are built for cp312; an upgrade is a deliberate change of the requirements.",
        )
        nag.acknowledge_design(function, nag.NIST_LAMBDA_OUTSIDE_VPC)
        nag.acknowledge(
            function,
            "NIST.800.53.R5-LambdaDLQ",
            "The scheduled event carries nothing but its time, so a dead letter would hold nothing to "
            "replay: a failed run is retried by the schedule (2 attempts, 1 hour) and Lambda, and the "
            "next hourly run materialises everything since the last committed state object.",
        )
        return function

    # ---------------------------------------------------------------------------- processing

    def _processing_target(
        self, model_name: str, image_uri: str, instance_type: str, timeout: cdk.Duration
    ) -> scheduler.IScheduleTarget:
        stack = cdk.Stack.of(self)
        name_prefix = f"features-{model_name}-"[: _MAX_PROCESSING_NAME - 37]
        job = {
            "ProcessingJobName": f"{name_prefix}{scheduler.ContextAttribute.execution_id}",
            "RoleArn": self.role.role_arn,
            "AppSpecification": {
                "ImageUri": image_uri,
                "ContainerEntrypoint": ["python3", "-m", "shipml.features.job"],
            },
            "ProcessingResources": {
                "ClusterConfig": {
                    "InstanceCount": 1,
                    "InstanceType": instance_type,
                    "VolumeSizeInGB": 30,
                    "VolumeKmsKeyId": self._key.key_arn,
                }
            },
            "Environment": {**self.environment, "SHIPML_AS_OF": scheduler.ContextAttribute.scheduled_time},
            "StoppingCondition": {"MaxRuntimeInSeconds": timeout.to_seconds()},
        }
        nag.acknowledge(
            self.schedule_role,
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:"
            f"processing-job/{name_prefix}*]",
            "Each run is a new processing job named after the schedule's execution id, under one prefix.",
        )
        return targets.Universal(
            service="sagemaker",
            action="createProcessingJob",
            input=scheduler.ScheduleTargetInput.from_object(job),
            retry_attempts=2,
            role=self.schedule_role,
            policy_statements=[
                iam.PolicyStatement(
                    actions=["sagemaker:CreateProcessingJob", "sagemaker:AddTags"],
                    resources=[
                        stack.format_arn(
                            service="sagemaker", resource="processing-job", resource_name=f"{name_prefix}*"
                        )
                    ],
                ),
                iam.PolicyStatement(
                    actions=["iam:PassRole"],
                    resources=[self.role.role_arn],
                    conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
                ),
            ],
        )
