"""The pipeline's steps as plain functions: prepare a run, validate data, evaluate, gate, register, promote.

Each takes and returns pydantic models (or plain values), does no I/O beyond what its arguments
give it, and is unit-tested on its own. The hosts call them: SageMaker Processing jobs
(`shipml.pipeline.processing`), the Lambda handlers in `functions/pipeline/`, and the local runner.
Training itself is `training.launcher` (a SageMaker training job, or `run_local`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shipml.backends.ports import LIVE, ApprovalStatus, Registry
from shipml.pipeline.models import (
    EvaluationFailed,
    EvaluationReport,
    GateCheck,
    GateSettings,
    GateVerdict,
    ModelEvaluation,
    Problem,
    Promotion,
    QualityRules,
    RegisteredModel,
    RunPlan,
    RunRequest,
    ValidationReport,
)
from shipml.pipeline.quality import check_quality

if TYPE_CHECKING:
    import pyarrow as pa

    from shipml.artifact import Artifact
    from shipml.contract import Contract

DEFAULT_HOLDOUT_FRACTION = 0.2
LAUNCHER_PROGRAM = "training/launcher.py"
_RUN_ID_MAX = 31


# --- PrepareRun --------------------------------------------------------------------------------------


def run_id_for(execution_name: str) -> str:
    """A short, lowercase, job-name-safe id for an execution (unique per execution name).

    SageMaker lowercases job names in ARNs, and the state machine's IAM policy matches ARNs, so the
    id is lowercase; a long name is cut and suffixed with a hash of the whole, so two long names
    that share a prefix still differ.
    """
    cleaned = re.sub(r"[^a-z0-9]+", "-", execution_name.lower()).strip("-") or "run"
    if len(cleaned) <= _RUN_ID_MAX:
        return cleaned
    digest = hashlib.sha256(execution_name.encode()).hexdigest()[:8]
    return f"{cleaned[: _RUN_ID_MAX - 9].rstrip('-')}-{digest}"


def job_name(model_name: str, kind: str, run_id: str) -> str:
    """`shipml-{model}-{kind}-{run id}`: at most 63 characters, the prefix the IAM policy allows."""
    return f"{job_prefix(model_name, kind)}{run_id}"


def job_prefix(model_name: str, kind: str) -> str:
    """The name prefix of one kind of job (`train`, `validate`, `evaluate`) of a model."""
    return f"shipml-{model_name[:12].rstrip('-')}-{kind}-"


def prepare_run(
    request: RunRequest,
    *,
    execution_name: str,
    model_name: str,
    bucket: str,
    contract_path: str,
    registry: Registry,
    training_source_uri: str | None = None,
) -> RunPlan:
    """Decide the names and locations of one execution, and find the champion (the live version).

    `training_source_uri` is the code archive the SageMaker training toolkit unpacks and whose
    `training/launcher.py` it runs (the toolkit's `sagemaker_program` / `sagemaker_submit_directory`
    hyperparameters); `training.train` ignores `sagemaker_*` hyperparameters.
    """
    run_id = run_id_for(execution_name)
    run_uri = f"s3://{bucket}/pipeline/{model_name}/runs/{run_id}/"
    # holdout_fraction is always set, so that Evaluate holds out exactly the rows training held out.
    hyperparameters: dict[str, Any] = {
        "holdout_fraction": DEFAULT_HOLDOUT_FRACTION,
        **request.hyperparameters,
        "contract": contract_path,
    }
    if training_source_uri:
        hyperparameters["sagemaker_program"] = LAUNCHER_PROGRAM
        hyperparameters["sagemaker_submit_directory"] = training_source_uri
    champion = registry.get_alias(model_name, LIVE)
    return RunPlan(
        run_id=run_id,
        model_name=model_name,
        reason=request.reason,
        data_uri=request.data_uri or f"s3://{bucket}/datasets/{model_name}/training/",
        run_uri=run_uri,
        training_job_name=job_name(model_name, "train", run_id),
        validation_job_name=job_name(model_name, "validate", run_id),
        evaluation_job_name=job_name(model_name, "evaluate", run_id),
        hyperparameters={k: v if isinstance(v, str) else json.dumps(v) for k, v in hyperparameters.items()},
        champion_uri=champion.artifact_uri if champion else "",
        champion_version=champion.version if champion else None,
        validation_uri=f"{run_uri}validation/",
        evaluation_uri=f"{run_uri}evaluation/",
        model_output_uri=f"{run_uri}model/",
        checkpoint_uri=f"{run_uri}checkpoints/",
    )


# --- ValidateData ------------------------------------------------------------------------------------


def validate_data(
    contract: Contract,
    table: pa.Table,
    rules: QualityRules,
    *,
    baseline: dict[str, Any] | None = None,
) -> ValidationReport:
    """The contract's row rules, then the quality rules; every problem named with its column."""
    from shipml.contract.validate import validate_table
    from shipml.errors import DataError

    try:
        checked = validate_table(contract, table, require_target=True)
    except DataError as exc:
        return ValidationReport(
            ok=False, rows=table.num_rows, problems=[Problem(check="schema", message=str(exc))]
        )
    problems: list[Problem] = []
    if not checked.ok:
        counts = checked.violations.group_by(["column", "rule"]).aggregate([("row", "count"), ("row", "min")])
        for item in counts.sort_by([("row_count", "descending")]).to_pylist():
            count, rule, first = item["row_count"], item["rule"], item["row_min"]
            message = f"{count} rows break {rule!r}; the first is row {first}"
            problems.append(
                Problem(check=f"contract.{rule}", column=item["column"], rows=count, message=message)
            )
    more, warnings, psi, label_rate = check_quality(contract, checked.table, rules, baseline=baseline)
    problems.extend(more)
    return ValidationReport(
        ok=not problems,
        rows=table.num_rows,
        problems=problems,
        warnings=warnings,
        label_rate=label_rate,
        drift_psi=psi,
        contract_summary="" if checked.ok else checked.summary(limit=10),
    )


# --- Evaluate ----------------------------------------------------------------------------------------


def holdout_rows(contract: Contract, table: pa.Table, fraction: float) -> pa.Table:
    """The latest `fraction` of rows by event time: the same split `training.train` holds out."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = table.column(contract.event_time)
    if column.null_count:
        raise EvaluationFailed(f"{contract.event_time}: {column.null_count} rows have no event time")
    if not pa.types.is_timestamp(column.type):
        raise EvaluationFailed(f"{contract.event_time}: expected normalised timestamps, got {column.type}")
    keys = pc.cast(column, pa.int64()).to_numpy()
    order = np.argsort(keys, kind="stable")
    n_hold = int(round(len(order) * fraction))
    if n_hold < 1 or n_hold >= len(order):
        raise EvaluationFailed(f"cannot hold out {fraction} of {len(order)} rows")
    return table.take(pa.array(np.sort(order[len(order) - n_hold :])))


def _score(artifact: Artifact, table: pa.Table) -> np.ndarray:
    from shipml.predict import Predictor

    predictor = Predictor(artifact, model_version=str(artifact.card.model_name))
    return predictor.score_matrix(predictor.encoder.encode_table(table))


def _evaluation(
    contract: Contract, table: pa.Table, artifact: Artifact, version: int | None
) -> ModelEvaluation:
    from shipml.evaluation import evaluate as evaluate_scores

    scores = _score(artifact, table)
    bad = int(np.sum(~np.isfinite(scores)))
    if bad:
        raise EvaluationFailed(
            f"the {'champion' if version else 'challenger'} gives {bad} non-finite scores on the holdout "
            "(a NaN loss in training?)"
        )
    metrics = evaluate_scores(contract, table, scores)
    return ModelEvaluation(version=version, overall=metrics["overall"], segments=metrics["segments"])


def evaluate(
    contract: Contract,
    table: pa.Table,
    challenger: Artifact,
    *,
    champion: Artifact | None = None,
    champion_version: int | None = None,
    holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION,
) -> EvaluationReport:
    """Score challenger and champion on the same holdout (the latest rows), overall and per segment.

    The champion is re-scored on today's holdout rather than compared by the numbers in its card,
    so that both models face the same rows.
    """
    from shipml.contract.validate import validate_table

    normalised = validate_table(contract, table, require_target=True).table
    holdout = holdout_rows(contract, normalised, holdout_fraction)
    start = holdout.column(contract.event_time)
    return EvaluationReport(
        holdout_rows=holdout.num_rows,
        holdout_start=str(min(start.to_pylist())),
        challenger=_evaluation(contract, holdout, challenger, None),
        champion=_evaluation(contract, holdout, champion, champion_version) if champion else None,
    )


# --- Gate --------------------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _check(
    scope: str, metric: str, value: Any, reference: Any, limit: float, *, higher_is_better: bool
) -> GateCheck:
    """A challenger value against a limit: `value >= limit` (higher is better) or `value <= limit`."""
    challenger = _number(value)
    if challenger is None:
        return GateCheck(
            scope=scope,
            metric=metric,
            challenger=None,
            reference=_number(reference),
            limit=limit,
            passed=False,
            message=f"{scope}: the challenger has no {metric}",
        )
    passed = challenger >= limit if higher_is_better else challenger <= limit
    relation = ">=" if higher_is_better else "<="
    return GateCheck(
        scope=scope,
        metric=metric,
        challenger=challenger,
        reference=_number(reference),
        limit=limit,
        passed=passed,
        message=f"{scope}: {metric} {challenger:.4f} {'meets' if passed else 'misses'} {relation}{limit:.4f}",
    )


def gate(report: EvaluationReport, settings: GateSettings) -> GateVerdict:
    """Challenger against champion: no regression beyond the tolerances, overall or in any segment
    value with enough rows; a first model (no champion) must clear the absolute floors."""
    challenger = report.challenger
    checks: list[GateCheck] = []
    champion = report.champion
    if champion is None:
        overall = challenger.overall
        checks.append(
            _check("overall", "auc", overall.get("auc"), None, settings.min_auc, higher_is_better=True)
        )
        for metric, ceiling in (
            ("log_loss", settings.max_log_loss),
            ("calibration_error", settings.max_calibration_error),
        ):
            if ceiling is not None:
                checks.append(
                    _check("overall", metric, overall.get(metric), None, ceiling, higher_is_better=False)
                )
    else:
        reference = champion.overall
        auc = _number(reference.get("auc"))
        if auc is not None:
            checks.append(
                _check(
                    "overall",
                    "auc",
                    challenger.overall.get("auc"),
                    auc,
                    auc - settings.max_auc_drop,
                    higher_is_better=True,
                )
            )
        loss = _number(reference.get("log_loss"))
        if loss is not None:
            checks.append(
                _check(
                    "overall",
                    "log_loss",
                    challenger.overall.get("log_loss"),
                    loss,
                    loss * (1 + settings.max_log_loss_increase),
                    higher_is_better=False,
                )
            )
        for segment, values in champion.segments.items():
            for value, metrics in values.items():
                big_enough = (metrics.get("rows") or 0) >= settings.min_segment_rows and (
                    metrics.get("positives") or 0
                ) >= settings.min_segment_positives
                reference_auc = _number(metrics.get("auc"))
                if not big_enough or reference_auc is None:
                    continue
                mine = challenger.segments.get(segment, {}).get(value, {})
                checks.append(
                    _check(
                        f"segment {segment}={value}",
                        "auc",
                        mine.get("auc"),
                        reference_auc,
                        reference_auc - settings.max_segment_auc_drop,
                        higher_is_better=True,
                    )
                )
    failures = [c for c in checks if not c.passed]
    basis = "floors" if champion is None else "champion"
    champion_auc = _number(champion.overall.get("auc")) if champion else None
    against = "the absolute floors" if champion is None else f"champion v{champion.version}"
    if champion_auc is not None:
        against += f" (AUC {champion_auc:.4f} on the same holdout)"
    auc = _number(challenger.overall.get("auc"))
    headline = f"challenger AUC {auc:.4f}" if auc is not None else "challenger without AUC"
    if failures:
        summary = f"rejected against {against}: {headline}; " + "; ".join(c.message for c in failures[:5])
    else:
        summary = f"passed against {against}: {headline}; {len(checks)} checks"
    return GateVerdict(
        passed=not failures,
        basis=basis,
        champion_version=champion.version if champion else None,
        summary=summary,
        failures=failures,
        checks=len(checks),
    )


# --- Register, Promote -------------------------------------------------------------------------------


def register(
    registry: Registry,
    model_name: str,
    artifact_dir: Path,
    *,
    description: str,
    auto_approve: bool,
) -> RegisteredModel:
    """Register the challenger; approve it when the pipeline is set to (else it waits for a person)."""
    version = registry.register(model_name, artifact_dir, description=description)
    if auto_approve:
        version = registry.approve(model_name, version.version)
    return RegisteredModel(
        version=version.version,
        status=version.status.value,
        approved=version.status == ApprovalStatus.approved,
        artifact_uri=version.artifact_uri,
        digest=version.digest,
    )


def promote(registry: Registry, model_name: str, version: int) -> Promotion:
    """Point the registry's `live` alias at `version` (an approved one): the last step of a rollout."""
    previous = registry.get_alias(model_name, LIVE)
    registry.set_alias(model_name, LIVE, version)
    before = f"v{previous.version}" if previous else "no live version"
    return Promotion(
        version=version,
        previous_version=previous.version if previous else None,
        message=f"{model_name}:{version} is now {LIVE} (was {before})",
    )


def describe_run(plan: RunPlan, started_at: datetime | None = None) -> str:
    """A one-line description stored with the registered version."""
    when = f" started {started_at.isoformat()}" if started_at else ""
    return f"pipeline run {plan.run_id}{when}: {plan.reason}"
