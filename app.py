#!/usr/bin/env python3
"""CDK entry point: cdk.json context -> typed settings -> stacks.

`npx cdk synth` runs this file (cdk.json "app"); `-c stage=prod` selects the prod overrides.
Synth makes no AWS calls and needs no credentials: the stacks are environment-agnostic unless
the context names an account or region.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from stacks.settings import DeploySettings
from stacks.shipml_stack import ShipmlStack


def build_app(*, context: Mapping[str, Any] | None = None, outdir: str | None = None) -> cdk.App:
    """Build the app with its stack and cdk-nag's AWS Solutions checks.

    `context` is for tests (the CDK CLI passes cdk.json and `-c` itself); `outdir` defaults to
    what the CLI asks for. A cdk-nag finding fails `synth()` unless it is acknowledged, with a
    reason, on the construct where it occurs:
    `cdk.Validations.of(construct).acknowledge(cdk.Acknowledgment(id="AwsSolutions-S1", reason=...))`.
    """
    app = cdk.App(context=dict(context) if context is not None else None, outdir=outdir)
    settings = DeploySettings.from_node(app.node)
    ShipmlStack(app, settings=settings)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app


def main() -> None:
    """Synthesize the cloud assembly for the CDK CLI."""
    build_app().synth()


if __name__ == "__main__":
    main()
