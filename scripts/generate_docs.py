"""Generate the documents that must never drift from the code, and check them in CI.

- docs/configuration.md: every setting of every settings model, with its type, default and meaning;
- docs/openapi.json: the serving API's OpenAPI document for the example contract.

`python scripts/generate_docs.py` rewrites both; `python scripts/generate_docs.py --check` exits 1
when a committed file differs from what the code produces (tests/unit/test_generated_docs.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CONFIGURATION = ROOT / "docs" / "configuration.md"
OPENAPI = ROOT / "docs" / "openapi.json"
CONTRACT = ROOT / "examples" / "fraud" / "contract.yaml"


@dataclass(frozen=True)
class Section:
    title: str
    how: str
    model: Callable[[], type[BaseModel]]
    name: Callable[[str], str]


def _env(prefix: str) -> Callable[[str], str]:
    return lambda field: f"{prefix}{field.upper()}"


def _context(field: str) -> str:
    return f"`{field}` (cdk.json context, `-c {field}=...`)"


def _sections() -> list[Section]:
    from shipml.features.job import MaterializeJobSettings
    from shipml.pipeline.models import GateSettings, QualityRules
    from shipml.serving.container import ContainerSettings
    from shipml.settings import Settings
    from shipml.stream.settings import StreamSettings
    from stacks.settings import DeploySettings
    from stacks.stream_settings import StreamDeploySettings

    return [
        Section(
            "Runtime (CLI, local server, Lambda)", "environment variables", lambda: Settings, _env("SHIPML_")
        ),
        Section(
            "Deployment (CDK)",
            "cdk.json context; `stages` overrides per stage",
            lambda: DeploySettings,
            _context,
        ),
        Section(
            "Stream consumer deployment (CDK)",
            "the `stream` object in cdk.json context",
            lambda: StreamDeploySettings,
            lambda f: f"`stream.{f}`",
        ),
        Section(
            "Stream consumer (runtime)",
            "environment variables",
            lambda: StreamSettings,
            _env("SHIPML_STREAM_"),
        ),
        Section(
            "Retraining gate", "environment variables", lambda: GateSettings, _env(GateSettings.env_prefix)
        ),
        Section(
            "Training-data quality checks",
            "environment variables",
            lambda: QualityRules,
            _env(QualityRules.env_prefix),
        ),
        Section(
            "Batch container (SageMaker)", "environment variables", lambda: ContainerSettings, _env("SHIPML_")
        ),
        Section(
            "Materialisation job",
            "environment variables, set by the CDK construct",
            lambda: MaterializeJobSettings,
            _env("SHIPML_"),
        ),
    ]


def _type(annotation: Any) -> str:
    if get_origin(annotation) is Literal:
        return " \\| ".join(json.dumps(a) for a in get_args(annotation))
    text = str(annotation) if get_args(annotation) else getattr(annotation, "__name__", str(annotation))
    text = text.replace("typing.", "").replace("pathlib.", "").replace("NoneType", "None")
    return text.replace("|", "\\|")


def _default(field: Any) -> str:
    if field.default is PydanticUndefined:
        return "required" if field.default_factory is None else "(computed)"
    value = field.default
    if isinstance(value, BaseModel):
        return "(see its section)"
    return f"`{json.dumps(value, default=str)}`"


def configuration_reference() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from the settings models by `python scripts/generate_docs.py`; a test fails when",
        "this file and the code disagree. Every setting is validated when it is read, and an error",
        "names the setting.",
        "",
    ]
    for section in _sections():
        model = section.model()
        lines += [
            f"## {section.title}",
            "",
            f"Set through {section.how}. Model: `{model.__module__}.{model.__name__}`.",
            "",
        ]
        lines += ["| setting | type | default | meaning |", "| --- | --- | --- | --- |"]
        for name, field in model.model_fields.items():
            description = (field.description or "").replace("|", "\\|").replace("\n", " ")
            setting = section.name(name)
            if not setting.startswith("`"):
                setting = f"`{setting}`"
            lines.append(f"| {setting} | `{_type(field.annotation)}` | {_default(field)} | {description} |")
        lines.append("")
    return "\n".join(lines)


def openapi_document() -> str:
    from shipml.contract import Masker, load_contract
    from shipml.serving.app import ServingContext, create_app
    from shipml.serving.models import ModelHolder

    class NoModel:
        def resolve(self) -> None:
            return None

        def open(self, ref: str) -> None:  # pragma: no cover - never called without a version
            raise AssertionError(ref)

    class Discard:
        def write(self, records: Any) -> None: ...
        def flush(self) -> None: ...
        def put(self, *args: Any, **kwargs: Any) -> None: ...

    contract = load_contract(CONTRACT)
    holder = ModelHolder(NoModel(), contract, online=None)
    app = create_app(
        ServingContext(
            contract=contract, holder=holder, capture=Discard(), metrics=Discard(), masker=Masker(contract)
        )
    )
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed document is out of date")
    args = parser.parse_args()
    stale = []
    for path, text in ((CONFIGURATION, configuration_reference()), (OPENAPI, openapi_document())):
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path.relative_to(ROOT))
        else:
            path.write_text(text)
    if stale:
        print(
            f"out of date: {', '.join(map(str, stale))}; run python scripts/generate_docs.py", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
