"""The SageMaker Processing entry points of the pipeline: ValidateData and Evaluate.

On SageMaker a processing job mounts its inputs under `/opt/ml/processing/input/<name>` and uploads
`/opt/ml/processing/output/<name>` when the job ends; a failure reason goes to
`/opt/ml/output/message` and the process exits non-zero, which fails the job and so the
state-machine task. The local runner calls `run_validate_data` / `run_evaluate` with folders in
place of the mounts: the same code on both hosts.

    python -m shipml.pipeline.processing validate-data     # in the container
    python -m shipml.pipeline.processing evaluate
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from shipml.errors import ShipmlError
from shipml.pipeline.models import (
    DataValidationFailed,
    EvaluationFailed,
    EvaluationReport,
    QualityRules,
    ValidationReport,
)

PROCESSING_ROOT = Path("/opt/ml/processing")
DATA_INPUT = "data"
MODEL_INPUT = "model"
REPORT_OUTPUT = "report"
REPORT_FILE = "report.json"
FAILURE_MESSAGE = Path("/opt/ml/output/message")


def open_model(path: Path, workdir: Path):  # noqa: ANN201 - shipml.artifact.Artifact, imported lazily
    """An artifact from a folder, a model.tar.gz, or a folder holding one (a SageMaker input mount)."""
    from shipml import artifact as artifacts

    path = Path(path)
    if path.is_dir() and not (path / artifacts.MANIFEST_FILE).is_file():
        archives = sorted(path.rglob("*.tar.gz"))
        if len(archives) != 1:
            raise EvaluationFailed(f"{path}: expected one model.tar.gz, found {len(archives)}")
        path = archives[0]
    if path.is_dir():
        return artifacts.load_artifact(path)
    return artifacts.unpack(path.read_bytes(), workdir / f"model-{path.stem.split('.')[0]}")


def _write_report(output_dir: Path, report: ValidationReport | EvaluationReport) -> Path:
    from shipml import atomic

    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / REPORT_FILE
    with atomic.atomic_path(target) as tmp:
        Path(tmp).write_text(report.model_dump_json(indent=2), encoding="utf-8")
    return target


def run_validate_data(
    *,
    data: Path,
    contract_path: Path,
    output_dir: Path,
    rules: QualityRules,
    champion: Path | None = None,
) -> ValidationReport:
    """Validate the training data, write `report.json`, and raise `DataValidationFailed` if it fails.

    The drift baseline is the champion's card (the statistics of the previous training set).
    """
    from shipml.contract import load_contract
    from shipml.data import read_table
    from shipml.pipeline.steps import validate_data

    contract = load_contract(contract_path)
    baseline = None
    if champion is not None:
        with tempfile.TemporaryDirectory(prefix="shipml-champion-") as tmp:
            baseline = open_model(champion, Path(tmp)).card.baseline
    report = validate_data(contract, read_table(data), rules, baseline=baseline)
    _write_report(output_dir, report)
    if not report.ok:
        raise DataValidationFailed(report.describe())
    return report


def run_evaluate(
    *,
    data: Path,
    contract_path: Path,
    challenger: Path,
    output_dir: Path,
    champion: Path | None = None,
    champion_version: int | None = None,
    holdout_fraction: float = 0.2,
) -> EvaluationReport:
    """Score challenger and champion on the same holdout; write `report.json`."""
    from shipml.contract import load_contract
    from shipml.data import read_table
    from shipml.pipeline.steps import evaluate

    contract = load_contract(contract_path)
    with tempfile.TemporaryDirectory(prefix="shipml-evaluate-") as tmp:
        work = Path(tmp)
        challenger_artifact = open_model(challenger, work / "challenger")
        champion_artifact = open_model(champion, work / "champion") if champion is not None else None
        report = evaluate(
            contract,
            read_table(data),
            challenger_artifact,
            champion=champion_artifact,
            champion_version=champion_version,
            holdout_fraction=holdout_fraction,
        )
    _write_report(output_dir, report)
    return report


def _champion(environ: Mapping[str, str], workdir: Path) -> Path | None:
    """Download the champion's model.tar.gz named by SHIPML_CHAMPION_URI ("" = no champion)."""
    uri = environ.get("SHIPML_CHAMPION_URI", "")
    if not uri:
        return None
    import boto3

    from shipml.pipeline.storage import S3RunStorage

    return S3RunStorage(boto3.client("s3")).fetch(uri, workdir / "champion")


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """The container entry point; a failure is written where SageMaker reads the job's FailureReason."""
    argv = sys.argv[1:] if argv is None else argv
    environ = os.environ if environ is None else environ
    command = argv[0] if argv else ""
    inputs, outputs = PROCESSING_ROOT / "input", PROCESSING_ROOT / "output"
    contract_path = Path(environ.get("SHIPML_CONTRACT", "examples/fraud/contract.yaml"))
    try:
        with tempfile.TemporaryDirectory(prefix="shipml-processing-") as tmp:
            champion = _champion(environ, Path(tmp))
            if command == "validate-data":
                report = run_validate_data(
                    data=inputs / DATA_INPUT,
                    contract_path=contract_path,
                    output_dir=outputs / REPORT_OUTPUT,
                    rules=QualityRules.from_env(environ),
                    champion=champion,
                )
                print(report.describe(), flush=True)
            elif command == "evaluate":
                version = environ.get("SHIPML_CHAMPION_VERSION", "")
                evaluation = run_evaluate(
                    data=inputs / DATA_INPUT,
                    contract_path=contract_path,
                    challenger=inputs / MODEL_INPUT,
                    output_dir=outputs / REPORT_OUTPUT,
                    champion=champion,
                    champion_version=int(version) if version.isdigit() else None,
                    holdout_fraction=float(environ.get("SHIPML_HOLDOUT_FRACTION") or 0.2),
                )
                print(f"challenger holdout metrics: {evaluation.challenger.overall}", flush=True)
            else:
                raise ShipmlError(f"unknown command {command!r}; expected validate-data or evaluate")
    except ShipmlError as exc:
        message = str(exc)
        print(f"error: {message}", file=sys.stderr, flush=True)
        try:
            FAILURE_MESSAGE.parent.mkdir(parents=True, exist_ok=True)
            # SageMaker keeps the first 1024 characters as the job's FailureReason.
            FAILURE_MESSAGE.write_text(message[:1024], encoding="utf-8")
        except OSError:
            pass
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
