"""The stack composes every capability: what each construct brings is present in one template."""

from __future__ import annotations

import json

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


def test_the_retraining_pipeline_targets_the_serving_alias(dev: SynthesizedApp) -> None:
    machines = dev.template.find_resources("AWS::StepFunctions::StateMachine")
    definition = json.dumps(
        [m["Properties"]["DefinitionString"] for m in machines.values() if "Train" in json.dumps(m)]
    )
    for state in ("ValidateData", "Train", "Evaluate", "Gate", "Register", "PromoteLive"):
        assert state in definition
    # The deploy step may move the serving alias only through CodeDeploy, and the live parameter.
    policies = json.dumps(dev.template.find_resources("AWS::IAM::Policy"))
    assert "codedeploy:CreateDeployment" in policies and "ssm:PutParameter" in policies


def test_no_stream_consumer_unless_configured(dev: SynthesizedApp, synth_app) -> None:
    assert not dev.template.find_resources("AWS::Lambda::EventSourceMapping")
    with_stream = synth_app({"stream": {"source": "kinesis", "output": "dynamodb"}})
    with_stream.template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping", {"FunctionResponseTypes": ["ReportBatchItemFailures"]}
    )
    with_stream.template.has_resource_properties("AWS::SQS::Queue", {"KmsMasterKeyId": Match.any_value()})


def test_batch_scoring_runs_on_the_live_model_on_a_schedule(dev: SynthesizedApp) -> None:
    machines = dev.template.find_resources("AWS::StepFunctions::StateMachine")
    (batch,) = [m for m in machines.values() if "createTransformJob" in json.dumps(m)]
    definition = json.dumps(batch["Properties"]["DefinitionString"])
    assert "ResolveLiveVersion" in definition and "ScoreBatch" in definition
    dev.template.has_resource_properties(
        "AWS::Scheduler::Schedule", {"ScheduleExpression": "cron(0 2 * * ? *)"}
    )
    outputs = dev.template.to_json()["Outputs"]
    assert {"TrainingPipelineArn", "BatchScoringArn"} <= set(outputs)
