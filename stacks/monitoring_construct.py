"""Monitoring: the scheduled drift and quality jobs, the health check, alarms, EventBridge rules, dashboard.

Every alarm and rule notifies the foundation's SNS topic (KMS-encrypted; the e-mail subscription is
the foundation's `alarm_email` setting). What is watched:

| alarm | metric | fires when |
| --- | --- | --- |
| Api5xxRate | AWS/ApiGateway 5XXError (Average: the share of 5xx) | above `api_5xx_rate` |
| ApiP99Latency | AWS/ApiGateway Latency p99 | above `api_p99_latency_ms` |
| ServingErrors, ServingThrottles | AWS/Lambda Errors, Throttles of the serving function | at or above |
| FallbackRate | shipml Fallbacks / Predictions | above `fallback_rate` |
| ValidationFailureRate | shipml ValidationFailures / (Predictions + ValidationFailures) | above the setting |
| DriftDetected | shipml DriftDetected (the drift job's verdict, contract thresholds) | at or above 1 |
| QualityBelowFloor | shipml QualityAuc | under `quality_auc_floor` |
| QualityAnomaly | shipml QualityAuc against its anomaly-detection band | under the band |
| HealthCheck | shipml HealthCheckSuccess (the scheduled /health check) | under 1, or no data |
| DriftJobErrors / QualityJobErrors | AWS/Lambda Errors of the monitor functions | at or above 1 |

Through EventBridge: failed, timed-out or aborted executions of the retraining state machine, and
failed SageMaker training and processing jobs of this model, go to the topic; with
`retrain_on_drift`, the drift alarm entering ALARM starts the retraining state machine with the
reason in its input (`{"reason": "drift alarm ... at ..."}`, a valid `RunRequest`).

The health check is a scheduled Lambda function rather than a Synthetics canary: the API's methods
require IAM (SigV4) authorisation, which the function signs with its own role and a canary would
need custom code for.

The jobs' metrics are daily points: their alarms treat missing data as "ignore", so an alarm keeps
its state until the next run says otherwise (and the drift-to-retrain rule fires once per change).
Metric names come from `shipml.monitoring.publish`, so the job and the alarms cannot disagree.
"""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from shipml.monitoring import publish as m
from stacks import constants, nag
from stacks.lambda_common import ARCHITECTURES
from stacks.monitoring_settings import MonitoringSettings
from stacks.settings import DeploySettings

REPO_ROOT = Path(__file__).resolve().parents[1]
HANDLERS = {
    "DriftJob": "functions.monitor.drift.handler",
    "QualityJob": "functions.monitor.quality.handler",
    "HealthCheck": "functions.monitor.health.handler",
}


class MonitoringConstruct(Construct):
    """Monitoring of one model in one stage (see the module docstring for what it watches).

    Attributes: `functions` (by name), `alarms` (by name), `rules` (by name), `dashboard`,
    `drift_alarm`, `quality_alarm`, `retrain_rule` (None unless `retrain_on_drift` and a state
    machine are given).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: DeploySettings,
        key: kms.IKey,
        bucket: s3.IBucket,
        topic: sns.ITopic,
        monitoring: MonitoringSettings | None = None,
        serving_function: lambda_.IFunction | None = None,
        serving_alias: lambda_.IAlias | None = None,
        api: apigw.IRestApi | None = None,
        api_key: apigw.IApiKey | None = None,
        api_stage: str = constants.API_STAGE,
        state_machine: sfn.IStateMachine | None = None,
        handler_code: lambda_.Code,
    ) -> None:
        super().__init__(scope, construct_id)
        self._settings = settings
        self._monitoring = monitoring or MonitoringSettings()
        self._key, self._bucket, self._topic = key, bucket, topic
        self._api, self._api_stage = api, api_stage
        self._serving_function, self._serving_alias = serving_function, serving_alias
        self._state_machine = state_machine
        self._code = handler_code
        self.model_name = settings.model_name
        self.functions: dict[str, lambda_.Function] = {}
        self.alarms: dict[str, cloudwatch.Alarm | cloudwatch.AnomalyDetectionAlarm] = {}
        self.rules: dict[str, events.Rule] = {}
        self._action = cloudwatch_actions.SnsAction(topic)

        self._allow_services_to_use_the_topic_key()
        self._build_jobs()
        if api is not None:
            self._build_health_check(api, api_key)
        self._build_serving_alarms()
        self.drift_alarm, self.quality_alarm = self._build_model_alarms()
        self._build_failure_rules()
        self.retrain_rule = self._build_retrain_rule()
        self.dashboard = self._build_dashboard()

    # --- names and metrics ------------------------------------------------------------------------

    def _name(self, suffix: str) -> str:
        return f"{self._settings.stack_name}-{suffix}"

    def _model_metric(
        self, name: str, statistic: str, period: cdk.Duration, **extra: str
    ) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace=m.NAMESPACE,
            metric_name=name,
            dimensions_map={m.MODEL: self.model_name, **extra},
            statistic=statistic,
            period=period,
        )

    def _serving_metric(self, name: str, period: cdk.Duration) -> cloudwatch.Metric:
        # The serving app's EMF metrics carry `service` too (Powertools), set to the model name.
        return self._model_metric(name, "Sum", period, service=self.model_name)

    def _serving_ratio(self, expression: str, label: str, **metrics: str) -> cloudwatch.MathExpression:
        """`expression` over 5-minute sums of the serving app's metrics, each named by its variable."""
        five = cdk.Duration.minutes(5)
        return cloudwatch.MathExpression(
            expression=expression,
            using_metrics={variable: self._serving_metric(name, five) for variable, name in metrics.items()},
            label=label,
            period=five,
        )

    def _api_metric(self, name: str, statistic: str, period: cdk.Duration) -> cloudwatch.Metric:
        assert self._api is not None
        return cloudwatch.Metric(
            namespace="AWS/ApiGateway",
            metric_name=name,
            dimensions_map={"ApiName": self._api.rest_api_name, "Stage": self._api_stage},
            statistic=statistic,
            period=period,
        )

    def _alarm(self, name: str, description: str, **props: object) -> cloudwatch.Alarm:
        alarm = cloudwatch.Alarm(
            self,
            f"{name}Alarm",
            alarm_name=self._name(_kebab(name)),
            alarm_description=f"{self._settings.stack_name}: {description}",
            **props,  # type: ignore[arg-type]
        )
        alarm.add_alarm_action(self._action)
        self.alarms[name] = alarm
        return alarm

    def _sustained_alarm(
        self, name: str, description: str, metric: cloudwatch.IMetric, threshold: float
    ) -> cloudwatch.Alarm:
        """Above `threshold` in 2 of 3 periods (one bad period is noise); no traffic is not a breach."""
        return self._alarm(
            name,
            description,
            metric=metric,
            threshold=threshold,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=3,
            datapoints_to_alarm=2,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )

    def _count_alarm(
        self, name: str, description: str, metric: cloudwatch.IMetric, threshold: float
    ) -> cloudwatch.Alarm:
        """A count (errors, throttles) at or above `threshold` in one period; no data means none."""
        return self._alarm(
            name,
            description,
            metric=metric,
            threshold=threshold,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )

    # --- the topic's key --------------------------------------------------------------------------

    def _allow_services_to_use_the_topic_key(self) -> None:
        # CloudWatch alarms and EventBridge rules publish to the KMS-encrypted topic only if the key
        # lets them make data keys; limited to this account's alarms and rules.
        self._key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowAlarmsAndRulesToNotify",
                principals=[
                    iam.ServicePrincipal("cloudwatch.amazonaws.com"),
                    iam.ServicePrincipal("events.amazonaws.com"),
                ],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
                conditions={"StringEquals": {"aws:SourceAccount": cdk.Aws.ACCOUNT_ID}},
            )
        )

    # --- the scheduled functions --------------------------------------------------------------------

    def _function(
        self, name: str, *, environment: dict[str, str], timeout: cdk.Duration, memory_mb: int
    ) -> lambda_.Function:
        log_group = logs.LogGroup(
            self,
            f"{name}Logs",
            retention=self._settings.cdk_log_retention,
            removal_policy=self._settings.cdk_removal_policy,
            encryption_key=self._key,
        )
        role = iam.Role(
            self,
            f"{name}Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"The {name} function of {self._settings.stack_name} monitoring",
        )
        log_group.grant_write(role)
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                # Resource "*": PutMetricData has no resource-level permissions; the condition below
                # limits it to the shipml namespace.
                resources=["*"],
                conditions={"StringEquals": {"cloudwatch:namespace": m.NAMESPACE}},
            )
        )
        function = lambda_.Function(
            self,
            f"{name}Function",
            runtime=lambda_.Runtime.PYTHON_3_12,
            # The same architecture as the serving function, so one dependency bundle fits both.
            architecture=ARCHITECTURES[self._settings.lambda_architecture],
            handler=HANDLERS[name],
            code=self._code,
            role=role,
            log_group=log_group,
            timeout=timeout,
            memory_size=memory_mb,
            environment={
                "SHIPML_MODEL": self.model_name,
                "SHIPML_METRICS_NAMESPACE": m.NAMESPACE,
                "POWERTOOLS_SERVICE_NAME": f"shipml-monitor-{_kebab(name)}",
                **environment,
            },
            description=f"shipml monitoring of {self.model_name}: {name}",
        )
        nag.acknowledge(
            function,
            "AwsSolutions-L1",
            "Pinned to Python 3.12 like the serving and pipeline functions, whose cp312 dependency "
            "bundle the monitor functions share.",
        )
        nag.acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::*]",
            "cloudwatch:PutMetricData has no resource-level permissions; it is limited to the shipml "
            "namespace by condition.",
        )
        nag.acknowledge_design(
            function,
            nag.NIST_LAMBDA_OUTSIDE_VPC,
            nag.NIST_SCHEDULED_NO_DLQ,
            nag.NIST_SCHEDULED_NO_RESERVED_CONCURRENCY,
        )
        self.functions[name] = function
        return function

    def _job_environment(self) -> dict[str, str]:
        return {
            "SHIPML_ARTIFACT_BUCKET": self._bucket.bucket_name,
            "SHIPML_LIVE_PARAMETER": constants.live_parameter_name(self.model_name, self._settings.stage),
            "SHIPML_MONITOR_WINDOW_HOURS": str(self._monitoring.drift_window_hours),
            "SHIPML_QUALITY_WINDOW_HOURS": str(self._monitoring.quality_window_hours),
            "SHIPML_GROUND_TRUTH_PREFIX": self.ground_truth_prefix,
        }

    @property
    def ground_truth_prefix(self) -> str:
        return self._monitoring.ground_truth_prefix or f"ground-truth/{self.model_name}/"

    @property
    def report_prefix(self) -> str:
        return f"monitoring/{self.model_name}/"

    def _build_jobs(self) -> None:
        drift = self._function(
            "DriftJob",
            environment=self._job_environment(),
            timeout=cdk.Duration.minutes(15),
            memory_mb=self._monitoring.drift_job_memory_mb,
        )
        quality = self._function(
            "QualityJob",
            environment=self._job_environment(),
            timeout=cdk.Duration.minutes(15),
            memory_mb=2048,
        )
        self._grant_job(drift, read=["capture/*", f"models/{self.model_name}/*"], list_prefixes=["capture/*"])
        self._grant_job(
            quality,
            read=["capture/*", f"models/{self.model_name}/*", f"{self.ground_truth_prefix}*"],
            list_prefixes=["capture/*", f"{self.ground_truth_prefix}*"],
        )
        for name, function, schedule in (
            ("DriftSchedule", drift, self._monitoring.drift_schedule),
            ("QualitySchedule", quality, self._monitoring.quality_schedule),
        ):
            self.rules[name] = events.Rule(
                self,
                name,
                schedule=events.Schedule.expression(schedule),
                description=f"Runs the {function.node.id} of {self._settings.stack_name}",
                targets=[targets.LambdaFunction(function, retry_attempts=2)],
            )

    def _grant_job(self, function: lambda_.Function, *, read: list[str], list_prefixes: list[str]) -> None:
        role = function.role
        assert role is not None
        writes = [f"{self.report_prefix}*"]
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject"], resources=[self._bucket.arn_for_objects(p) for p in read]
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:PutObject"], resources=[self._bucket.arn_for_objects(p) for p in writes]
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[self._bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": list_prefixes}},
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(actions=["kms:Decrypt", "kms:GenerateDataKey"], resources=[self._key.key_arn])
        )
        parameter = constants.live_parameter_name(self.model_name, self._settings.stage)
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["ssm:GetParameter"],
                resources=[
                    f"arn:{cdk.Aws.PARTITION}:ssm:{cdk.Aws.REGION}:{cdk.Aws.ACCOUNT_ID}:parameter{parameter}"
                ],
            )
        )
        for prefix in sorted({*read, *writes}):
            nag.acknowledge(
                role,  # type: ignore[arg-type]
                nag.arn_wildcard_finding("AwsSolutions-IAM5", self._bucket, f"/{prefix}"),
                "The monitor reads the capture, this model's artifacts and ground truth, and writes "
                "its reports under monitoring/{model}/: object names are chosen by Firehose, the "
                "pipeline and the label producers.",
            )

    def _build_health_check(self, api: apigw.IRestApi, api_key: apigw.IApiKey | None) -> None:
        url = f"https://{api.rest_api_id}.execute-api.{cdk.Aws.REGION}.{cdk.Aws.URL_SUFFIX}/{self._api_stage}/health"
        environment = {"SHIPML_HEALTH_URL": url, "SHIPML_HEALTH_AUTH": self._settings.api_auth}
        if self._settings.api_auth == "api_key":
            if api_key is None:
                raise ValueError("api_auth is api_key: the health check needs the usage plan's API key")
            # The checker reads the key's value from API Gateway when it runs (GetApiKey with
            # includeValue), so the value never sits in the function's configuration.
            environment["SHIPML_HEALTH_API_KEY_ID"] = api_key.key_id
        function = self._function(
            "HealthCheck",
            environment=environment,
            timeout=cdk.Duration.seconds(30),
            memory_mb=256,
        )
        if api_key is not None and self._settings.api_auth == "api_key":
            function.add_to_role_policy(
                iam.PolicyStatement(
                    actions=["apigateway:GET"],
                    resources=[
                        cdk.Stack.of(self).format_arn(
                            service="apigateway",
                            account="",
                            resource="/apikeys",
                            resource_name=api_key.key_id,
                            arn_format=cdk.ArnFormat.SLASH_RESOURCE_NAME,
                        )
                    ],
                )
            )
        function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["execute-api:Invoke"],
                resources=[api.arn_for_execute_api("GET", "/health", self._api_stage)],
            )
        )
        self.rules["HealthSchedule"] = events.Rule(
            self,
            "HealthSchedule",
            schedule=events.Schedule.rate(cdk.Duration.minutes(self._monitoring.health_check_minutes)),
            description=f"Calls /health of {self._settings.stack_name} every few minutes",
            targets=[targets.LambdaFunction(function, retry_attempts=0)],
        )
        period = cdk.Duration.minutes(self._monitoring.health_check_minutes)
        self._alarm(
            "HealthCheck",
            "the serving API's /health failed (or the checker stopped reporting)",
            metric=self._model_metric(m.HEALTH_CHECK_SUCCESS, "Minimum", period),
            threshold=1,
            comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
            evaluation_periods=3,
            datapoints_to_alarm=2,
            treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
        )

    # --- alarms -------------------------------------------------------------------------------------

    def _build_serving_alarms(self) -> None:
        five = cdk.Duration.minutes(5)
        settings = self._monitoring
        if self._api is not None:
            self._sustained_alarm(
                "Api5xxRate",
                f"more than {settings.api_5xx_rate:.1%} of API requests answered 5xx",
                self._api_metric("5XXError", "Average", five),
                settings.api_5xx_rate,
            )
            self._sustained_alarm(
                "ApiP99Latency",
                f"p99 API latency above {settings.api_p99_latency_ms} ms",
                self._api_metric("Latency", "p99", five),
                settings.api_p99_latency_ms,
            )
        if self._serving_function is not None:
            self._count_alarm(
                "ServingErrors",
                "errors of the serving function",
                self._serving_function.metric_errors(period=five, statistic="Sum"),
                settings.serving_errors,
            )
            self._count_alarm(
                "ServingThrottles",
                "throttled invocations of the serving function",
                self._serving_function.metric_throttles(period=five, statistic="Sum"),
                settings.serving_throttles,
            )
        self._sustained_alarm(
            "FallbackRate",
            f"more than {settings.fallback_rate:.0%} of predictions used a default for an online feature",
            self._serving_ratio(
                "FILL(fallbacks, 0) / predictions",
                "fallbacks per prediction",
                fallbacks=m.SERVING_FALLBACKS,
                predictions=m.SERVING_PREDICTIONS,
            ),
            settings.fallback_rate,
        )
        self._sustained_alarm(
            "ValidationFailureRate",
            f"more than {settings.validation_failure_rate:.0%} of requests broke the contract",
            self._serving_ratio(
                "FILL(failures, 0) / (FILL(predictions, 0) + FILL(failures, 0))",
                "validation failures per request",
                failures=m.SERVING_VALIDATION_FAILURES,
                predictions=m.SERVING_PREDICTIONS,
            ),
            settings.validation_failure_rate,
        )

    def _build_model_alarms(self) -> tuple[cloudwatch.Alarm, cloudwatch.Alarm]:
        hour = cdk.Duration.hours(1)
        settings = self._monitoring
        drift = self._alarm(
            "DriftDetected",
            "the drift job found drift above the contract's thresholds (see the report under "
            f"s3://.../{self.report_prefix}drift/)",
            metric=self._model_metric(m.DRIFT_DETECTED, "Maximum", hour),
            threshold=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.IGNORE,
        )
        quality = self._alarm(
            "QualityBelowFloor",
            f"AUC on delayed ground truth under {settings.quality_auc_floor}",
            metric=self._model_metric(m.QUALITY_AUC, "Minimum", hour),
            threshold=settings.quality_auc_floor,
            comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.IGNORE,
        )
        anomaly = cloudwatch.AnomalyDetectionAlarm(
            self,
            "QualityAnomalyAlarm",
            alarm_name=self._name("quality-anomaly"),
            alarm_description=f"{self._settings.stack_name}: AUC fell below the band of its own history",
            metric=self._model_metric(m.QUALITY_AUC, "Average", hour),
            std_devs=settings.quality_anomaly_std_devs,
            comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_LOWER_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.IGNORE,
        )
        anomaly.add_alarm_action(self._action)
        self.alarms["QualityAnomaly"] = anomaly
        for name in ("DriftJob", "QualityJob"):
            self._count_alarm(
                f"{name}Errors",
                f"the {name} function failed",
                self.functions[name].metric_errors(period=hour, statistic="Sum"),
                1,
            )
        return drift, quality

    # --- EventBridge --------------------------------------------------------------------------------

    def _notify(self, text: str) -> targets.SnsTopic:
        return targets.SnsTopic(self._topic, message=events.RuleTargetInput.from_text(text))

    def _build_failure_rules(self) -> None:
        if self._state_machine is not None:
            self.rules["PipelineFailed"] = events.Rule(
                self,
                "PipelineFailedRule",
                description=f"Failed retraining executions of {self._settings.stack_name}",
                event_pattern=events.EventPattern(
                    source=["aws.states"],
                    detail_type=["Step Functions Execution Status Change"],
                    detail={
                        "status": ["FAILED", "TIMED_OUT", "ABORTED"],
                        "stateMachineArn": [self._state_machine.state_machine_arn],
                    },
                ),
                targets=[
                    self._notify(
                        f"{self._settings.stack_name}: retraining execution "
                        f"{events.EventField.from_path('$.detail.name')} ended "
                        f"{events.EventField.from_path('$.detail.status')}"
                    )
                ],
            )
        # Job names start with shipml-{model}- (shipml.pipeline.steps.job_prefix).
        prefix = f"shipml-{self.model_name[:12].rstrip('-')}-"
        for kind, detail_type, name_field, status_field in (
            ("Training", "SageMaker Training Job State Change", "TrainingJobName", "TrainingJobStatus"),
            (
                "Processing",
                "SageMaker Processing Job State Change",
                "ProcessingJobName",
                "ProcessingJobStatus",
            ),
        ):
            self.rules[f"{kind}JobFailed"] = events.Rule(
                self,
                f"{kind}JobFailedRule",
                description=f"Failed SageMaker {kind.lower()} jobs of {self._settings.stack_name}",
                event_pattern=events.EventPattern(
                    source=["aws.sagemaker"],
                    detail_type=[detail_type],
                    detail={status_field: ["Failed"], name_field: [{"prefix": prefix}]},
                ),
                targets=[
                    self._notify(
                        f"{self._settings.stack_name}: SageMaker {kind.lower()} job "
                        f"{events.EventField.from_path(f'$.detail.{name_field}')} failed: "
                        f"{events.EventField.from_path('$.detail.FailureReason')}"
                    )
                ],
            )

    def _build_retrain_rule(self) -> events.Rule | None:
        if not self._monitoring.retrain_on_drift:
            return None
        if self._state_machine is None:
            raise ValueError("retrain_on_drift needs the retraining state_machine")
        rule = events.Rule(
            self,
            "RetrainOnDriftRule",
            description=f"Starts retraining of {self._settings.stack_name} when the drift alarm fires",
            event_pattern=events.EventPattern(
                source=["aws.cloudwatch"],
                detail_type=["CloudWatch Alarm State Change"],
                resources=[self.drift_alarm.alarm_arn],
                detail={"state": {"value": ["ALARM"]}},
            ),
            targets=[
                targets.SfnStateMachine(
                    self._state_machine,
                    input=events.RuleTargetInput.from_object(
                        {
                            "reason": f"drift alarm {events.EventField.from_path('$.detail.alarmName')} "
                            f"at {events.EventField.from_path('$.time')}"
                        }
                    ),
                    retry_attempts=2,
                )
            ],
        )
        self.rules["RetrainOnDrift"] = rule
        return rule

    # --- dashboard ----------------------------------------------------------------------------------

    def _build_dashboard(self) -> cloudwatch.Dashboard:
        five, hour = cdk.Duration.minutes(5), cdk.Duration.hours(1)
        dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=self._name("monitoring"),
            default_interval=cdk.Duration.days(7),
        )

        def header(text: str) -> cloudwatch.TextWidget:
            return cloudwatch.TextWidget(markdown=f"## {text}", width=24, height=1)

        def graph(title: str, left: list[cloudwatch.IMetric], **extra: object) -> cloudwatch.GraphWidget:
            return cloudwatch.GraphWidget(title=title, left=left, width=8, height=6, **extra)  # type: ignore[arg-type]

        serving: list[cloudwatch.IWidget] = []
        if self._api is not None:
            serving += [
                graph(
                    "API requests and 5xx",
                    [self._api_metric("Count", "Sum", five), self._api_metric("5XXError", "Sum", five)],
                ),
                graph(
                    "API latency p50 / p99 (ms)",
                    [self._api_metric("Latency", "p50", five), self._api_metric("Latency", "p99", five)],
                ),
            ]
        if self._serving_function is not None:
            serving.append(
                graph(
                    "Serving function errors and throttles",
                    [
                        self._serving_function.metric_errors(period=five, statistic="Sum"),
                        self._serving_function.metric_throttles(period=five, statistic="Sum"),
                    ],
                )
            )
        if self._serving_alias is not None:
            serving.append(
                graph(
                    "Live alias duration p50 / p99 (ms)",
                    [
                        self._serving_alias.metric_duration(period=five, statistic="p50"),
                        self._serving_alias.metric_duration(period=five, statistic="p99"),
                    ],
                )
            )
        serving.append(
            cloudwatch.AlarmStatusWidget(title="Alarms", alarms=list(self.alarms.values()), width=8, height=6)
        )
        model = [
            graph(
                "Predictions, fallbacks, validation failures",
                [
                    self._serving_metric(m.SERVING_PREDICTIONS, five),
                    self._serving_metric(m.SERVING_FALLBACKS, five),
                    self._serving_metric(m.SERVING_VALIDATION_FAILURES, five),
                ],
            ),
            graph(
                "Quality on delayed ground truth",
                [
                    self._model_metric(name, "Average", hour)
                    for name in (
                        m.QUALITY_AUC,
                        m.QUALITY_PRECISION,
                        m.QUALITY_RECALL,
                        m.QUALITY_CALIBRATION_ERROR,
                    )
                ],
                left_annotations=[
                    cloudwatch.HorizontalAnnotation(
                        value=self._monitoring.quality_auc_floor, label="AUC floor"
                    )
                ],
            ),
            graph(
                "Labels",
                [
                    self._model_metric(name, "Sum", hour)
                    for name in (m.QUALITY_LABELLED_ROWS, m.LABELS_UNKNOWN, m.LABELS_DUPLICATE)
                ],
            ),
        ]
        search = (
            f'SEARCH(\'{{{m.NAMESPACE},{m.MODEL},{m.FEATURE}}} MetricName="{m.DRIFT_FEATURE_PSI}" '
            f"{m.MODEL}=\"{self.model_name}\"', 'Maximum', 3600)"
        )
        data = [
            graph(
                "Drift: largest PSI, prediction PSI",
                [
                    self._model_metric(m.DRIFT_MAX_PSI, "Maximum", hour),
                    self._model_metric(m.PREDICTION_DRIFT_PSI, "Maximum", hour),
                ],
            ),
            graph("PSI per feature", [cloudwatch.MathExpression(expression=search, label="", period=hour)]),
            graph(
                "Drifted features and segments, window rows",
                [
                    self._model_metric(m.DRIFTED_FEATURES, "Maximum", hour),
                    self._model_metric(m.DRIFTED_SEGMENTS, "Maximum", hour),
                ],
                right=[self._model_metric(m.DRIFT_WINDOW_ROWS, "Sum", hour)],
            ),
        ]
        pipeline: list[cloudwatch.IWidget] = []
        if self._state_machine is not None:
            pipeline.append(
                graph(
                    "Retraining executions",
                    [
                        self._state_machine.metric_started(period=hour),
                        self._state_machine.metric_succeeded(period=hour),
                        self._state_machine.metric_failed(period=hour),
                    ],
                )
            )
        pipeline.append(
            graph(
                "Monitor jobs: errors",
                [f.metric_errors(period=hour, statistic="Sum") for f in self.functions.values()],
            )
        )
        if self._api is not None:
            pipeline.append(
                graph(
                    "Health check",
                    [self._model_metric(m.HEALTH_CHECK_SUCCESS, "Minimum", five)],
                    right=[self._model_metric(m.HEALTH_CHECK_LATENCY, "Maximum", five)],
                )
            )
        for title, widgets in (
            ("Serving", serving),
            ("Model", model),
            ("Data", data),
            ("Pipeline", pipeline),
        ):
            dashboard.add_widgets(header(title))
            dashboard.add_widgets(*widgets)
        return dashboard


def _kebab(name: str) -> str:
    out = []
    for i, char in enumerate(name):
        if (
            char.isupper()
            and i
            and (not name[i - 1].isupper() or (i + 1 < len(name) and name[i + 1].islower()))
        ):
            out.append("-")
        out.append(char.lower())
    return "".join(out)
