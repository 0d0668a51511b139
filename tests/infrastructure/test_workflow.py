"""The GitHub Actions workflow users get: PRs are tested and synthesized; main deploys dev through OIDC,
smoke-tests it, then deploys prod behind the `production` environment's approval. No stored AWS keys."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = REPO_ROOT / ".github" / "workflows" / "shipml.yml"
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@(v\d+|[0-9a-f]{40})$")
LONG_LIVED_KEYS = re.compile(
    r"(?i)aws[_-]access[_-]key[_-]id|aws[_-]secret[_-]access[_-]key|aws[_-]session[_-]token|secrets\.AWS"
)


@pytest.fixture(scope="module")
def workflow() -> dict[Any, Any]:
    return yaml.safe_load(WORKFLOW.read_text())


def _triggers(workflow: dict[Any, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the bare key `on` as True.
    return workflow.get("on", workflow.get(True))


def _steps(workflow: dict[Any, Any], job: str) -> list[dict[str, Any]]:
    return workflow["jobs"][job]["steps"]


def _uses(step: dict[str, Any]) -> str:
    return step.get("uses", "").split("@")[0]


def _step_index(steps: list[dict[str, Any]], pattern: str) -> int:
    (index,) = [i for i, step in enumerate(steps) if re.search(pattern, step.get("run", ""))]
    return index


def _credentials_step(steps: list[dict[str, Any]]) -> dict[str, Any]:
    (step,) = [s for s in steps if _uses(s) == "aws-actions/configure-aws-credentials"]
    return step


def test_pull_requests_and_main_trigger_the_workflow(workflow: dict[Any, Any]) -> None:
    triggers = _triggers(workflow)

    assert "pull_request" in triggers
    assert triggers["push"]["branches"] == ["main"]
    assert workflow["permissions"] == {"contents": "read"}


def test_every_pull_request_runs_the_tests_synth_and_reviews(workflow: dict[Any, Any]) -> None:
    job = workflow["jobs"]["test"]
    steps = _steps(workflow, "test")

    assert "if" not in job  # on pull requests and on main alike
    setup_python = next(s for s in steps if _uses(s) == "actions/setup-python")
    setup_node = next(s for s in steps if _uses(s) == "actions/setup-node")
    assert setup_python["with"]["cache"] == "pip" and setup_node["with"]["cache"] == "npm"
    assert (
        workflow["env"]["PYTHON_VERSION"] == "3.11"
        and "PYTHON_VERSION" in setup_python["with"]["python-version"]
    )
    assert _step_index(steps, r"^make test$") < _step_index(steps, r"^make synth$")
    upload = next(s for s in steps if _uses(s) == "actions/upload-artifact")
    assert "cdk.out" in upload["with"]["path"]


def test_make_test_runs_lint_and_the_whole_suite_with_synth_cdk_nag_and_cfn_lint() -> None:
    # What the PR job relies on: `make test` lints, then runs every test, infrastructure included.
    makefile = (REPO_ROOT / "Makefile").read_text()
    recipe = re.search(r"^test:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe is not None
    assert "ruff check" in recipe.group(1) and "pytest" in recipe.group(1)
    security_review = (REPO_ROOT / "tests" / "infrastructure" / "test_security_review.py").read_text()
    assert "cfnlint" in security_review and "NIST.800.53.R5" in security_review


def test_main_deploys_dev_through_an_oidc_role_then_smoke_tests_it(workflow: dict[Any, Any]) -> None:
    job = workflow["jobs"]["deploy-dev"]
    steps = job["steps"]

    assert job["needs"] == "test"
    assert "refs/heads/main" in job["if"] and "push" in job["if"]
    assert job["permissions"]["id-token"] == "write"
    credentials = _credentials_step(steps)
    assert credentials["with"]["role-to-assume"] == "${{ vars.AWS_DEV_ROLE_ARN }}"
    assert steps.index(credentials) < _step_index(steps, r"cdk deploy")
    deploy = steps[_step_index(steps, r"cdk deploy")]["run"]
    assert "-c stage=dev" in deploy and "--require-approval never" in deploy
    assert _step_index(steps, r"cdk deploy") < _step_index(steps, r"scripts/smoke_test\.py")


def test_prod_deploys_after_dev_behind_the_production_environment(workflow: dict[Any, Any]) -> None:
    job = workflow["jobs"]["deploy-prod"]
    steps = job["steps"]

    assert job["needs"] == "deploy-dev"
    # Required reviewers on the `production` environment are the manual approval.
    assert job["environment"] == "production"
    assert job["permissions"]["id-token"] == "write"
    assert _credentials_step(steps)["with"]["role-to-assume"] == "${{ vars.AWS_PROD_ROLE_ARN }}"
    deploy = steps[_step_index(steps, r"cdk deploy")]["run"]
    assert "-c stage=prod" in deploy
    assert _step_index(steps, r"cdk deploy") < _step_index(steps, r"scripts/smoke_test\.py")


def test_only_the_deploy_jobs_may_request_an_oidc_token(workflow: dict[Any, Any]) -> None:
    with_token = {
        name for name, job in workflow["jobs"].items() if job.get("permissions", {}).get("id-token")
    }

    assert with_token == {"deploy-dev", "deploy-prod"}


def test_no_long_lived_aws_keys_are_referenced(workflow: dict[Any, Any]) -> None:
    assert LONG_LIVED_KEYS.search(WORKFLOW.read_text()) is None
    for job in ("deploy-dev", "deploy-prod"):
        inputs = _credentials_step(_steps(workflow, job))["with"]
        assert not {"aws-access-key-id", "aws-secret-access-key", "aws-session-token"} & set(inputs)


def test_every_action_is_pinned_by_major_tag_or_sha(workflow: dict[Any, Any]) -> None:
    used = [step["uses"] for job in workflow["jobs"].values() for step in job["steps"] if "uses" in step]

    assert used
    assert [action for action in used if not PINNED.match(action)] == []


def test_the_smoke_test_reads_the_stack_the_deploy_made(workflow: dict[Any, Any]) -> None:
    for job, stage in (("deploy-dev", "dev"), ("deploy-prod", "prod")):
        steps = _steps(workflow, job)
        stack_step = next(s for s in steps if s.get("id") == "stack")
        assert f"shipml-${{model}}-{stage}" in stack_step["run"]
        smoke = steps[_step_index(steps, r"scripts/smoke_test\.py")]["run"]
        assert "--stack-name ${{ steps.stack.outputs.name }}" in smoke
        assert "--region ${{ vars.AWS_REGION }}" in smoke
    assert (REPO_ROOT / "scripts" / "smoke_test.py").is_file()
