"""Shared builders for the infrastructure tests: cdk.json's context and a synthesized app per stage.

Synthesis is the slow part (about 4 s for the first one in a process), so the synthesized apps are
module-scoped fixtures and every test reads from them.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Template

REPO_ROOT = Path(__file__).resolve().parents[2]
CDK_JSON = REPO_ROOT / "cdk.json"


@dataclass(frozen=True)
class SynthesizedApp:
    """One app synthesized through app.py, with its single stack and the cloud assembly on disk."""

    app: cdk.App
    stack: cdk.Stack
    template: Template
    outdir: Path

    @property
    def validation_report(self) -> dict[str, Any]:
        """The policy-validation report that cdk-nag writes into the cloud assembly."""
        return json.loads((self.outdir / "validation-report.json").read_text())


@pytest.fixture(scope="session")
def cdk_context() -> dict[str, Any]:
    """The "context" block of cdk.json, as the CDK CLI hands it to app.py."""
    return json.loads(CDK_JSON.read_text())["context"]


@pytest.fixture(scope="session")
def app_module() -> ModuleType:
    """app.py, the CDK entry point, loaded by path (it is a script at the repo root, not a package)."""
    spec = importlib.util.spec_from_file_location("shipml_cdk_app", REPO_ROOT / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def synth_app(
    app_module: ModuleType, cdk_context: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., SynthesizedApp]:
    """Build app.py's app with cdk.json's context plus `overrides` (like `-c key=value`) and synthesize it.

    `extend` may add constructs to the stack before synthesis (to prove that a check can fail).
    """

    def synth(
        overrides: Mapping[str, Any] | None = None, *, extend: Callable[[cdk.Stack], None] | None = None
    ) -> SynthesizedApp:
        outdir = tmp_path_factory.mktemp("cdk.out")
        app = app_module.build_app(context={**cdk_context, **(overrides or {})}, outdir=str(outdir))
        (stack,) = [child for child in app.node.children if isinstance(child, cdk.Stack)]
        if extend is not None:
            extend(stack)
        app.synth()
        return SynthesizedApp(app=app, stack=stack, template=Template.from_stack(stack), outdir=outdir)

    return synth


@pytest.fixture(scope="module")
def dev(synth_app: Callable[..., SynthesizedApp]) -> SynthesizedApp:
    """The default stage from cdk.json (dev)."""
    return synth_app()


@pytest.fixture(scope="module")
def prod(synth_app: Callable[..., SynthesizedApp]) -> SynthesizedApp:
    """The prod stage, as `-c stage=prod` selects it."""
    return synth_app({"stage": "prod"})
