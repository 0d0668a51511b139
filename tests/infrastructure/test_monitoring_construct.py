"""The monitoring construct in a test stack with the foundation: alarms, rules, dashboard, health, cdk-nag."""

from __future__ import annotations

import importlib
import io
import json
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk.assertions import Match, Template
from cdk_nag import AwsSolutionsChecks

from shipml.monitoring import publish as m
from stacks.foundation_construct import FoundationConstruct
from stacks.monitoring_construct import HANDLERS, MonitoringConstruct, MonitoringSettings
from stacks.settings import DeploySettings
from tests.infrastructure.synthesized import assembly_findings

ACCOUNT, REGION = "111122223333", "eu-west-1"
SERVING_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:shipml-fraud-dev-serving"
MACHINE_ARN = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:shipml-fraud-dev-retrain"
API_ID = "abc123"
# An imported REST API is named after its construct id; a real one by its rest_api_name.
API_NAME = "Api"


@dataclass(frozen=True)
class Synthesized:
    stack: cdk.Stack
    monitoring: MonitoringConstruct
    template: Template
    outdir: Path

    def resources(self, kind: str) -> dict[str, dict[str, Any]]:
        return self.template.find_resources(kind)

    def alarm(self, name: str) -> dict[str, Any]:
        (found,) = [
            r["Properties"]
            for r in self.resources("AWS::CloudWatch::Alarm").values()
            if r["Properties"]["AlarmName"] == f"shipml-fraud-dev-{name}"
        ]
        return found

    def violations(self) -> list[tuple[str, str]]:
        return assembly_findings(self.outdir)


def _build(cdk_context, outdir: Path, *, full: bool) -> Synthesized:
    app = cdk.App(context=cdk_context, outdir=str(outdir))
    settings = DeploySettings.from_context(cdk_context)
    stack = cdk.Stack(app, "MonitoringTest", env=cdk.Environment(account=ACCOUNT, region=REGION))
    foundation = FoundationConstruct(stack, "Foundation", settings=settings)
    extra: dict[str, Any] = {}
    if full:
        # Stand-ins: the serving and pipeline constructs own the real resources.
        extra = {
            "serving_function": lambda_.Function.from_function_attributes(
                stack, "Serving", function_arn=SERVING_ARN, same_environment=True
            ),
            "serving_alias": lambda_.Alias.from_alias_attributes(
                stack,
                "LiveAlias",
                alias_name="live",
                alias_version=lambda_.Version.from_version_arn(stack, "ServingVersion", f"{SERVING_ARN}:7"),
            ),
            "api": apigw.RestApi.from_rest_api_attributes(
                stack, "Api", rest_api_id=API_ID, root_resource_id="r"
            ),
            "state_machine": sfn.StateMachine.from_state_machine_arn(stack, "Retrain", MACHINE_ARN),
            "monitoring": MonitoringSettings(retrain_on_drift=True),
        }
    monitoring = MonitoringConstruct(
        stack,
        "Monitoring",
        settings=settings,
        key=foundation.key,
        bucket=foundation.bucket,
        topic=foundation.topic,
        handler_code=lambda_.Code.from_asset(
            str(Path(__file__).resolve().parents[2] / "functions" / "monitor")
        ),
        **extra,
    )
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    app.synth()
    return Synthesized(stack, monitoring, Template.from_stack(stack), outdir)


@pytest.fixture(scope="module")
def full(cdk_context, tmp_path_factory) -> Synthesized:
    return _build(cdk_context, tmp_path_factory.mktemp("cdk.out"), full=True)


@pytest.fixture(scope="module")
def minimal(cdk_context, tmp_path_factory) -> Synthesized:
    return _build(cdk_context, tmp_path_factory.mktemp("cdk.out"), full=False)


def _topic(synth: Synthesized) -> list[dict[str, str]]:
    (topic,) = synth.resources("AWS::SNS::Topic")
    return [{"Ref": topic}]


def _dims(props: dict[str, Any]) -> dict[str, Any]:
    return {d["Name"]: d["Value"] for d in props.get("Dimensions", [])}


# --- one assertion block per alarm: metric, threshold, action ----------------------------------------

SIMPLE_ALARMS = [
    # name, namespace, metric, statistic, threshold, comparison, dimensions (None: not checked)
    (
        "api5xx-rate",
        "AWS/ApiGateway",
        "5XXError",
        "Average",
        0.01,
        "GreaterThanThreshold",
        {"ApiName": API_NAME, "Stage": "v1"},
    ),
    (
        "api-p99-latency",
        "AWS/ApiGateway",
        "Latency",
        None,
        1000,
        "GreaterThanThreshold",
        {"ApiName": API_NAME, "Stage": "v1"},
    ),
    (
        "serving-errors",
        "AWS/Lambda",
        "Errors",
        "Sum",
        5,
        "GreaterThanOrEqualToThreshold",
        {"FunctionName": "shipml-fraud-dev-serving"},
    ),
    (
        "serving-throttles",
        "AWS/Lambda",
        "Throttles",
        "Sum",
        1,
        "GreaterThanOrEqualToThreshold",
        {"FunctionName": "shipml-fraud-dev-serving"},
    ),
    (
        "drift-detected",
        "shipml",
        m.DRIFT_DETECTED,
        "Maximum",
        1,
        "GreaterThanOrEqualToThreshold",
        {"model": "fraud"},
    ),
    ("quality-below-floor", "shipml", m.QUALITY_AUC, "Minimum", 0.7, "LessThanThreshold", {"model": "fraud"}),
    ("health-check", "shipml", m.HEALTH_CHECK_SUCCESS, "Minimum", 1, "LessThanThreshold", {"model": "fraud"}),
    ("drift-job-errors", "AWS/Lambda", "Errors", "Sum", 1, "GreaterThanOrEqualToThreshold", None),
    ("quality-job-errors", "AWS/Lambda", "Errors", "Sum", 1, "GreaterThanOrEqualToThreshold", None),
]


@pytest.mark.parametrize(
    ("name", "namespace", "metric", "statistic", "threshold", "comparison", "dims"),
    SIMPLE_ALARMS,
    ids=[a[0] for a in SIMPLE_ALARMS],
)
def test_each_alarm_watches_its_metric_with_its_threshold_and_notifies_the_topic(
    full, name, namespace, metric, statistic, threshold, comparison, dims
) -> None:
    props = full.alarm(name)

    assert props["Namespace"] == namespace and props["MetricName"] == metric
    if statistic:
        assert props["Statistic"] == statistic
    assert props["Threshold"] == threshold
    assert props["ComparisonOperator"] == comparison
    if dims is not None:
        assert _dims(props) == dims
    assert props["AlarmActions"] == _topic(full)


def test_p99_latency_uses_the_p99_statistic(full) -> None:
    assert full.alarm("api-p99-latency")["ExtendedStatistic"] == "p99"


def test_rate_alarms_divide_the_serving_metrics(full) -> None:
    for name, expression, threshold in (
        ("fallback-rate", "FILL(fallbacks, 0) / predictions", 0.05),
        ("validation-failure-rate", "FILL(failures, 0) / (FILL(predictions, 0) + FILL(failures, 0))", 0.1),
    ):
        props = full.alarm(name)
        queries = {q["Id"]: q for q in props["Metrics"]}
        (result,) = [q for q in props["Metrics"] if "Expression" in q]
        assert result["Expression"] == expression
        used = {q["MetricStat"]["Metric"]["MetricName"] for q in queries.values() if "MetricStat" in q}
        assert used <= {m.SERVING_FALLBACKS, m.SERVING_PREDICTIONS, m.SERVING_VALIDATION_FAILURES}
        assert props["Threshold"] == threshold and props["AlarmActions"] == _topic(full)


def test_serving_alarm_dimensions_are_those_the_serving_app_emits(full) -> None:
    # The aws serving context's sink: EmfMetricsSink(namespace="shipml", service=model, defaults {model}).
    from shipml.backends.aws.sinks import EmfMetricsSink

    sink = EmfMetricsSink(namespace="shipml", service="fraud", default_dimensions={"model": "fraud"})
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        sink.put(m.SERVING_PREDICTIONS, 1, unit="Count", dimensions={"model": "fraud"})
        sink.flush()
    emitted = json.loads(buffer.getvalue().splitlines()[-1])
    (dimension_names,) = emitted["_aws"]["CloudWatchMetrics"][0]["Dimensions"]

    props = full.alarm("fallback-rate")
    metric = next(q for q in props["Metrics"] if "MetricStat" in q)["MetricStat"]["Metric"]
    assert sorted(d["Name"] for d in metric["Dimensions"]) == sorted(dimension_names)
    assert metric["Namespace"] == emitted["_aws"]["CloudWatchMetrics"][0]["Namespace"]


def test_quality_anomaly_alarm_uses_a_band_of_its_own_history(full) -> None:
    props = full.alarm("quality-anomaly")

    band = next(q for q in props["Metrics"] if "Expression" in q)
    assert band["Expression"].startswith("ANOMALY_DETECTION_BAND(") and band["Expression"].endswith(", 2)")
    assert props["ThresholdMetricId"] == band["Id"]
    assert props["ComparisonOperator"] == "LessThanLowerThreshold"
    metric = next(q for q in props["Metrics"] if "MetricStat" in q)["MetricStat"]["Metric"]
    assert metric["MetricName"] == m.QUALITY_AUC
    assert props["AlarmActions"] == _topic(full)


def test_daily_job_alarms_keep_their_state_between_runs_and_health_breaches_on_silence(full) -> None:
    assert full.alarm("drift-detected")["TreatMissingData"] == "ignore"
    assert full.alarm("quality-below-floor")["TreatMissingData"] == "ignore"
    assert full.alarm("health-check")["TreatMissingData"] == "breaching"


def test_every_alarm_notifies_the_topic(full) -> None:
    alarms = full.resources("AWS::CloudWatch::Alarm")

    assert len(alarms) == 12
    assert all(a["Properties"]["AlarmActions"] == _topic(full) for a in alarms.values())


def test_the_topic_key_lets_alarms_and_rules_publish(full) -> None:
    full.template.has_resource_properties(
        "AWS::KMS::Key",
        {
            "KeyPolicy": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Sid": "AllowAlarmsAndRulesToNotify",
                                "Principal": {
                                    "Service": ["cloudwatch.amazonaws.com", "events.amazonaws.com"]
                                },
                                "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
                            }
                        )
                    ]
                )
            }
        },
    )


# --- EventBridge -----------------------------------------------------------------------------------


def _rule(synth: Synthesized, detail_type: str) -> dict[str, Any]:
    (found,) = [
        r["Properties"]
        for r in synth.resources("AWS::Events::Rule").values()
        if detail_type in r["Properties"].get("EventPattern", {}).get("detail-type", [])
    ]
    return found


def test_failed_retraining_executions_are_notified(full) -> None:
    rule = _rule(full, "Step Functions Execution Status Change")

    assert rule["EventPattern"]["detail"] == {
        "status": ["FAILED", "TIMED_OUT", "ABORTED"],
        "stateMachineArn": [MACHINE_ARN],
    }
    assert rule["Targets"][0]["Arn"] == _topic(full)[0]


@pytest.mark.parametrize(
    ("detail_type", "status", "name"),
    [
        ("SageMaker Training Job State Change", "TrainingJobStatus", "TrainingJobName"),
        ("SageMaker Processing Job State Change", "ProcessingJobStatus", "ProcessingJobName"),
    ],
)
def test_failed_sagemaker_jobs_of_this_model_are_notified(full, detail_type, status, name) -> None:
    from shipml.pipeline.steps import job_prefix

    rule = _rule(full, detail_type)

    assert rule["EventPattern"]["source"] == ["aws.sagemaker"]
    assert rule["EventPattern"]["detail"][status] == ["Failed"]
    (prefix,) = rule["EventPattern"]["detail"][name]
    assert job_prefix("fraud", "train").startswith(prefix["prefix"])
    assert rule["Targets"][0]["Arn"] == _topic(full)[0]


def test_the_drift_alarm_starts_retraining_with_the_reason(full) -> None:
    rule = _rule(full, "CloudWatch Alarm State Change")
    (alarm_id,) = [
        k
        for k, r in full.resources("AWS::CloudWatch::Alarm").items()
        if r["Properties"]["AlarmName"] == "shipml-fraud-dev-drift-detected"
    ]

    assert rule["EventPattern"]["resources"] == [{"Fn::GetAtt": [alarm_id, "Arn"]}]
    assert rule["EventPattern"]["detail"] == {"state": {"value": ["ALARM"]}}
    (target,) = rule["Targets"]
    assert target["Arn"] == MACHINE_ARN
    template = json.loads(
        target["InputTransformer"]["InputTemplate"].replace("<detail-alarmName>", "A").replace("<time>", "T")
    )
    assert template == {"reason": "drift alarm A at T"}
    from shipml.pipeline.models import RunRequest

    assert RunRequest.parse(template).reason == "drift alarm A at T"  # a valid execution input
    full.template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [Match.object_like({"Action": "states:StartExecution", "Resource": MACHINE_ARN})]
                )
            }
        },
    )


def test_retraining_on_drift_is_off_by_default_and_needs_a_state_machine(minimal, cdk_context) -> None:
    assert minimal.monitoring.retrain_rule is None
    assert not [
        r
        for r in minimal.resources("AWS::Events::Rule").values()
        if "EventPattern" in r["Properties"] and "aws.cloudwatch" in r["Properties"]["EventPattern"]["source"]
    ]
    app = cdk.App(context=cdk_context)
    stack = cdk.Stack(app, "Bad")
    settings = DeploySettings.from_context(cdk_context)
    foundation = FoundationConstruct(stack, "Foundation", settings=settings)
    with pytest.raises(ValueError, match="retrain_on_drift needs the retraining state_machine"):
        MonitoringConstruct(
            stack,
            "Monitoring",
            settings=settings,
            key=foundation.key,
            bucket=foundation.bucket,
            topic=foundation.topic,
            monitoring=MonitoringSettings(retrain_on_drift=True),
            handler_code=lambda_.Code.from_inline("def handler(e, c): pass"),
        )


# --- the health check -------------------------------------------------------------------------------


def _function(synth: Synthesized, handler: str) -> dict[str, Any]:
    (found,) = [
        r["Properties"]
        for r in synth.resources("AWS::Lambda::Function").values()
        if r["Properties"]["Handler"] == handler
    ]
    return found


def test_health_check_calls_the_api_health_route_every_five_minutes_signed(full) -> None:
    function = _function(full, HANDLERS["HealthCheck"])
    variables = function["Environment"]["Variables"]

    url = json.dumps(variables["SHIPML_HEALTH_URL"])
    assert f"https://{API_ID}.execute-api." in url and "/v1/health" in url
    assert variables["SHIPML_HEALTH_AUTH"] == "iam"
    full.template.has_resource_properties(
        "AWS::Events::Rule", {"ScheduleExpression": "rate(5 minutes)", "State": "ENABLED"}
    )
    policies = json.dumps(full.resources("AWS::IAM::Policy"))
    assert '"execute-api:Invoke"' in policies and f":{API_ID}/v1/GET/health" in policies


def test_without_an_api_there_is_no_health_check_and_no_api_alarms(minimal) -> None:
    handlers = {r["Properties"]["Handler"] for r in minimal.resources("AWS::Lambda::Function").values()}
    names = {r["Properties"]["AlarmName"] for r in minimal.resources("AWS::CloudWatch::Alarm").values()}

    assert HANDLERS["HealthCheck"] not in handlers
    assert not {"shipml-fraud-dev-health-check", "shipml-fraud-dev-api5xx-rate"} & names
    assert "shipml-fraud-dev-drift-detected" in names


# --- the jobs -----------------------------------------------------------------------------------------


def test_jobs_run_on_schedule_with_their_settings(full) -> None:
    for name in ("DriftJob", "QualityJob"):
        function = _function(full, HANDLERS[name])
        variables = function["Environment"]["Variables"]
        assert variables["SHIPML_MODEL"] == "fraud"
        assert variables["SHIPML_LIVE_PARAMETER"] == "/shipml/fraud/dev/live-model-version"
        assert variables["SHIPML_GROUND_TRUTH_PREFIX"] == "ground-truth/fraud/"
        assert function["Timeout"] == 900
    assert (
        len(
            [
                r
                for r in full.resources("AWS::Events::Rule").values()
                if r["Properties"].get("ScheduleExpression") == "rate(1 day)"
            ]
        )
        == 2
    )


def test_jobs_read_capture_write_reports_and_publish_only_to_the_shipml_namespace(full) -> None:
    policies = json.dumps(full.resources("AWS::IAM::Policy"))

    assert (
        "/capture/*" in policies and "/monitoring/fraud/*" in policies and "/ground-truth/fraud/*" in policies
    )
    full.template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Action": "cloudwatch:PutMetricData",
                                "Condition": {"StringEquals": {"cloudwatch:namespace": "shipml"}},
                            }
                        )
                    ]
                )
            }
        },
    )


def test_handlers_exist() -> None:
    for handler in HANDLERS.values():
        module, _, function = handler.rpartition(".")
        assert callable(getattr(importlib.import_module(module), function))


# --- dashboard and nag ----------------------------------------------------------------------------------


def _dashboard_body(synth: Synthesized) -> str:
    (dashboard,) = synth.resources("AWS::CloudWatch::Dashboard").values()
    body = dashboard["Properties"]["DashboardBody"]
    parts = body["Fn::Join"][1] if isinstance(body, dict) else [body]
    return "".join(p if isinstance(p, str) else "<token>" for p in parts)


def test_the_dashboard_has_rows_for_serving_model_data_and_pipeline(full) -> None:
    body = _dashboard_body(full)
    headers = [body.index(f"## {row}") for row in ("Serving", "Model", "Data", "Pipeline")]

    assert headers == sorted(headers)
    for metric in (
        m.QUALITY_AUC,
        m.DRIFT_MAX_PSI,
        m.PREDICTION_DRIFT_PSI,
        m.SERVING_FALLBACKS,
        m.HEALTH_CHECK_SUCCESS,
        "5XXError",
        "ExecutionsFailed",
        "Live alias duration",
    ):
        assert metric in body, metric
    assert m.DRIFT_FEATURE_PSI in body and "SEARCH(" in body


@pytest.mark.parametrize("variant", ["full", "minimal"])
def test_cdk_nag_reports_no_unacknowledged_finding(request, variant) -> None:
    synth: Synthesized = request.getfixturevalue(variant)

    assert synth.violations() == []


def test_cfn_lint_finds_nothing_but_cdks_redundant_depends_on(full) -> None:
    from cfnlint.api import ManualArgs, lint

    template = (full.outdir / "MonitoringTest.template.json").read_text()
    matches = lint(template, config=ManualArgs(regions=[REGION], ignore_checks=["W3005"]))

    assert [str(match) for match in matches] == []
