"""Names shared by the CDK app, its stacks and constructs, and the infrastructure tests.

Kept in one module so that a name used as a construct id, a tag or a stack output is spelled once.
"""

from __future__ import annotations

PROJECT = "shipml"

# Tag keys put on every stack (CloudFormation propagates stack tags to the resources it creates).
TAG_PROJECT = "project"
TAG_STAGE = "stage"
TAG_MODEL = "model"

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


# Real-time serving: construct ids.
ONLINE_FEATURES_CONSTRUCT_ID = "OnlineFeatures"
CAPTURE_CONSTRUCT_ID = "Capture"
SERVING_CONSTRUCT_ID = "Serving"
SERVING_API_CONSTRUCT_ID = "ServingApi"

# The alias API Gateway invokes; CodeDeploy moves it from version to version.
LIVE_ALIAS = "live"
# The API's one stage; part of the invoke URL.
API_STAGE = "v1"
# What the API exposes of the app, and with which methods; everything else is a 403 at the edge.
# /ping and /invocations are SageMaker's container contract and stay off the public API.
API_ROUTES: dict[str, tuple[str, ...]] = {
    "/predict": ("POST",),
    "/predict/batch": ("POST",),
    "/health": ("GET",),
    "/openapi.json": ("GET",),
}

# Artifacts live under models/{model}/{version}/model.tar.gz in the artifact bucket.
ARTIFACT_PREFIX = "models/"

# The online feature table: one item per (entity key value, feature group).
ONLINE_TABLE_PARTITION_KEY = "entity"
ONLINE_TABLE_SORT_KEY = "feature_group"

# Where Firehose writes captured predictions (JSON Lines, gzip) and the records it could not deliver.
CAPTURE_PREFIX = "capture/date=!{timestamp:yyyy-MM-dd}/"
CAPTURE_ERROR_PREFIX = "capture-errors/!{firehose:error-output-type}/date=!{timestamp:yyyy-MM-dd}/"

# Stack outputs of the serving capability.
OUTPUT_API_URL = "ServingApiUrl"
OUTPUT_FUNCTION_NAME = "ServingFunctionName"
OUTPUT_LIVE_ALIAS = "ServingLiveAliasArn"
OUTPUT_DEPLOYMENT_GROUP = "ServingDeploymentGroupName"
OUTPUT_LIVE_PARAMETER = "LiveModelVersionParameterName"
OUTPUT_ONLINE_TABLE = "OnlineFeatureTableName"
OUTPUT_CAPTURE_STREAM = "CaptureStreamName"
OUTPUT_API_KEY_ID = "ServingApiKeyId"


def live_parameter_name(model_name: str, stage: str) -> str:
    """The SSM parameter holding the live model version number ("0" = none deployed yet)."""
    return f"/{PROJECT}/{model_name}/{stage}/live-model-version"


def hash_key_secret_name(model_name: str, stage: str) -> str:
    """The Secrets Manager secret holding the key for hashing PII fields (HMAC-SHA256)."""
    return f"{PROJECT}/{model_name}/{stage}/pii-hash-key"


FEATURES_CONSTRUCT_ID = "Features"
STREAM_CONSTRUCT_ID = "Stream"
PIPELINE_CONSTRUCT_ID = "Pipeline"
BATCH_CONSTRUCT_ID = "Batch"
OUTPUT_TRAINING_PIPELINE = "TrainingPipelineArn"
OUTPUT_BATCH_PIPELINE = "BatchScoringArn"
MONITORING_CONSTRUCT_ID = "Monitoring"
OUTPUT_DASHBOARD = "DashboardName"
