"""The stream consumer: a batch of records in, every record settled or reported for redelivery.

A record is *settled* when its decision is written to the output (and captured), or when it is
dead-lettered with its reason. Every other record is *unsettled*, and the host reports exactly
those ids as batch item failures, so the event source delivers them again; nothing is lost.

The paths, per record:

| the record | path |
| --- | --- |
| empty, not base64, not UTF-8, not JSON, not an object | dead-lettered: `undecodable` / `not_an_object` |
| breaks a contract rule | dead-lettered: `contract_violation`, naming each field and rule (never the value) |
| its entity has no value for an online feature with `on_missing: reject` | dead-lettered: `unknown_entity` |
| its entity is unknown, the features default | scored; the defaulted features are listed in `fallbacks` |
| valid | scored: all valid records of the batch in one onnxruntime call |
| the output or the dead-letter queue did not take it (after bounded retries) | unsettled |

And for the whole batch: no model loaded, or the online store is down while a feature must not
default, leaves every record unsettled and writes nothing (a retry then starts from a clean slate,
so no record is written twice).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from shipml.backends.ports import CaptureSink, MetricsSink
from shipml.capture import capture_record
from shipml.contract import Contract, Masker, build_request_model
from shipml.errors import FeatureSourceUnavailable, ModelOutputError, OnlineFeatureError, ShipmlError
from shipml.serving.models import ModelHolder
from shipml.stream.lookups import PrefetchedOnlineStore
from shipml.stream.ports import DeadLetter, DeadLetterSink, Decision, DecisionSink
from shipml.stream.records import Rejection, RejectReason, StreamRecord, decode

log = logging.getLogger("shipml.stream")

_MAX_DETAIL_PROBLEMS = 10


class RecordNotSettled(ShipmlError):
    """Raised for an unsettled record, so that the batch processor reports it as a failure."""


@dataclass
class BatchResult:
    """What became of each record of a batch."""

    decisions: list[Decision] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    # record id -> why it is to be delivered again; in the batch's order.
    unsettled: dict[str, str] = field(default_factory=dict)

    @property
    def failed_ids(self) -> list[str]:
        """The ids to report as batch item failures."""
        return list(self.unsettled)

    def check(self, record_id: str) -> None:
        """Raise `RecordNotSettled` if the record is to be delivered again."""
        if record_id in self.unsettled:
            raise RecordNotSettled(f"record {record_id} is not settled: {self.unsettled[record_id]}")


def _utc_now() -> datetime:
    return datetime.now(UTC)


def describe_violations(exc: ValidationError) -> str:
    """Each broken rule as `field: rule (message)`; pydantic's messages name the rule, not the value."""
    problems = [f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['type']} ({e['msg']})" for e in exc.errors()]
    more = len(problems) - _MAX_DETAIL_PROBLEMS
    shown = "; ".join(problems[:_MAX_DETAIL_PROBLEMS])
    return f"{shown}; and {more} more" if more > 0 else shown


@dataclass
class StreamConsumer:
    """Scores stream batches with the model `holder` serves. Built once per process (cold start).

    `lookups` must be the online store the holder's predictors were built with (see `lookups.py`);
    None when the contract has no online features.
    """

    contract: Contract
    holder: ModelHolder
    output: DecisionSink
    dead_letters: DeadLetterSink
    capture: CaptureSink
    metrics: MetricsSink
    masker: Masker
    lookups: PrefetchedOnlineStore | None = None
    clock: Callable[[], datetime] = _utc_now

    def __post_init__(self) -> None:
        self._request_model = build_request_model(self.contract)
        # Online features that must not default: a record whose entity lacks one is dead-lettered.
        self._strict_features = [f for f in self.contract.online_features if f.on_missing == "reject"]
        self._dims = {"model": self.contract.model}

    def settle(self, records: Sequence[StreamRecord]) -> BatchResult:
        """Decode, validate, enrich and score the batch (one onnxruntime call), write the decisions,
        capture them and dead-letter the rejects; return what became of each record."""
        started = time.perf_counter()
        now = self.clock().isoformat()
        self.holder.refresh()
        predictor = self.holder.predictor
        if predictor is None:
            status = self.holder.status()
            return self._retry_all(records, f"no model is loaded ({status.error or 'not loaded yet'})")

        valid, rejected = self._validate(records)
        try:
            valid, unknown, unavailable = self._check_entities(valid)
            rejected += unknown
            if unavailable is not None:
                return self._retry_all(records, unavailable)
            try:
                predictions, rows = predictor.predict_enriched([values for _, values in valid])
            except (OnlineFeatureError, FeatureSourceUnavailable, ModelOutputError) as exc:
                # Retried, not dead-lettered: the records are fine, the features or the model are not.
                return self._retry_all(records, str(exc))
        finally:
            if self.lookups is not None:
                self.lookups.clear()

        result = BatchResult()
        decisions = [
            Decision(
                record_id=record.id,
                id=prediction.id,
                score=prediction.score,
                label=prediction.label,
                model_version=prediction.model_version,
                fallbacks=prediction.fallbacks,
                decided_at=now,
            )
            for (record, _), prediction in zip(valid, predictions, strict=True)
        ]
        outputs = self.contract.outputs
        items = [
            d.to_output(id_field=self.contract.id, score_field=outputs.score, label_field=outputs.label)
            for d in decisions
        ]
        unwritten = self.output.write(items) if items else set()
        letters = [
            DeadLetter(
                record=record,
                reason=rejection.reason,
                detail=rejection.detail,
                model=self.contract.model,
                model_version=predictor.model_version,
                rejected_at=now,
            )
            for record, rejection in rejected
        ]
        unsent = self.dead_letters.send(letters) if letters else set()

        latency_ms = (time.perf_counter() - started) * 1000.0
        written = [
            (decision, row)
            for decision, row in zip(decisions, rows, strict=True)
            if decision.record_id not in unwritten
        ]
        self._capture(written, latency_ms)
        result.decisions = [decision for decision, _ in written]
        result.dead_letters = [letter for letter in letters if letter.record.id not in unsent]
        for record in records:
            if record.id in unwritten:
                result.unsettled[record.id] = "the output did not accept the decision"
            elif record.id in unsent:
                result.unsettled[record.id] = "the dead-letter queue did not accept the record"
        self._report(records, result, latency_ms)
        return result

    def flush(self) -> None:
        """Make captured records and metrics durable (end of every invocation).

        A capture delivery failure is logged and counted, not raised: the decisions are written
        already, and failing the batch would deliver it again and duplicate them.
        """
        try:
            self.capture.flush()
        except ShipmlError as exc:
            log.error("capture records lost: %s", exc)
            self.metrics.put("CaptureLost", 1, unit="Count", dimensions=self._dims)
        self.metrics.flush()

    # -- steps ---------------------------------------------------------------------------------

    def _validate(
        self, records: Sequence[StreamRecord]
    ) -> tuple[list[tuple[StreamRecord, dict[str, Any]]], list[tuple[StreamRecord, Rejection]]]:
        valid: list[tuple[StreamRecord, dict[str, Any]]] = []
        rejected: list[tuple[StreamRecord, Rejection]] = []
        for record in records:
            decoded = decode(record)
            if isinstance(decoded, Rejection):
                rejected.append((record, decoded))
                continue
            try:
                valid.append((record, self._request_model.model_validate(decoded).model_dump()))
            except ValidationError as exc:
                rejected.append(
                    (
                        record,
                        Rejection(reason=RejectReason.contract_violation, detail=describe_violations(exc)),
                    )
                )
        return valid, rejected

    def _check_entities(
        self, valid: list[tuple[StreamRecord, dict[str, Any]]]
    ) -> tuple[list[tuple[StreamRecord, dict[str, Any]]], list[tuple[StreamRecord, Rejection]], str | None]:
        """Fetch the batch's online features once; split off records whose entity lacks a strict feature.

        Returns the records to score, the `unknown_entity` rejects, and the reason to retry the whole
        batch (a store that is down while a feature must not default), if any.
        """
        if not valid or self.lookups is None or not self.contract.online_features:
            return valid, [], None
        key = self.contract.entity_key
        keys = [str(values[key]) for _, values in valid if values.get(key) is not None]
        try:
            found = self.lookups.prefetch(self.contract.model, keys)
        except FeatureSourceUnavailable as exc:
            if self._strict_features:
                names = ", ".join(f.name for f in self._strict_features)
                return valid, [], f"the online store is unavailable and {names} must not default: {exc}"
            return valid, [], None  # every feature defaults; the predictor flags them
        if not self._strict_features:
            return valid, [], None
        keep, unknown = [], []
        for record, values in valid:
            item = found.get(str(values.get(key)), {})
            missing = [f.name for f in self._strict_features if item.get(f.name) is None]
            if missing:
                detail = (
                    f"no value of {', '.join(missing)} for this {key} in the online store, "
                    "and the contract allows no default"
                )
                unknown.append((record, Rejection(reason=RejectReason.unknown_entity, detail=detail)))
            else:
                keep.append((record, values))
        return keep, unknown, None

    def _retry_all(self, records: Sequence[StreamRecord], reason: str) -> BatchResult:
        log.error("batch of %d records not scored, to be delivered again: %s", len(records), reason)
        self.metrics.put("UnsettledRecords", len(records), unit="Count", dimensions=self._dims)
        return BatchResult(unsettled={record.id: reason for record in records})

    def _capture(self, written: list[tuple[Decision, dict[str, Any]]], latency_ms: float) -> None:
        if not written:
            return
        outputs = self.contract.outputs
        # The same columns as the API's capture, so monitors read both alike.
        rows = [
            capture_record(
                self.masker,
                row,
                outputs=outputs,
                request_id=decision.record_id,
                time=decision.decided_at,
                model_version=decision.model_version,
                latency_ms=latency_ms,
                score=decision.score,
                label=decision.label,
                fallbacks=decision.fallbacks,
            )
            for decision, row in written
        ]
        self.capture.write(rows)

    def _report(self, records: Sequence[StreamRecord], result: BatchResult, latency_ms: float) -> None:
        dims = self._dims
        self.metrics.put("StreamRecords", len(records), unit="Count", dimensions=dims)
        self.metrics.put("BatchLatency", latency_ms, unit="Milliseconds", dimensions=dims)
        if result.decisions:
            self.metrics.put("Predictions", len(result.decisions), unit="Count", dimensions=dims)
            positives = sum(d.label for d in result.decisions)
            if positives:
                self.metrics.put("PositivePredictions", positives, unit="Count", dimensions=dims)
            fallbacks = sum(len(d.fallbacks) for d in result.decisions)
            if fallbacks:
                self.metrics.put("Fallbacks", fallbacks, unit="Count", dimensions=dims)
        for letter in result.dead_letters:
            # The reason and the record id only: the payload may hold PII.
            log.warning("record %s dead-lettered: %s: %s", letter.record.id, letter.reason, letter.detail)
        if result.dead_letters:
            self.metrics.put("DeadLetters", len(result.dead_letters), unit="Count", dimensions=dims)
        if result.unsettled:
            log.error("%d records not settled, to be delivered again", len(result.unsettled))
            self.metrics.put("UnsettledRecords", len(result.unsettled), unit="Count", dimensions=dims)
