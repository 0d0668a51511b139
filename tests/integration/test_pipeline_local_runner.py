"""The synthesized state machine, run end to end by the local runner on the local backend.

The definition is exported once (a CDK synth in a subprocess), a champion is trained once; every
test works on its own copy of the champion's root. Runs that only need to get past Train reuse
the champion's artifact instead of training again.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from shipml.backends import local_backends
from shipml.data.synth import DriftKnobs, generate
from shipml.pipeline.asl import TaskError
from shipml.pipeline.definition import CACHE_FILE, is_stale, load_definition
from shipml.pipeline.local import LocalTasks, run_pipeline
from shipml.pipeline.steps import run_id_for
from shipml.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "examples" / "fraud" / "contract.yaml"
ROWS = 8_000
FAST = {"epochs": 2}
# Small data makes per-segment AUCs noisy: these runs test the flow, not the gate's strictness
# (the gate's rules have their own unit tests).
LENIENT_GATE = {
    "SHIPML_GATE_MAX_AUC_DROP": "0.2",
    "SHIPML_GATE_MAX_SEGMENT_AUC_DROP": "0.5",
    "SHIPML_GATE_MAX_LOG_LOSS_INCREASE": "2",
}
STEPS_BEFORE_PROMOTION = [
    "PrepareRun",
    "ValidateData",
    "Train",
    "Evaluate",
    "Gate",
    "Register",
    "Deploy",
    "PromoteLive",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("data")
    generate(folder / "base.parquet", ROWS, seed=7)
    generate(
        folder / "drifted.parquet",
        ROWS,
        seed=8,
        drift=DriftKnobs(amount_shift=1.5, fraud_rate_segment=("country", "BR")),
    )
    table = pq.read_table(folder / "base.parquet")
    amounts = table.column("amount").to_pylist()
    amounts[10] = -5.0
    pq.write_table(
        table.set_column(table.schema.get_field_index("amount"), "amount", pa.array(amounts)),
        folder / "broken.parquet",
    )
    return {
        "base": folder / "base.parquet",
        "drifted": folder / "drifted.parquet",
        "broken": folder / "broken.parquet",
    }


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The definition as `shipml retrain` gets it: synthesized by the exporter in a subprocess."""
    root = tmp_path_factory.mktemp("definition")
    found, source = load_definition(root)
    assert source == root / CACHE_FILE and not is_stale(source)
    return found


def _settings(root: Path) -> Settings:
    return Settings(root=root, contract=CONTRACT)


def _run(document, root: Path, execution_input: dict[str, Any], *, tasks=None, environ=None):
    tasks = tasks or LocalTasks(document, _settings(root), environ=environ or {})
    return run_pipeline(document, tasks, execution_input, root=root, sleep=lambda s: None)


@pytest.fixture(scope="module")
def champion(document, data, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root where a first run trained, gated on the floors, registered and promoted version 1."""
    root = tmp_path_factory.mktemp("champion")
    execution, history = _run(document, root, {"data_uri": str(data["base"]), "hyperparameters": FAST})
    assert execution.status == "SUCCEEDED", (execution.error, execution.cause)
    assert execution.visited[-1] == "Promoted"
    assert json.loads(history.read_text())["status"] == "SUCCEEDED"
    return root


@pytest.fixture
def root(champion: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "root"
    shutil.copytree(champion, copy)
    return copy


def _live(root: Path) -> int | None:
    live = local_backends(root).registry.get_alias("fraud", "live")
    return live.version if live else None


def _versions(root: Path) -> list[int]:
    return [v.version for v in local_backends(root).registry.list_versions("fraud")]


def _notifications(root: Path) -> list[dict[str, Any]]:
    path = root / "notifications.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_the_first_run_passes_on_the_floors_and_promotes(champion: Path) -> None:
    registry = local_backends(champion).registry

    assert _live(champion) == 1
    assert registry.get_version("fraud", 1).description.startswith("pipeline run local-")
    assert [n["subject"] for n in _notifications(champion)] == ["shipml fraud (dev) retraining: promoted"]
    (history,) = (champion / "pipeline" / "executions").glob("*.json")
    entered = [e["state"] for e in json.loads(history.read_text())["history"] if e["type"] == "StateEntered"]
    assert entered == [
        "PrepareRun",
        "ValidateData",
        "Train",
        "Evaluate",
        "Gate",
        "GatePassed?",
        "Register",
        "Approved?",
        "Deploy",
        "RolloutDone?",
        "PromoteLive",
        "NotifyPromoted",
        "Promoted",
    ]


def test_a_passing_retrain_on_drifted_data_promotes_the_challenger(document, data, root: Path) -> None:
    execution, _ = _run(
        document,
        root,
        {"data_uri": str(data["drifted"]), "hyperparameters": FAST, "reason": "drift"},
        environ=LENIENT_GATE,
    )

    assert execution.status == "SUCCEEDED", (execution.error, execution.cause)
    assert execution.output["gate"]["basis"] == "champion"
    assert execution.output["promotion"]["message"] == "fraud:2 is now live (was v1)"
    assert _live(root) == 2


def test_a_degraded_challenger_is_stopped_by_the_gate_and_the_champion_stays(
    document, data, root: Path
) -> None:
    from shipml.cli import _configure
    from shipml.pipeline.cli import retrain

    app = typer.Typer()
    app.callback()(_configure)
    app.command("retrain")(retrain)
    definition = root / "definition.json"
    definition.write_text(json.dumps(document))

    result = CliRunner().invoke(
        app,
        [
            "--root",
            str(root),
            "--contract",
            str(CONTRACT),
            "retrain",
            "--data",
            str(data["drifted"]),
            "--hp",
            "epochs=1",
            "--hp",
            "lr=0.000001",
            "--definition",
            str(definition),
        ],
    )

    assert result.exit_code == 0, result.output
    assert "rejected against champion v1" in result.output
    assert "ChampionKept" in result.output
    assert _live(root) == 1 and _versions(root) == [1]
    assert _notifications(root)[-1]["subject"].endswith("challenger rejected")


class FailingAt:
    """Local tasks that fail at one state, and reuse the champion's artifact instead of training."""

    def __init__(self, inner: LocalTasks, state: str, champion_artifact: bytes) -> None:
        self.inner, self.state, self.artifact = inner, state, champion_artifact

    def __call__(self, state: str, resource: str, parameters: Any) -> Any:
        if state == self.state:
            raise TaskError("Injected.Failure", f"failure injected at {state}")
        if state == "Train":
            output, job = parameters["OutputDataConfig"]["S3OutputPath"], parameters["TrainingJobName"]
            model_uri = f"{output}{job}/output/model.tar.gz"
            self.inner.storage.write_bytes(model_uri, self.artifact)
            return {
                "TrainingJobName": parameters["TrainingJobName"],
                "TrainingJobStatus": "Completed",
                "ModelArtifacts": {"S3ModelArtifacts": model_uri},
            }
        return self.inner(state, resource, parameters)


@pytest.mark.parametrize("state", STEPS_BEFORE_PROMOTION)
def test_a_failure_in_any_step_ends_on_the_failure_path_with_the_champion_live(
    document, data, root: Path, state: str
) -> None:
    artifact = (root / "blobs" / "models" / "fraud" / "1" / "model.tar.gz").read_bytes()
    tasks = FailingAt(LocalTasks(document, _settings(root), environ=LENIENT_GATE), state, artifact)

    execution, history = _run(document, root, {"data_uri": str(data["base"])}, tasks=tasks)

    assert execution.status == "FAILED"
    assert (execution.error, execution.cause) == ("Injected.Failure", f"failure injected at {state}")
    assert execution.visited[-3:] == [state, "NotifyFailure", "RunFailed"]
    assert _live(root) == 1
    assert _notifications(root)[-1]["subject"].endswith("retraining: failed")
    assert f"failure injected at {state}" in _notifications(root)[-1]["message"]
    assert json.loads(history.read_text())["error"] == "Injected.Failure"


def test_data_that_breaks_the_contract_stops_at_validate_data_with_a_report(
    document, data, root: Path
) -> None:
    execution, _ = _run(document, root, {"data_uri": str(data["broken"])})

    assert execution.visited[-3:] == ["ValidateData", "NotifyFailure", "RunFailed"]
    assert execution.error == "States.TaskFailed"
    cause = json.loads(execution.cause)
    assert cause["ProcessingJobStatus"] == "Failed"
    assert "amount" in cause["FailureReason"] and "'min'" in cause["FailureReason"]
    report = (
        root
        / "blobs"
        / "pipeline"
        / "fraud"
        / "runs"
        / run_id_for(execution.name)
        / "validation"
        / "report.json"
    )
    problems = json.loads(report.read_text())["problems"]
    assert problems[0]["column"] == "amount" and "row 10" in problems[0]["message"]
    assert _live(root) == 1 and _versions(root) == [1]


def test_a_failed_training_job_ends_in_a_clear_failed_state(document, data, root: Path) -> None:
    execution, _ = _run(document, root, {"data_uri": str(data["base"]), "hyperparameters": {"epochs": 0}})

    assert execution.visited[-3:] == ["Train", "NotifyFailure", "RunFailed"]
    cause = json.loads(execution.cause)
    assert cause["TrainingJobStatus"] == "Failed" and "epochs" in cause["FailureReason"]
    assert _live(root) == 1


def test_malformed_input_is_rejected_by_the_first_state_naming_the_field(document, root: Path) -> None:
    execution, _ = _run(document, root, {"hyperparameters": {"learning_rate": 0.1}})

    assert execution.visited == ["PrepareRun", "NotifyFailure", "RunFailed"]
    assert execution.error == "InvalidRunRequest"
    assert "learning_rate" in json.loads(execution.cause)["errorMessage"]
    assert _live(root) == 1


def test_the_cached_definition_is_rebuilt_when_the_stacks_change(tmp_path: Path) -> None:
    cache = tmp_path / "definition.json"
    cache.write_text("{}")
    newest = max(p.stat().st_mtime for p in (ROOT / "stacks").glob("*.py"))

    import os

    os.utime(cache, (newest + 10, newest + 10))
    assert not is_stale(cache)
    os.utime(cache, (newest - 10, newest - 10))
    assert is_stale(cache)


class ScriptedRollout(FailingAt):
    """The champion's artifact for Train, and a CodeDeploy rollout that reports the given statuses."""

    def __init__(self, inner: LocalTasks, champion_artifact: bytes, statuses: list[str]) -> None:
        super().__init__(inner, state="", champion_artifact=champion_artifact)
        self.statuses = statuses

    def __call__(self, state: str, resource: str, parameters: Any) -> Any:
        if state in ("Deploy", "CheckRollout"):
            version = parameters["Payload"].get("version") or parameters["Payload"]["rollout"]["version"]
            rollout = {
                "status": self.statuses.pop(0),
                "version": version,
                "deployment_id": "d-1",
                "function_version": "8",
                "previous_function_version": "7",
                "detail": "canary alarm fired" if not self.statuses else "",
            }
            return {"Payload": rollout, "StatusCode": 200}
        return super().__call__(state, resource, parameters)


@pytest.mark.parametrize(
    ("statuses", "end", "live"),
    [
        (["InProgress", "InProgress", "Succeeded"], "Promoted", 2),
        (["InProgress", "Failed"], "RolledBack", 1),
    ],
)
def test_the_rollout_is_polled_and_only_a_successful_one_moves_live(
    document, data, root: Path, statuses: list[str], end: str, live: int
) -> None:
    artifact = (root / "blobs" / "models" / "fraud" / "1" / "model.tar.gz").read_bytes()
    tasks = ScriptedRollout(
        LocalTasks(document, _settings(root), environ=LENIENT_GATE), artifact, list(statuses)
    )

    execution, _ = _run(document, root, {"data_uri": str(data["base"])}, tasks=tasks)

    assert execution.visited[-1] == end
    assert execution.visited.count("WaitForRollout") == len(statuses) - 1
    assert _live(root) == live
    if end == "RolledBack":
        assert execution.error == "RolloutFailed"
        assert "canary alarm fired" in _notifications(root)[-1]["message"]
