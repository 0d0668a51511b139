"""The online feature store: a DynamoDB table the serving function reads features from by entity key."""

from __future__ import annotations

from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from stacks import constants, nag
from stacks.settings import DeploySettings


class OnlineFeaturesConstruct(Construct):
    """One DynamoDB table: partition key `entity` (the contract's entity key value), sort key
    `feature_group`, the feature values as attributes.

    On demand (serving traffic is spiky and a model may be idle for days), encrypted with the
    stack's key, with point-in-time recovery: a bad feature load can be rolled back to the minute.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, settings: DeploySettings, key: kms.IKey
    ) -> None:
        super().__init__(scope, construct_id)
        self.table = dynamodb.Table(
            self,
            "Table",
            partition_key=dynamodb.Attribute(
                name=constants.ONLINE_TABLE_PARTITION_KEY, type=dynamodb.AttributeType.STRING
            ),
            # Entity first, group second: lookups spread over partitions by entity, and one Query
            # can fetch every feature group of an entity.
            sort_key=dynamodb.Attribute(
                name=constants.ONLINE_TABLE_SORT_KEY, type=dynamodb.AttributeType.STRING
            ),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=key,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            deletion_protection=settings.deletion_protection,
            removal_policy=settings.cdk_removal_policy,
        )
        nag.acknowledge(
            self.table,
            "NIST.800.53.R5-DynamoDBInBackupPlan",
            "Point-in-time recovery is on (continuous backups, any second of the last 35 days). An AWS "
            "Backup plan is the account's or organisation's policy, not a per-model stack's: it selects "
            "resources by tag, and every resource here carries the project, stage and model tags.",
        )

    def grant_lookup(self, grantee: iam.IGrantable) -> iam.Grant:
        """Let `grantee` read items by key with BatchGetItem (all the serving adapter calls), nothing else."""
        grant = self.table.grant(grantee, "dynamodb:BatchGetItem")
        # Reading a table encrypted with a customer-managed key needs kms:Decrypt on that key.
        if self.table.encryption_key is not None:
            self.table.encryption_key.grant_decrypt(grantee)
        return grant
