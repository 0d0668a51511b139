"""A training failure: a failed run, nothing registered, the champion live and serving.

Documented behaviour: `training.launcher.run_local` raises `TrainingFailed` with the tail of the
worker log and leaves no output folder; `shipml train` turns it into one error line and exit code 1
without registering anything; the registry's `live` alias is untouched, so a server following it
keeps serving the champion. (The retraining pipeline's failure path, `Train -> NotifyFailure ->
RunFailed` with the champion live, is covered in tests/integration/test_pipeline_local_runner.py.)
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shipml.backends import LIVE
from tests.faults.conftest import World, captured_rows


def _registry_state(world: World) -> tuple[list[int], int | None]:
    registry = world.backends.registry
    live = registry.get_alias("fraud", LIVE)
    return [v.version for v in registry.list_versions("fraud")], live.version if live else None


@pytest.fixture(scope="module")
def training_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from shipml.data.synth import generate

    path = tmp_path_factory.mktemp("training") / "transactions.parquet"
    generate(path, 500, seed=3)
    return path


@pytest.mark.slow
def test_a_failing_training_run_leaves_the_champion_live_and_serving(
    world: World, request_body, training_data: Path, contract_path: Path, tmp_path: Path
) -> None:
    from training.launcher import TrainingFailed, run_local

    before = _registry_state(world)
    context = world.context()
    failure: list[BaseException] = []

    def train() -> None:
        try:  # epochs=0 fails inside the workers, after torchrun started them
            run_local(
                training_data,
                tmp_path / "model",
                contract_path=contract_path,
                workers=2,
                hyperparameters={"epochs": 0},
                echo=False,
            )
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            failure.append(exc)

    answers = []
    with world.client(context) as client:
        run = threading.Thread(target=train)
        run.start()
        while run.is_alive() or not answers:  # the server answers while the run starts and fails
            answers.append(client.post("/predict", json=request_body()))
            context.holder.refresh(force=True)
            run.join(timeout=0.2)

    (error,) = failure
    assert isinstance(error, TrainingFailed)
    assert "epochs" in str(error).splitlines()[0] and error.log_tail
    assert not (tmp_path / "model").exists()  # nothing half-written
    assert _registry_state(world) == before == ([1], 1)
    assert {a.status_code for a in answers} == {200}
    assert {a.json()["model_version"] for a in answers} == {"fraud:1"}
    assert len(captured_rows(world.root)) == len(answers)


def test_shipml_train_reports_a_failed_run_in_one_line_and_registers_nothing(
    world: World, training_data: Path, contract_path: Path, monkeypatch
) -> None:
    import training.launcher
    from shipml.cli import app

    def failing_run(*_, **__) -> Path:
        raise training.launcher.TrainingFailed(
            "local training failed (rank 1: RuntimeError: gloo connection reset)", "…worker log…"
        )

    monkeypatch.setattr(training.launcher, "run_local", failing_run)
    before = _registry_state(world)

    result = CliRunner().invoke(
        app,
        ["train", "--data", str(training_data), "--workers", "2"],
        env={"SHIPML_ROOT": str(world.root), "SHIPML_CONTRACT": str(contract_path)},
    )

    assert result.exit_code == 1
    assert "local training failed (rank 1" in result.output
    assert "Traceback" not in result.output
    assert _registry_state(world) == before == ([1], 1)
