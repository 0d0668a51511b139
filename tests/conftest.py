"""Shared fixtures: the example contract, small generated data, and artifact builders.

Artifacts built here use a tiny logistic ONNX graph made with `onnx.helper`, so registry, loader
and CLI tests need no torch; the real torch-trained artifact is covered by the training tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shipml.contract import Contract, FeatureEncoder, load_contract

ROOT = Path(__file__).resolve().parent.parent
CONTRACT_PATH = ROOT / "examples" / "fraud" / "contract.yaml"
AWS_REGION = "eu-west-1"


@pytest.fixture
def moto_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto's AWS, with fake credentials and AWS_REGION in the environment: a boto3 session on it."""
    import boto3
    from moto import mock_aws

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": AWS_REGION,
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield boto3.session.Session(region_name=AWS_REGION)


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


def logistic_onnx(width: int, *, seed: int = 0, input_name: str = "features", bias: float = -2.0) -> bytes:
    """A real ONNX graph: score = sigmoid(x @ w + b), shape (N,), output named 'score'; seeded weights
    (a NaN `bias` makes a model whose every score is NaN)."""
    weights = np.random.default_rng(seed).normal(0, 0.3, width)
    return weighted_logistic_onnx(weights, bias, input_name=input_name)


@pytest.fixture
def make_artifact(tmp_path: Path):
    """Build a valid artifact folder for the example contract; returns its path."""
    counter = iter(range(1000))

    def build(*, seed: int = 0, auc: float = 0.9, dest: Path | None = None) -> Path:
        return artifact_for(CONTRACT_PATH, dest or tmp_path / f"artifact-{next(counter)}", seed=seed, auc=auc)

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


# --- monitoring: a fitted model, its baseline, and capture-shaped data (appended for shipml.monitoring) ---


def weighted_logistic_onnx(weights: np.ndarray, bias: float, *, input_name: str = "features") -> bytes:
    """An ONNX logistic model with the given weights: score = sigmoid(x @ w + b), shape (N,)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.asarray(weights, dtype=np.float32).reshape(-1, 1), "w")
    b = numpy_helper.from_array(np.array([bias], dtype=np.float32), "b")
    shape = numpy_helper.from_array(np.array([-1], dtype=np.int64), "shape")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", [input_name, "w"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["logit"]),
            helper.make_node("Sigmoid", ["logit"], ["prob"]),
            helper.make_node("Reshape", ["prob", "shape"], ["score"]),
        ],
        "fitted_logistic",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", len(weights)])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"])],
        initializer=[w, b, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


class _CollectingCapture:
    """A CaptureSink that keeps the records it is given (for capture-shaped tables)."""

    def __init__(self) -> None:
        self.records: list[dict] = []

    def write(self, records) -> None:
        self.records.extend(dict(r) for r in records)

    def flush(self) -> None:
        pass


class MonitoringWorld:
    """What the monitoring tests need, built once per session (about 10 s).

    - `reference`: the training rows: 2 of every 3 rows of 60,000 generated transactions (seed 5);
    - `clean`: the other third: a sample of the same distribution (same customers, same period);
    - `drifted`: the same third of the same seed generated with planted drift: amounts x2 (so
      `amount` and `mean_amount_30d`), 10 % of rows in an unseen merchant category `crypto`, and
      the fraud odds x4 in country=FR (a change of the labels only);
    - `artifact_dir`: a scikit-learn logistic regression fitted on `reference`, as an ONNX artifact
      whose card holds the drift baseline and the holdout metrics (shipml.stats, shipml.evaluation);
    - `capture(table, ...)`: capture-shaped rows, exactly as the serving app captures them
      (scored by the artifact, masked; written by `shipml.monitoring.replay.replay`);
    - `write_capture(folder, table, ...)`: the same as a Parquet part under `folder/date=YYYY-MM-DD/`,
      the local backend's capture layout.
    """

    AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def __init__(self, folder: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq
        from sklearn.linear_model import LogisticRegression

        from shipml.artifact import ModelCard, load_artifact, write_artifact
        from shipml.contract.encode import encode_target
        from shipml.data.synth import DriftKnobs, generate
        from shipml.evaluation import evaluate
        from shipml.stats import baseline_statistics

        contract = load_contract(CONTRACT_PATH)
        self.drift_knobs = DriftKnobs(
            amount_shift=2.0,
            new_merchant_category="crypto",
            fraud_rate_segment=("country", "FR"),
            fraud_rate_multiplier=4.0,
        )
        generate(folder / "all.parquet", 60_000, seed=5)
        generate(folder / "drifted.parquet", 60_000, seed=5, drift=self.drift_knobs)
        everything = pq.read_table(folder / "all.parquet")
        third = pa.array(np.arange(everything.num_rows) % 3 == 0)
        self.reference = everything.filter(pa.compute.invert(third))
        self.clean = everything.filter(third)
        self.drifted = pq.read_table(folder / "drifted.parquet").filter(third)
        encoder = FeatureEncoder(contract)
        fitted = LogisticRegression(max_iter=500).fit(
            encoder.encode_table(self.reference), encode_target(contract, self.reference)
        )
        onnx_bytes = weighted_logistic_onnx(
            fitted.coef_[0], float(fitted.intercept_[0]), input_name=encoder.input_name
        )
        self._encoder = encoder
        self._weights = (fitted.coef_[0].astype(np.float32), np.float32(fitted.intercept_[0]))
        scores = self.scores(self.reference)
        card = ModelCard(
            model_name=contract.model,
            created_at=self.AT,
            data_fingerprint="sha256:monitoring-world",
            code_version="test",
            metrics=evaluate(contract, self.reference, scores),
            baseline=baseline_statistics(contract, self.reference, scores),
            input_name=encoder.input_name,
            feature_names=encoder.feature_names,
            threshold=contract.outputs.threshold,
            framework="sklearn+onnx.helper",
            onnx_opset=17,
        )
        self.artifact_dir = write_artifact(
            folder / "artifact", onnx_bytes=onnx_bytes, contract_path=CONTRACT_PATH, card=card
        )
        self.artifact = load_artifact(self.artifact_dir)
        self.contract = contract

    def scores(self, table) -> np.ndarray:
        """The artifact's scores (the same float32 arithmetic as onnxruntime, to ~1e-6)."""
        weights, bias = self._weights
        logits = self._encoder.encode_table(table) @ weights + bias
        return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))

    def capture(
        self, table, *, model_version: str = "fraud:1", at: datetime | None = None, request_prefix: str = "r"
    ):
        """Capture-shaped rows of `table` (a pyarrow Table), and the labels of replay()."""
        import pyarrow as pa

        from shipml.contract import Masker
        from shipml.monitoring.replay import replay

        sink = _CollectingCapture()
        result = replay(
            table,
            self.artifact,
            model_version=model_version,
            capture=sink,
            masker=Masker(self.contract, hash_key=b"test"),
            at=at or self.AT,
            request_prefix=request_prefix,
        )
        return pa.Table.from_pylist(sink.records), result.labels

    def write_capture(self, folder: Path, table, **options) -> Path:
        """Write capture-shaped rows of `table` as one Parquet part of the local capture layout."""
        import pyarrow.parquet as pq

        captured, _ = self.capture(table, **options)
        at = options.get("at") or self.AT
        path = Path(folder) / f"date={at:%Y-%m-%d}" / f"part-{options.get('request_prefix', 'r')}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(captured, path)
        return path


@pytest.fixture(scope="session")
def monitoring_world(tmp_path_factory: pytest.TempPathFactory) -> MonitoringWorld:
    """Reference, same-distribution and drifted data with a fitted model (see `MonitoringWorld`)."""
    return MonitoringWorld(tmp_path_factory.mktemp("monitoring-world"))


# --- reliability suites (tests/fuzz, tests/faults): an artifact outside the function-scoped fixture ---


def artifact_for(
    contract_path: Path,
    folder: Path,
    *,
    seed: int = 0,
    auc: float = 0.9,
    bias: float = -2.0,
    onnx_bytes: bytes | None = None,
) -> Path:
    """A valid tiny-logistic artifact for the contract at `contract_path` (any scope, any contract);
    `onnx_bytes` replaces the seeded logistic graph."""
    from shipml.artifact import ModelCard, write_artifact

    contract = load_contract(contract_path)
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
    return write_artifact(
        folder,
        onnx_bytes=onnx_bytes or logistic_onnx(encoder.width, seed=seed, bias=bias),
        contract_path=contract_path,
        card=card,
    )
