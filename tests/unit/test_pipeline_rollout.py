"""The AWS deploy step against botocore's Stubber: the exact Lambda and CodeDeploy requests, in order."""

from __future__ import annotations

import hashlib
import json

import boto3
import pytest
from botocore.stub import Stubber

from functions.pipeline import check_rollout as check_handler
from functions.pipeline import start_rollout as start_handler
from shipml.pipeline.environment import PipelineEnvironment
from shipml.pipeline.models import GateSettings, Rollout, RolloutFailed
from shipml.pipeline.rollout import ServingTarget, appspec, check_rollout, start_rollout
from shipml.settings import Settings

TARGET = ServingTarget(
    function_name="shipml-fraud-dev-serving",
    alias="live",
    application="serving-app",
    deployment_group="serving-dg",
)


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    lambda_client, codedeploy = boto3.client("lambda"), boto3.client("codedeploy")
    with Stubber(lambda_client) as lam, Stubber(codedeploy) as deploy:
        yield lambda_client, codedeploy, lam, deploy
        lam.assert_no_pending_responses()
        deploy.assert_no_pending_responses()


def _config(revision: str, status: str = "Successful", variables: dict | None = None) -> dict:
    return {
        "FunctionName": TARGET.function_name,
        "RevisionId": revision,
        "LastUpdateStatus": status,
        "Environment": {"Variables": variables or {"SHIPML_ROOT": "/tmp", "SHIPML_MODEL_VERSION": "3"}},
    }


def _stub_publication(lam: Stubber, new_version: str, *, pending_first: bool = False) -> None:
    lam.add_response(
        "get_alias",
        {"FunctionVersion": "7", "Name": "live"},
        {"FunctionName": TARGET.function_name, "Name": "live"},
    )
    lam.add_response("get_function_configuration", _config("r1"), {"FunctionName": TARGET.function_name})
    lam.add_response(
        "update_function_configuration",
        {},
        {
            "FunctionName": TARGET.function_name,
            # The other variables are kept; only the model version changes.
            "Environment": {"Variables": {"SHIPML_ROOT": "/tmp", "SHIPML_MODEL_VERSION": "4"}},
        },
    )
    if pending_first:
        lam.add_response(
            "get_function_configuration", _config("r2", "InProgress"), {"FunctionName": TARGET.function_name}
        )
    lam.add_response("get_function_configuration", _config("r2"), {"FunctionName": TARGET.function_name})
    lam.add_response(
        "publish_version",
        {"Version": new_version},
        {"FunctionName": TARGET.function_name, "Description": "model version 4", "RevisionId": "r2"},
    )


def test_start_publishes_a_pinned_version_and_asks_codedeploy_to_shift_the_alias(clients) -> None:
    lambda_client, codedeploy, lam, deploy = clients
    _stub_publication(lam, "8", pending_first=True)
    content = appspec(TARGET, "7", "8")
    deploy.add_response(
        "create_deployment",
        {"deploymentId": "d-123"},
        {
            "applicationName": "serving-app",
            "deploymentGroupName": "serving-dg",
            "revision": {
                "revisionType": "AppSpecContent",
                "appSpecContent": {
                    "content": content,
                    "sha256": hashlib.sha256(content.encode()).hexdigest(),
                },
            },
            "description": "shipml: model version 4 (Lambda version 8)",
        },
    )
    sleeps: list[float] = []

    rollout = start_rollout(
        TARGET, 4, lambda_client=lambda_client, codedeploy_client=codedeploy, sleep=sleeps.append
    )

    assert (rollout.status, rollout.deployment_id) == ("InProgress", "d-123")
    assert (rollout.previous_function_version, rollout.function_version) == ("7", "8")
    assert sleeps == [2.0]  # waited once for the configuration update to finish
    properties = json.loads(content)["Resources"][0]["serving"]["Properties"]
    assert properties == {
        "Name": TARGET.function_name,
        "Alias": "live",
        "CurrentVersion": "7",
        "TargetVersion": "8",
    }


def test_nothing_to_shift_when_the_alias_already_serves_that_version(clients) -> None:
    lambda_client, codedeploy, lam, _ = clients
    _stub_publication(lam, "7")

    rollout = start_rollout(
        TARGET, 4, lambda_client=lambda_client, codedeploy_client=codedeploy, sleep=lambda s: None
    )

    assert rollout.status == "Succeeded" and rollout.deployment_id is None


def test_a_failed_configuration_update_stops_the_rollout(clients) -> None:
    lambda_client, codedeploy, lam, _ = clients
    lam.add_response(
        "get_alias", {"FunctionVersion": "7"}, {"FunctionName": TARGET.function_name, "Name": "live"}
    )
    lam.add_response("get_function_configuration", _config("r1"), {"FunctionName": TARGET.function_name})
    lam.add_response("update_function_configuration", {}, None)
    failed = {**_config("r2", "Failed"), "LastUpdateStatusReason": "KMS access denied"}
    lam.add_response("get_function_configuration", failed, {"FunctionName": TARGET.function_name})

    with pytest.raises(RolloutFailed, match="KMS access denied"):
        start_rollout(
            TARGET, 4, lambda_client=lambda_client, codedeploy_client=codedeploy, sleep=lambda s: None
        )


@pytest.mark.parametrize(
    ("info", "status", "detail"),
    [
        ({"status": "InProgress"}, "InProgress", "is InProgress"),
        ({"status": "Succeeded"}, "Succeeded", "succeeded"),
        (
            {
                "status": "Stopped",
                "errorInformation": {"code": "ALARM_ACTIVE", "message": "alarm serving-errors fired"},
                "rollbackInfo": {"rollbackDeploymentId": "d-124"},
            },
            "Failed",
            "stopped and was rolled back: alarm serving-errors fired",
        ),
    ],
)
def test_check_maps_codedeploy_status(clients, info: dict, status: str, detail: str) -> None:
    _, codedeploy, _, deploy = clients
    deploy.add_response("get_deployment", {"deploymentInfo": info}, {"deploymentId": "d-123"})
    rollout = Rollout(status="InProgress", version=4, deployment_id="d-123")

    checked = check_rollout(rollout, codedeploy_client=codedeploy)

    assert checked.status == status and detail in checked.detail


def _aws_env(lambda_client=None, codedeploy=None) -> PipelineEnvironment:
    env = PipelineEnvironment(
        settings=Settings(backend="aws", artifact_bucket="bucket"),
        stage="dev",
        gate=GateSettings(),
        serving=TARGET,
    )
    env.clients.update({k: v for k, v in (("lambda", lambda_client), ("codedeploy", codedeploy)) if v})
    return env


def test_handlers_use_the_injected_clients(clients) -> None:
    lambda_client, codedeploy, lam, deploy = clients
    _stub_publication(lam, "8")
    deploy.add_response("create_deployment", {"deploymentId": "d-9"}, None)
    deploy.add_response(
        "get_deployment", {"deploymentInfo": {"status": "Succeeded"}}, {"deploymentId": "d-9"}
    )
    env = _aws_env(lambda_client, codedeploy)

    started = start_handler.handler({"version": 4}, None, env=env)
    checked = check_handler.handler({"rollout": started}, None, env=env)

    assert started["status"] == "InProgress" and checked["status"] == "Succeeded"


def test_without_a_serving_target_there_is_nothing_to_shift(tmp_path) -> None:
    env = PipelineEnvironment(settings=Settings(root=tmp_path), stage="local", gate=GateSettings())

    result = start_handler.handler({"version": 2}, None, env=env)

    assert result["status"] == "Succeeded" and result["deployment_id"] is None
