"""The shipml stack for one model in one stage. It only composes constructs, one per capability."""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from stacks import constants, lambda_bundle
from stacks.batch_construct import BatchScoring
from stacks.capture_construct import CaptureConstruct
from stacks.features_construct import FeaturesConstruct
from stacks.foundation_construct import FoundationConstruct
from stacks.monitoring_construct import MonitoringConstruct
from stacks.online_features_construct import OnlineFeaturesConstruct
from stacks.pipeline_construct import ServingTarget, TrainingPipeline
from stacks.serving_api_construct import ServingApiConstruct
from stacks.serving_construct import ServingConstruct
from stacks.settings import DeploySettings
from stacks.stream_construct import StreamConstruct

REPO_ROOT = Path(__file__).resolve().parent.parent


def _handler_code(
    settings: DeploySettings,
    folder: str,
    *,
    architecture: str,
    budget_mb: int | None = None,
    forbidden: tuple[str, ...] = lambda_bundle.HEAVY_PACKAGES,
) -> lambda_.Code:
    """The code asset of the handlers in `functions/<folder>`: their pinned requirements, shipml and
    the contract, bundled without Docker for the functions' architecture."""
    spec = lambda_bundle.BundleSpec(
        repo_root=REPO_ROOT,
        architecture=architecture,  # type: ignore[arg-type]
        contract_path=settings.contract_path.as_posix(),
        budget_mb=budget_mb or settings.lambda_bundle_budget_mb,
        requirements=f"functions/{folder}/requirements.txt",
        sources=("shipml", "functions/__init__.py", f"functions/{folder}"),
        forbidden=forbidden,
        code_dir=f"functions/{folder}",
    )
    return lambda_bundle.serving_code(spec)


class ShipmlStack(cdk.Stack):
    """Everything one model needs in one stage, named `shipml-{model_name}-{stage}`.

    Environment-agnostic unless the settings name an account or region, so synth needs no
    AWS credentials.
    """

    def __init__(self, scope: Construct, *, settings: DeploySettings) -> None:
        super().__init__(
            scope,
            settings.stack_name,
            stack_name=settings.stack_name,
            description=f"shipml: {settings.model_name} model, {settings.stage} stage",
            env=settings.env,
            tags=settings.tags,
            termination_protection=settings.deletion_protection,
        )
        self.settings = settings
        self.foundation = FoundationConstruct(self, constants.FOUNDATION_CONSTRUCT_ID, settings=settings)
        self.online_features = OnlineFeaturesConstruct(
            self, constants.ONLINE_FEATURES_CONSTRUCT_ID, settings=settings, key=self.foundation.key
        )
        self.capture = CaptureConstruct(
            self,
            constants.CAPTURE_CONSTRUCT_ID,
            settings=settings,
            key=self.foundation.key,
            bucket=self.foundation.bucket,
        )
        self.serving = ServingConstruct(
            self,
            constants.SERVING_CONSTRUCT_ID,
            settings=settings,
            key=self.foundation.key,
            bucket=self.foundation.bucket,
            topic=self.foundation.topic,
            online_features=self.online_features,
            capture=self.capture,
        )
        self.serving_api = ServingApiConstruct(
            self,
            constants.SERVING_API_CONSTRUCT_ID,
            settings=settings,
            target=self.serving.alias,
            key=self.foundation.key,
        )
        self.features = self._build_features(settings)
        self.stream = self._build_stream(settings)
        self.pipeline = self._build_pipeline(settings)
        self.batch = BatchScoring(
            self,
            constants.BATCH_CONSTRUCT_ID,
            model_name=settings.model_name,
            stage=settings.stage,
            bucket=self.foundation.bucket,
            key=self.foundation.key,
            topic=self.foundation.topic,
            live_parameter=self.serving.live_parameter,
            instance_type=settings.batch_instance_type,
            instance_count=settings.batch_instance_count,
            schedule=settings.batch_schedule or None,
            input_format=settings.batch_input_format,
            removal_policy=settings.cdk_removal_policy,
        )
        self.monitoring = self._build_monitoring(settings)
        self._add_outputs()

    def _build_monitoring(self, settings: DeploySettings) -> MonitoringConstruct:
        """Drift, quality and health jobs, alarms on every capability, the dashboard, retrain on drift."""
        return MonitoringConstruct(
            self,
            constants.MONITORING_CONSTRUCT_ID,
            settings=settings,
            key=self.foundation.key,
            bucket=self.foundation.bucket,
            topic=self.foundation.topic,
            monitoring=settings.monitoring,
            serving_function=self.serving.function,
            serving_alias=self.serving.alias,
            api=self.serving_api.api,
            api_key=self.serving_api.api_key,
            state_machine=self.pipeline.state_machine,
            handler_code=_handler_code(settings, "monitor", architecture=settings.lambda_architecture),
        )

    def _build_stream(self, settings: DeploySettings) -> StreamConstruct | None:
        """The Kinesis/Kafka consumer, when the settings ask for one."""
        if settings.stream is None:
            return None
        return StreamConstruct(
            self,
            constants.STREAM_CONSTRUCT_ID,
            settings=settings,
            stream=settings.stream,
            key=self.foundation.key,
            bucket=self.foundation.bucket,
            topic=self.foundation.topic,
            online_features=self.online_features,
            capture=self.capture,
            live_parameter=self.serving.live_parameter,
            hash_key_secret=self.serving.hash_key_secret,
        )

    def _build_pipeline(self, settings: DeploySettings) -> TrainingPipeline:
        """Retraining on SageMaker, gated, rolled out to the serving alias through CodeDeploy."""
        return TrainingPipeline(
            self,
            constants.PIPELINE_CONSTRUCT_ID,
            settings=settings,
            bucket=self.foundation.bucket,
            key=self.foundation.key,
            topic=self.foundation.topic,
            # The pipeline's functions are arm64 (stacks/pipeline_construct.py), whatever serving uses.
            handler_code=_handler_code(settings, "pipeline", architecture="arm64"),
            serving=ServingTarget(
                function=self.serving.function,
                alias=self.serving.alias,
                application=self.serving.application,
                deployment_group=self.serving.deployment_group,
                live_parameter=self.serving.live_parameter,
            ),
        )

    def _build_features(self, settings: DeploySettings) -> FeaturesConstruct:
        """The scheduled materialisation of online features from the lake into the online table."""
        code = None
        if settings.features_host == "lambda":
            # The job reads Parquet, so its bundle carries pyarrow (never torch, pandas or sklearn).
            code = _handler_code(
                settings,
                "features",
                architecture="arm64",
                budget_mb=settings.features_bundle_budget_mb,
                forbidden=("torch", "pandas", "sklearn"),
            )
        return FeaturesConstruct(
            self,
            constants.FEATURES_CONSTRUCT_ID,
            model_name=settings.model_name,
            bucket=self.foundation.bucket,
            key=self.foundation.key,
            table=self.online_features.table,
            contract_path=settings.contract_path.as_posix(),
            code=code,
            schedule=settings.features_schedule,
            host=settings.features_host,
            processing_image_uri=settings.features_processing_image_uri,
            removal_policy=settings.cdk_removal_policy,
        )

    def _add_outputs(self) -> None:
        # Outputs are how the aws backend and scripts find the resources after a deploy.
        cdk.CfnOutput(self, constants.OUTPUT_ARTIFACT_BUCKET, value=self.foundation.bucket.bucket_name)
        cdk.CfnOutput(self, constants.OUTPUT_NOTIFICATION_TOPIC, value=self.foundation.topic.topic_arn)
        cdk.CfnOutput(self, constants.OUTPUT_ENCRYPTION_KEY, value=self.foundation.key.key_arn)
        cdk.CfnOutput(self, constants.OUTPUT_API_URL, value=self.serving_api.url)
        cdk.CfnOutput(self, constants.OUTPUT_FUNCTION_NAME, value=self.serving.function.function_name)
        cdk.CfnOutput(self, constants.OUTPUT_LIVE_ALIAS, value=self.serving.alias.function_arn)
        cdk.CfnOutput(
            self, constants.OUTPUT_DEPLOYMENT_GROUP, value=self.serving.deployment_group.deployment_group_name
        )
        cdk.CfnOutput(self, constants.OUTPUT_LIVE_PARAMETER, value=self.serving.live_parameter.parameter_name)
        cdk.CfnOutput(self, constants.OUTPUT_ONLINE_TABLE, value=self.online_features.table.table_name)
        cdk.CfnOutput(self, constants.OUTPUT_CAPTURE_STREAM, value=self.capture.stream_name)
        cdk.CfnOutput(
            self, constants.OUTPUT_TRAINING_PIPELINE, value=self.pipeline.state_machine.state_machine_arn
        )
        cdk.CfnOutput(self, constants.OUTPUT_BATCH_PIPELINE, value=self.batch.state_machine.state_machine_arn)
        cdk.CfnOutput(self, constants.OUTPUT_DASHBOARD, value=self.monitoring.dashboard.dashboard_name)
        if self.serving_api.api_key is not None:
            cdk.CfnOutput(self, constants.OUTPUT_API_KEY_ID, value=self.serving_api.api_key.key_id)
