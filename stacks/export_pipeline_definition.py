"""Write the retraining state machine's definition (ASL JSON), as synthesized, for the local runner.

    python -m stacks.export_pipeline_definition --output .shipml/pipeline/definition.json

Builds the foundation and the `TrainingPipeline` construct in a throwaway app with cdk.json's
context (the settings the real app uses), synthesizes it, takes the state machine's
DefinitionString and replaces each CloudFormation reference with a local stand-in:

- `AWS::Partition` -> `aws`, `AWS::Region` -> `eu-west-1`, `AWS::AccountId` -> `000000000000`;
- a Lambda function's ARN -> `arn:aws:lambda:eu-west-1:000000000000:function:<LogicalId>`, listed
  under "functions" with its handler and (resolved) environment, which is how the runner finds the
  handler to call in-process;
- the artifact bucket -> a bucket name the runner maps to the local blob folder; the topic, roles
  and keys -> ARNs naming their logical ids; `Fn::FindInMap` is looked up in the template's mappings.

`shipml` never imports aws_cdk: the runner calls this module in a subprocess (with the same
interpreter) when its cached copy is missing or older than the stacks' sources.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
FORMAT = 1
PARTITION = "aws"
REGION = "eu-west-1"
ACCOUNT = "000000000000"
PSEUDO = {
    "AWS::Partition": PARTITION,
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT,
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::StackName": "shipml-local",
    "AWS::NoValue": None,
}


class DefinitionExportError(RuntimeError):
    """The template holds something this exporter cannot resolve to a local stand-in."""


class Resolver:
    """Replaces CloudFormation intrinsics by local stand-ins, from the template's resources and mappings."""

    def __init__(self, template: dict[str, Any]) -> None:
        self.resources: dict[str, Any] = template.get("Resources", {})
        self.mappings: dict[str, Any] = template.get("Mappings", {})

    def ref(self, name: str) -> str:
        if name in PSEUDO:
            return PSEUDO[name]  # type: ignore[return-value]
        kind = self.resources.get(name, {}).get("Type", "")
        if kind == "AWS::S3::Bucket":
            return f"local-{name.lower()}"
        if kind == "AWS::SNS::Topic":
            return f"arn:{PARTITION}:sns:{REGION}:{ACCOUNT}:{name}"
        if kind == "AWS::Lambda::Function":
            return name
        if not kind:
            raise DefinitionExportError(
                f"Ref to {name!r}, which is neither a resource nor a pseudo parameter"
            )
        return name

    def get_att(self, name: str, attribute: str) -> str:
        kind = self.resources.get(name, {}).get("Type", "")
        if attribute == "Arn":
            if kind == "AWS::Lambda::Function":
                return f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT}:function:{name}"
            if kind == "AWS::IAM::Role":
                return f"arn:{PARTITION}:iam::{ACCOUNT}:role/{name}"
            if kind == "AWS::KMS::Key":
                return f"arn:{PARTITION}:kms:{REGION}:{ACCOUNT}:key/{name}"
            if kind == "AWS::S3::Bucket":
                return f"arn:{PARTITION}:s3:::{self.ref(name)}"
            return f"arn:{PARTITION}:local:{REGION}:{ACCOUNT}:{name}"
        return f"{name}.{attribute}"

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, argument),) = value.items()
            if key == "Ref":
                return self.ref(argument)
            if key == "Fn::GetAtt":
                name, attribute = argument if isinstance(argument, list) else argument.split(".", 1)
                return self.get_att(name, attribute)
            if key == "Fn::Join":
                separator, parts = argument
                return separator.join(str(self.resolve(p)) for p in self.resolve(parts))
            if key == "Fn::FindInMap":
                mapping, first, second = (self.resolve(a) for a in argument)
                try:
                    return self.mappings[mapping][first][second]
                except KeyError:
                    raise DefinitionExportError(
                        f"Fn::FindInMap {mapping}/{first}/{second} is not in the template"
                    ) from None
            if key == "Fn::Sub":
                text, variables = (argument, {}) if isinstance(argument, str) else argument
                return self._sub(text, {k: self.resolve(v) for k, v in variables.items()})
            if key == "Fn::Select":
                index, items = argument
                return self.resolve(items)[int(self.resolve(index))]
            if key.startswith("Fn::"):
                raise DefinitionExportError(f"cannot resolve {key} to a local stand-in")
        return {k: self.resolve(v) for k, v in value.items()}

    def _sub(self, text: str, variables: dict[str, Any]) -> str:
        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return str(variables[name])
            if "." in name and name not in PSEUDO:
                resource, attribute = name.split(".", 1)
                return self.get_att(resource, attribute)
            return str(self.ref(name))

        return re.sub(r"\$\{([^}!][^}]*)\}", replace, text)


def export_from_template(template: dict[str, Any]) -> dict[str, Any]:
    """The local-runner document: the resolved definition, the functions, and the stand-ins used."""
    resolver = Resolver(template)
    machines = [r for r in template["Resources"].values() if r["Type"] == "AWS::StepFunctions::StateMachine"]
    if len(machines) != 1:
        raise DefinitionExportError(f"expected one state machine in the template, found {len(machines)}")
    definition = json.loads(resolver.resolve(machines[0]["Properties"]["DefinitionString"]))
    functions: dict[str, Any] = {}
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] != "AWS::Lambda::Function":
            continue
        properties = resource["Properties"]
        functions[resolver.get_att(logical_id, "Arn")] = {
            "logical_id": logical_id,
            "handler": properties["Handler"],
            "environment": resolver.resolve((properties.get("Environment") or {}).get("Variables", {})),
        }
    environments = [f["environment"] for f in functions.values()]
    bucket = next((e["SHIPML_ARTIFACT_BUCKET"] for e in environments if "SHIPML_ARTIFACT_BUCKET" in e), None)
    return {
        "format": FORMAT,
        "generated_by": "stacks/export_pipeline_definition.py",
        "stand_ins": {
            "partition": PARTITION,
            "region": REGION,
            "account": ACCOUNT,
            "artifact_bucket": bucket,
        },
        "definition": definition,
        "functions": functions,
    }


def synthesize_template(context: dict[str, Any] | None = None) -> dict[str, Any]:
    """Synthesize the foundation + pipeline in a throwaway app; return the template."""
    import aws_cdk as cdk

    from stacks.foundation_construct import FoundationConstruct
    from stacks.pipeline_construct import TrainingPipeline
    from stacks.settings import DeploySettings

    if context is None:
        context = json.loads((REPO_ROOT / "cdk.json").read_text(encoding="utf-8"))["context"]
    with tempfile.TemporaryDirectory(prefix="shipml-export-") as outdir:
        app = cdk.App(context=context, outdir=outdir)
        settings = DeploySettings.from_context(context)
        stack = cdk.Stack(app, "ShipmlPipelineExport")
        foundation = FoundationConstruct(stack, "Foundation", settings=settings)
        TrainingPipeline(
            stack,
            "Pipeline",
            settings=settings,
            bucket=foundation.bucket,
            key=foundation.key,
            topic=foundation.topic,
            handler_code=cdk.aws_lambda.Code.from_inline("# the local runner calls the handlers in-process"),
        )
        assembly = app.synth()
        return assembly.get_stack_by_name(stack.stack_name).template


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True, help="where to write the JSON document")
    args = parser.parse_args(argv)
    document = export_from_template(synthesize_template())
    args.output.parent.mkdir(parents=True, exist_ok=True)
    temporary = args.output.with_name(f".{args.output.name}.tmp")
    temporary.write_text(json.dumps(document, indent=2, sort_keys=True), encoding="utf-8")
    temporary.replace(args.output)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
