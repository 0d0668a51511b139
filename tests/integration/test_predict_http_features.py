"""The predictor with a feature from an external HTTP source: values used, failures fall back."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import yaml

from shipml.artifact import ModelCard, load_artifact, write_artifact
from shipml.contract import FeatureEncoder, build_request_model, load_contract
from shipml.errors import FeatureSourceUnavailable, OnlineFeatureError
from shipml.predict import Predictor
from tests.conftest import logistic_onnx

RISK_API = {"name": "risk_api", "url": "http://127.0.0.1:9/v1/customers/{key}"}
RISK_SCORE = {
    "name": "risk_score",
    "type": "number",
    "min": 0,
    "max": 1,
    "source": "http",
    "http_source": "risk_api",
    "response_field": "risk.score",
    "default": 0.5,
    "on_missing": "default",
}


class FakeSource:
    """Stands in for `HttpFeatureSource`: answers from a dict, or fails like a timed-out API."""

    def __init__(self, answers=None, *, down=False):
        self.answers = answers or {}
        self.down = down
        self.asked: list[list[str]] = []

    def lookup(self, keys):
        self.asked.append(list(keys))
        if self.down:
            raise FeatureSourceUnavailable("risk_api timed out after 80 ms")
        return {k: self.answers[k] for k in keys if k in self.answers}


def artifact_for(tmp_path, contract_path, on_missing="default"):
    raw = yaml.safe_load(contract_path.read_text())
    raw["http_sources"] = [RISK_API]
    raw["features"].append({**RISK_SCORE, "on_missing": on_missing})
    path = tmp_path / f"contract-{on_missing}.yaml"
    path.write_text(yaml.safe_dump(raw))
    contract = load_contract(path)
    encoder = FeatureEncoder(contract)
    card = ModelCard(
        model_name="fraud",
        created_at=datetime.now(UTC),
        data_fingerprint="t",
        code_version="t",
        input_name=encoder.input_name,
        feature_names=encoder.feature_names,
        threshold=0.5,
    )
    folder = write_artifact(
        tmp_path / f"artifact-{on_missing}",
        onnx_bytes=logistic_onnx(encoder.width),
        contract_path=path,
        card=card,
    )
    return load_artifact(folder)


@pytest.fixture
def record(contract_path, request_body):
    return build_request_model(load_contract(contract_path)).model_validate(request_body()).model_dump()


def test_http_values_are_used_and_missing_ones_fall_back(tmp_path, contract_path, record):
    artifact = artifact_for(tmp_path, contract_path)
    source = FakeSource({"C00000042": {"risk_score": 0.9}})
    predictor = Predictor(artifact, model_version="fraud:1", http_sources={"risk_api": source})
    rows, fallbacks = predictor.enrich([record, {**record, "customer_id": "C00000001"}])
    assert rows[0]["risk_score"] == 0.9 and rows[1]["risk_score"] == 0.5
    assert "risk_score" not in fallbacks[0] and "risk_score" in fallbacks[1]
    assert source.asked == [["C00000042", "C00000001"]]  # one lookup for the batch
    high = predictor.predict([record])[0].score
    low = Predictor(artifact, model_version="fraud:1", http_sources={"risk_api": FakeSource({})}).predict(
        [record]
    )
    assert high != low[0].score  # the fetched value reaches the model


def test_a_down_source_falls_back_or_refuses_per_the_contract(tmp_path, contract_path, record):
    lenient = Predictor(
        artifact_for(tmp_path, contract_path),
        model_version="fraud:1",
        http_sources={"risk_api": FakeSource(down=True)},
    )
    (prediction,) = lenient.predict([record])
    assert "risk_score" in prediction.fallbacks
    strict = Predictor(
        artifact_for(tmp_path, contract_path, on_missing="reject"),
        model_version="fraud:1",
        http_sources={"risk_api": FakeSource(down=True)},
    )
    with pytest.raises(OnlineFeatureError, match="risk_score"):
        strict.predict([record])
