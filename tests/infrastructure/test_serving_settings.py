"""Serving settings in DeploySettings: cdk.json values per stage, and the rules that span settings."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk import aws_logs as logs

from stacks.settings import DeploySettings, SettingsError


def _with(context: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**context, **changes}


def test_dev_serves_on_arm64_without_provisioned_concurrency(cdk_context: dict[str, Any]) -> None:
    settings = DeploySettings.from_context(cdk_context)

    assert settings.lambda_architecture == "arm64"
    assert settings.provisioned_concurrency is False
    assert settings.snapstart is False
    assert settings.api_auth == "iam"
    assert (settings.canary_percent, settings.canary_minutes) == (10, 5)
    assert settings.lambda_bundle_budget_mb == 150
    assert settings.cdk_log_retention == logs.RetentionDays.ONE_MONTH


def test_prod_keeps_provisioned_concurrency_within_reserved_concurrency(cdk_context: dict[str, Any]) -> None:
    settings = DeploySettings.from_context(_with(cdk_context, stage="prod"))

    assert settings.provisioned_concurrency is True
    assert 0 < settings.provisioned_concurrency_min <= settings.provisioned_concurrency_max
    assert settings.provisioned_concurrency_max <= settings.lambda_reserved_concurrency
    assert settings.cdk_log_retention == logs.RetentionDays.ONE_YEAR


def test_command_line_strings_are_coerced_for_serving(cdk_context: dict[str, Any]) -> None:
    settings = DeploySettings.from_context(
        _with(cdk_context, lambda_memory_mb="2048", snapstart="true", lambda_architecture="x86_64")
    )

    assert (settings.lambda_memory_mb, settings.snapstart, settings.lambda_architecture) == (
        2048,
        True,
        "x86_64",
    )


def test_snapstart_with_provisioned_concurrency_is_refused(cdk_context: dict[str, Any]) -> None:
    context = _with(cdk_context, snapstart=True, provisioned_concurrency_min=2, provisioned_concurrency_max=4)

    with pytest.raises(
        SettingsError, match=r"setting 'snapstart': .*SnapStart cannot be combined with provisioned"
    ):
        DeploySettings.from_context(context)


def test_snapstart_in_prod_names_the_stage_override(cdk_context: dict[str, Any]) -> None:
    stages = {**cdk_context["stages"], "prod": {**cdk_context["stages"]["prod"], "snapstart": True}}

    with pytest.raises(SettingsError, match=r"setting 'stages\.prod\.snapstart'"):
        DeploySettings.from_context(_with(cdk_context, stage="prod", stages=stages))


@pytest.mark.parametrize(
    ("changes", "setting", "rule"),
    [
        (
            {"provisioned_concurrency_min": 4, "provisioned_concurrency_max": 2},
            "provisioned_concurrency_max",
            "at least",
        ),
        (
            {"provisioned_concurrency_min": 0, "provisioned_concurrency_max": 3},
            "provisioned_concurrency_max",
            "must be 0",
        ),
        (
            {
                "lambda_reserved_concurrency": 5,
                "provisioned_concurrency_min": 2,
                "provisioned_concurrency_max": 10,
            },
            "provisioned_concurrency_max",
            "cannot exceed lambda_reserved_concurrency",
        ),
        ({"lambda_architecture": "arm"}, "lambda_architecture", "arm64"),
        ({"lambda_timeout_s": 60}, "lambda_timeout_s", "less than or equal to 29"),
        ({"lambda_bundle_budget_mb": 300}, "lambda_bundle_budget_mb", "250"),
        ({"log_retention_days": 31}, "log_retention_days", "retention periods"),
        ({"api_auth": "cognito"}, "api_auth", "iam"),
        ({"api_throttle_rate": 0}, "api_throttle_rate", "greater than 0"),
        ({"canary_percent": 100}, "canary_percent", "99"),
        ({"max_body_bytes": 10_000_000}, "max_body_bytes", "6000000"),
        ({"capture_buffer_seconds": 1200}, "capture_buffer_seconds", "900"),
    ],
)
def test_a_bad_serving_value_names_the_setting_and_rule(
    cdk_context: dict[str, Any], changes: dict[str, Any], setting: str, rule: str
) -> None:
    with pytest.raises(SettingsError, match=rf"setting '{setting}': .*{rule}"):
        DeploySettings.from_context(_with(cdk_context, **changes))
