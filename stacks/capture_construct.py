"""Prediction capture: a Firehose stream that batches masked prediction records into the data bucket."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kinesisfirehose as firehose
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks import constants, nag
from stacks.settings import DeploySettings

_DELIVERY_LOG_STREAM = "S3Delivery"


class CaptureConstruct(Construct):
    """A Direct PUT Firehose stream, encrypted with the stack's key, delivering gzip'd JSON Lines to
    `capture/date=YYYY-MM-DD/` in the artifact/data bucket (SSE-KMS with the same key).

    Records Firehose cannot deliver land under `capture-errors/`, and delivery errors are logged.
    Built on the L1 resource with its own role: the L2 destination grants read, write and delete on
    the whole bucket, where Firehose needs to write two prefixes only.

    Attributes: `stream` (the CfnDeliveryStream), `stream_name`, `stream_arn`, `role`, `log_group`.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: DeploySettings,
        key: kms.IKey,
        bucket: s3.IBucket,
    ) -> None:
        super().__init__(scope, construct_id)
        self._settings = settings
        self.log_group = logs.LogGroup(
            self,
            "DeliveryLogs",
            retention=settings.cdk_log_retention,
            removal_policy=settings.cdk_removal_policy,
            # Encrypted with the stack's key like every store of the stack.
            encryption_key=key,
        )
        log_stream = logs.LogStream(
            self,
            "DeliveryLogStream",
            log_group=self.log_group,
            log_stream_name=_DELIVERY_LOG_STREAM,
            removal_policy=settings.cdk_removal_policy,
        )
        self.role = self._build_role(key, bucket)
        self.stream = firehose.CfnDeliveryStream(
            self,
            "Stream",
            delivery_stream_type="DirectPut",
            delivery_stream_encryption_configuration_input=firehose.CfnDeliveryStream.DeliveryStreamEncryptionConfigurationInputProperty(
                key_type="CUSTOMER_MANAGED_CMK", key_arn=key.key_arn
            ),
            extended_s3_destination_configuration=firehose.CfnDeliveryStream.ExtendedS3DestinationConfigurationProperty(
                bucket_arn=bucket.bucket_arn,
                role_arn=self.role.role_arn,
                prefix=constants.CAPTURE_PREFIX,
                error_output_prefix=constants.CAPTURE_ERROR_PREFIX,
                buffering_hints=firehose.CfnDeliveryStream.BufferingHintsProperty(
                    interval_in_seconds=settings.capture_buffer_seconds,
                    size_in_m_bs=settings.capture_buffer_mb,
                ),
                compression_format="GZIP",
                encryption_configuration=firehose.CfnDeliveryStream.EncryptionConfigurationProperty(
                    kms_encryption_config=firehose.CfnDeliveryStream.KMSEncryptionConfigProperty(
                        awskms_key_arn=key.key_arn
                    )
                ),
                cloud_watch_logging_options=firehose.CfnDeliveryStream.CloudWatchLoggingOptionsProperty(
                    enabled=True,
                    log_group_name=self.log_group.log_group_name,
                    log_stream_name=log_stream.log_stream_name,
                ),
            ),
        )
        # Firehose checks its role when the stream is created: the policy must exist by then.
        self.stream.node.add_dependency(self.role)
        self.stream_name: str = self.stream.ref
        self.stream_arn: str = self.stream.attr_arn
        nag.acknowledge(
            self.role,
            nag.arn_wildcard_finding("AwsSolutions-IAM5", bucket, "/capture/*"),
            "Firehose writes one object per buffer under capture/; the names are its own.",
        )
        nag.acknowledge(
            self.role,
            nag.arn_wildcard_finding("AwsSolutions-IAM5", bucket, "/capture-errors/*"),
            "Firehose writes the records it could not deliver under capture-errors/.",
        )

    def _build_role(self, key: kms.IKey, bucket: s3.IBucket) -> iam.Role:
        role = iam.Role(
            self,
            "DeliveryRole",
            # Only Firehose acting for this account (no confused deputy).
            assumed_by=iam.ServicePrincipal(
                "firehose.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": cdk.Aws.ACCOUNT_ID}},
            ),
            description="Firehose delivery of captured predictions to the data bucket",
        )
        # The S3 destination's documented needs, narrowed to the capture prefixes.
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:AbortMultipartUpload", "s3:PutObject"],
                resources=[
                    bucket.arn_for_objects(constants.CAPTURE_PREFIX.split("/")[0] + "/*"),
                    bucket.arn_for_objects(constants.CAPTURE_ERROR_PREFIX.split("/")[0] + "/*"),
                ],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
                resources=[bucket.bucket_arn],
            )
        )
        # SSE-KMS objects: a data key per object, Decrypt to complete multipart uploads.
        key.grant(role, "kms:GenerateDataKey", "kms:Decrypt")
        self.log_group.grant_write(role)
        return role

    def grant_put(self, grantee: iam.IGrantable) -> iam.Grant:
        """Let `grantee` put records (PutRecord, PutRecordBatch) into the stream, and nothing else."""
        return iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["firehose:PutRecord", "firehose:PutRecordBatch"],
            resource_arns=[self.stream_arn],
        )
