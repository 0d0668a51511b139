"""Each pipeline step on its own, without a state machine: plan, validate, evaluate, gate, register..."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from functions.pipeline import gate as gate_handler
from functions.pipeline import prepare_run as prepare_handler
from shipml.backends import local_backends
from shipml.errors import RegistryError
from shipml.pipeline import steps
from shipml.pipeline.environment import PipelineEnvironment
from shipml.pipeline.models import (
    EvaluationFailed,
    EvaluationReport,
    GateSettings,
    InvalidRunRequest,
    ModelEvaluation,
    PipelineError,
    QualityRules,
    RunRequest,
)
from shipml.pipeline.quality import check_quality, population_stability_index
from shipml.pipeline.storage import LocalRunStorage
from shipml.settings import Settings

BUCKET = "local-artifacts"


@pytest.fixture
def registry(tmp_path: Path):
    return local_backends(tmp_path / "root").registry


@pytest.fixture
def env(tmp_path: Path) -> PipelineEnvironment:
    settings = Settings(root=tmp_path / "root", artifact_bucket=BUCKET)
    return PipelineEnvironment(settings=settings, stage="test", gate=GateSettings())


# --- PrepareRun ----------------------------------------------------------------------------------


def test_an_empty_input_gets_every_default(registry) -> None:
    plan = steps.prepare_run(
        RunRequest.parse({}),
        execution_name="9f1c2d3e-aaaa-bbbb-cccc-1234567890ab",
        model_name="fraud",
        bucket="bucket",
        contract_path="examples/fraud/contract.yaml",
        registry=registry,
        training_source_uri="s3://assets/sourcedir.tar.gz",
    )

    assert plan.data_uri == "s3://bucket/datasets/fraud/training/"
    assert plan.reason == "scheduled"
    assert plan.champion_uri == "" and plan.champion_version is None
    assert plan.training_job_name.startswith("shipml-fraud-train-")
    assert len(plan.training_job_name) <= 63
    assert plan.hyperparameters == {
        "holdout_fraction": "0.2",
        "contract": "examples/fraud/contract.yaml",
        "sagemaker_program": "training/launcher.py",
        "sagemaker_submit_directory": "s3://assets/sourcedir.tar.gz",
    }
    assert plan.validation_uri.startswith(plan.run_uri) and plan.run_uri.startswith(
        "s3://bucket/pipeline/fraud/"
    )


def test_overrides_are_json_encoded_strings_as_sagemaker_wants(registry) -> None:
    request = RunRequest.parse({"hyperparameters": {"epochs": 3, "hidden": [8, 4]}, "data_uri": "s3://b/d/"})

    plan = steps.prepare_run(
        request, execution_name="x", model_name="fraud", bucket="b", contract_path="c.yaml", registry=registry
    )

    assert plan.hyperparameters["epochs"] == "3"
    assert plan.hyperparameters["hidden"] == "[8, 4]"
    assert plan.data_uri == "s3://b/d/"


def test_the_champion_is_the_live_version(registry, make_artifact) -> None:
    version = registry.register("fraud", make_artifact())
    registry.approve("fraud", version.version)
    registry.set_alias("fraud", "live", version.version)

    plan = steps.prepare_run(
        RunRequest.parse({}),
        execution_name="x",
        model_name="fraud",
        bucket="b",
        contract_path="c",
        registry=registry,
    )

    assert plan.champion_version == 1
    assert plan.champion_uri.endswith("models/fraud/1/model.tar.gz")


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (
            {"hyperparameters": {"epoch": 3}},
            "hyperparameters: Value error, unknown hyperparameter(s) ['epoch']",
        ),
        ({"data_uri": ""}, "data_uri"),
        ({"reason": 5}, "reason"),
        ({"surprise": 1}, "surprise"),
        ({"hyperparameters": {"epochs": True}}, "epochs must be a number"),
    ],
)
def test_malformed_input_is_refused_naming_the_field(payload: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRunRequest, match=r"invalid execution input") as caught:
        RunRequest.parse(payload)

    assert field in str(caught.value)


def test_input_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(InvalidRunRequest, match="JSON object"):
        RunRequest.parse([1, 2])


def test_long_execution_names_give_distinct_job_safe_ids() -> None:
    first = steps.run_id_for("Nightly_Retrain_" + "x" * 60 + "_A")
    second = steps.run_id_for("Nightly_Retrain_" + "x" * 60 + "_B")

    assert first != second
    assert len(first) <= 31 and first == first.lower()
    assert all(c.isalnum() or c == "-" for c in first)


def test_prepare_run_handler_names_the_bad_field(env: PipelineEnvironment) -> None:
    with pytest.raises(InvalidRunRequest, match="hyperparameters"):
        prepare_handler.handler(
            {"input": {"hyperparameters": {"learning_rate": 1}}, "execution_name": "e"}, None, env=env
        )


# --- ValidateData ----------------------------------------------------------------------------------


def _with_column(table: pa.Table, name: str, values: Any) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)


def test_clean_data_passes(contract, sample_table) -> None:
    report = steps.validate_data(contract, sample_table, QualityRules(min_rows=1000))

    assert report.ok, report.describe()
    assert report.rows == sample_table.num_rows
    assert 0 < report.label_rate < 0.5


def test_contract_violations_are_reported_by_column_rule_and_row(contract, sample_table) -> None:
    amounts = sample_table.column("amount").to_pylist()
    amounts[5] = -3.0
    broken = _with_column(sample_table, "amount", pa.array(amounts))

    report = steps.validate_data(contract, broken, QualityRules(min_rows=1000))

    assert not report.ok
    (problem,) = report.problems
    assert (problem.check, problem.column, problem.rows) == ("contract.min", "amount", 1)
    assert "row 5" in problem.message
    assert "amount" in report.contract_summary


def test_a_missing_column_refuses_the_table(contract, sample_table) -> None:
    report = steps.validate_data(contract, sample_table.drop(["amount"]), QualityRules(min_rows=1000))

    assert not report.ok
    assert report.problems[0].check == "schema"
    assert "amount: missing column" in report.problems[0].message


def _normalised(contract, table):
    from shipml.contract.validate import validate_table

    return validate_table(contract, table, require_target=True).table


def test_too_few_rows(contract, sample_table) -> None:
    problems, *_ = check_quality(contract, _normalised(contract, sample_table), QualityRules(min_rows=5000))

    assert [p.check for p in problems] == ["row_count"]


def test_a_mostly_missing_optional_input_fails_its_ceiling(contract, sample_table) -> None:
    # The example contract requires every request input: make one optional, as a contract may.
    relaxed = contract.model_copy(
        update={
            "features": [
                f.model_copy(update={"required": False}) if f.name == "merchant_category" else f
                for f in contract.features
            ]
        }
    )
    values = sample_table.column("merchant_category").to_pylist()
    mostly_missing = pa.array([v if i % 3 == 0 else None for i, v in enumerate(values)])
    table = _with_column(_normalised(contract, sample_table), "merchant_category", mostly_missing)

    problems, *_ = check_quality(relaxed, table, QualityRules(min_rows=1000))
    tolerated, *_ = check_quality(
        relaxed, table, QualityRules(min_rows=1000, missing_rate_ceilings={"merchant_category": 0.7})
    )

    assert [(p.check, p.column) for p in problems] == [("missing_rate", "merchant_category")]
    assert tolerated == []


def test_a_label_rate_out_of_bounds(contract, sample_table) -> None:
    table = _with_column(sample_table, contract.target, pa.array([False] * sample_table.num_rows))

    problems, _, _, rate = check_quality(contract, _normalised(contract, table), QualityRules(min_rows=1000))

    assert rate == 0.0
    assert [p.check for p in problems] == ["label_rate"]


def test_duplicate_ids_are_counted_and_shown(contract, sample_table) -> None:
    ids = sample_table.column(contract.id).to_pylist()
    ids[1] = ids[0]
    ids[3] = ids[0]
    table = _with_column(sample_table, contract.id, pa.array(ids))

    problems, *_ = check_quality(contract, _normalised(contract, table), QualityRules(min_rows=1000))

    assert [(p.check, p.rows) for p in problems] == [("duplicate_ids", 2)]
    assert ids[0] in problems[0].message


def test_drift_against_the_previous_training_set(contract, sample_table) -> None:
    from shipml.stats import baseline_statistics

    table = _normalised(contract, sample_table)
    baseline = baseline_statistics(contract, table, np.zeros(table.num_rows))
    scaled = _with_column(table, "amount", pc.multiply(table.column("amount"), 1000.0))

    same = check_quality(contract, table, QualityRules(min_rows=1000), baseline=baseline)
    moved = check_quality(contract, scaled, QualityRules(min_rows=1000), baseline=baseline)
    warned = check_quality(
        contract, scaled, QualityRules(min_rows=1000, drift_failure_psi=50), baseline=baseline
    )

    assert same[0] == [] and same[2]["amount"] < 0.01
    assert [(p.check, p.column) for p in moved[0]] == [("drift", "amount")]
    assert [(p.check, p.column) for p in warned[1]] == [("drift", "amount")] and warned[0] == []


def test_psi_is_zero_for_equal_shares_and_grows_with_the_shift() -> None:
    base = np.array([0.25, 0.25, 0.25, 0.25])

    assert population_stability_index(base, base) == pytest.approx(0.0)
    assert population_stability_index(base, np.array([0.4, 0.3, 0.2, 0.1])) < population_stability_index(
        base, np.array([0.7, 0.1, 0.1, 0.1])
    )


def test_quality_rules_from_environment_name_the_bad_variable() -> None:
    assert QualityRules.from_env({"SHIPML_QUALITY_MIN_ROWS": "10"}).min_rows == 10
    with pytest.raises(PipelineError, match="SHIPML_QUALITY_MAX_LABEL_RATE"):
        QualityRules.from_env({"SHIPML_QUALITY_MAX_LABEL_RATE": "2"})


# --- Evaluate --------------------------------------------------------------------------------------


def test_challenger_and_champion_are_scored_on_the_same_latest_rows(
    contract, sample_table, make_artifact
) -> None:
    from shipml.artifact import load_artifact

    challenger, champion = load_artifact(make_artifact(seed=1)), load_artifact(make_artifact(seed=2))

    report = steps.evaluate(contract, sample_table, challenger, champion=champion, champion_version=4)

    assert report.holdout_rows == 400
    assert report.challenger.overall["rows"] == report.champion.overall["rows"] == 400
    assert report.champion.version == 4
    assert report.challenger.overall["auc"] != report.champion.overall["auc"]
    assert set(report.challenger.segments) == {s.name for s in contract.segments}
    times = _normalised(contract, sample_table).column(contract.event_time)
    assert report.holdout_start >= str(sorted(times.to_pylist())[-400])


def test_non_finite_scores_fail_the_evaluation(contract, sample_table, make_artifact, monkeypatch) -> None:
    from shipml.artifact import load_artifact

    monkeypatch.setattr(steps, "_score", lambda artifact, table: np.full(table.num_rows, np.nan))

    with pytest.raises(EvaluationFailed, match="non-finite scores"):
        steps.evaluate(contract, sample_table, load_artifact(make_artifact()))


# --- Gate ----------------------------------------------------------------------------------------


def _metrics(
    auc: float, log_loss: float = 0.3, calibration: float = 0.05, rows: int = 5000, positives: int = 100
):
    return {
        "auc": auc,
        "log_loss": log_loss,
        "calibration_error": calibration,
        "rows": rows,
        "positives": positives,
    }


def _report(
    challenger: dict, champion: dict | None = None, segments=None, champion_segments=None
) -> EvaluationReport:
    return EvaluationReport(
        holdout_rows=5000,
        holdout_start="2026-01-01",
        challenger=ModelEvaluation(overall=challenger, segments=segments or {}),
        champion=ModelEvaluation(version=3, overall=champion, segments=champion_segments or {})
        if champion
        else None,
    )


def test_a_first_model_passes_on_the_floors() -> None:
    verdict = steps.gate(_report(_metrics(0.85)), GateSettings())

    assert verdict.passed and verdict.basis == "floors" and verdict.checks == 1


@pytest.mark.parametrize(
    ("metrics", "failed"),
    [
        (_metrics(0.6), "auc"),
        (_metrics(0.9, log_loss=0.9), "log_loss"),
        (_metrics(0.9, calibration=0.4), "calibration_error"),
        ({"auc": None, "log_loss": 0.3, "calibration_error": 0.05}, "auc"),
    ],
)
def test_a_first_model_under_a_floor_is_rejected(metrics: dict, failed: str) -> None:
    verdict = steps.gate(_report(metrics), GateSettings(max_log_loss=0.7, max_calibration_error=0.25))

    assert not verdict.passed
    assert [f.metric for f in verdict.failures] == [failed]


def test_a_challenger_within_tolerance_passes_against_the_champion() -> None:
    verdict = steps.gate(_report(_metrics(0.898), _metrics(0.9)), GateSettings(max_auc_drop=0.005))

    assert verdict.passed and verdict.basis == "champion" and verdict.champion_version == 3


def test_an_overall_regression_beyond_tolerance_is_rejected() -> None:
    verdict = steps.gate(_report(_metrics(0.88), _metrics(0.9)), GateSettings(max_auc_drop=0.005))

    assert not verdict.passed
    assert verdict.failures[0].scope == "overall" and verdict.failures[0].limit == pytest.approx(0.895)
    assert "champion v3" in verdict.summary


def test_a_regression_in_one_large_segment_is_rejected_even_if_overall_improves() -> None:
    champion_segments = {"country": {"BR": _metrics(0.9), "DE": _metrics(0.8)}}
    segments = {"country": {"BR": _metrics(0.85), "DE": _metrics(0.85)}}

    verdict = steps.gate(_report(_metrics(0.92), _metrics(0.9), segments, champion_segments), GateSettings())

    assert not verdict.passed
    assert [f.scope for f in verdict.failures] == ["segment country=BR"]


def test_segments_with_too_few_rows_or_positives_are_not_judged() -> None:
    champion_segments = {"country": {"NG": _metrics(0.9, rows=100), "CN": _metrics(0.9, positives=3)}}
    segments = {"country": {"NG": _metrics(0.5, rows=100), "CN": _metrics(0.5, positives=3)}}

    verdict = steps.gate(_report(_metrics(0.9), _metrics(0.9), segments, champion_segments), GateSettings())

    assert verdict.passed and verdict.checks == 2


def test_gate_handler_reads_the_evaluation_report_of_the_run(env: PipelineEnvironment, registry) -> None:
    plan = steps.prepare_run(
        RunRequest.parse({}),
        execution_name="e1",
        model_name="fraud",
        bucket=BUCKET,
        contract_path="c",
        registry=registry,
    )
    report = _report(_metrics(0.6))
    env.storage().write_bytes(plan.evaluation_uri + "report.json", report.model_dump_json().encode())

    verdict = gate_handler.handler({"plan": plan.model_dump(mode="json")}, None, env=env)

    assert verdict["passed"] is False and verdict["basis"] == "floors"


# --- Register, Promote -----------------------------------------------------------------------------


def test_register_approves_when_set_to(registry, make_artifact) -> None:
    approved = steps.register(registry, "fraud", make_artifact(), description="run 1", auto_approve=True)
    pending = steps.register(
        registry, "fraud", make_artifact(seed=3), description="run 2", auto_approve=False
    )

    assert (approved.version, approved.status, approved.approved) == (1, "Approved", True)
    assert (pending.version, pending.status, pending.approved) == (2, "PendingManualApproval", False)
    assert registry.get_version("fraud", 1).description == "run 1"


def test_promote_moves_live_and_says_from_where(registry, make_artifact) -> None:
    for seed in (1, 2):
        steps.register(registry, "fraud", make_artifact(seed=seed), description="", auto_approve=True)
    steps.promote(registry, "fraud", 1)

    promotion = steps.promote(registry, "fraud", 2)

    assert (promotion.version, promotion.previous_version) == (2, 1)
    assert registry.get_alias("fraud", "live").version == 2


def test_promote_refuses_an_unapproved_version_and_leaves_live(registry, make_artifact) -> None:
    steps.register(registry, "fraud", make_artifact(seed=1), description="", auto_approve=True)
    steps.promote(registry, "fraud", 1)
    steps.register(registry, "fraud", make_artifact(seed=2), description="", auto_approve=False)

    with pytest.raises(RegistryError, match="PendingManualApproval"):
        steps.promote(registry, "fraud", 2)

    assert registry.get_alias("fraud", "live").version == 1


# --- storage -------------------------------------------------------------------------------------


def test_local_storage_maps_the_artifact_bucket_to_the_blob_folder(tmp_path: Path) -> None:
    storage = LocalRunStorage(tmp_path / "blobs", BUCKET)

    storage.write_bytes(f"s3://{BUCKET}/pipeline/fraud/x.json", b"{}")

    assert (tmp_path / "blobs" / "pipeline" / "fraud" / "x.json").read_bytes() == b"{}"
    assert storage.path("/data/file.parquet") == Path("/data/file.parquet")
    assert storage.path("file:///data/x") == Path("/data/x")
    with pytest.raises(PipelineError, match="only the artifact bucket"):
        storage.path("s3://someone-elses-bucket/key")
    with pytest.raises(PipelineError, match="'..'"):
        storage.path(f"s3://{BUCKET}/a/../../etc/passwd")


def test_environment_refuses_a_partial_serving_target() -> None:
    with pytest.raises(PipelineError, match="SHIPML_CODEDEPLOY_APPLICATION"):
        PipelineEnvironment.from_env({"SHIPML_SERVING_FUNCTION": "fn", "SHIPML_CODEDEPLOY_GROUP": "g"})


def test_reports_round_trip_as_json() -> None:
    report = _report(_metrics(0.9), _metrics(0.8))

    assert EvaluationReport.model_validate(json.loads(report.model_dump_json())) == report
