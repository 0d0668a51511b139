"""Training end to end on this machine: 2 gloo workers under torchrun, through the SageMaker code path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pytest

from shipml.artifact import load_artifact
from shipml.contract import FeatureEncoder, encode_target, load_contract
from shipml.data import fingerprint, read_table
from shipml.data.synth import generate
from shipml.evaluation import roc_auc
from training.launcher import TrainingFailed, run_local
from training.model import TabularModel, export_onnx, predict
from training.train import (
    HyperparameterError,
    holdout_split,
    latest_checkpoint,
    load_checkpoint,
    model_from_checkpoint,
    parse_hyperparameters,
    time_order,
)

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "examples" / "fraud" / "contract.yaml"
ROWS = 6_000
EPOCHS = 3
#: ONNX Runtime and torch run the same float32 graph; they may differ in the last bits of a
#: sigmoid/matmul, never by more than this (absolute, on probabilities in [0, 1]).
ONNX_TORCH_ATOL = 1e-5
RUN_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "transactions.parquet"
    generate(path, ROWS, seed=7)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_file):
    """One real 2-worker training run, shared by the tests of this module."""
    base = tmp_path_factory.mktemp("trained")
    log_path = base / "train.log"
    out = run_local(
        data_file,
        base / "artifact",
        contract_path=CONTRACT,
        workers=2,
        hyperparameters={"epochs": EPOCHS, "batch_size": 256},
        checkpoint_dir=base / "checkpoints",
        timeout_s=RUN_TIMEOUT_S,
        log_path=log_path,
        echo=False,
    )
    return {"artifact": out, "checkpoints": base / "checkpoints", "log": log_path.read_text()}


@pytest.mark.slow
def test_two_gloo_workers_produce_a_verified_artifact(trained, data_file):
    artifact = load_artifact(trained["artifact"])  # verifies every checksum
    card = artifact.card
    contract = load_contract(CONTRACT)
    encoder = FeatureEncoder(contract)
    assert "world size 2 (gloo, cpu)" in trained["log"]
    assert "--nproc_per_node=2" in trained["log"]
    assert f"epoch {EPOCHS}/{EPOCHS}" in trained["log"]
    assert card.model_name == "fraud"
    assert card.metrics["overall"]["auc"] > 0.6, card.metrics["overall"]
    assert card.parameters["epochs"] == EPOCHS and card.parameters["hidden"] == [64, 32]
    assert card.feature_names == encoder.feature_names
    assert card.input_name == "features"
    assert card.threshold == contract.outputs.threshold
    assert card.data_fingerprint == fingerprint(data_file)
    assert card.onnx_opset == 17 and card.framework.startswith("torch ")
    assert card.code_version.startswith("0.")
    assert card.baseline  # drift baseline from the training part
    assert card.created_at.tzinfo is not None


@pytest.mark.slow
def test_onnx_and_torch_agree_on_the_same_rows(trained, data_file):
    """The exported graph under onnxruntime and the torch model give the same scores (atol 1e-5)."""
    checkpoint_path = latest_checkpoint(trained["checkpoints"])
    assert checkpoint_path is not None and checkpoint_path.name == f"checkpoint-{EPOCHS:05d}.pt"
    model = model_from_checkpoint(load_checkpoint(checkpoint_path))  # the final weights
    contract = load_contract(CONTRACT)
    table = read_table(data_file)
    x = FeatureEncoder(contract).encode_table(table)

    session = ort.InferenceSession(
        str(trained["artifact"] / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    assert [i.name for i in session.get_inputs()] == ["features"]
    assert [o.name for o in session.get_outputs()] == ["score"]
    onnx_scores = session.run(["score"], {"features": x})[0].reshape(-1)
    torch_scores = predict(model, x)
    assert onnx_scores.shape == torch_scores.shape == (ROWS,)
    np.testing.assert_allclose(onnx_scores, torch_scores, rtol=0, atol=ONNX_TORCH_ATOL)
    # The artifact is the last checkpoint: its holdout AUC is the card's.
    _, hold = holdout_split(time_order(table, contract.event_time), 0.2)
    auc = roc_auc(encode_target(contract, table.take(hold)), onnx_scores[hold])
    assert auc == pytest.approx(load_artifact(trained["artifact"]).card.metrics["overall"]["auc"], abs=1e-6)
    # A batch of one row gives the same score as inside a batch (dynamic batch axis).
    single = session.run(["score"], {"features": x[:1]})[0].reshape(-1)
    assert single[0] == pytest.approx(onnx_scores[0], abs=ONNX_TORCH_ATOL)


@pytest.mark.slow
def test_resume_from_checkpoint(tmp_path, data_file):
    checkpoints = tmp_path / "checkpoints"
    common = dict(
        contract_path=CONTRACT, workers=2, checkpoint_dir=checkpoints, timeout_s=RUN_TIMEOUT_S, echo=False
    )
    run_local(
        data_file, tmp_path / "first", hyperparameters={"epochs": 1}, log_path=tmp_path / "1.log", **common
    )
    assert latest_checkpoint(checkpoints).name == "checkpoint-00001.pt"
    # As after a spot interruption: the next job finds the checkpoint and continues from it.
    run_local(
        data_file, tmp_path / "second", hyperparameters={"epochs": 2}, log_path=tmp_path / "2.log", **common
    )
    log = (tmp_path / "2.log").read_text()
    assert "resuming from epoch 1" in log
    assert "epoch 2/2" in log and "epoch 1/2" not in log
    assert latest_checkpoint(checkpoints).name == "checkpoint-00002.pt"
    assert load_artifact(tmp_path / "second").card.parameters["epochs"] == 2


@pytest.mark.slow
def test_failed_run_raises_and_leaves_no_output(tmp_path, data_file):
    out = tmp_path / "out" / "artifact"
    with pytest.raises(TrainingFailed, match="hyperparameter 'epochs' must be an integer") as info:
        run_local(
            data_file,
            out,
            contract_path=CONTRACT,
            hyperparameters={"epochs": "many"},
            timeout_s=RUN_TIMEOUT_S,
            echo=False,
        )
    assert "last lines of the training log" in str(info.value)
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # no half-written staging folder either


@pytest.mark.slow
def test_a_diverging_run_stops_with_a_clear_error_and_no_artifact(tmp_path, data_file):
    out = tmp_path / "out" / "artifact"
    with pytest.raises(TrainingFailed, match=r"the training loss is nan \(the model diverged\)"):
        run_local(
            data_file,
            out,
            contract_path=CONTRACT,
            hyperparameters={"epochs": 2, "lr": 1e30},
            timeout_s=RUN_TIMEOUT_S,
            echo=False,
        )
    assert not out.exists()


def test_non_empty_output_folder_is_refused(tmp_path, data_file):
    out = tmp_path / "artifact"
    out.mkdir()
    (out / "something").write_text("x")
    with pytest.raises(FileExistsError):
        run_local(data_file, out, contract_path=CONTRACT, echo=False)


def test_hyperparameters_are_validated():
    hp = parse_hyperparameters({"contract": "c.yaml", "epochs": "4", "hidden": "128,64", "lr": "0.01"})
    assert (hp.epochs, hp.hidden, hp.lr) == (4, (128, 64), 0.01)
    assert parse_hyperparameters({"contract": "c.yaml", "sagemaker_program": "x"}).epochs == 5
    with pytest.raises(HyperparameterError, match="'contract'"):
        parse_hyperparameters({"epochs": 3})
    with pytest.raises(HyperparameterError, match=r"unknown hyperparameter\(s\) \['epoch'\]"):
        parse_hyperparameters({"contract": "c.yaml", "epoch": 3})
    with pytest.raises(HyperparameterError, match="'holdout_fraction' must be < 1"):
        parse_hyperparameters({"contract": "c.yaml", "holdout_fraction": 1})
    with pytest.raises(HyperparameterError, match="'dropout'"):
        parse_hyperparameters({"contract": "c.yaml", "dropout": -0.1})


def test_holdout_is_the_future():
    times = pa.array([5, 1, 4, 2, 3, 0], pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    table = pa.table({"event_time": times})
    train, hold = holdout_split(time_order(table, "event_time"), 1 / 3)
    assert train.tolist() == [1, 3, 4, 5] and hold.tolist() == [0, 2]
    strings = pa.table({"event_time": ["2026-01-01T02:00:00+02:00", "2026-01-01T01:00:00+00:00"]})
    assert time_order(strings, "event_time").tolist() == [0, 1]  # 00:00Z before 01:00Z


def test_untrained_model_exports_the_same_function():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    x = np.random.default_rng(1).lognormal(size=(64, 9)).astype(np.float32)
    model = TabularModel(9, (16, 8), 0.2)
    model.set_normalisation(x)
    session = ort.InferenceSession(export_onnx(model, 9, "features"), providers=["CPUExecutionProvider"])
    onnx_scores = session.run(["score"], {"features": x})[0]
    np.testing.assert_allclose(onnx_scores, predict(model, x), rtol=0, atol=ONNX_TORCH_ATOL)
    assert json.dumps(model.hidden) == "[16, 8]"
