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
from cdk_nag import AwsSolutionsChecks, NIST80053R5Checks

from stacks import nag
from stacks.settings import DeploySettings
from stacks.shipml_stack import ShipmlStack


def build_app(*, context: Mapping[str, Any] | None = None, outdir: str | None = None) -> cdk.App:
    """Build the app with its stack and two cdk-nag packs: AWS Solutions and NIST 800-53 rev 5.

    `context` is for tests (the CDK CLI passes cdk.json and `-c` itself); `outdir` defaults to
    what the CLI asks for. A finding of either pack fails `synth()` unless it is acknowledged, with
    a reason, on the construct where it occurs: `stacks.nag.acknowledge(construct, finding, reason)`.
    """
    app = cdk.App(context=dict(context) if context is not None else None, outdir=outdir)
    settings = DeploySettings.from_node(app.node)
    stack = ShipmlStack(app, settings=settings)
    # Every role's grant policy, now that the stack is composed (NIST's IAMNoInlinePolicy, one by one).
    nag.acknowledge_grant_policies(stack)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app), NIST80053R5Checks(app))
    return app


def main() -> None:
    """Synthesize the cloud assembly for the CDK CLI."""
    build_app().synth()


if __name__ == "__main__":
    main()
