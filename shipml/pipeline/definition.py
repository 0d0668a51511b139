"""The state-machine definition the local runner executes: the one the CDK construct synthesizes.

`shipml` never imports aws_cdk, so the definition is produced in a separate process:
`python -m stacks.export_pipeline_definition --output PATH` (the same interpreter, from the
repository root) synthesizes the `TrainingPipeline` construct and writes its ASL JSON with
CloudFormation references replaced by local stand-ins. The result is cached under the local root
and rebuilt when it is missing or older than any source it depends on (stacks/*.py, cdk.json).
A path given explicitly (`--definition`) is used as it is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from shipml.errors import ShipmlError

REPO_ROOT = Path(__file__).resolve().parents[2]
EXPORT_MODULE = "stacks.export_pipeline_definition"
CACHE_FILE = "pipeline/definition.json"
SUPPORTED_FORMAT = 1
EXPORT_TIMEOUT_S = 600


def definition_sources(repo_root: Path = REPO_ROOT) -> list[Path]:
    """The files whose change makes a cached definition stale."""
    return sorted((repo_root / "stacks").glob("*.py")) + [repo_root / "cdk.json"]


def is_stale(cache: Path, repo_root: Path = REPO_ROOT) -> bool:
    if not cache.is_file():
        return True
    built = cache.stat().st_mtime
    return any(source.stat().st_mtime > built for source in definition_sources(repo_root) if source.is_file())


def export_definition(output: Path, repo_root: Path = REPO_ROOT) -> None:
    """Run the exporter in a subprocess; `ShipmlError` with its last lines of output on failure."""
    if not (repo_root / "stacks" / "export_pipeline_definition.py").is_file():
        raise ShipmlError(
            f"cannot synthesize the pipeline: {repo_root} is not a shipml source tree; "
            "pass --definition with an exported definition instead"
        )
    env = {
        **os.environ,
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": os.environ.get(
            "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20"
        ),
    }
    try:
        done = subprocess.run(
            [sys.executable, "-m", EXPORT_MODULE, "--output", str(output.resolve())],
            cwd=repo_root,
            env=env,
            capture_output=True,
            text=True,
            timeout=EXPORT_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ShipmlError(f"synthesizing the pipeline took longer than {EXPORT_TIMEOUT_S} s") from None
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise ShipmlError(f"synthesizing the pipeline failed (exit {done.returncode}):\n{tail}")


def read_definition(path: Path) -> dict[str, Any]:
    """Read and check an exported definition document."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ShipmlError(f"{path}: no such definition file") from None
    except ValueError as exc:
        raise ShipmlError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != SUPPORTED_FORMAT:
        raise ShipmlError(f"{path}: not an exported pipeline definition (format {SUPPORTED_FORMAT})")
    for key in ("definition", "functions", "stand_ins"):
        if key not in document:
            raise ShipmlError(f"{path}: the definition document lacks {key!r}")
    return document


def load_definition(
    root: Path, *, path: Path | None = None, refresh: bool = False
) -> tuple[dict[str, Any], Path]:
    """The definition document and where it came from: `path` as given, else the cache (rebuilt if stale)."""
    if path is not None:
        return read_definition(path), path
    cache = Path(root) / CACHE_FILE
    if refresh or is_stale(cache):
        cache.parent.mkdir(parents=True, exist_ok=True)
        export_definition(cache)
    return read_definition(cache), cache
