"""Replay a data file through a model version as captured traffic (shadow traffic, backfills, demos).

Each row is scored with the version's ONNX graph and written to the capture sink as the serving app
writes it (`score()` in shipml/serving/app.py): `request_id`, `time`, `model_version`,
`latency_ms`, the request fields and online features *as they are in the file* (a replay of what
was served, so no online-store lookup), masked, then the score, the label and `fallbacks`. One
request id per row. If the file has the contract's target, the ground truth is returned too, as
the labels a quality job would receive later (`request_id`, the contract's id, the target).

A test checks that a replayed record has the same fields as one captured by the real app.
Needs pyarrow and onnxruntime: a command-line and test tool, never on the Lambda path.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np

from shipml.artifact import Artifact
from shipml.backends.ports import CaptureSink
from shipml.capture import capture_record
from shipml.contract import FeatureEncoder, Masker

if TYPE_CHECKING:
    import pyarrow as pa

CHUNK_ROWS = 10_000


@dataclass(frozen=True)
class ReplayResult:
    rows: int
    model_version: str
    time: datetime
    labels: pa.Table | None  # request_id, the contract's id, the target (None without a target column)


def replay(
    table: pa.Table,
    artifact: Artifact,
    *,
    model_version: str,
    capture: CaptureSink,
    masker: Masker,
    at: datetime | None = None,
    request_prefix: str = "replay",
) -> ReplayResult:
    """Score `table` with `artifact` and write one capture record per row; return the ground truth."""
    import onnxruntime as ort
    import pyarrow as pa

    contract = artifact.contract
    at = at or datetime.now(UTC)
    stamp = at.astimezone(UTC).isoformat()
    encoder = FeatureEncoder(contract)
    session = ort.InferenceSession(str(artifact.model_path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    output_name = session.get_outputs()[0].name
    fields = [f.name for f in contract.features if f.name in table.column_names]
    threshold = contract.outputs.decision_threshold  # as every path labels a score
    request_ids: list[str] = []
    for first in range(0, table.num_rows, CHUNK_ROWS):
        chunk = table.slice(first, CHUNK_ROWS)
        matrix = encoder.encode_table(chunk)
        (scores,) = session.run([output_name], {input_name: matrix})
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        records = []
        for offset, (row, score) in enumerate(zip(chunk.select(fields).to_pylist(), scores, strict=True)):
            request_id = f"{request_prefix}-{first + offset:09d}"
            request_ids.append(request_id)
            records.append(
                capture_record(
                    masker,
                    row,
                    outputs=contract.outputs,
                    request_id=request_id,
                    time=stamp,
                    model_version=model_version,
                    latency_ms=0.0,
                    score=float(score),
                    label=bool(score >= threshold),
                )
            )
        capture.write(records)
    capture.flush()
    labels = None
    if contract.target in table.column_names:
        columns = {"request_id": pa.array(request_ids, pa.string())}
        if contract.id in table.column_names:
            columns[contract.id] = table.column(contract.id)
        columns[contract.target] = table.column(contract.target)
        labels = pa.table(columns)
    return ReplayResult(rows=table.num_rows, model_version=model_version, time=at, labels=labels)
