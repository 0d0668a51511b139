"""The foundation every other capability builds on: an encryption key, the artifact bucket, notifications."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from stacks import constants, nag
from stacks.settings import DeploySettings

_NIST_NO_REPLICATION = (
    "NIST.800.53.R5-S3BucketReplicationEnabled",
    "Cross-region replication is a disaster-recovery decision per organisation (a second region, "
    "bucket and key); within the region the bucket is versioned, so an overwritten or deleted object "
    "stays recoverable, and every artifact can be rebuilt from its training data by the pipeline.",
)


class FoundationConstruct(Construct):
    """A customer-managed KMS key, the KMS-encrypted artifact/data bucket with its access-logs bucket,
    and the SNS topic for notifications.

    Later constructs (serving, pipeline, monitoring) take `key`, `bucket` and `topic` from here and
    grant themselves access with `grant_*`.
    """

    def __init__(self, scope: Construct, construct_id: str, *, settings: DeploySettings) -> None:
        super().__init__(scope, construct_id)
        self._settings = settings
        self.key = self._build_key()
        self.access_logs_bucket = self._build_access_logs_bucket()
        self.bucket = self._build_artifact_bucket()
        self.topic = self._build_topic()

    def _build_key(self) -> kms.Key:
        key = kms.Key(
            self,
            constants.ENCRYPTION_KEY_ID,
            alias=constants.key_alias(self._settings.model_name, self._settings.stage),
            description=f"Encrypts artifacts, data, logs and notifications of {self._settings.stack_name}",
            enable_key_rotation=True,
            removal_policy=self._settings.cdk_removal_policy,
            # The shortest waiting period: a destroyed dev key should not linger for a month.
            pending_window=cdk.Duration.days(7),
        )
        # Every log group of the stack is encrypted with this key. CloudWatch Logs (not the writer)
        # encrypts, so its regional service principal needs the key, but only for log groups of this
        # account and region (the encryption context names the log group). In a key policy,
        # Resource "*" means this key and nothing else.
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudWatchLogsOfThisAccount",
                principals=[iam.ServicePrincipal(f"logs.{cdk.Aws.REGION}.amazonaws.com")],
                actions=[
                    "kms:Encrypt",
                    "kms:Decrypt",
                    "kms:ReEncryptFrom",
                    "kms:ReEncryptTo",
                    "kms:GenerateDataKey",
                    "kms:GenerateDataKeyWithoutPlaintext",
                    "kms:DescribeKey",
                ],
                resources=["*"],
                conditions={
                    "ArnLike": {
                        "kms:EncryptionContext:aws:logs:arn": (
                            f"arn:{cdk.Aws.PARTITION}:logs:{cdk.Aws.REGION}:{cdk.Aws.ACCOUNT_ID}:log-group:*"
                        )
                    }
                },
            )
        )
        return key

    def _build_access_logs_bucket(self) -> s3.Bucket:
        # No access logs of its own: it is the log destination (cdk-nag's S1 recognises that).
        bucket = s3.Bucket(
            self,
            constants.ACCESS_LOGS_BUCKET_ID,
            # S3 server access logging can only deliver to a target bucket encrypted with SSE-S3,
            # not with a customer-managed KMS key.
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            versioned=True,
            removal_policy=self._settings.cdk_removal_policy,
        )
        nag.acknowledge(
            bucket,
            "NIST.800.53.R5-S3DefaultEncryptionKMS",
            "S3 server access logging delivers only to a target bucket encrypted with SSE-S3 (AES-256), "
            "never SSE-KMS; the logs hold request metadata (requester, key, status), not object data.",
        )
        nag.acknowledge(bucket, *_NIST_NO_REPLICATION)
        return bucket

    def _build_artifact_bucket(self) -> s3.Bucket:
        bucket = s3.Bucket(
            self,
            constants.ARTIFACT_BUCKET_ID,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            # S3 Bucket Keys cut the KMS requests (and their cost) for many small objects.
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            # Versions keep an overwritten artifact or dataset recoverable.
            versioned=True,
            server_access_logs_bucket=self.access_logs_bucket,
            server_access_logs_prefix=constants.ACCESS_LOGS_PREFIX,
            removal_policy=self._settings.cdk_removal_policy,
        )
        nag.acknowledge(bucket, *_NIST_NO_REPLICATION)
        return bucket

    def _build_topic(self) -> sns.Topic:
        topic = sns.Topic(
            self,
            constants.NOTIFICATION_TOPIC_ID,
            display_name=f"{self._settings.stack_name} notifications",
            master_key=self.key,
            enforce_ssl=True,
        )
        if self._settings.alarm_email:
            topic.add_subscription(subscriptions.EmailSubscription(self._settings.alarm_email))
        return topic
