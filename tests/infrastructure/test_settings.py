"""DeploySettings: cdk.json context -> typed settings, stage overrides, errors that name the setting."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import aws_cdk as cdk
import pytest

from stacks.settings import DeploySettings, SettingsError


def _with(context: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**context, **changes}


def test_defaults_load_from_cdk_json(cdk_context: dict[str, Any]) -> None:
    settings = DeploySettings.from_context(cdk_context)

    assert settings.stage == "dev"
    assert settings.model_name == "fraud"
    assert settings.contract_path == PurePosixPath("examples/fraud/contract.yaml")
    assert settings.training_instance_type == "ml.g5.12xlarge"
    assert settings.training_instance_count == 2
    assert settings.retrain_schedule.startswith("cron(")
    assert settings.alarm_email == ""
    assert settings.stack_name == "shipml-fraud-dev"
    assert settings.tags == {"project": "shipml", "stage": "dev", "model": "fraud"}


def test_dev_destroys_and_is_environment_agnostic(cdk_context: dict[str, Any]) -> None:
    settings = DeploySettings.from_context(cdk_context)

    assert settings.cdk_removal_policy == cdk.RemovalPolicy.DESTROY
    assert settings.deletion_protection is False
    assert settings.env is None


def test_stage_prod_applies_the_prod_overrides(cdk_context: dict[str, Any]) -> None:
    settings = DeploySettings.from_context(_with(cdk_context, stage="prod"))

    assert settings.stack_name == "shipml-fraud-prod"
    assert settings.cdk_removal_policy == cdk.RemovalPolicy.RETAIN
    assert settings.deletion_protection is True
    # Values prod does not override come from the top level.
    assert settings.training_instance_count == cdk_context["training_instance_count"]


def test_command_line_strings_are_coerced(cdk_context: dict[str, Any]) -> None:
    # `-c key=value` always arrives as a string.
    settings = DeploySettings.from_context(
        _with(cdk_context, training_instance_count="4", account="123456789012", region="eu-west-1")
    )

    assert settings.training_instance_count == 4
    assert settings.env is not None
    assert (settings.env.account, settings.env.region) == ("123456789012", "eu-west-1")


def test_from_node_reads_the_app_context(cdk_context: dict[str, Any]) -> None:
    app = cdk.App(context=_with(cdk_context, stage="prod"))

    assert DeploySettings.from_node(app.node) == DeploySettings.from_context(_with(cdk_context, stage="prod"))


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("training_instance_count", 0),
        ("training_instance_count", "two"),
        ("training_instance_type", "g5.12xlarge"),
        ("training_max_runtime_s", 30 * 24 * 3600),
        ("retrain_schedule", "every monday"),
        ("model_name", "Fraud Model"),
        ("contract_path", "/etc/contract.yaml"),
        ("contract_path", "examples/fraud/contract.json"),
        ("alarm_email", "not-an-address"),
        ("account", "12345"),
    ],
)
def test_a_bad_value_names_the_setting(cdk_context: dict[str, Any], setting: str, value: Any) -> None:
    with pytest.raises(SettingsError, match=rf"setting '{setting}'"):
        DeploySettings.from_context(_with(cdk_context, **{setting: value}))


def test_a_missing_setting_is_named(cdk_context: dict[str, Any]) -> None:
    context = {key: value for key, value in cdk_context.items() if key != "model_name"}

    with pytest.raises(SettingsError, match=r"setting 'model_name': Field required"):
        DeploySettings.from_context(context)


def test_a_bad_stage_override_names_where_it_came_from(cdk_context: dict[str, Any]) -> None:
    stages = {**cdk_context["stages"], "prod": {**cdk_context["stages"]["prod"], "removal_policy": "keep"}}

    with pytest.raises(SettingsError, match=r"setting 'stages\.prod\.removal_policy'"):
        DeploySettings.from_context(_with(cdk_context, stage="prod", stages=stages))


def test_a_misspelt_stage_override_is_refused(cdk_context: dict[str, Any]) -> None:
    stages = {**cdk_context["stages"], "dev": {**cdk_context["stages"]["dev"], "use_spott": False}}

    with pytest.raises(SettingsError, match=r"setting 'stages\.dev\.use_spott'"):
        DeploySettings.from_context(_with(cdk_context, stages=stages))


def test_an_unknown_stage_is_refused_with_the_known_ones(cdk_context: dict[str, Any]) -> None:
    with pytest.raises(SettingsError, match=r"unknown stage 'qa'; cdk.json defines: dev, prod"):
        DeploySettings.from_context(_with(cdk_context, stage="qa"))
