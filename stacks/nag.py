"""Acknowledging cdk-nag findings: always on the construct where they occur, always with a reason.

cdk-nag reports some rules per finding (`AwsSolutions-IAM5[Resource::<BucketLogicalId.Arn>/models/*]`),
so an acknowledgement names the exact finding rather than the whole rule: a new wildcard added
later is reported, not silently covered.

Two packs run on every synth (app.py): AwsSolutions and NIST 800-53 rev 5. The NIST rules that
conflict with shipml's deliberate design are acknowledged where they occur, with the reasons
below; the reasons live here because several constructs make the same design choice.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from constructs import IConstruct

# --- NIST 800-53 rev 5 findings that conflict with the design, and why ---------------------------

NIST_LAMBDA_OUTSIDE_VPC = (
    "NIST.800.53.R5-LambdaInsideVPC",
    "Serverless by design: the function reaches only AWS APIs (S3, DynamoDB, Firehose, SSM, Secrets "
    "Manager, SageMaker) over TLS, authorised by IAM and resource policies; there is no private "
    "network resource to reach. A VPC would add NAT or one interface endpoint per service and AZ, "
    "and cold-start latency, without narrowing who can call the function.",
)
NIST_LAMBDA_SYNC_NO_DLQ = (
    "NIST.800.53.R5-LambdaDLQ",
    "Invoked synchronously only (API Gateway or a Step Functions task): the caller receives every "
    "error and handles it (an HTTP error, the state machine's Catch and notification). A function "
    "dead-letter queue only ever receives asynchronous invocations, of which there are none.",
)
NIST_LAMBDA_NO_RESERVED_CONCURRENCY = (
    "NIST.800.53.R5-LambdaConcurrency",
    "Reserved concurrency is left unset: reserving carves capacity out of the account's shared pool "
    "(a new account has only 10 in all, and a deploy that reserves more fails), while this function "
    "runs at most a few times per pipeline run, one Step Functions task at a time.",
)
NIST_SCHEDULED_NO_DLQ = (
    "NIST.800.53.R5-LambdaDLQ",
    "Invoked on a schedule by an EventBridge rule whose event carries nothing but its time, so a dead "
    "letter would hold nothing to replay: a failed run is retried by the rule and by Lambda, its "
    "errors raise the function's alarm, and the next scheduled run covers the window again.",
)
NIST_SCHEDULED_NO_RESERVED_CONCURRENCY = (
    "NIST.800.53.R5-LambdaConcurrency",
    "Reserved concurrency is left unset: reserving carves capacity out of the account's shared pool "
    "(a new account has only 10 in all, and a deploy that reserves more fails), while this function "
    "runs once per schedule tick.",
)
NIST_INLINE_GRANT_POLICY = (
    "NIST.800.53.R5-IAMNoInlinePolicy",
    "The policy CDK's grant_* methods attach to one role (its DefaultPolicy): every statement names "
    "this stack's resources, and the policy lives and dies with the role it belongs to. A managed "
    "policy would be reusable by other principals, which is what least privilege avoids here.",
)


def acknowledge(scope: IConstruct, finding: str, reason: str) -> None:
    """Acknowledge one cdk-nag finding on `scope` and everything below it."""
    if not reason.strip():
        raise ValueError(f"an acknowledgement of {finding} needs a reason")
    cdk.Validations.of(scope).acknowledge(cdk.Acknowledgment(id=finding, reason=reason))


def acknowledge_design(scope: IConstruct, *findings: tuple[str, str]) -> None:
    """Acknowledge shared design findings, each a `(finding, reason)` pair such as NIST_LAMBDA_OUTSIDE_VPC."""
    for finding, reason in findings:
        acknowledge(scope, finding, reason)


def acknowledge_grant_policies(scope: IConstruct) -> list[str]:
    """Acknowledge NIST's inline-policy finding on each `DefaultPolicy` below `scope`, one by one.

    Only the policies CDK makes for grants (`iam.Role.add_to_policy` and every `grant_*`): an inline
    policy written by hand, or a role's `inline_policies`, is still reported. Call it after the
    stack is composed, so that every role has its DefaultPolicy. Returns the construct paths.
    """
    acknowledged = []
    for construct in scope.node.find_all():
        if isinstance(construct, iam.Policy) and construct.node.id == "DefaultPolicy":
            acknowledge(construct, *NIST_INLINE_GRANT_POLICY)
            acknowledged.append(construct.node.path)
    return acknowledged


def arn_wildcard_finding(rule: str, resource: IConstruct, suffix: str) -> str:
    """The finding id cdk-nag gives a wildcard resource `<resource ARN><suffix>`, e.g. `/models/*`."""
    stack = cdk.Stack.of(resource)
    default_child = resource.node.default_child
    if default_child is None:
        raise ValueError(f"{resource.node.path} has no CloudFormation resource to name")
    logical_id = stack.resolve(stack.get_logical_id(default_child))  # type: ignore[arg-type]
    return f"{rule}[Resource::<{logical_id}.Arn>{suffix}]"
