"""The stream consumer with fakes of our own ports: every record settled once, or reported for retry."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from shipml.artifact import load_artifact
from shipml.backends.ports import CaptureSink, MetricsSink, OnlineStore
from shipml.contract import Masker, load_contract
from shipml.errors import FeatureSourceUnavailable
from shipml.serving.models import ModelHolder
from shipml.stream.consumer import RecordNotSettled, StreamConsumer
from shipml.stream.lookups import PrefetchedOnlineStore
from shipml.stream.ports import DeadLetter, DeadLetterSink, DecisionSink, OutputItem
from shipml.stream.records import RejectReason, records_from_event
from tests.builders import RawData, kinesis_event
from tests.conftest import CONTRACT_PATH, artifact_for, valid_request

KNOWN = "C31415926"
CANARY_CARD = "4000999988887777"


class MemoryOutput(DecisionSink):
    def __init__(self, refuse: set[str] | None = None) -> None:
        self.items: list[OutputItem] = []
        self.refuse = refuse or set()

    def write(self, items: Sequence[OutputItem]) -> set[str]:
        self.items += [item for item in items if item.record_id not in self.refuse]
        return {item.record_id for item in items if item.record_id in self.refuse}


class MemoryDeadLetters(DeadLetterSink):
    def __init__(self, refuse: set[str] | None = None) -> None:
        self.letters: list[DeadLetter] = []
        self.refuse = refuse or set()

    def send(self, letters: Sequence[DeadLetter]) -> set[str]:
        self.letters += [letter for letter in letters if letter.record.id not in self.refuse]
        return {letter.record.id for letter in letters if letter.record.id in self.refuse}


class MemoryCapture(CaptureSink):
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def write(self, records: Sequence[Mapping[str, Any]]) -> None:
        self.rows += [dict(r) for r in records]


class MemoryMetrics(MetricsSink):
    def __init__(self) -> None:
        self.points: list[tuple[str, float]] = []

    def put(self, name: str, value: float, *, unit: str = "None", dimensions: Any = None) -> None:
        self.points.append((name, value))

    def total(self, name: str) -> float:
        return sum(value for point, value in self.points if point == name)


class MemoryOnlineStore(OnlineStore):
    def __init__(self, items: dict[str, dict[str, Any]]) -> None:
        self.items = items
        self.down = False
        self.calls = 0

    def get_many(self, group: str, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        self.calls += 1
        if self.down:
            raise FeatureSourceUnavailable("the online store timed out")
        return {k: self.items[k] for k in keys if k in self.items}

    def put_many(self, group: str, items: Mapping[str, Mapping[str, Any]]) -> int:
        raise NotImplementedError


class FixedSource:
    def __init__(self, artifact_dir: Path | None) -> None:
        self.artifact_dir = artifact_dir

    def resolve(self) -> str | None:
        return None if self.artifact_dir is None else "fraud:1"

    def open(self, ref: str):
        return load_artifact(self.artifact_dir)


@pytest.fixture(scope="module")
def strict_contract_path(tmp_path_factory) -> Path:
    """The example contract, except that txn_count_24h must come from the online store (no default)."""
    raw = yaml.safe_load(CONTRACT_PATH.read_text())
    for feature in raw["features"]:
        if feature["name"] == "txn_count_24h":
            feature["on_missing"] = "reject"
            feature.pop("default")
    path = tmp_path_factory.mktemp("strict") / "contract.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, strict_contract_path) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("artifacts")
    return {
        "example": artifact_for(CONTRACT_PATH, folder / "example"),
        "strict": artifact_for(strict_contract_path, folder / "strict"),
    }


def build(artifact_dir: Path | None, contract_path: Path, *, output=None, dead_letters=None, store=None):
    contract = load_contract(contract_path)
    store = store or MemoryOnlineStore(
        {KNOWN: {"txn_count_24h": 3, "mean_amount_30d": 80.0, "days_since_first_seen": 400}}
    )
    lookups = PrefetchedOnlineStore(store)
    holder = ModelHolder(FixedSource(artifact_dir), contract, online=lookups)
    return StreamConsumer(
        contract=contract,
        holder=holder,
        output=output or MemoryOutput(),
        dead_letters=dead_letters or MemoryDeadLetters(),
        capture=MemoryCapture(),
        metrics=MemoryMetrics(),
        masker=Masker(contract, hash_key=b"test"),
        lookups=lookups,
    )


def good(n: int, **overrides) -> dict:
    return valid_request(
        **{"transaction_id": f"T{n:04d}", "customer_id": KNOWN, "card_number": CANARY_CARD, **overrides}
    )


def test_a_clean_batch_is_scored_in_one_onnxruntime_call_and_written_once(artifacts, monkeypatch):
    consumer = build(artifacts["example"], CONTRACT_PATH)
    consumer.holder.refresh(force=True)
    calls = []
    predictor = consumer.holder.predictor
    original = predictor.score_matrix
    monkeypatch.setattr(predictor, "score_matrix", lambda m: calls.append(len(m)) or original(m))
    records = records_from_event(kinesis_event([good(i, amount=10.0 + i) for i in range(50)]), "kinesis")

    result = consumer.settle(records)

    assert calls == [50]
    assert result.failed_ids == [] and result.dead_letters == []
    assert [item.body["transaction_id"] for item in consumer.output.items] == [f"T{i:04d}" for i in range(50)]
    assert [item.record_id for item in consumer.output.items] == [r.id for r in records]
    assert all(item.key == item.body["transaction_id"] for item in consumer.output.items)
    first = consumer.output.items[0].body
    assert set(first) == {"record_id", "transaction_id", "fraud_score", "is_fraud_predicted"} | {
        "model_version", "fallbacks", "decided_at"
    }  # fmt: skip
    assert first["model_version"] == "fraud:1" and first["fallbacks"] == []
    assert len(consumer.capture.rows) == 50
    assert consumer.lookups.store.calls == 1  # one lookup for the whole batch


def test_bad_records_follow_their_stated_paths_and_good_ones_are_written_once(artifacts):
    consumer = build(artifacts["example"], CONTRACT_PATH)
    payloads = [
        good(0),
        RawData("!!! not base64"),
        good(1, amount=-5.0, card_number="12"),  # breaks two rules
        [good(2)],
        good(3, customer_id="C00000000"),  # unknown entity: every online feature defaults
        b"\xff\xfe\xfd",
        good(4),
    ]
    records = records_from_event(kinesis_event(payloads), "kinesis")

    result = consumer.settle(records)

    ids = [r.id for r in records]
    assert result.failed_ids == []
    assert [item.record_id for item in consumer.output.items] == [ids[0], ids[4], ids[6]]
    unknown = consumer.output.items[1].body
    assert unknown["fallbacks"] == ["txn_count_24h", "mean_amount_30d", "days_since_first_seen"]
    letters = {letter.record.id: letter for letter in consumer.dead_letters.letters}
    assert {k: v.reason for k, v in letters.items()} == {
        ids[1]: RejectReason.undecodable,
        ids[2]: RejectReason.contract_violation,
        ids[3]: RejectReason.not_an_object,
        ids[5]: RejectReason.undecodable,
    }
    violation = letters[ids[2]]
    assert (
        "amount: greater_than_equal" in violation.detail
        and "card_number: string_pattern_mismatch" in violation.detail
    )
    assert "-5" not in violation.detail and "'12'" not in violation.detail
    # The letter carries the payload as delivered, for replay.
    assert json.loads(violation.body())["payload"] == records[2].payload
    assert consumer.metrics.total("DeadLetters") == 4 and consumer.metrics.total("Predictions") == 3
    assert consumer.metrics.total("Fallbacks") == 3


def test_capture_is_masked_and_only_holds_written_decisions(artifacts):
    output = MemoryOutput()
    consumer = build(artifacts["example"], CONTRACT_PATH, output=output)
    records = records_from_event(kinesis_event([good(0), good(1)]), "kinesis")
    output.refuse = {records[1].id}

    result = consumer.settle(records)

    assert result.failed_ids == [records[1].id]
    assert [row["request_id"] for row in consumer.capture.rows] == [records[0].id]
    row = consumer.capture.rows[0]
    assert CANARY_CARD not in json.dumps(row) and row["card_number"].endswith("7777")
    assert row["customer_id"] != KNOWN


def test_records_the_output_or_the_dead_letter_queue_refuse_are_exactly_the_failed_ids(artifacts):
    records = records_from_event(
        kinesis_event([good(0), good(1), RawData("@@"), good(3), RawData("##")]), "kinesis"
    )
    output = MemoryOutput(refuse={records[1].id})
    dead_letters = MemoryDeadLetters(refuse={records[4].id})
    consumer = build(artifacts["example"], CONTRACT_PATH, output=output, dead_letters=dead_letters)

    result = consumer.settle(records)

    assert result.failed_ids == [records[1].id, records[4].id]
    assert result.unsettled[records[1].id] == "the output did not accept the decision"
    assert result.unsettled[records[4].id] == "the dead-letter queue did not accept the record"
    assert [i.record_id for i in output.items] == [records[0].id, records[3].id]
    assert [letter.record.id for letter in dead_letters.letters] == [records[2].id]
    result.check(records[0].id)
    with pytest.raises(RecordNotSettled, match="did not accept"):
        result.check(records[1].id)


def test_an_unknown_entity_is_dead_lettered_when_a_feature_must_not_default(artifacts, strict_contract_path):
    consumer = build(artifacts["strict"], strict_contract_path)
    records = records_from_event(
        kinesis_event([good(0), good(1, customer_id="C00000000"), good(2)]), "kinesis"
    )

    result = consumer.settle(records)

    assert result.failed_ids == []
    assert [i.record_id for i in consumer.output.items] == [records[0].id, records[2].id]
    (letter,) = consumer.dead_letters.letters
    assert letter.record.id == records[1].id and letter.reason == RejectReason.unknown_entity
    assert "txn_count_24h" in letter.detail and "C00000000" not in letter.detail
    assert consumer.lookups.store.calls == 1  # the check and the predictor share one lookup


def test_a_store_outage_retries_the_whole_batch_when_a_feature_must_not_default(
    artifacts, strict_contract_path
):
    consumer = build(artifacts["strict"], strict_contract_path)
    consumer.lookups.store.down = True
    records = records_from_event(kinesis_event([good(0), RawData("@@")]), "kinesis")

    result = consumer.settle(records)

    assert result.failed_ids == [r.id for r in records]
    assert "online store is unavailable" in result.unsettled[records[0].id]
    assert consumer.output.items == [] and consumer.dead_letters.letters == []  # nothing half-written


def test_a_store_outage_scores_with_flagged_defaults_when_the_features_default(artifacts):
    consumer = build(artifacts["example"], CONTRACT_PATH)
    consumer.lookups.store.down = True

    result = consumer.settle(records_from_event(kinesis_event([good(0)]), "kinesis"))

    assert result.failed_ids == []
    assert consumer.output.items[0].body["fallbacks"] == [
        "txn_count_24h",
        "mean_amount_30d",
        "days_since_first_seen",
    ]
    assert consumer.lookups.store.calls == 1  # the failure is not asked twice


def test_a_model_that_answers_nan_retries_the_batch_and_decides_nothing(tmp_path):
    # NaN >= threshold is false: a NaN score must not become a "not fraud" decision.
    consumer = build(artifact_for(CONTRACT_PATH, tmp_path / "nan", bias=float("nan")), CONTRACT_PATH)
    records = records_from_event(kinesis_event([good(0), good(1)]), "kinesis")

    result = consumer.settle(records)

    assert result.failed_ids == [r.id for r in records]
    assert "produced no valid score" in result.unsettled[records[0].id]
    assert consumer.output.items == [] and consumer.dead_letters.letters == []
    assert consumer.capture.rows == []


def test_no_model_retries_every_record_and_writes_nothing():
    consumer = build(None, CONTRACT_PATH)
    records = records_from_event(kinesis_event([good(0), RawData("@@")]), "kinesis")

    result = consumer.settle(records)

    assert result.failed_ids == [r.id for r in records]
    assert "no model is loaded" in result.unsettled[records[0].id]
    assert consumer.output.items == [] and consumer.dead_letters.letters == []
