"""Names shared by the CDK app, its stacks and constructs, and the infrastructure tests.

Kept in one module so that a name used as a construct id, a tag or a stack output is spelled once.
"""

from __future__ import annotations

PROJECT = "shipml"

# Tag keys put on every stack (CloudFormation propagates stack tags to the resources it creates).
TAG_PROJECT = "project"
TAG_STAGE = "stage"
TAG_MODEL = "model"

# Stage names that cdk.json's "stages" block is expected to define.
STAGE_DEV = "dev"
STAGE_PROD = "prod"

# Construct ids inside the stack; changing one replaces the resource on the next deploy.
FOUNDATION_CONSTRUCT_ID = "Foundation"
ENCRYPTION_KEY_ID = "EncryptionKey"
ARTIFACT_BUCKET_ID = "ArtifactBucket"
ACCESS_LOGS_BUCKET_ID = "AccessLogsBucket"
NOTIFICATION_TOPIC_ID = "NotificationTopic"

# Prefix for server access log objects in the logs bucket.
ACCESS_LOGS_PREFIX = "artifact-bucket/"

# Stack outputs, read by the aws backend and scripts after deploy.
OUTPUT_ARTIFACT_BUCKET = "ArtifactBucketName"
OUTPUT_NOTIFICATION_TOPIC = "NotificationTopicArn"
OUTPUT_ENCRYPTION_KEY = "EncryptionKeyArn"


def stack_name(model_name: str, stage: str) -> str:
    """The CloudFormation stack name (and construct id) for one model in one stage."""
    return f"{PROJECT}-{model_name}-{stage}"


def key_alias(model_name: str, stage: str) -> str:
    """The alias of the stack's customer-managed KMS key."""
    return f"alias/{stack_name(model_name, stage)}"
