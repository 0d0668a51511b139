"""The pieces the SageMaker-driving state machines share: batch scoring (`stacks/batch_construct.py`) and
retraining (`stacks/pipeline_construct.py`).

Each function creates its resources directly in the `scope` it is given, under the same construct ids
the constructs used before, so logical IDs do not depend on which construct calls it.
"""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as scheduler_targets
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from stacks import nag

SAGEMAKER_RETRY_ERRORS = [
    "SageMaker.AmazonSageMakerException",
    "SageMaker.ResourceLimitExceededException",
    "SageMaker.ThrottlingException",
]
SNS_RETRY_ERRORS = ["SNS.AmazonSNSException", "SNS.ThrottledException"]
SAGEMAKER_PRINCIPAL = "sagemaker.amazonaws.com"
# SageMaker names its log groups itself, under this prefix.
SAGEMAKER_LOG_GROUPS = "log-group:/aws/sagemaker/*"


def nag_arn(arn: str) -> str:
    """An ARN made of Aws.* tokens, as cdk-nag prints it (`arn:<AWS::Partition>:...`)."""
    return (
        arn.replace(cdk.Aws.PARTITION, "<AWS::Partition>")
        .replace(cdk.Aws.REGION, "<AWS::Region>")
        .replace(cdk.Aws.ACCOUNT_ID, "<AWS::AccountId>")
    )


def sagemaker_execution_role(scope: Construct, description: str) -> iam.Role:
    """The role ("SageMakerExecutionRole") SageMaker assumes for the jobs and models a machine creates."""
    return iam.Role(
        scope,
        "SageMakerExecutionRole",
        assumed_by=iam.ServicePrincipal(SAGEMAKER_PRINCIPAL),
        description=description,
    )


def grant_sagemaker_runtime(role: iam.Role, *, key: kms.IKey, log_groups_arn: str) -> None:
    """What every SageMaker job needs besides its data: the stack key, its own logs, its own metrics.

    `log_groups_arn` is the ARN of `SAGEMAKER_LOG_GROUPS` in the stack's account and region.
    """
    role.add_to_policy(
        iam.PolicyStatement(
            actions=[
                "kms:Decrypt",
                "kms:Encrypt",
                "kms:GenerateDataKey",
                "kms:DescribeKey",
                "kms:CreateGrant",
            ],
            resources=[key.key_arn],
        )
    )
    role.add_to_policy(
        iam.PolicyStatement(
            actions=[
                "logs:CreateLogGroup",
                "logs:CreateLogStream",
                "logs:PutLogEvents",
                "logs:DescribeLogStreams",
            ],
            resources=[log_groups_arn],
        )
    )
    # Resource "*": PutMetricData has no resource-level permissions; the condition limits it to
    # SageMaker's namespace.
    role.add_to_policy(
        iam.PolicyStatement(
            actions=["cloudwatch:PutMetricData"],
            resources=["*"],
            conditions={"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}},
        )
    )


def sagemaker_task(
    scope: Construct,
    state: str,
    resource: str,
    parameters: dict[str, Any],
    selector: dict[str, Any],
    result_path: str,
    *,
    timeout: cdk.Duration | None = None,
) -> sfn.CustomState:
    """A Task state calling SageMaker's service integration `resource`, retried on throttling.

    A CustomState, because the typed SageMaker tasks lack parameters the states pass (the job name from
    the input, KMS keys, the data processing of a transform job).
    """
    state_json: dict[str, Any] = {
        "Type": "Task",
        "Resource": resource,
        "Parameters": parameters,
        "ResultSelector": selector,
        "ResultPath": result_path,
    }
    if timeout is not None:
        state_json["TimeoutSeconds"] = int(timeout.to_seconds())
    step = sfn.CustomState(scope, state, state_json=state_json)
    step.add_retry(
        errors=SAGEMAKER_RETRY_ERRORS, interval=cdk.Duration.seconds(30), max_attempts=3, backoff_rate=2
    )
    return step


def notify_step(
    scope: Construct, state: str, topic: sns.ITopic, subject: str, message: str
) -> tasks.SnsPublish:
    """A state that publishes `message` (a JSONPath or an intrinsic) to the topic, retried on throttling."""
    step = tasks.SnsPublish(
        scope,
        state,
        state_name=state,
        topic=topic,
        subject=subject,
        message=sfn.TaskInput.from_json_path_at(message),
        result_path=sfn.JsonPath.DISCARD,
    )
    step.add_retry(errors=SNS_RETRY_ERRORS, interval=cdk.Duration.seconds(5), max_attempts=3, backoff_rate=2)
    return step


def logged_state_machine(
    scope: Construct,
    *,
    state_machine_name: str,
    comment: str,
    definition: sfn.IChainable,
    timeout: cdk.Duration,
    key: kms.IKey,
    removal_policy: cdk.RemovalPolicy,
) -> sfn.StateMachine:
    """The state machine ("StateMachine"), traced, with its full execution log ("StateMachineLogs")."""
    log_group = logs.LogGroup(
        scope,
        "StateMachineLogs",
        retention=logs.RetentionDays.THREE_MONTHS,
        removal_policy=removal_policy,
        # The execution log includes execution data (inputs, outputs): encrypted with the stack's key.
        encryption_key=key,
    )
    return sfn.StateMachine(
        scope,
        "StateMachine",
        state_machine_name=state_machine_name,
        comment=comment,
        definition_body=sfn.DefinitionBody.from_chainable(definition),
        timeout=timeout,
        # Tracing and the execution log make CDK grant X-Ray's PutTraceSegments/PutTelemetryRecords/
        # GetSampling* and CloudWatch Logs' log-delivery actions on Resource "*": neither service has
        # resource-level permissions for them.
        tracing_enabled=True,
        logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=True),
    )


def grant_pass_role_and_topic_key(
    machine: sfn.StateMachine, sagemaker_role: iam.IRole, key: kms.IKey
) -> None:
    """Let the state machine hand `sagemaker_role` to SageMaker (only) and publish to the encrypted topic."""
    machine.role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["iam:PassRole"],
            resources=[sagemaker_role.role_arn],
            conditions={"StringEquals": {"iam:PassedToService": SAGEMAKER_PRINCIPAL}},
        )
    )
    # Publishing to the KMS-encrypted topic needs the key.
    machine.role.add_to_principal_policy(
        iam.PolicyStatement(actions=["kms:GenerateDataKey", "kms:Decrypt"], resources=[key.key_arn])
    )


def acknowledge_state_machine_logging(machine: sfn.StateMachine) -> None:
    """Acknowledge the Resource "*" grants that `logged_state_machine`'s tracing and execution log make."""
    nag.acknowledge(
        machine,
        "AwsSolutions-IAM5[Resource::*]",
        "X-Ray tracing and CloudWatch Logs delivery (the execution log) have no resource-level permissions.",
    )


def start_on_schedule(
    scope: Construct,
    machine: sfn.IStateMachine,
    expression: str,
    description: str,
    *,
    key: kms.IKey | None = None,
) -> scheduler.Schedule:
    """An EventBridge Scheduler schedule ("Schedule") that starts `machine` with `{"reason": "scheduled"}`."""
    return scheduler.Schedule(
        scope,
        "Schedule",
        schedule=scheduler.ScheduleExpression.expression(expression),
        description=description,
        key=key,
        target=scheduler_targets.StepFunctionsStartExecution(
            machine, input=scheduler.ScheduleTargetInput.from_object({"reason": "scheduled"})
        ),
    )
