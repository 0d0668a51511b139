"""SageMaker's /invocations payloads: JSON, JSON Lines and CSV in; the same formats out.

Batch Transform splits its input by line and sends MultiRecord batches, so a body may hold many
records. CSV values arrive as text: they are converted to each field's contract type here, so the
same strict request model checks them afterwards.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from shipml.contract import Contract, FieldType

JSON = "application/json"
JSON_LINES = "application/jsonlines"
CSV = "text/csv"
_ALIASES = {
    "application/json": JSON,
    "application/jsonlines": JSON_LINES,
    "application/x-jsonlines": JSON_LINES,
    "application/jsonl": JSON_LINES,
    "application/x-ndjson": JSON_LINES,
    "text/csv": CSV,
}
CONTENT_TYPES = tuple(_ALIASES)


class PayloadError(ValueError):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def media_type(header: str | None) -> str | None:
    if not header:
        return None
    base = header.split(";", 1)[0].strip().lower()
    if base in ("*/*", ""):
        return None
    return _ALIASES.get(base, base)


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"the body is not valid UTF-8 (byte {exc.start})") from None


def _records_from_json(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict) and isinstance(value.get("instances"), list):
        value = value["instances"]
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(item, dict) for item in items):
        raise PayloadError("each record must be a JSON object")
    return items


def _csv_value(kind: FieldType, text: str) -> Any:
    if text == "":
        return None
    try:
        if kind == FieldType.number:
            return float(text)
        if kind == FieldType.integer:
            return int(text)
    except ValueError:
        return text  # left as text: the request model names the field and the rule
    if kind == FieldType.boolean:
        lowered = text.strip().lower()
        return {"true": True, "1": True, "false": False, "0": False}.get(lowered, text)
    return text


def _records_from_csv(text: str, contract: Contract) -> list[dict[str, Any]]:
    fields = [f for f in contract.request_features]
    names = [f.name for f in fields]
    rows = list(csv.reader(io.StringIO(text)))
    rows = [r for r in rows if r]
    if rows and set(rows[0]) <= set(names) and contract.id in rows[0]:
        header, rows = rows[0], rows[1:]  # a header line naming the fields
    else:
        header = names  # no header: the request fields in contract order
    kinds = {f.name: f.type for f in fields}
    records = []
    for number, row in enumerate(rows, start=1):
        if len(row) != len(header):
            raise PayloadError(
                f"CSV line {number} has {len(row)} values, expected {len(header)} ({', '.join(header)})"
            )
        records.append(
            {name: _csv_value(kinds[name], value) for name, value in zip(header, row, strict=True)}
        )
    return records


def parse(raw: bytes, content_type: str | None, contract: Contract) -> list[dict[str, Any]]:
    """The records in a body of the given media type (JSON when none is given)."""
    text = _decode(raw)
    kind = content_type or JSON
    try:
        if kind == JSON:
            return _records_from_json(json.loads(text))
        if kind == JSON_LINES:
            return [
                r for line in text.splitlines() if line.strip() for r in _records_from_json(json.loads(line))
            ]
    except json.JSONDecodeError as exc:
        raise PayloadError(
            f"the body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise PayloadError("the body is nested too deeply to read") from None
    if kind == CSV:
        return _records_from_csv(text, contract)
    raise PayloadError(
        f"unsupported content type {kind!r}; use one of {', '.join(sorted(set(_ALIASES.values())))}", 415
    )


def render(items: Sequence[dict[str, Any]], accept: str | None, contract: Contract) -> tuple[str, str]:
    """(body, media type): JSON Lines for JSON Lines, CSV (id,score,label) for CSV, else JSON."""
    if accept == JSON_LINES:
        return "".join(json.dumps(item) + "\n" for item in items), JSON_LINES
    if accept == CSV:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        for item in items:
            writer.writerow(
                [item[contract.id], item[contract.outputs.score], str(item[contract.outputs.label]).lower()]
            )
        return out.getvalue(), CSV
    return json.dumps({"predictions": list(items)}), JSON
