"""Every alarm in the synthesized stack has a runbook section in docs/runbooks.md."""

from __future__ import annotations

import re

import pytest

from tests.infrastructure.conftest import REPO_ROOT, SynthesizedApp

# Path metadata names each alarm's construct; the CDK CLI adds it, tests ask for it.
STREAM = {"stream": {"source": "kinesis", "output": "dynamodb"}, "aws:cdk:enable-path-metadata": True}


@pytest.fixture(scope="module")
def with_stream(synth_app) -> SynthesizedApp:
    return synth_app(STREAM)


def alarm_ids(app: SynthesizedApp) -> set[str]:
    """The construct id of each CloudWatch alarm (the path part before `/Resource`)."""
    ids = set()
    for resource in app.template.find_resources("AWS::CloudWatch::Alarm").values():
        path = resource["Metadata"]["aws:cdk:path"]
        ids.add(path.split("/")[-2])
    return ids


def test_every_alarm_has_a_runbook(with_stream: SynthesizedApp) -> None:
    sections = set(re.findall(r"^## (\w+)", (REPO_ROOT / "docs" / "runbooks.md").read_text(), re.M))
    alarms = alarm_ids(with_stream)
    assert len(alarms) >= 15
    missing = {a for a in alarms if a not in sections and a.removesuffix("Alarm") not in sections}
    assert missing == set(), f"alarms without a runbook section: {sorted(missing)}"
