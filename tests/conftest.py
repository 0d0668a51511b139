"""Shared fixtures: the example contract, small generated data, and artifact builders.

Artifacts built here use a tiny logistic ONNX graph made with `onnx.helper`, so registry, loader
and CLI tests need no torch; the real torch-trained artifact is covered by the training tests.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from shipml.contract import Contract, FeatureEncoder, load_contract

ROOT = Path(__file__).resolve().parent.parent
CONTRACT_PATH = ROOT / "examples" / "fraud" / "contract.yaml"


@pytest.fixture(scope="session")
def contract_path() -> Path:
    return CONTRACT_PATH


@pytest.fixture(scope="session")
def contract() -> Contract:
    return load_contract(CONTRACT_PATH)


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2,000 generated transactions (and the customers' online features beside them)."""
    from shipml.data.synth import generate, write_online_snapshot

    folder = tmp_path_factory.mktemp("data")
    generate(folder / "transactions.parquet", 2_000, seed=11)
    write_online_snapshot(folder / "customers.parquet", seed=11, rows=2_000)
    return folder / "transactions.parquet"


@pytest.fixture(scope="session")
def sample_table(sample_data: Path):
    import pyarrow.parquet as pq

    return pq.read_table(sample_data)


def logistic_onnx(width: int, *, seed: int = 0, input_name: str = "features") -> bytes:
    """A real ONNX graph: score = sigmoid(x @ w + b), shape (N,), output named 'score'."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = numpy_helper.from_array(rng.normal(0, 0.3, (width, 1)).astype(np.float32), "w")
    bias = numpy_helper.from_array(np.array([-2.0], dtype=np.float32), "b")
    shape = numpy_helper.from_array(np.array([-1], dtype=np.int64), "shape")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", [input_name, "w"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["logit"]),
            helper.make_node("Sigmoid", ["logit"], ["prob"]),
            helper.make_node("Reshape", ["prob", "shape"], ["score"]),
        ],
        "logistic",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"])],
        initializer=[weights, bias, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.fixture
def make_artifact(contract: Contract, tmp_path: Path):
    """Build a valid artifact folder for the example contract; returns its path."""
    from shipml.artifact import ModelCard, write_artifact

    counter = iter(range(1000))

    def build(*, seed: int = 0, auc: float = 0.9, dest: Path | None = None) -> Path:
        encoder = FeatureEncoder(contract)
        card = ModelCard(
            model_name=contract.model,
            created_at=datetime.now(UTC),
            data_fingerprint="sha256:test",
            code_version="test",
            parameters={"seed": seed},
            metrics={"overall": {"auc": auc, "rows": 100}},
            baseline={},
            input_name=encoder.input_name,
            feature_names=encoder.feature_names,
            threshold=contract.outputs.threshold,
            framework="onnx.helper",
            onnx_opset=17,
        )
        target = dest or tmp_path / f"artifact-{next(counter)}"
        return write_artifact(
            target, onnx_bytes=logistic_onnx(encoder.width, seed=seed), contract_path=CONTRACT_PATH, card=card
        )

    return build


def valid_request(**overrides) -> dict:
    """A request body that satisfies the example contract."""
    body = {
        "transaction_id": "T000000000001",
        "customer_id": "C00000042",
        "card_number": "4111111111111111",
        "amount": 129.99,
        "currency": "EUR",
        "merchant_category": "electronics",
        "country": "DE",
        "channel": "online",
        "card_present": False,
        "event_time": "2026-01-15T23:45:00+01:00",
    }
    body.update(overrides)
    return body


@pytest.fixture
def request_body():
    return valid_request
