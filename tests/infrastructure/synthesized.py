"""What the construct tests read from a synthesized test stack: the template, the state machine's
states, and the cdk-nag findings in the policy-validation report of the cloud assembly."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aws_cdk.assertions import Template


def findings(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(rule, construct path) of every finding the report still lists, i.e. not acknowledged."""
    return [
        (violation["ruleName"], construct["constructPath"])
        for plugin in report["pluginReports"]
        for violation in plugin["violations"]
        for construct in violation["violatingConstructs"]
    ]


def assembly_findings(outdir: Path) -> list[tuple[str, str]]:
    """`findings` of the report in the cloud assembly at `outdir` (written by `app.synth()`)."""
    return findings(json.loads((outdir / "validation-report.json").read_text()))


class SynthesizedStateMachine:
    """For a frozen dataclass with `template` and `outdir` fields whose stack holds one state machine
    (batch scoring, retraining): its template as JSON, its states, its cdk-nag findings.
    The dataclass gives `definition`, the state machine's definition as a dict."""

    template: Template
    outdir: Path

    @property
    def json(self) -> dict[str, Any]:
        return self.template.to_json()

    @property
    def definition(self) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def states(self) -> dict[str, Any]:
        return self.definition["States"]

    def violations(self) -> list[tuple[str, str]]:
        return assembly_findings(self.outdir)
