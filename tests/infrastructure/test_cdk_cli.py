"""`cdk synth` through the pinned CLI, exactly as the Makefile runs it: offline, without AWS credentials."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO_ROOT

CDK_BIN = REPO_ROOT / "node_modules" / ".bin" / "cdk"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CDK_BIN.exists(),
        reason="CDK CLI not installed: run `npm ci` (make test does) to get node_modules/.bin/cdk",
    ),
]


def _offline_env() -> dict[str, str]:
    """The caller's environment without any AWS credentials or profile, and no instance metadata lookups."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    env["JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION"] = "20"
    # cdk.json runs `python3 app.py`: make that the interpreter running these tests.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _synth(outdir: Path, *context: str) -> dict:
    """Run `npx --no-install cdk synth --quiet` in the repo root and return the manifest it wrote."""
    args = ["npx", "--no-install", "cdk", "synth", "--quiet", "-o", str(outdir)]
    for item in context:
        args += ["-c", item]
    result = subprocess.run(
        args, cwd=REPO_ROOT, env=_offline_env(), capture_output=True, text=True, timeout=180, check=False
    )
    assert result.returncode == 0, f"cdk synth failed:\n{result.stdout}\n{result.stderr}"
    return json.loads((outdir / "manifest.json").read_text())


def _template(outdir: Path, stack_name: str) -> dict:
    return json.loads((outdir / f"{stack_name}.template.json").read_text())


@pytest.fixture(autouse=True)
def _npx_available() -> None:
    assert shutil.which("npx"), "npx not on PATH although node_modules/.bin/cdk exists"


def test_synth_writes_the_dev_stack_without_credentials(tmp_path: Path) -> None:
    manifest = _synth(tmp_path)

    stacks = [
        name
        for name, artifact in manifest["artifacts"].items()
        if artifact["type"] == "aws:cloudformation:stack"
    ]
    assert stacks == ["shipml-fraud-dev"]
    resource_types = {
        resource["Type"] for resource in _template(tmp_path, "shipml-fraud-dev")["Resources"].values()
    }
    assert {"AWS::KMS::Key", "AWS::S3::Bucket", "AWS::S3::BucketPolicy", "AWS::SNS::Topic"} <= resource_types
    # Environment-agnostic: deployable to whichever account and region the deployer's credentials name.
    assert manifest["artifacts"]["shipml-fraud-dev"]["environment"] == "aws://unknown-account/unknown-region"


def test_stage_prod_on_the_command_line_selects_the_prod_stack(tmp_path: Path) -> None:
    manifest = _synth(tmp_path, "stage=prod")

    assert "shipml-fraud-prod" in manifest["artifacts"]
    assert "shipml-fraud-dev" not in manifest["artifacts"]
    buckets = [
        resource
        for resource in _template(tmp_path, "shipml-fraud-prod")["Resources"].values()
        if resource["Type"] == "AWS::S3::Bucket"
    ]
    assert buckets and all(bucket["DeletionPolicy"] == "Retain" for bucket in buckets)
