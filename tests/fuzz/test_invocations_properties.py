"""Property tests for SageMaker's /invocations payloads (shipml/serving/invocations.py).

Any body, in any media type, is either read into records or refused with a `PayloadError` (400, or
415 for a media type we do not read); the records then go through the request model, whose
refusals name the record's index and field. A valid record reads back the same from JSON, JSON
Lines and CSV (with or without a header line).
"""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from shipml.contract import build_request_model, load_contract
from shipml.serving import invocations
from shipml.serving.app import ServingContext, create_app
from tests.conftest import CONTRACT_PATH, valid_request

CONTRACT = load_contract(CONTRACT_PATH)
REQUEST_MODEL = build_request_model(CONTRACT)
NAMES = [f.name for f in CONTRACT.request_features]
MEDIA_TYPES = [None, *invocations.CONTENT_TYPES, "text/plain", "application/xml"]
PROPERTY_SETTINGS = settings(
    max_examples=int(os.environ.get("SHIPML_PROPERTY_EXAMPLES", "300")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def _csv_line(values: list[Any]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(values)
    return out.getvalue()


# Bodies a client could send: raw bytes, near-CSV text, near-JSON text.
bodies = (
    st.binary(max_size=200)
    | st.text(max_size=200).map(str.encode)
    | st.lists(st.lists(st.text(max_size=12), max_size=12), max_size=4).map(
        lambda rows: "".join(_csv_line(r) for r in rows).encode()
    )
    | st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
        max_leaves=8,
    ).map(lambda value: json.dumps(value).encode())
)


def _read(raw: bytes, media: str | None) -> list[dict[str, Any]] | invocations.PayloadError:
    try:
        return invocations.parse(raw, invocations.media_type(media), CONTRACT)
    except invocations.PayloadError as exc:
        return exc


@PROPERTY_SETTINGS
@given(raw=bodies, media=st.sampled_from(MEDIA_TYPES))
def test_any_body_is_read_into_records_or_refused_with_a_4xx(raw: bytes, media: str | None) -> None:
    outcome = _read(raw, media)

    if isinstance(outcome, invocations.PayloadError):
        assert outcome.status in (400, 415) and str(outcome)
        return
    assert isinstance(outcome, list) and all(isinstance(r, dict) for r in outcome)
    for index, record in enumerate(outcome):
        try:
            REQUEST_MODEL.model_validate(record)
        except ValidationError as exc:
            for error in exc.errors():
                # what /invocations reports: "<index>.<field>"
                field = str(error["loc"][0])
                assert field in NAMES or field in record, (index, error)


@st.composite
def valid_records(draw: st.DrawFn) -> dict[str, Any]:
    record = valid_request(
        transaction_id=draw(st.from_regex(r"^[A-Za-z0-9_-]{1,20}$", fullmatch=True)),
        amount=draw(st.floats(min_value=0.01, max_value=50_000)),
        currency=draw(st.sampled_from(CONTRACT.feature("currency").categories)),
        merchant_category=draw(st.sampled_from(CONTRACT.feature("merchant_category").categories)),
        card_present=draw(st.booleans()),
    )
    if draw(st.booleans()):
        record["card_number"] = None  # optional: an empty CSV cell
    return record


@PROPERTY_SETTINGS
@given(records=st.lists(valid_records(), min_size=1, max_size=5), header=st.booleans())
def test_valid_records_read_back_the_same_in_json_json_lines_and_csv(
    records: list[dict[str, Any]], header: bool
) -> None:
    expected = [REQUEST_MODEL.model_validate(r).model_dump() for r in records]
    json_lines = "".join(json.dumps(r) + "\n" for r in records).encode()
    table = ([_csv_line(NAMES)] if header else []) + [
        _csv_line(
            ["" if r.get(n) is None else str(r[n]).lower() if isinstance(r[n], bool) else r[n] for n in NAMES]
        )
        for r in records
    ]

    for raw, media in [
        (json.dumps(records).encode(), "application/json"),
        (json.dumps({"instances": records}).encode(), "application/json"),
        (json_lines, "application/jsonlines"),
        ("".join(table).encode(), "text/csv"),
    ]:
        read = invocations.parse(raw, media, CONTRACT)
        assert [REQUEST_MODEL.model_validate(r).model_dump() for r in read] == expected, media


@pytest.fixture(scope="module")
def client(serving_context: ServingContext):
    with TestClient(create_app(serving_context), raise_server_exceptions=False) as client:
        yield client


DEEP = b"[" * 20_000  # 20 kB: well under the body limit


@pytest.mark.parametrize("media", ["application/json", "application/jsonlines"])
def test_deeply_nested_json_is_a_400_not_a_500(client, media: str) -> None:
    response = client.post("/invocations", content=DEEP, headers={"content-type": media})

    assert response.status_code == 400
    assert response.json()["error"] == "bad_payload"


def test_deeply_nested_json_on_predict_is_a_400(client) -> None:
    """pydantic-core's own depth limit answers /predict: the counterpart of the xfail above."""
    response = client.post("/predict", content=DEEP, headers={"content-type": "application/json"})

    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "body"
