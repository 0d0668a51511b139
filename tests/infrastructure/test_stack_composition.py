"""The stack composes every capability: what each construct brings is present in one template."""

from __future__ import annotations

from aws_cdk.assertions import Match

from tests.infrastructure.conftest import SynthesizedApp


def test_materialisation_is_scheduled_with_its_own_bundle(dev: SynthesizedApp) -> None:
    dev.template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Handler": "functions/features/handler.handler",
            "Runtime": "python3.12",
            "ReservedConcurrentExecutions": 1,
        },
    )
    dev.template.has_resource_properties(
        "AWS::Scheduler::Schedule",
        {"ScheduleExpression": "rate(1 hour)", "Target": Match.object_like({"Arn": Match.any_value()})},
    )
