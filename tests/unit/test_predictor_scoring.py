"""The predictor's two onnxruntime paths: one row through a per-thread IO binding, more in one call."""

from __future__ import annotations

import dataclasses
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest
from pydantic_core import to_json

from shipml.artifact import load_artifact, write_artifact
from shipml.contract import build_request_model
from shipml.predict import Prediction, Predictor
from tests.conftest import CONTRACT_PATH, valid_request


@pytest.fixture
def predictor(make_artifact) -> Predictor:
    return Predictor(load_artifact(make_artifact(seed=4)), model_version="fraud:1")


def rows(predictor: Predictor, count: int) -> np.ndarray:
    return np.random.default_rng(7).normal(0, 2, (count, predictor.encoder.width)).astype(np.float32)


def test_one_row_at_a_time_scores_as_the_whole_matrix_does(predictor):
    matrix = rows(predictor, 64)
    together = predictor.score_matrix(matrix)
    # Each call must read the row it is given (not a stale bound buffer), with batches in between.
    one_by_one = []
    for index in range(len(matrix)):
        one_by_one.append(predictor.score_matrix(matrix[index : index + 1])[0])
        if index % 10 == 0:
            predictor.score_matrix(matrix[:5])
    np.testing.assert_array_equal(np.array(one_by_one, dtype=np.float32), together)
    assert len(set(one_by_one)) == len(one_by_one)


def test_a_returned_score_is_not_overwritten_by_the_next_call(predictor):
    matrix = rows(predictor, 2)
    first = predictor.score_matrix(matrix[:1])
    kept = first.copy()
    predictor.score_matrix(matrix[1:])
    np.testing.assert_array_equal(first, kept)


def test_threads_score_single_rows_side_by_side(predictor):
    matrix = rows(predictor, 400)
    expected = predictor.score_matrix(matrix)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda i: predictor.score_matrix(matrix[i : i + 1])[0], range(len(matrix))))
    np.testing.assert_array_equal(np.array(got, dtype=np.float32), expected)


def reshaped(artifact, folder: Path, scores_per_row: int) -> Path:
    """`artifact` with its scores reshaped to (N, scores_per_row) and declared so."""
    model = onnx.load(artifact.model_path)
    shape = next(i for i in model.graph.initializer if i.name == "shape")
    shape.CopyFrom(onnx.numpy_helper.from_array(np.array([-1, scores_per_row], dtype=np.int64), "shape"))
    del model.graph.output[:]
    model.graph.output.append(
        onnx.helper.make_tensor_value_info("score", onnx.TensorProto.FLOAT, ["N", scores_per_row])
    )
    return write_artifact(
        folder, onnx_bytes=model.SerializeToString(), contract_path=CONTRACT_PATH, card=artifact.card
    )


def test_a_model_with_a_column_of_scores_takes_the_binding_too(make_artifact, tmp_path):
    # Exported models often answer (N, 1): the bound output has that shape, and scores come back flat.
    flat_artifact = load_artifact(make_artifact(seed=2))
    flat = Predictor(flat_artifact, model_version="fraud:1")
    column = Predictor(
        load_artifact(reshaped(flat_artifact, tmp_path / "column", 1)), model_version="fraud:1"
    )
    matrix = rows(flat, 3)
    reference = flat.score_matrix(matrix)
    assert column._one_shape == (1, 1)
    np.testing.assert_array_equal(column.score_matrix(matrix[:1]), reference[:1])
    np.testing.assert_array_equal(column.score_matrix(matrix), reference)


def test_prediction_serialises_as_before(predictor):
    record = build_request_model(predictor.contract).model_validate(valid_request())
    (prediction,) = predictor.predict([dict(record)])
    assert isinstance(prediction, Prediction)
    with pytest.raises(dataclasses.FrozenInstanceError):
        prediction.score = 0.0  # type: ignore[misc]
    assert list(dataclasses.asdict(prediction)) == ["id", "score", "label", "model_version", "fallbacks"]
    # The CLI's line: compact JSON in field order, as pydantic's model_dump_json wrote it.
    assert to_json(prediction) == json.dumps(dataclasses.asdict(prediction), separators=(",", ":")).encode()


def test_a_validated_request_as_a_dict_is_its_dump(contract, predictor):
    # /predict scores record.__dict__: the request model is flat, so that is exactly model_dump(),
    # and the Predictor adds online features to a copy, never to the record.
    model = build_request_model(contract)
    for overrides in ({}, {"card_number": None}, {"event_time": "2026-03-01T23:59:59-05:00"}):
        record = model.model_validate(valid_request(**overrides))
        assert record.__dict__ == record.model_dump()
    values = dict(record.__dict__)
    rows, flagged = predictor.enrich([record.__dict__])  # no online store: the defaults are added
    assert flagged[0] and set(flagged[0]) <= set(rows[0])
    assert record.__dict__ == values and rows[0] is not record.__dict__


def test_rows_the_binding_does_not_fit_take_the_checked_path(predictor):
    # A wrong width or a float64 row goes through `run`, which refuses it as before, and leaves
    # this thread's binding intact for the next right-sized row.
    import onnxruntime as ort

    good = rows(predictor, 1)
    expected = predictor.score_matrix(good)
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument):
        predictor.score_matrix(np.zeros((1, predictor.encoder.width + 1), dtype=np.float32))
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument):
        predictor.score_matrix(good.astype(np.float64))
    np.testing.assert_array_equal(predictor.score_matrix(good), expected)


def test_a_model_with_two_scores_per_row_is_not_bound(make_artifact, tmp_path):
    folder = reshaped(load_artifact(make_artifact(seed=3)), tmp_path / "pairs", 2)
    assert Predictor(load_artifact(folder), model_version="fraud:1")._one_shape is None


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.3, 0.1])
def test_a_score_at_the_threshold_is_decided_as_the_batch_scorer_decides(predictor, monkeypatch, threshold):
    # Scores are float32: the batch scorer's `scores >= threshold` compares in float32 (NEP 50).
    # 0.7's float32 is below 0.7, so a score equal to it is positive there and must be here too.
    contract = predictor.contract
    outputs = contract.outputs.model_copy(update={"threshold": threshold})
    predictor.contract = contract.model_copy(update={"outputs": outputs})
    at = np.float32(threshold)
    below, above = np.nextafter(at, np.float32(0)), np.nextafter(at, np.float32(1))
    scores = np.array([below, at, above], dtype=np.float32)
    monkeypatch.setattr(predictor, "score_matrix", lambda matrix: scores[: len(matrix)])
    labels = [p.label for p in predictor.predict([valid_request() for _ in scores])]
    assert labels == (scores >= threshold).tolist() == [False, True, True]
    assert all(type(p.score) is float and type(p.label) is bool for p in predictor.predict([valid_request()]))
