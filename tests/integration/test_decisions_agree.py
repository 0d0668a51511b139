"""A score at the threshold gets one label on every path: the Predictor (the API and the stream),
the batch scorer, the replay and the evaluation.

A model that gives every row the same float32 score `s`, and a contract threshold `t` that is not
a float32: `t` just above `s` but rounding down to it (float32(t) == s, so the score meets the
threshold), or just below the next float32 up (so it does not).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import yaml

from shipml.artifact import load_artifact
from shipml.batch.scorer import BatchScorer
from shipml.contract import FeatureEncoder, Masker, load_contract
from shipml.evaluation import binary_metrics
from shipml.monitoring.replay import replay
from shipml.predict import Predictor
from tests.conftest import (
    CONTRACT_PATH,
    _CollectingCapture,
    artifact_for,
    valid_request,
    weighted_logistic_onnx,
)


def _constant_model(width: int, input_name: str) -> tuple[bytes, np.float32]:
    onnx_bytes = weighted_logistic_onnx(np.zeros(width), 0.4, input_name=input_name)
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    (scores,) = session.run(None, {input_name: np.zeros((1, width), dtype=np.float32)})
    return onnx_bytes, np.float32(np.asarray(scores).reshape(-1)[0])


def _artifact(tmp_path, threshold_for):
    contract = load_contract(CONTRACT_PATH)
    encoder = FeatureEncoder(contract)
    onnx_bytes, score = _constant_model(encoder.width, encoder.input_name)
    threshold = threshold_for(score)
    raw = yaml.safe_load(CONTRACT_PATH.read_text(encoding="utf-8"))
    raw["outputs"]["threshold"] = threshold
    path = tmp_path / "contract.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    assert load_contract(path).outputs.threshold == threshold  # written and read back exactly
    folder = artifact_for(path, tmp_path / "artifact", auc=0.5, onnx_bytes=onnx_bytes)
    return load_artifact(folder), score, threshold


def _above_rounding_down(score: np.float32) -> float:
    up = float(np.nextafter(score, np.float32(1)))
    return float(score) + (up - float(score)) / 4  # above the score, but its float32 is the score


def _below_rounding_up(score: np.float32) -> float:
    up = float(np.nextafter(score, np.float32(1)))
    return up - (up - float(score)) / 4  # below the next float32, which is its float32


@pytest.mark.parametrize(
    ("threshold_for", "positive"),
    [(_above_rounding_down, True), (_below_rounding_up, False)],
    ids=["score-meets-its-float32", "score-below-its-float32"],
)
def test_every_path_labels_a_score_at_the_threshold_alike(tmp_path, sample_table, threshold_for, positive):
    artifact, score, threshold = _artifact(tmp_path, threshold_for)
    assert float(score) != threshold and artifact.contract.outputs.decision_threshold in (
        float(score),
        float(np.nextafter(score, np.float32(1))),
    )
    label = artifact.contract.outputs.label
    predictor = Predictor(artifact, model_version="fraud:1")

    (online,) = predictor.predict([valid_request()])
    assert (online.score, online.label) == (float(score), positive)

    scored, rejected, _ = BatchScorer(predictor).score_table(sample_table.slice(0, 50))
    assert rejected.num_rows == 0 and set(scored.column(label).to_pylist()) == {positive}

    sink = _CollectingCapture()
    masker = Masker(artifact.contract, hash_key=b"k")
    replay(sample_table.slice(0, 50), artifact, model_version="fraud:1", capture=sink, masker=masker)
    assert {r[label] for r in sink.records} == {positive}

    metrics = binary_metrics(np.array([1.0]), np.array([score]), threshold)
    assert metrics["recall"] == (1.0 if positive else 0.0)
