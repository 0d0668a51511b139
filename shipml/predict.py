"""Scoring: a verified artifact + online features -> predictions. Used by every host.

The onnxruntime session is built once, when a `Predictor` is made (cold start), never per
request. Serving needs numpy and onnxruntime only.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shipml.artifact import Artifact
from shipml.backends.ports import OnlineStore
from shipml.contract import Contract, FeatureEncoder
from shipml.contract.row_encode import RowEncoder
from shipml.errors import FeatureSourceUnavailable, ModelOutputError, OnlineFeatureError


@dataclass(frozen=True, slots=True)
class Prediction:
    """One scored record. Built from values the predictor computed, so nothing is validated again."""

    id: str | int | None
    score: float
    label: bool
    model_version: str
    fallbacks: list[str] = field(default_factory=list)


class Predictor:
    """Scores validated records with one model version."""

    def __init__(
        self,
        artifact: Artifact,
        *,
        model_version: str,
        online: OnlineStore | None = None,
        http_sources: Mapping[str, Any] | None = None,
        threads: int = 1,
    ) -> None:
        import onnxruntime as ort

        self.artifact = artifact
        self.contract = artifact.contract
        self.model_version = model_version
        self.online = online
        # External HTTP feature sources (shipml.features.http), built once per process.
        self.http_sources = dict(http_sources or {})
        self.encoder = FeatureEncoder(self.contract)
        # A request's few records: plain Python beats a dozen numpy calls (same plan, same tensor).
        self._row_encoder = RowEncoder(self.encoder)
        if self.encoder.feature_names != artifact.card.feature_names:
            from shipml.errors import ArtifactError

            raise ArtifactError(
                f"{artifact.path}: the card's feature names do not match the bundled contract's encoding"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(artifact.model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name
        output = self._session.get_outputs()[0]
        self._output = output.name
        # A single record (a real-time request) is scored through an IO binding over buffers made
        # once per thread: no feed dict to check, no input or output tensor to create per call
        # (measured in the Lambda handler: ~20 us of ~300 us per event). Only a model answering
        # one float32 score per row ((N,) or (N, 1)) and a (1, width) float32 row take it; anything
        # else goes through `run`, which checks and refuses what does not fit.
        scores_per_row = output.shape[1] if len(output.shape) == 2 else 1
        self._one_shape = (
            (1,) * len(output.shape)
            if output.type == "tensor(float)"
            and len(output.shape) in (1, 2)
            and (scores_per_row == 1 or not isinstance(scores_per_row, int))
            else None
        )
        self._one_row = (1, self.encoder.width)
        self._bindings = threading.local()

    @property
    def contract(self) -> Contract:
        return self._contract

    @contract.setter
    def contract(self, contract: Contract) -> None:
        self._contract = contract
        # The threshold as a float32 score meets it (see `Outputs.decision_threshold`).
        self._threshold = contract.outputs.decision_threshold
        # Read once per contract: the contract computes its feature lists on each access.
        self._has_http = bool(contract.http_features)
        self._online = [(f.name, f.default, f.on_missing == "reject") for f in contract.online_features]

    def score_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """Scores for an encoded float32 matrix, in one onnxruntime call."""
        if len(matrix) == 0:
            return np.zeros(0, dtype=np.float32)
        if matrix.shape == self._one_row and matrix.dtype == np.float32 and self._one_shape is not None:
            return self._score_one(matrix)
        (scores,) = self._session.run([self._output], {self._input: matrix})
        return np.asarray(scores, dtype=np.float32).reshape(-1)

    def _score_one(self, matrix: np.ndarray) -> np.ndarray:
        """One row through this thread's IO binding: the row is copied into the bound input buffer,
        and onnxruntime writes the score into the bound output buffer."""
        slot = getattr(self._bindings, "slot", None)
        if slot is None:
            import onnxruntime as ort

            row = np.zeros(self._one_row, dtype=np.float32)
            score = np.zeros(self._one_shape, dtype=np.float32)
            binding = self._session.io_binding()
            # OrtValues over the numpy buffers (no copy): each call reads and writes them in place.
            binding.bind_ortvalue_input(self._input, ort.OrtValue.ortvalue_from_numpy(row))
            binding.bind_ortvalue_output(self._output, ort.OrtValue.ortvalue_from_numpy(score))
            slot = self._bindings.slot = (binding, row, score)
        binding, row, score = slot
        row[...] = matrix
        self._session.run_with_iobinding(binding)
        return score.reshape(-1).copy()

    def enrich(self, records: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[list[str]]]:
        """Add online features to each record; return the records and, per record, the defaulted names.

        A missing item, or a store that is down, slow or throttling (`FeatureSourceUnavailable`),
        follows each feature's `on_missing`: the contract's default, flagged in the response, or
        an `OnlineFeatureError` (a 503 at the API) naming the feature.
        """
        rows = [dict(r) for r in records]
        fallbacks: list[list[str]] = [[] for _ in rows]
        if self._has_http:
            from shipml.features.http import apply_http_features

            for flagged, more in zip(
                fallbacks, apply_http_features(self.contract, self.http_sources, rows), strict=True
            ):
                flagged.extend(more)
        online = self._online
        if not online:
            return rows, fallbacks
        key = self.contract.entity_key
        found: dict[str, dict[str, Any]] = {}
        unavailable: str | None = None
        if self.online is None:
            unavailable = "no online store is configured"
        else:
            keys = [str(r[key]) for r in rows if r.get(key) is not None]
            try:
                found = self.online.get_many(self.contract.model, keys)
            except FeatureSourceUnavailable as exc:
                unavailable = str(exc)
        for row, flagged in zip(rows, fallbacks, strict=True):
            item = found.get(str(row.get(key)), {})
            for name, default, reject in online:
                value = item.get(name)
                if value is None:
                    if reject:
                        reason = unavailable or f"no value for this {key}"
                        raise OnlineFeatureError(
                            f"online feature {name!r} is unavailable ({reason}) "
                            "and the contract allows no default"
                        )
                    value = default
                    flagged.append(name)
                row[name] = value
        return rows, fallbacks

    def predict(self, records: Sequence[Mapping[str, Any]]) -> list[Prediction]:
        """Predictions for validated request records (dicts of request fields)."""
        return self.predict_enriched(records)[0]

    def predict_enriched(
        self, records: Sequence[Mapping[str, Any]]
    ) -> tuple[list[Prediction], list[dict[str, Any]]]:
        """Predictions, and the records as scored (request fields plus online features) for capture."""
        rows, fallbacks = self.enrich(records)
        # Python floats (exactly the float32 scores): a request's few checks and comparisons cost
        # less than numpy's on scalars.
        scores = self.score_matrix(self._row_encoder.encode(rows)).tolist()
        for position, score in enumerate(scores):
            if not math.isfinite(score):
                # A NaN score would read as "not fraud" (NaN >= threshold is false): refuse to
                # decide, so that callers see a failure (a 500 at the API, which the rollout
                # alarms count).
                raise ModelOutputError(
                    f"{self.model_version} produced no valid score (got {score}) for record "
                    f"{position} of {len(scores)}"
                )
        threshold = self._threshold
        id_field = self.contract.id
        predictions = [
            Prediction(
                id=row.get(id_field),
                score=score,
                label=score >= threshold,
                model_version=self.model_version,
                fallbacks=flagged,
            )
            for row, score, flagged in zip(rows, scores, fallbacks, strict=True)
        ]
        return predictions, rows
