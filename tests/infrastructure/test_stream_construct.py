"""The stream consumer's construct in a test stack: the event source mapping from typed settings,
the KMS dead-letter queue, grants, and alarms to the notification topic. cdk-nag runs on every synth
(an unacknowledged finding fails it) and cfn-lint reads the templates.

Bundling is skipped (`aws:cdk:bundling-stacks: []`): these tests read the template only; the bundle
itself is built and run by tests/integration/test_stream_bundle.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_ssm as ssm
from aws_cdk.assertions import Match, Template
from cdk_nag import AwsSolutionsChecks
from cfnlint.api import ManualArgs, lint
from pydantic import ValidationError

from shipml.stream.aws import DECISION_TABLE_KEY
from stacks.capture_construct import CaptureConstruct
from stacks.foundation_construct import FoundationConstruct
from stacks.online_features_construct import OnlineFeaturesConstruct
from stacks.settings import DeploySettings
from stacks.stream_construct import STREAM_HANDLER, StreamConstruct, StreamDeploySettings

NO_BUNDLING = {"aws:cdk:bundling-stacks": []}
MSK_ARN = "arn:aws:kafka:eu-west-1:123456789012:cluster/shipml/2f7d6e8c-1a2b-3c4d-5e6f-abcdef012345-1"
SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:AmazonMSK_shipml-AbCdEf"


class Synthesized:
    def __init__(
        self, stack: cdk.Stack, stream: StreamConstruct, foundation: FoundationConstruct, outdir: Path
    ):
        self.stack, self.stream, self.foundation, self.outdir = stack, stream, foundation, outdir
        self.template = Template.from_stack(stack)

    def ref(self, construct) -> str:
        child = construct.node.default_child if construct.node.default_child is not None else construct
        return self.stack.resolve(self.stack.get_logical_id(child))

    def statements(self) -> list[dict[str, Any]]:
        role_id = self.ref(self.stream.role)
        return [
            statement
            for policy in self.template.find_resources("AWS::IAM::Policy").values()
            if {"Ref": role_id} in policy["Properties"]["Roles"]
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        ]

    def actions(self) -> set[str]:
        found: set[str] = set()
        for statement in self.statements():
            action = statement["Action"]
            found.update([action] if isinstance(action, str) else action)
        return found


@pytest.fixture(scope="module")
def synth(cdk_context, tmp_path_factory) -> Callable[..., Synthesized]:
    def build(**stream_settings: Any) -> Synthesized:
        outdir = tmp_path_factory.mktemp("cdk.out")
        app = cdk.App(context={**cdk_context, **NO_BUNDLING}, outdir=str(outdir))
        settings = DeploySettings.from_node(app.node)
        stack = cdk.Stack(app, "StreamTest")
        foundation = FoundationConstruct(stack, "Foundation", settings=settings)
        online = OnlineFeaturesConstruct(stack, "OnlineFeatures", settings=settings, key=foundation.key)
        capture = CaptureConstruct(
            stack, "Capture", settings=settings, key=foundation.key, bucket=foundation.bucket
        )
        live = ssm.StringParameter(
            stack, "LiveVersion", parameter_name="/shipml/fraud/dev/live", string_value="0"
        )
        secret = secretsmanager.Secret(stack, "HashKey", encryption_key=foundation.key)
        cdk.Validations.of(secret).acknowledge(
            cdk.Acknowledgment(id="AwsSolutions-SMG4", reason="test stack")
        )
        stream = StreamConstruct(
            stack,
            "Stream",
            settings=settings,
            stream=StreamDeploySettings(**stream_settings),
            key=foundation.key,
            bucket=foundation.bucket,
            topic=foundation.topic,
            online_features=online,
            capture=capture,
            live_parameter=live,
            hash_key_secret=secret,
        )
        cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
        app.synth()  # raises if cdk-nag reports a finding that is not acknowledged with a reason
        return Synthesized(stack, stream, foundation, outdir)

    return build


@pytest.fixture(scope="module")
def kinesis(synth) -> Synthesized:
    return synth(
        batch_size=1000,
        max_batching_window_s=5,
        parallelization_factor=4,
        max_record_age_s=7200,
        retry_attempts=5,
        iterator_age_alarm_ms=120_000,
    )


@pytest.fixture(scope="module")
def msk_to_dynamodb(synth) -> Synthesized:
    return synth(
        source="msk",
        msk_cluster_arn=MSK_ARN,
        kafka_topic="transactions",
        kafka_secret_arn=SECRET_ARN,
        output="dynamodb",
    )


def test_kinesis_mapping_takes_its_settings_and_reports_batch_item_failures(kinesis: Synthesized):
    kinesis.template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {
            "FunctionName": {"Ref": kinesis.ref(kinesis.stream.function)},
            "EventSourceArn": {"Fn::GetAtt": [kinesis.ref(kinesis.stream.input_stream), "Arn"]},
            "StartingPosition": "LATEST",
            "BatchSize": 1000,
            "MaximumBatchingWindowInSeconds": 5,
            "ParallelizationFactor": 4,
            "BisectBatchOnFunctionError": True,
            "MaximumRecordAgeInSeconds": 7200,
            "MaximumRetryAttempts": 5,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "DestinationConfig": {
                "OnFailure": {
                    "Destination": {"Fn::GetAtt": [kinesis.ref(kinesis.stream.dead_letter_queue), "Arn"]}
                }
            },
        },
    )


def test_the_input_and_output_streams_are_encrypted_with_the_stack_key(kinesis: Synthesized):
    key_arn = {"Fn::GetAtt": [kinesis.ref(kinesis.foundation.key), "Arn"]}
    streams = kinesis.template.find_resources("AWS::Kinesis::Stream")
    assert len(streams) == 2  # input (created here, no ARN given) and decisions
    for stream in streams.values():
        assert stream["Properties"]["StreamEncryption"] == {"EncryptionType": "KMS", "KeyId": key_arn}
        assert stream["Properties"]["StreamModeDetails"] == {"StreamMode": "ON_DEMAND"}


def test_the_dead_letter_queue_is_kms_encrypted_tls_only_and_keeps_letters_14_days(kinesis: Synthesized):
    queue_id = kinesis.ref(kinesis.stream.dead_letter_queue)
    kinesis.template.has_resource_properties(
        "AWS::SQS::Queue",
        {
            "KmsMasterKeyId": {"Fn::GetAtt": [kinesis.ref(kinesis.foundation.key), "Arn"]},
            "MessageRetentionPeriod": 14 * 24 * 3600,
        },
    )
    policy = next(iter(kinesis.template.find_resources("AWS::SQS::QueuePolicy").values()))
    assert {"Ref": queue_id} in policy["Properties"]["Queues"]
    (deny,) = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_the_function_is_configured_for_the_aws_backend_and_its_outputs(kinesis: Synthesized):
    function = kinesis.template.to_json()["Resources"][kinesis.ref(kinesis.stream.function)]["Properties"]
    env = function["Environment"]["Variables"]
    assert function["Handler"] == STREAM_HANDLER and function["Runtime"] == "python3.12"
    assert function["Timeout"] == 60 and function["MemorySize"] == 1024
    assert env["SHIPML_BACKEND"] == "aws" and env["SHIPML_MODEL_VERSION"] == "live"
    assert env["SHIPML_STREAM_SOURCE"] == "kinesis" and env["SHIPML_STREAM_OUTPUT"] == "kinesis"
    assert env["SHIPML_STREAM_OUTPUT_STREAM"] == {"Ref": kinesis.ref(kinesis.stream.output_stream)}
    assert env["SHIPML_STREAM_DLQ_URL"] == {"Ref": kinesis.ref(kinesis.stream.dead_letter_queue)}
    assert "SHIPML_HASH_KEY_SECRET" in env and "SHIPML_LIVE_PARAMETER" in env


def test_the_role_may_send_dead_letters_write_decisions_and_read_the_input(kinesis: Synthesized):
    actions = kinesis.actions()
    assert {
        "sqs:SendMessage",
        "kinesis:PutRecords",
        "firehose:PutRecordBatch",
        "dynamodb:BatchGetItem",
    } <= actions
    assert {"kinesis:GetRecords", "kinesis:GetShardIterator"} <= actions  # the mapping's reads
    assert {"ssm:GetParameter", "secretsmanager:GetSecretValue"} <= actions
    dlq_arn = {"Fn::GetAtt": [kinesis.ref(kinesis.stream.dead_letter_queue), "Arn"]}
    send = [s for s in kinesis.statements() if "sqs:SendMessage" in s["Action"]]
    assert send and all(s["Resource"] == dlq_arn for s in send)
    assert not {"sqs:ReceiveMessage", "sqs:DeleteMessage", "kinesis:DeleteStream"} & actions


def test_alarms_on_iterator_age_and_dead_letters_notify_the_topic(kinesis: Synthesized):
    topic = [{"Ref": kinesis.ref(kinesis.foundation.topic)}]
    kinesis.template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "MetricName": "IteratorAge",
            "Namespace": "AWS/Lambda",
            "Statistic": "Maximum",
            "Threshold": 120_000,
            "Dimensions": [{"Name": "FunctionName", "Value": {"Ref": kinesis.ref(kinesis.stream.function)}}],
            "AlarmActions": topic,
        },
    )
    kinesis.template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "MetricName": "ApproximateNumberOfMessagesVisible",
            "Namespace": "AWS/SQS",
            "Threshold": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "Dimensions": [
                {
                    "Name": "QueueName",
                    "Value": {"Fn::GetAtt": [kinesis.ref(kinesis.stream.dead_letter_queue), "QueueName"]},
                }
            ],
            "AlarmActions": topic,
        },
    )


def test_msk_mapping_with_a_dynamodb_output(msk_to_dynamodb: Synthesized):
    synthesized = msk_to_dynamodb
    synthesized.template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {
            "EventSourceArn": MSK_ARN,
            "Topics": ["transactions"],
            "BatchSize": 500,
            "BisectBatchOnFunctionError": True,
            "MaximumRetryAttempts": 3,
            "MaximumRecordAgeInSeconds": 3600,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "SourceAccessConfigurations": Match.array_with(
                [{"Type": "SASL_SCRAM_512_AUTH", "URI": SECRET_ARN}]
            ),
            "ProvisionedPollerConfig": {"MinimumPollers": 1, "MaximumPollers": 10},
            "DestinationConfig": Match.object_like({"OnFailure": Match.any_value()}),
        },
    )
    synthesized.template.has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "KeySchema": [{"AttributeName": DECISION_TABLE_KEY, "KeyType": "HASH"}],
            "SSESpecification": Match.object_like({"SSEEnabled": True, "SSEType": "KMS"}),
        },
    )
    env = synthesized.template.to_json()["Resources"][synthesized.ref(synthesized.stream.function)][
        "Properties"
    ]["Environment"]["Variables"]
    assert env["SHIPML_STREAM_SOURCE"] == "kafka" and env["SHIPML_STREAM_OUTPUT"] == "dynamodb"
    actions = synthesized.actions()
    assert "dynamodb:BatchWriteItem" in actions and "kafka:GetBootstrapBrokers" in actions
    assert not {"dynamodb:DeleteItem", "dynamodb:Scan"} & actions
    synthesized.template.has_resource_properties("AWS::CloudWatch::Alarm", {"MetricName": "OffsetLag"})
    assert synthesized.template.find_resources("AWS::Kinesis::Stream") == {}


def test_self_managed_kafka(synth):
    synthesized = synth(
        source="kafka",
        kafka_topic="transactions",
        kafka_bootstrap_servers=("broker-1.example.com:9096", "broker-2.example.com:9096"),
        kafka_secret_arn=SECRET_ARN,
    )
    synthesized.template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {
            "SelfManagedEventSource": {
                "Endpoints": {
                    "KafkaBootstrapServers": ["broker-1.example.com:9096", "broker-2.example.com:9096"]
                }
            },
            "Topics": ["transactions"],
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
        },
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"source": "msk", "kafka_topic": "t"}, "needs msk_cluster_arn"),
        ({"source": "kafka", "kafka_topic": "t"}, "needs kafka_bootstrap_servers"),
        ({"source": "msk", "msk_cluster_arn": MSK_ARN}, "needs kafka_topic"),
        ({"batch_size": 0}, "batch_size"),
        ({"parallelization_factor": 11}, "parallelization_factor"),
        (
            {"source": "msk", "msk_cluster_arn": MSK_ARN, "kafka_topic": "t", "parallelization_factor": 2},
            "Kinesis only",
        ),
    ],
)
def test_settings_name_what_is_wrong(settings, message):
    with pytest.raises(ValidationError, match=message):
        StreamDeploySettings(**settings)


def test_cfn_lint_finds_no_errors(kinesis: Synthesized, msk_to_dynamodb: Synthesized):
    for synthesized in (kinesis, msk_to_dynamodb):
        template = json.loads((synthesized.outdir / "StreamTest.template.json").read_text())
        matches = lint(
            json.dumps(template), config=ManualArgs(regions=["eu-west-1"], ignore_checks=["W3005"])
        )
        assert [str(m) for m in matches] == []
