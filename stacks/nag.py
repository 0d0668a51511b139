"""Acknowledging cdk-nag findings: always on the construct where they occur, always with a reason.

cdk-nag reports some rules per finding (`AwsSolutions-IAM5[Resource::<BucketLogicalId.Arn>/models/*]`),
so an acknowledgement names the exact finding rather than the whole rule: a new wildcard added
later is reported, not silently covered.
"""

from __future__ import annotations

import aws_cdk as cdk
from constructs import IConstruct


def acknowledge(scope: IConstruct, finding: str, reason: str) -> None:
    """Acknowledge one cdk-nag finding on `scope` and everything below it."""
    if not reason.strip():
        raise ValueError(f"an acknowledgement of {finding} needs a reason")
    cdk.Validations.of(scope).acknowledge(cdk.Acknowledgment(id=finding, reason=reason))


def arn_wildcard_finding(rule: str, resource: IConstruct, suffix: str) -> str:
    """The finding id cdk-nag gives a wildcard resource `<resource ARN><suffix>`, e.g. `/models/*`."""
    stack = cdk.Stack.of(resource)
    default_child = resource.node.default_child
    if default_child is None:
        raise ValueError(f"{resource.node.path} has no CloudFormation resource to name")
    logical_id = stack.resolve(stack.get_logical_id(default_child))  # type: ignore[arg-type]
    return f"{rule}[Resource::<{logical_id}.Arn>{suffix}]"
