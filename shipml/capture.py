"""The capture record: what every host writes for one prediction (the API, the stream consumer and
the replay of a labelled table), with the same columns, so that monitors read them all alike."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from shipml.contract import Masker
from shipml.contract.schema import Outputs


def capture_record(
    masker: Masker,
    row: Mapping[str, Any],
    *,
    outputs: Outputs,
    request_id: str,
    time: str | datetime,
    model_version: str,
    latency_ms: float,
    score: float,
    label: bool,
    fallbacks: Sequence[str] = (),
) -> dict[str, Any]:
    """One prediction's record: timestamps as ISO 8601 text, then the PII rules (so a hashed value
    is the same on every path), then the request, model and outcome columns."""
    masked = masker.mask({k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()})
    return {
        "request_id": request_id,
        "time": time,
        "model_version": model_version,
        "latency_ms": latency_ms,
        **masked,
        outputs.score: score,
        outputs.label: label,
        "fallbacks": ",".join(fallbacks),
    }
