"""Stream inference: a Lambda consumer of Kinesis or Kafka (MSK / self-managed) that writes decisions
to a Kinesis stream or a DynamoDB table, with partial batch failures and an SQS dead-letter queue."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kinesis as kinesis
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from shipml.stream.aws import DECISION_TABLE_KEY
from stacks import constants, lambda_bundle, nag
from stacks.capture_construct import CaptureConstruct
from stacks.lambda_common import (
    ARCHITECTURES,
    function_log_group_and_role,
    grant_model_inputs,
    settings_bundle,
)
from stacks.online_features_construct import OnlineFeaturesConstruct
from stacks.stream_settings import StreamDeploySettings

if TYPE_CHECKING:
    # Annotations only, so that stacks/settings.py may import StreamDeploySettings from here.
    from stacks.settings import DeploySettings

STREAM_HANDLER = "functions/stream/handler.handler"
STREAM_REQUIREMENTS = "functions/stream/requirements.txt"
STREAM_SOURCES = ("shipml", "functions/__init__.py", "functions/stream")
_STARTING_POSITIONS = {
    "latest": lambda_.StartingPosition.LATEST,
    "trim_horizon": lambda_.StartingPosition.TRIM_HORIZON,
}


class StreamConstruct(Construct):
    """The stream consumer (Python 3.12, `functions/stream`), its event source mapping with
    ReportBatchItemFailures, bisect on error, bounded retries and a maximum record age, the SQS
    dead-letter queue (KMS) that receives both the consumer's poison records (with their reason)
    and the mapping's failed-batch records, the decision output, and alarms on the consumer's lag
    and on dead letters to the notification topic.

    The consumer serves the live model: it reads the live-version parameter at cold start and
    again every `live_poll_seconds` between batches, so a promotion needs no redeploy.

    Attributes: `function`, `role`, `dead_letter_queue`, `input_stream` (Kinesis, if created here),
    `output_stream` or `output_table`, `lag_alarm`, `dead_letter_alarm`.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: DeploySettings,
        stream: StreamDeploySettings,
        key: kms.IKey,
        bucket: s3.IBucket,
        topic: sns.ITopic,
        online_features: OnlineFeaturesConstruct,
        capture: CaptureConstruct,
        live_parameter: ssm.IStringParameter,
        hash_key_secret: secretsmanager.ISecret | None = None,
        bundle: lambda_bundle.BundleSpec | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self._settings = settings
        self._stream = stream
        self._key = key
        self.bundle = bundle or settings_bundle(
            settings, requirements=STREAM_REQUIREMENTS, sources=STREAM_SOURCES, code_dir="functions/stream"
        )
        self.dead_letter_queue = self._build_dead_letter_queue()
        self.input_stream = self._build_input_stream()
        self.output_stream, self.output_table = self._build_output()
        self.log_group, self.role = function_log_group_and_role(
            self, settings, key, f"The {settings.stack_name} stream consumer"
        )
        self.function = self._build_function(
            bucket, online_features, capture, live_parameter, hash_key_secret
        )
        self._grant_runtime_access(bucket, online_features, capture, live_parameter, hash_key_secret)
        self.mapping_source = self._add_event_source()
        self.lag_alarm, self.dead_letter_alarm = self._build_alarms(topic)

    # -- resources -------------------------------------------------------------------------------

    def _build_dead_letter_queue(self) -> sqs.Queue:
        queue = sqs.Queue(
            self,
            "DeadLetterQueue",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=self._key,
            # Reuse the data key for 5 minutes: fewer KMS calls for bursts of dead letters.
            data_key_reuse=cdk.Duration.minutes(5),
            enforce_ssl=True,
            retention_period=cdk.Duration.days(self._stream.dlq_retention_days),
            removal_policy=self._settings.cdk_removal_policy,
        )
        nag.acknowledge(
            queue,
            "AwsSolutions-SQS3",
            "This queue is the dead-letter queue: of the consumer's poison records and of the event "
            "source mapping's failed batches. Nothing consumes it automatically: it needs no DLQ of its own.",
        )
        return queue

    def _build_input_stream(self) -> kinesis.IStream | None:
        if self._stream.source != "kinesis":
            return None
        nag_reason = "Encrypted with the stack's customer-managed key, like every other store of the stack."
        if self._stream.source_stream_arn:
            return kinesis.Stream.from_stream_attributes(
                self, "InputStream", stream_arn=self._stream.source_stream_arn, encryption_key=self._key
            )
        stream = kinesis.Stream(
            self,
            "InputStream",
            encryption=kinesis.StreamEncryption.KMS,
            encryption_key=self._key,
            stream_mode=kinesis.StreamMode.ON_DEMAND,
            removal_policy=self._settings.cdk_removal_policy,
        )
        nag.acknowledge(stream, "AwsSolutions-KDS3", nag_reason)
        return stream

    def _build_output(self) -> tuple[kinesis.Stream | None, dynamodb.Table | None]:
        settings = self._settings
        if self._stream.output == "kinesis":
            stream = kinesis.Stream(
                self,
                "DecisionStream",
                encryption=kinesis.StreamEncryption.KMS,
                encryption_key=self._key,
                stream_mode=kinesis.StreamMode.ON_DEMAND,
                removal_policy=settings.cdk_removal_policy,
            )
            nag.acknowledge(
                stream,
                "AwsSolutions-KDS3",
                "Encrypted with the stack's customer-managed key, like every other store.",
            )
            return stream, None
        table = dynamodb.Table(
            self,
            "DecisionTable",
            # One item per transaction: a redelivered decision overwrites itself.
            partition_key=dynamodb.Attribute(name=DECISION_TABLE_KEY, type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=self._key,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            deletion_protection=settings.deletion_protection,
            removal_policy=settings.cdk_removal_policy,
        )
        nag.acknowledge(
            table,
            "NIST.800.53.R5-DynamoDBInBackupPlan",
            "Point-in-time recovery is on (continuous backups, any second of the last 35 days). An AWS "
            "Backup plan is the account's or organisation's policy, not a per-model stack's: it selects "
            "resources by tag, and every resource here carries the project, stage and model tags.",
        )
        return None, table

    def _build_function(
        self,
        bucket: s3.IBucket,
        online_features: OnlineFeaturesConstruct,
        capture: CaptureConstruct,
        live_parameter: ssm.IStringParameter,
        hash_key_secret: secretsmanager.ISecret | None,
    ) -> lambda_.Function:
        settings, stream = self._settings, self._stream
        environment = {
            "SHIPML_BACKEND": "aws",
            "SHIPML_MODEL": settings.model_name,
            # Follows the live version: read from the parameter at cold start and between batches.
            "SHIPML_MODEL_VERSION": "live",
            "SHIPML_LIVE_PARAMETER": live_parameter.parameter_name,
            "SHIPML_LIVE_POLL_SECONDS": "60",
            "SHIPML_CONTRACT": settings.contract_path.as_posix(),
            "SHIPML_ARTIFACT_BUCKET": bucket.bucket_name,
            "SHIPML_ONLINE_TABLE": online_features.table.table_name,
            "SHIPML_CAPTURE_STREAM": capture.stream_name,
            "SHIPML_STREAM_SOURCE": "kinesis" if stream.source == "kinesis" else "kafka",
            "SHIPML_STREAM_OUTPUT": stream.output,
            "SHIPML_STREAM_DLQ_URL": self.dead_letter_queue.queue_url,
            "POWERTOOLS_SERVICE_NAME": f"{constants.PROJECT}-{settings.model_name}-stream",
            "POWERTOOLS_METRICS_NAMESPACE": constants.PROJECT,
        }
        if self.output_stream is not None:
            environment["SHIPML_STREAM_OUTPUT_STREAM"] = self.output_stream.stream_name
        if self.output_table is not None:
            environment["SHIPML_STREAM_OUTPUT_TABLE"] = self.output_table.table_name
        if hash_key_secret is not None:
            environment["SHIPML_HASH_KEY_SECRET"] = hash_key_secret.secret_arn
        function = lambda_.Function(
            self,
            "Function",
            description=f"shipml stream inference for model {settings.model_name}",
            runtime=lambda_.Runtime.PYTHON_3_12,
            architecture=ARCHITECTURES[settings.lambda_architecture],
            handler=STREAM_HANDLER,
            code=lambda_bundle.serving_code(self.bundle),
            memory_size=stream.memory_mb,
            timeout=cdk.Duration.seconds(stream.timeout_s),
            role=self.role,
            log_group=self.log_group,
            environment=environment,
        )
        nag.acknowledge(
            function,
            "AwsSolutions-L1",
            "Pinned to Python 3.12 on purpose: the bundle's binary wheels (numpy, onnxruntime, "
            "pydantic-core) are built and tested for cp312.",
        )
        nag.acknowledge_design(function, nag.NIST_LAMBDA_OUTSIDE_VPC)
        nag.acknowledge(
            function,
            "NIST.800.53.R5-LambdaDLQ",
            "Invoked synchronously by its event source mapping, so a function dead-letter queue would "
            "never receive anything; failed records and batches go to this construct's KMS-encrypted "
            "dead-letter queue instead (poison records, and the mapping's on-failure destination).",
        )
        nag.acknowledge(
            function,
            "NIST.800.53.R5-LambdaConcurrency",
            "The event source mapping bounds concurrency already (shards x parallelization factor for "
            "Kinesis, the provisioned pollers for Kafka); reserving more would carve capacity out of "
            "the account's shared pool that the mapping can never use.",
        )
        return function

    def _grant_runtime_access(
        self,
        bucket: s3.IBucket,
        online_features: OnlineFeaturesConstruct,
        capture: CaptureConstruct,
        live_parameter: ssm.IStringParameter,
        hash_key_secret: secretsmanager.ISecret | None,
    ) -> None:
        role = self.role
        grant_model_inputs(
            role, bucket=bucket, key=self._key, online_features=online_features, capture=capture
        )
        live_parameter.grant_read(role)
        if hash_key_secret is not None:
            hash_key_secret.grant_read(role)
        # The same grant the mapping's failure destination (SqsDlq) makes for its batch records.
        self.dead_letter_queue.grant_send_messages(role)
        if self.output_stream is not None:
            role.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=["kinesis:PutRecords", "kinesis:PutRecord", "kinesis:ListShards"],
                    resources=[self.output_stream.stream_arn],
                )
            )
        if self.output_table is not None:
            # Writes only: BatchWriteItem of whole decisions, no reads, no deletes.
            self.output_table.grant(role, "dynamodb:BatchWriteItem", "dynamodb:PutItem")
        # Writing to the KMS-encrypted output and queue: a data key, and Decrypt for reused ones.
        self._key.grant(role, "kms:GenerateDataKey", "kms:Encrypt")
        for action in ("kms:GenerateDataKey*", "kms:ReEncrypt*"):
            nag.acknowledge(
                role,
                f"AwsSolutions-IAM5[Action::{action}]",
                "Added by CDK's SQS grant for the dead-letter queue (the event source mapping's failure "
                "destination makes the same grant); limited to the stack's one customer-managed key.",
            )
        nag.acknowledge(
            role,
            nag.arn_wildcard_finding("AwsSolutions-IAM5", bucket, f"/{constants.ARTIFACT_PREFIX}*"),
            "The consumer reads artifacts only: models/{model}/{version}/model.tar.gz, one object per "
            "model version, which the pipeline adds after deploy.",
        )

    def _add_event_source(self) -> lambda_.IEventSource:
        stream = self._stream
        common = {
            "starting_position": _STARTING_POSITIONS[stream.starting_position],
            "batch_size": stream.batch_size,
            "max_batching_window": cdk.Duration.seconds(stream.max_batching_window_s),
            "bisect_batch_on_error": stream.bisect_on_error,
            "max_record_age": cdk.Duration.seconds(stream.max_record_age_s),
            "retry_attempts": stream.retry_attempts,
            # The consumer reports the records it could not settle; only those are delivered again.
            "report_batch_item_failures": True,
            # Batches that exhaust their retries or age out: their metadata lands beside the dead letters.
            "on_failure": event_sources.SqsDlq(self.dead_letter_queue),
        }
        source: lambda_.IEventSource
        if stream.source == "kinesis":
            assert self.input_stream is not None
            source = event_sources.KinesisEventSource(
                self.input_stream, parallelization_factor=stream.parallelization_factor, **common
            )
        else:
            secret = (
                secretsmanager.Secret.from_secret_complete_arn(self, "KafkaSecret", stream.kafka_secret_arn)
                if stream.kafka_secret_arn
                else None
            )
            kafka = {
                "topic": stream.kafka_topic,
                "secret": secret,
                "consumer_group_id": f"{self._settings.stack_name}-stream",
                # Kafka retries, bisection and failure destinations need provisioned pollers.
                "provisioned_poller_config": event_sources.ProvisionedPollerConfig(
                    minimum_pollers=1, maximum_pollers=10
                ),
            }
            if stream.source == "msk":
                source = event_sources.ManagedKafkaEventSource(
                    cluster_arn=str(stream.msk_cluster_arn), **kafka, **common
                )
                nag.acknowledge(
                    self.role,
                    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                    "AWSLambdaMSKExecutionRole]",
                    "Attached by CDK's MSK event source: AWS's own policy for the pollers that reach the "
                    "cluster (kafka:Describe*, GetBootstrapBrokers, the VPC network interfaces).",
                )
            else:
                source = event_sources.SelfManagedKafkaEventSource(
                    bootstrap_servers=list(stream.kafka_bootstrap_servers), **kafka, **common
                )
        self.function.add_event_source(source)
        return source

    def _build_alarms(self, topic: sns.ITopic) -> tuple[cloudwatch.Alarm, cloudwatch.Alarm]:
        settings, stream = self._settings, self._stream
        minute = cdk.Duration.minutes(1)
        # How far behind the consumer is: Kinesis reports the iterator age (ms), Kafka the offset lag.
        lag_metric, lag_name, lag_threshold = (
            ("IteratorAge", "iterator age", stream.iterator_age_alarm_ms)
            if stream.source == "kinesis"
            else ("OffsetLag", "offset lag", stream.offset_lag_alarm)
        )
        lag = cloudwatch.Alarm(
            self,
            f"{lag_metric}Alarm",
            alarm_description=f"{settings.stack_name}: the stream consumer falls behind ({lag_name})",
            metric=self.function.metric(lag_metric, statistic="Maximum", period=minute),
            threshold=lag_threshold,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=5,
            datapoints_to_alarm=3,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        dead_letters = cloudwatch.Alarm(
            self,
            "DeadLetterAlarm",
            alarm_description=f"{settings.stack_name}: records are waiting in the stream dead-letter queue",
            metric=self.dead_letter_queue.metric_approximate_number_of_messages_visible(
                statistic="Maximum", period=minute
            ),
            threshold=stream.dlq_depth_alarm,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        for alarm in (lag, dead_letters):
            alarm.add_alarm_action(cloudwatch_actions.SnsAction(topic))
        return lag, dead_letters
