"""The public face of real-time inference: an API Gateway REST API in front of the `live` alias.

Why a REST API and not an HTTP API: REST APIs have API keys with usage plans (per-caller quotas
and throttles), per-method IAM authorization, request validators and stage-level throttling with
access logs in one place; HTTP APIs have no API keys or usage plans. The latency and price
difference is small next to a model invocation.
"""

from __future__ import annotations

from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks import constants, nag
from stacks.settings import DeploySettings


class ServingApiConstruct(Construct):
    """A regional REST API (HTTPS only, as every API Gateway endpoint) with one stage, `v1`.

    Every method requires authentication: SigV4-signed requests with `execute-api:Invoke`
    permission (`api_auth: iam`, the default) or an API key of the usage plan (`api_auth: api_key`).
    The stage throttles (rate and burst), writes JSON access logs and publishes metrics. Only the
    app's public routes are exposed (constants.API_ROUTES); anything else ends at the edge.

    Request size: API Gateway's own limit (10 MB) cannot be lowered, so the app enforces
    SHIPML_MAX_BODY_BYTES (413) before it reads a body; Lambda's 6 MB payload limit bounds it anyway.

    `key` encrypts the access logs (the stack passes its customer-managed key).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: DeploySettings,
        target: lambda_.IFunction,
        key: kms.IKey | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self._settings = settings
        self.access_logs = logs.LogGroup(
            self,
            "AccessLogs",
            retention=settings.cdk_log_retention,
            removal_policy=settings.cdk_removal_policy,
            encryption_key=key,
        )
        if key is None:
            nag.acknowledge(
                self.access_logs,
                "NIST.800.53.R5-CloudWatchLogGroupEncrypted",
                "No customer-managed key was passed: the access logs are encrypted at rest by CloudWatch "
                "Logs' own key. They hold request metadata only (caller, IP, path, status, latency), "
                "never bodies; pass `key=` to encrypt them with the stack's key.",
            )
        self.api = self._build_api()
        self.request_validator = self.api.add_request_validator(
            "RequestValidator", validate_request_body=True, validate_request_parameters=True
        )
        self._add_routes(target)
        self.api_key: apigw.IApiKey | None = None
        self.usage_plan: apigw.UsagePlan | None = None
        if settings.api_auth == "api_key":
            self.api_key, self.usage_plan = self._build_usage_plan()
        self._acknowledge_findings()

    @property
    def url(self) -> str:
        """The invoke URL of the stage, e.g. https://{id}.execute-api.{region}.amazonaws.com/v1/."""
        return self.api.url

    def _build_api(self) -> apigw.RestApi:
        settings = self._settings
        return apigw.RestApi(
            self,
            "Api",
            rest_api_name=f"{settings.stack_name}-serving",
            description=f"shipml real-time inference for model {settings.model_name} ({settings.stage})",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            # The account-wide CloudWatch role is not ours to create in a per-model stack.
            cloud_watch_role=False,
            default_method_options=self._method_options(),
            deploy_options=apigw.StageOptions(
                stage_name=constants.API_STAGE,
                throttling_rate_limit=settings.api_throttle_rate,
                throttling_burst_limit=settings.api_throttle_burst,
                access_log_destination=apigw.LogGroupLogDestination(self.access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=True,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=True,
                ),
                metrics_enabled=True,
                # The stage starts the X-Ray trace that the function's active tracing continues.
                tracing_enabled=settings.tracing,
                # Request and response bodies hold unmasked features: never in execution logs.
                data_trace_enabled=False,
            ),
        )

    def _method_options(self) -> apigw.MethodOptions:
        if self._settings.api_auth == "iam":
            return apigw.MethodOptions(authorization_type=apigw.AuthorizationType.IAM)
        return apigw.MethodOptions(api_key_required=True)

    def _add_routes(self, target: lambda_.IFunction) -> None:
        # One integration for all routes: the app routes by path. No test-invoke permission, so the
        # only principal allowed to invoke the alias is this API's stage, per method.
        integration = apigw.LambdaIntegration(target, proxy=True, allow_test_invoke=False)
        for path, methods in constants.API_ROUTES.items():
            resource = self.api.root.resource_for_path(path)
            for method in methods:
                resource.add_method(method, integration, request_validator=self.request_validator)

    def _build_usage_plan(self) -> tuple[apigw.IApiKey, apigw.UsagePlan]:
        settings = self._settings
        plan = self.api.add_usage_plan(
            "UsagePlan",
            name=f"{settings.stack_name}-serving",
            throttle=apigw.ThrottleSettings(
                rate_limit=settings.api_throttle_rate, burst_limit=settings.api_throttle_burst
            ),
            quota=apigw.QuotaSettings(limit=settings.api_quota_per_day, period=apigw.Period.DAY)
            if settings.api_quota_per_day
            else None,
            api_stages=[apigw.UsagePlanPerApiStage(api=self.api, stage=self.api.deployment_stage)],
        )
        # API Gateway generates the key's value; read it with `aws apigateway get-api-key --include-value`.
        key = self.api.add_api_key("ApiKey", description=f"{settings.stack_name} serving client")
        plan.add_api_key(key)
        return key, plan

    def _acknowledge_findings(self) -> None:
        stage = self.api.deployment_stage
        nag.acknowledge(
            stage,
            "NIST.800.53.R5-APIGWAssociatedWithWAF",
            "No WAF web ACL by default (as AwsSolutions-APIG3): every method requires IAM or an API key, "
            "the stage and usage plan throttle, and the app bounds body size; attach the account's shared "
            "web ACL to the stage where one exists.",
        )
        nag.acknowledge(
            stage,
            "NIST.800.53.R5-APIGWCacheEnabledAndEncrypted",
            "Predictions must never be cached: every POST is a distinct decision on distinct features, "
            "a cached answer would be served to another caller, and the cache would hold unmasked "
            "request data. Caching is off, so there is nothing to encrypt.",
        )
        nag.acknowledge(
            stage,
            "NIST.800.53.R5-APIGWExecutionLoggingEnabled",
            "As AwsSolutions-APIG6: execution logging needs the account-wide API Gateway CloudWatch role, "
            "which a per-model stack must not take over, and would log unmasked request bodies; the "
            "stage writes JSON access logs and metrics instead.",
        )
        nag.acknowledge(
            stage,
            "NIST.800.53.R5-APIGWSSLEnabled",
            "The rule asks for a client certificate, which authenticates API Gateway to an HTTP backend. "
            "The only backend is a Lambda integration, invoked through the Lambda API with IAM and "
            "resource policies; there is no HTTP endpoint to present a certificate to. Clients reach "
            "the API over HTTPS only (API Gateway serves no plain HTTP).",
        )
        nag.acknowledge(
            self.api,
            "AwsSolutions-COG4",
            "Callers are services, not end users: they authenticate with IAM (SigV4) or an "
            "API key, so there is no Cognito user pool to authorize against.",
        )
        nag.acknowledge(
            self.api,
            "AwsSolutions-APIG6",
            "Execution logging needs the account-wide API Gateway CloudWatch role, which a "
            "per-model stack must not take over; the stage writes access logs and metrics instead, "
            "and execution logs would hold unmasked request bodies.",
        )
        nag.acknowledge(
            self.api,
            "AwsSolutions-APIG3",
            "No WAF web ACL by default: every method requires IAM or an API key, the stage and "
            "usage plan throttle, and the app bounds body size; attach the account's shared web ACL "
            "to the stage where one exists.",
        )
        if self._settings.api_auth == "api_key":
            nag.acknowledge(
                self.api,
                "AwsSolutions-APIG4",
                "api_auth is set to api_key: every method requires a key of the usage plan, "
                "which identifies, throttles and meters each caller (IAM is the default mode).",
            )
