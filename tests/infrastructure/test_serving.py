"""Real-time inference as app.py synthesizes it: function, bundle, alias and canary, API, table, capture.

`dev` and `prod` (conftest) synthesize with the real bundle; the variants below skip bundling
(`aws:cdk:bundling-stacks: []`, as `cdk synth --exclusively` does for other stacks) because they
only read the template.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Match
from cfnlint.api import ManualArgs, lint
from constructs import Construct

from shipml.backends.aws import online as aws_online
from stacks import constants, lambda_bundle

from .conftest import SynthesizedApp

NO_BUNDLING = {"aws:cdk:bundling-stacks": []}
CFN_LINT_IGNORED = ["W3005"]


@pytest.fixture(scope="module")
def api_key_variant(synth_app: Callable[..., SynthesizedApp]) -> SynthesizedApp:
    return synth_app({**NO_BUNDLING, "api_auth": "api_key", "api_quota_per_day": 10000})


@pytest.fixture(scope="module")
def untraced_variant(synth_app: Callable[..., SynthesizedApp]) -> SynthesizedApp:
    return synth_app({**NO_BUNDLING, "tracing": False})


@pytest.fixture(scope="module")
def snapstart_x86_variant(synth_app: Callable[..., SynthesizedApp]) -> SynthesizedApp:
    return synth_app({**NO_BUNDLING, "snapstart": True, "lambda_architecture": "x86_64"})


def _logical_id(synthesized: SynthesizedApp, construct: Construct) -> str:
    return synthesized.stack.resolve(synthesized.stack.get_logical_id(construct.node.default_child))


def _resources(synthesized: SynthesizedApp, resource_type: str) -> dict[str, dict[str, Any]]:
    return synthesized.template.find_resources(resource_type)


def _only(synthesized: SynthesizedApp, resource_type: str) -> dict[str, Any]:
    (resource,) = _resources(synthesized, resource_type).values()
    return resource


def _function(synthesized: SynthesizedApp) -> dict[str, Any]:
    function_id = _logical_id(synthesized, synthesized.stack.serving.function)
    return synthesized.template.to_json()["Resources"][function_id]


def _key_arn(synthesized: SynthesizedApp) -> dict[str, Any]:
    return {"Fn::GetAtt": [_logical_id(synthesized, synthesized.stack.foundation.key), "Arn"]}


def _statements_of_role(synthesized: SynthesizedApp, role: Construct) -> list[dict[str, Any]]:
    role_id = _logical_id(synthesized, role)
    return [
        statement
        for policy in _resources(synthesized, "AWS::IAM::Policy").values()
        if {"Ref": role_id} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def _actions(statement: dict[str, Any]) -> list[str]:
    actions = statement["Action"]
    return [actions] if isinstance(actions, str) else actions


def _resources_of(statement: dict[str, Any]) -> list[Any]:
    resources = statement["Resource"]
    return resources if isinstance(resources, list) else [resources]


# --- the function and its bundle -------------------------------------------------------------


def test_function_runs_python_312_on_the_configured_architecture(
    dev: SynthesizedApp, snapstart_x86_variant: SynthesizedApp
) -> None:
    properties = _function(dev)["Properties"]

    assert properties["Runtime"] == "python3.12"
    assert properties["Architectures"] == ["arm64"]
    assert properties["Handler"] == lambda_bundle.HANDLER == "functions/inference/handler.handler"
    assert properties["MemorySize"] == 1024 and properties["Timeout"] == 10
    assert _function(snapstart_x86_variant)["Properties"]["Architectures"] == ["x86_64"]


def test_bundle_is_the_real_one_under_budget_without_heavy_packages(dev: SynthesizedApp) -> None:
    # Given the asset that dev's synth bundled (the template names it by its hash)
    s3_key = _function(dev)["Properties"]["Code"]["S3Key"]
    bundle = dev.outdir / f"asset.{s3_key.removesuffix('.zip')}"
    assert bundle.is_dir(), f"no staged bundle at {bundle}"

    size_mb = lambda_bundle.tree_bytes(bundle) / 2**20
    print(f"dev bundle (arm64): {size_mb:.1f} MB unzipped")

    # Then it is what Lambda will run: the handler, the library, the contract, aarch64 cp312 wheels
    assert (bundle / "functions" / "inference" / "handler.py").is_file()
    assert (bundle / "shipml" / "serving" / "app.py").is_file()
    assert (bundle / "examples" / "fraud" / "contract.yaml").is_file()
    extensions = [path.name for path in bundle.glob("numpy/_core/*.so")]
    assert extensions and all("cpython-312-aarch64-linux-gnu" in name for name in extensions)
    # And it is lean: no heavy package, no test suites, under the budget
    assert lambda_bundle.heavy_packages(bundle) == []
    assert not list(bundle.glob("numpy/**/tests"))
    assert size_mb <= dev.stack.settings.lambda_bundle_budget_mb


def test_synth_fails_when_the_bundle_is_over_budget(synth_app: Callable[..., SynthesizedApp]) -> None:
    with pytest.raises(RuntimeError, match=r"over the budget of 20 MB \(setting 'lambda_bundle_budget_mb'\)"):
        synth_app({"lambda_bundle_budget_mb": 20})


def test_environment_pins_the_model_through_an_ssm_dynamic_reference(dev: SynthesizedApp) -> None:
    serving = dev.stack.serving
    function = _function(dev)
    variables = function["Properties"]["Environment"]["Variables"]

    assert variables["SHIPML_MODEL_VERSION"] == "{{resolve:ssm:/shipml/fraud/dev/live-model-version}}"
    assert variables["SHIPML_LIVE_PARAMETER"] == {"Ref": _logical_id(dev, serving.live_parameter)}
    # The parameter exists before CloudFormation resolves the reference.
    assert _logical_id(dev, serving.live_parameter) in function["DependsOn"]
    assert variables["SHIPML_BACKEND"] == "aws"
    assert variables["SHIPML_MODEL"] == "fraud"
    assert variables["SHIPML_CONTRACT"] == "examples/fraud/contract.yaml"
    assert variables["SHIPML_MAX_BODY_BYTES"] == "262144"
    assert variables["SHIPML_ARTIFACT_BUCKET"] == {"Ref": _logical_id(dev, dev.stack.foundation.bucket)}
    assert variables["SHIPML_ONLINE_TABLE"] == {"Ref": _logical_id(dev, dev.stack.online_features.table)}
    assert variables["SHIPML_CAPTURE_STREAM"] == {
        "Ref": dev.stack.resolve(dev.stack.capture.stream.logical_id)
    }
    # The hash key is named, never carried: the variable holds the secret's ARN.
    assert variables["SHIPML_HASH_KEY_SECRET"] == {"Ref": _logical_id(dev, serving.hash_key_secret)}
    assert {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE"} <= set(variables)


def test_live_parameter_starts_at_zero(dev: SynthesizedApp) -> None:
    dev.template.has_resource_properties(
        "AWS::SSM::Parameter",
        {"Name": constants.live_parameter_name("fraud", "dev"), "Type": "String", "Value": "0"},
    )


def test_hash_key_secret_is_generated_and_encrypted_with_the_stack_key(dev: SynthesizedApp) -> None:
    secret = _only(dev, "AWS::SecretsManager::Secret")["Properties"]

    assert secret["KmsKeyId"] == _key_arn(dev)
    assert secret["GenerateSecretString"]["PasswordLength"] == 64
    assert "SecretString" not in secret


# --- the live alias, the canary and its alarms ---------------------------------------------------


def test_live_alias_moves_through_a_codedeploy_canary(dev: SynthesizedApp) -> None:
    serving = dev.stack.serving
    alias = _only(dev, "AWS::Lambda::Alias")

    assert alias["Properties"]["Name"] == "live"
    assert alias["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"] == {
        "ApplicationName": {"Ref": _logical_id(dev, serving.application)},
        "DeploymentGroupName": {"Ref": _logical_id(dev, serving.deployment_group)},
    }
    dev.template.has_resource_properties(
        "AWS::CodeDeploy::DeploymentConfig",
        {
            "ComputePlatform": "Lambda",
            "TrafficRoutingConfig": {
                "Type": "TimeBasedCanary",
                "TimeBasedCanary": {"CanaryInterval": 5, "CanaryPercentage": 10},
            },
        },
    )


def test_deployment_rolls_back_on_the_error_and_latency_alarms(dev: SynthesizedApp) -> None:
    serving = dev.stack.serving
    group = _only(dev, "AWS::CodeDeploy::DeploymentGroup")["Properties"]

    assert group["AlarmConfiguration"]["Enabled"] is True
    assert group["AlarmConfiguration"]["Alarms"] == [
        {"Name": {"Ref": _logical_id(dev, serving.error_alarm)}},
        {"Name": {"Ref": _logical_id(dev, serving.latency_alarm)}},
    ]
    assert group["AutoRollbackConfiguration"]["Enabled"] is True
    assert set(group["AutoRollbackConfiguration"]["Events"]) == {
        "DEPLOYMENT_FAILURE",
        "DEPLOYMENT_STOP_ON_ALARM",
        "DEPLOYMENT_STOP_ON_REQUEST",
    }


def test_alarms_watch_the_alias_and_notify_the_topic(dev: SynthesizedApp) -> None:
    topic = {"Ref": _logical_id(dev, dev.stack.foundation.topic)}
    alias_dimension = [
        {"Name": "FunctionName", "Value": {"Ref": _logical_id(dev, dev.stack.serving.function)}},
        {"Name": "Resource", "Value": Match.any_value()},
    ]
    dev.template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "MetricName": "Errors",
            "Statistic": "Sum",
            "Period": 60,
            "Threshold": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "Dimensions": alias_dimension,
            "AlarmActions": [topic],
        },
    )
    dev.template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "MetricName": "Duration",
            "ExtendedStatistic": "p99",
            "Threshold": 1000,
            "EvaluationPeriods": 2,
            "DatapointsToAlarm": 2,
            "Dimensions": alias_dimension,
            "AlarmActions": [topic],
        },
    )
    resource_dimension = next(
        dimension
        for alarm in _resources(dev, "AWS::CloudWatch::Alarm").values()
        for dimension in alarm["Properties"]["Dimensions"]
        if dimension["Name"] == "Resource"
    )
    assert json.dumps(resource_dimension["Value"]).endswith(':live"]]}')


def test_dev_has_no_provisioned_concurrency_or_snapstart(dev: SynthesizedApp) -> None:
    assert "ProvisionedConcurrencyConfig" not in _only(dev, "AWS::Lambda::Alias")["Properties"]
    assert "SnapStart" not in _function(dev)["Properties"]
    dev.template.resource_count_is("AWS::ApplicationAutoScaling::ScalableTarget", 0)


def test_prod_scales_provisioned_concurrency_between_min_and_max(prod: SynthesizedApp) -> None:
    alias = _only(prod, "AWS::Lambda::Alias")["Properties"]

    assert alias["ProvisionedConcurrencyConfig"] == {"ProvisionedConcurrentExecutions": 2}
    assert _function(prod)["Properties"]["ReservedConcurrentExecutions"] == 100
    prod.template.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalableTarget",
        {"MinCapacity": 2, "MaxCapacity": 20, "ScalableDimension": "lambda:function:ProvisionedConcurrency"},
    )
    prod.template.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalingPolicy",
        {
            "PolicyType": "TargetTrackingScaling",
            "TargetTrackingScalingPolicyConfiguration": Match.object_like(
                {
                    "TargetValue": 0.7,
                    "PredefinedMetricSpecification": {
                        "PredefinedMetricType": "LambdaProvisionedConcurrencyUtilization"
                    },
                }
            ),
        },
    )


def test_snapstart_applies_to_published_versions(snapstart_x86_variant: SynthesizedApp) -> None:
    properties = _function(snapstart_x86_variant)["Properties"]

    assert properties["SnapStart"] == {"ApplyOn": "PublishedVersions"}


def test_tracing_is_active_end_to_end_by_default_and_off_by_setting(
    dev: SynthesizedApp, untraced_variant: SynthesizedApp
) -> None:
    # The Powertools Tracer in the handler only records when Lambda traces the function; the API
    # stage starts the trace. Off, the function is told so and never imports the X-Ray SDK.
    traced = _function(dev)["Properties"]
    assert traced["TracingConfig"] == {"Mode": "Active"}
    assert "POWERTOOLS_TRACE_DISABLED" not in traced["Environment"]["Variables"]
    assert _only(dev, "AWS::ApiGateway::Stage")["Properties"]["TracingEnabled"] is True
    role_policies = json.dumps(
        [
            p["Properties"]["PolicyDocument"]
            for p in _resources(dev, "AWS::IAM::Policy").values()
            if {"Ref": _logical_id(dev, dev.stack.serving.role)} in p["Properties"]["Roles"]
        ]
    )
    assert "xray:PutTraceSegments" in role_policies

    untraced = _function(untraced_variant)["Properties"]
    assert "TracingConfig" not in untraced
    assert untraced["Environment"]["Variables"]["POWERTOOLS_TRACE_DISABLED"] == "true"
    assert _only(untraced_variant, "AWS::ApiGateway::Stage")["Properties"].get("TracingEnabled") in (
        None,
        False,
    )


# --- the API -------------------------------------------------------------------------------------


def _routes(synthesized: SynthesizedApp) -> dict[tuple[str, str], dict[str, Any]]:
    """(path, method) -> the method's properties, with paths rebuilt from the resource tree."""
    resources = _resources(synthesized, "AWS::ApiGateway::Resource")
    api_id = _logical_id(synthesized, synthesized.stack.serving_api.api)

    def path_of(reference: dict[str, Any]) -> str:
        if reference == {"Fn::GetAtt": [api_id, "RootResourceId"]}:
            return ""
        properties = resources[reference["Ref"]]["Properties"]
        return f"{path_of(properties['ParentId'])}/{properties['PathPart']}"

    return {
        (path_of(method["Properties"]["ResourceId"]), method["Properties"]["HttpMethod"]): method[
            "Properties"
        ]
        for method in _resources(synthesized, "AWS::ApiGateway::Method").values()
    }


def test_api_exposes_exactly_the_public_routes(dev: SynthesizedApp) -> None:
    expected = {(path, method) for path, methods in constants.API_ROUTES.items() for method in methods}

    assert set(_routes(dev)) == expected
    dev.template.has_resource_properties(
        "AWS::ApiGateway::RestApi", {"EndpointConfiguration": {"Types": ["REGIONAL"]}}
    )


def test_every_method_requires_iam_by_default(dev: SynthesizedApp) -> None:
    routes = _routes(dev)

    assert routes and all(method["AuthorizationType"] == "AWS_IAM" for method in routes.values())
    # Each method invokes the live alias, never $LATEST.
    alias_arn = dev.stack.resolve(dev.stack.serving.alias.function_arn)
    for method in routes.values():
        assert method["Integration"]["Type"] == "AWS_PROXY"
        assert json.dumps(alias_arn) in json.dumps(method["Integration"]["Uri"])


def test_api_key_mode_requires_a_key_on_every_method_with_a_usage_plan(
    api_key_variant: SynthesizedApp,
) -> None:
    routes = _routes(api_key_variant)

    assert routes and all(method["ApiKeyRequired"] is True for method in routes.values())
    api_key_variant.template.has_resource_properties(
        "AWS::ApiGateway::UsagePlan",
        {
            "Throttle": {"RateLimit": 50, "BurstLimit": 100},
            "Quota": {"Limit": 10000, "Period": "DAY"},
            "ApiStages": [Match.object_like({"Stage": Match.any_value()})],
        },
    )
    api_key_variant.template.resource_count_is("AWS::ApiGateway::ApiKey", 1)
    api_key_variant.template.resource_count_is("AWS::ApiGateway::UsagePlanKey", 1)
    assert constants.OUTPUT_API_KEY_ID in api_key_variant.template.to_json()["Outputs"]


def test_stage_throttles_and_writes_json_access_logs(dev: SynthesizedApp, prod: SynthesizedApp) -> None:
    logs_id = _logical_id(dev, dev.stack.serving_api.access_logs)
    stage = _only(dev, "AWS::ApiGateway::Stage")["Properties"]

    assert stage["StageName"] == constants.API_STAGE
    (settings,) = stage["MethodSettings"]
    assert (settings["ResourcePath"], settings["HttpMethod"]) == ("/*", "*")
    assert (settings["ThrottlingRateLimit"], settings["ThrottlingBurstLimit"]) == (50, 100)
    assert settings["DataTraceEnabled"] is False and settings["MetricsEnabled"] is True
    assert {"Ref": logs_id} in stage["AccessLogSetting"]["DestinationArn"]["Fn::Join"][1]
    assert json.loads(stage["AccessLogSetting"]["Format"])["status"] == "$context.status"
    (prod_settings,) = _only(prod, "AWS::ApiGateway::Stage")["Properties"]["MethodSettings"]
    assert (prod_settings["ThrottlingRateLimit"], prod_settings["ThrottlingBurstLimit"]) == (500, 1000)


def test_lambda_permissions_name_the_api_stage_and_method(dev: SynthesizedApp) -> None:
    permissions = _resources(dev, "AWS::Lambda::Permission").values()
    stage = {"Ref": _logical_id(dev, dev.stack.serving_api.api.deployment_stage)}
    expected = {f"/{method}{path}" for path, methods in constants.API_ROUTES.items() for method in methods}

    # One permission per route, each scoped to this API's stage and that method and path: no
    # test-invoke permission, no wildcard stage or method.
    scopes = set()
    for permission in permissions:
        if permission["Properties"]["Principal"] != "apigateway.amazonaws.com":
            continue  # scheduled jobs (EventBridge) invoke other functions; this test is about the API

        parts = permission["Properties"]["SourceArn"]["Fn::Join"][1]
        assert stage in parts
        scopes.add(parts[-1])
    assert scopes == expected


# --- online features and capture -----------------------------------------------------------------


def test_online_table_is_on_demand_kms_encrypted_with_point_in_time_recovery(dev: SynthesizedApp) -> None:
    table = _only(dev, "AWS::DynamoDB::Table")["Properties"]

    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["SSESpecification"] == {
        "SSEEnabled": True,
        "SSEType": "KMS",
        "KMSMasterKeyId": _key_arn(dev),
    }
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    # The serving adapter and the table agree on the key.
    assert table["KeySchema"] == [
        {"AttributeName": aws_online.PARTITION_KEY, "KeyType": "HASH"},
        {"AttributeName": aws_online.SORT_KEY, "KeyType": "RANGE"},
    ]
    assert (aws_online.PARTITION_KEY, aws_online.SORT_KEY) == (
        constants.ONLINE_TABLE_PARTITION_KEY,
        constants.ONLINE_TABLE_SORT_KEY,
    )


def test_prod_table_is_protected(prod: SynthesizedApp) -> None:
    table = _only(prod, "AWS::DynamoDB::Table")

    assert table["Properties"]["DeletionProtectionEnabled"] is True
    assert table["DeletionPolicy"] == "Retain"


def test_capture_stream_is_kms_encrypted_and_delivers_to_the_data_bucket(dev: SynthesizedApp) -> None:
    stream = _only(dev, "AWS::KinesisFirehose::DeliveryStream")["Properties"]
    destination = stream["ExtendedS3DestinationConfiguration"]

    assert stream["DeliveryStreamType"] == "DirectPut"
    assert stream["DeliveryStreamEncryptionConfigurationInput"] == {
        "KeyType": "CUSTOMER_MANAGED_CMK",
        "KeyARN": _key_arn(dev),
    }
    assert destination["BucketARN"] == {"Fn::GetAtt": [_logical_id(dev, dev.stack.foundation.bucket), "Arn"]}
    assert destination["EncryptionConfiguration"] == {"KMSEncryptionConfig": {"AWSKMSKeyARN": _key_arn(dev)}}
    assert destination["Prefix"] == constants.CAPTURE_PREFIX
    assert destination["ErrorOutputPrefix"] == constants.CAPTURE_ERROR_PREFIX
    assert destination["BufferingHints"] == {"IntervalInSeconds": 60, "SizeInMBs": 5}
    assert destination["CompressionFormat"] == "GZIP"
    assert destination["CloudWatchLoggingOptions"]["Enabled"] is True


# --- least privilege -----------------------------------------------------------------------------


def test_function_role_holds_exactly_what_serving_needs(dev: SynthesizedApp) -> None:
    serving = dev.stack.serving
    statements = _statements_of_role(dev, serving.role)
    by_action = {action: statement for statement in statements for action in _actions(statement)}
    bucket_arn = {"Fn::GetAtt": [_logical_id(dev, dev.stack.foundation.bucket), "Arn"]}

    assert set(by_action) == {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "s3:GetObject",
        "kms:Decrypt",
        "dynamodb:BatchGetItem",
        "firehose:PutRecord",
        "firehose:PutRecordBatch",
        "ssm:GetParameter",
        "secretsmanager:GetSecretValue",
        "secretsmanager:DescribeSecret",
        # Active tracing (the `tracing` setting): X-Ray has no resource-level permissions for these.
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
    }
    assert all(statement["Effect"] == "Allow" for statement in statements)
    xray = [statement for statement in statements if any(a.startswith("xray:") for a in _actions(statement))]
    assert [set(_actions(statement)) for statement in xray] == [
        {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}
    ]
    statements = [statement for statement in statements if statement not in xray]
    assert _resources_of(by_action["s3:GetObject"]) == [{"Fn::Join": ["", [bucket_arn, "/models/*"]]}]
    assert _resources_of(by_action["kms:Decrypt"]) == [_key_arn(dev)]
    assert _resources_of(by_action["firehose:PutRecordBatch"]) == [
        {"Fn::GetAtt": [dev.stack.resolve(dev.stack.capture.stream.logical_id), "Arn"]}
    ]
    assert "*" not in [resource for statement in statements for resource in _resources_of(statement)]
    # No managed policy: nothing beyond the statements above.
    role = dev.template.to_json()["Resources"][_logical_id(dev, serving.role)]["Properties"]
    assert "ManagedPolicyArns" not in role


def test_capture_role_writes_only_the_capture_prefixes(dev: SynthesizedApp) -> None:
    statements = _statements_of_role(dev, dev.stack.capture.role)
    actions = {action for statement in statements for action in _actions(statement)}
    put = next(statement for statement in statements if "s3:PutObject" in _actions(statement))
    bucket_arn = {"Fn::GetAtt": [_logical_id(dev, dev.stack.foundation.bucket), "Arn"]}

    assert not {action for action in actions if action.startswith(("s3:Delete", "s3:GetObject"))}
    assert sorted(map(json.dumps, _resources_of(put))) == sorted(
        json.dumps({"Fn::Join": ["", [bucket_arn, suffix]]}) for suffix in ("/capture/*", "/capture-errors/*")
    )
    trust = dev.template.to_json()["Resources"][_logical_id(dev, dev.stack.capture.role)]["Properties"]
    assert trust["AssumeRolePolicyDocument"]["Statement"][0]["Condition"] == {
        "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    }


# --- outputs, cdk-nag, cfn-lint ------------------------------------------------------------------


def test_outputs_name_what_the_pipeline_and_scripts_need(dev: SynthesizedApp) -> None:
    outputs = dev.template.to_json()["Outputs"]

    assert {
        constants.OUTPUT_API_URL,
        constants.OUTPUT_FUNCTION_NAME,
        constants.OUTPUT_LIVE_ALIAS,
        constants.OUTPUT_DEPLOYMENT_GROUP,
        constants.OUTPUT_LIVE_PARAMETER,
        constants.OUTPUT_ONLINE_TABLE,
        constants.OUTPUT_CAPTURE_STREAM,
    } <= set(outputs)
    assert constants.OUTPUT_API_KEY_ID not in outputs


def test_in_api_key_mode_the_health_check_reads_the_usage_plan_key(api_key_variant: SynthesizedApp) -> None:
    template = api_key_variant.template
    (key_id,) = template.find_resources("AWS::ApiGateway::ApiKey")
    checks = [
        props
        for props in (r["Properties"] for r in template.find_resources("AWS::Lambda::Function").values())
        if props["Handler"] == "functions.monitor.health.handler"
    ]
    (check,) = checks
    variables = check["Environment"]["Variables"]
    assert variables["SHIPML_HEALTH_AUTH"] == "api_key"
    assert variables["SHIPML_HEALTH_API_KEY_ID"] == {"Ref": key_id}
    role = check["Role"]["Fn::GetAtt"][0]
    statements = [
        statement
        for policy in template.find_resources("AWS::IAM::Policy").values()
        if {"Ref": role} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
    (read_key,) = [s for s in statements if s["Action"] == "apigateway:GET"]
    # Only this key, and only reading it.
    assert "Ref" in json.dumps(read_key["Resource"]) and key_id in json.dumps(read_key["Resource"])
    assert "/apikeys/" in json.dumps(read_key["Resource"]) and "*" not in json.dumps(read_key["Resource"])


@pytest.mark.parametrize("variant", ["api_key_variant", "snapstart_x86_variant"])
def test_cdk_nag_and_cfn_lint_are_clean_for_the_variants(
    request: pytest.FixtureRequest, variant: str
) -> None:
    synthesized: SynthesizedApp = request.getfixturevalue(variant)

    violations = [
        (violation["ruleName"], construct["constructPath"])
        for report in synthesized.validation_report["pluginReports"]
        for violation in report["violations"]
        for construct in violation["violatingConstructs"]
    ]
    matches = lint(
        json.dumps(synthesized.template.to_json()),
        config=ManualArgs(regions=["us-east-1", "eu-west-1"], ignore_checks=CFN_LINT_IGNORED),
    )

    assert violations == []
    assert [str(match) for match in matches] == []


def test_every_acknowledged_finding_is_specific_and_has_a_reason(dev: SynthesizedApp) -> None:
    acknowledged: dict[str, str] = {}
    for construct in dev.stack.node.find_all():
        for entry in construct.node.metadata:
            if entry.type == cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY:
                for finding, reason in entry.data.items():
                    acknowledged[f"{construct.node.path} {finding}"] = reason

    serving = {key: reason for key, reason in acknowledged.items() if "/Serving" in key or "/Capture/" in key}
    assert serving, "expected the serving constructs to acknowledge findings"
    for key, reason in acknowledged.items():
        assert "AwsSolutions-" in key or "NIST.800.53.R5-" in key, key
        assert len(reason) >= 40, f"{key}: the reason says too little: {reason!r}"
    # Wildcard findings are acknowledged one by one, never as a whole rule.
    assert not [key for key in serving if key.endswith("AwsSolutions-IAM5")]


def test_the_bundle_test_layout_matches_the_handler(tmp_path: Path) -> None:
    # The handler string resolves to a file of the bundle layout: Lambda imports
    # functions.inference.handler from /var/task and calls `handler`.
    module, _, function = lambda_bundle.HANDLER.rpartition(".")
    assert (Path(lambda_bundle.__file__).parents[1] / f"{module}.py").is_file()
    assert function == "handler"
    assert "functions/inference" in lambda_bundle.SOURCES
