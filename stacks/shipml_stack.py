"""The shipml stack for one model in one stage. It only composes constructs, one per capability."""

from __future__ import annotations

import aws_cdk as cdk
from constructs import Construct

from stacks import constants
from stacks.foundation_construct import FoundationConstruct
from stacks.settings import DeploySettings


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
        self._add_outputs()

    def _add_outputs(self) -> None:
        # Outputs are how the aws backend and scripts find the resources after a deploy.
        cdk.CfnOutput(self, constants.OUTPUT_ARTIFACT_BUCKET, value=self.foundation.bucket.bucket_name)
        cdk.CfnOutput(self, constants.OUTPUT_NOTIFICATION_TOPIC, value=self.foundation.topic.topic_arn)
        cdk.CfnOutput(self, constants.OUTPUT_ENCRYPTION_KEY, value=self.foundation.key.key_arn)
