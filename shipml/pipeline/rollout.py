"""Deploy on AWS: shift the serving function's `live` alias to a new model version through CodeDeploy.

1. `start_rollout`: set the function's SHIPML_MODEL_VERSION to the new version (its other
   variables kept), wait for the update, publish a Lambda version (so the version is pinned to
   that model), and ask CodeDeploy to shift the `live` alias from the current Lambda version to the
   new one. The deployment group's config (a canary) and alarms decide the pace and the rollback.
2. `check_rollout`: where the CodeDeploy deployment stands. The state machine polls it in a Wait
   loop (no Lambda sits waiting for a canary).
3. Only when it Succeeded does the pipeline promote (SSM live parameter + registry); a rollback
   leaves the registry as it was and notifies.

Clients are injected (boto3 `lambda` and `codedeploy`); tests use botocore's Stubber.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shipml.pipeline.models import Rollout, RolloutFailed

MODEL_VERSION_VARIABLE = "SHIPML_MODEL_VERSION"
_UPDATE_POLLS = 60
_UPDATE_POLL_SECONDS = 2.0


class ServingTarget(BaseModel):
    """The serving function, its alias, and the CodeDeploy application/group that shifts the alias."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    function_name: str = Field(min_length=1)
    alias: str = "live"
    application: str = Field(min_length=1)
    deployment_group: str = Field(min_length=1)


def _wait_for_update(client: Any, function_name: str, sleep: Callable[[float], None]) -> dict[str, Any]:
    for _ in range(_UPDATE_POLLS):
        config = client.get_function_configuration(FunctionName=function_name)
        status = config.get("LastUpdateStatus", "Successful")
        if status == "Successful":
            return config
        if status == "Failed":
            raise RolloutFailed(
                f"updating {function_name} failed: {config.get('LastUpdateStatusReason', 'no reason given')}"
            )
        sleep(_UPDATE_POLL_SECONDS)
    raise RolloutFailed(
        f"updating {function_name} did not finish in {_UPDATE_POLLS * _UPDATE_POLL_SECONDS:.0f} s"
    )


def appspec(target: ServingTarget, current_version: str, new_version: str) -> str:
    """The AppSpec that shifts `target.alias` from `current_version` to `new_version`."""
    return json.dumps(
        {
            "version": 0.0,
            "Resources": [
                {
                    "serving": {
                        "Type": "AWS::Lambda::Function",
                        "Properties": {
                            "Name": target.function_name,
                            "Alias": target.alias,
                            "CurrentVersion": current_version,
                            "TargetVersion": new_version,
                        },
                    }
                }
            ],
        },
        sort_keys=True,
    )


def start_rollout(
    target: ServingTarget,
    model_version: int,
    *,
    lambda_client: Any,
    codedeploy_client: Any,
    sleep: Callable[[float], None] = time.sleep,
) -> Rollout:
    """Publish a Lambda version pinned to `model_version` and start shifting the alias to it."""
    current = lambda_client.get_alias(FunctionName=target.function_name, Name=target.alias)["FunctionVersion"]
    config = _wait_for_update(lambda_client, target.function_name, sleep)
    variables = dict((config.get("Environment") or {}).get("Variables") or {})
    variables[MODEL_VERSION_VARIABLE] = str(model_version)
    lambda_client.update_function_configuration(
        FunctionName=target.function_name, Environment={"Variables": variables}
    )
    updated = _wait_for_update(lambda_client, target.function_name, sleep)
    published = lambda_client.publish_version(
        FunctionName=target.function_name,
        Description=f"model version {model_version}",
        # Publish exactly the configuration just written, not a later concurrent edit.
        RevisionId=updated["RevisionId"],
    )
    new = published["Version"]
    if new == current:
        return Rollout(
            status="Succeeded",
            version=model_version,
            function_version=new,
            previous_function_version=current,
            detail=f"{target.alias} already serves Lambda version {new}",
        )
    content = appspec(target, current, new)
    deployment = codedeploy_client.create_deployment(
        applicationName=target.application,
        deploymentGroupName=target.deployment_group,
        revision={
            "revisionType": "AppSpecContent",
            "appSpecContent": {"content": content, "sha256": hashlib.sha256(content.encode()).hexdigest()},
        },
        description=f"shipml: model version {model_version} (Lambda version {new})",
    )
    return Rollout(
        status="InProgress",
        version=model_version,
        deployment_id=deployment["deploymentId"],
        function_version=new,
        previous_function_version=current,
        detail=f"shifting {target.function_name}:{target.alias} from version {current} to {new}",
    )


def check_rollout(rollout: Rollout, *, codedeploy_client: Any) -> Rollout:
    """The rollout's status now: InProgress, Succeeded, or Failed (rolled back / stopped)."""
    if rollout.status != "InProgress" or rollout.deployment_id is None:
        return rollout
    info = codedeploy_client.get_deployment(deploymentId=rollout.deployment_id)["deploymentInfo"]
    status = info.get("status")
    if status == "Succeeded":
        return rollout.model_copy(
            update={"status": "Succeeded", "detail": f"deployment {rollout.deployment_id} succeeded"}
        )
    if status in ("Failed", "Stopped"):
        error = info.get("errorInformation") or {}
        reason = error.get("message") or error.get("code") or status
        rolled_back = (
            " and was rolled back" if (info.get("rollbackInfo") or {}).get("rollbackDeploymentId") else ""
        )
        return rollout.model_copy(
            update={
                "status": "Failed",
                "detail": f"deployment {rollout.deployment_id} {status.lower()}{rolled_back}: {reason}",
            }
        )
    return rollout.model_copy(update={"detail": f"deployment {rollout.deployment_id} is {status}"})


def local_rollout(model_version: int) -> Rollout:
    """Locally there is no function alias to shift: servers follow the registry's `live` alias."""
    return Rollout(
        status="Succeeded",
        version=model_version,
        detail="no serving function to shift; serving follows the registry's live alias",
    )
