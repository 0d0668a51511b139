"""Property tests for the contract's validators: any input validates or is refused naming a field.

- the pydantic request model (both JSON and Python input, as /predict and /invocations use it);
- the vectorised table validator (`validate_table`): a refused schema names the columns, a value
  problem names its row, column and rule, and the valid mask agrees with the violations;
- the two agree: a row the request model accepts is a valid row for the batch validator, so a
  record is not accepted online and refused in batch (or the other way round).
"""

from __future__ import annotations

import json
import math
import os
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from shipml.contract import FieldType, build_request_model, load_contract
from shipml.errors import DataError
from tests.conftest import CONTRACT_PATH, valid_request

CONTRACT = load_contract(CONTRACT_PATH)
REQUEST_MODEL = build_request_model(CONTRACT)
FIELDS = {f.name: f for f in CONTRACT.request_features}
# Derandomised: CI runs the same examples every time; SHIPML_PROPERTY_EXAMPLES=5000 searches wider.
PROPERTY_SETTINGS = settings(
    max_examples=int(os.environ.get("SHIPML_PROPERTY_EXAMPLES", "300")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)

# Any JSON value, as a client could send it.
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def plausible(feature_name: str) -> st.SearchStrategy[Any]:
    """Values near the field's rules: mostly the right type, often just over a limit."""
    feature = FIELDS[feature_name]
    if feature.type == FieldType.number:
        return st.floats(allow_nan=True, allow_infinity=True) | st.floats(
            min_value=(feature.min or 0) - 1, max_value=(feature.max or 1e6) + 1
        )
    if feature.type == FieldType.integer:
        return st.integers()
    if feature.type == FieldType.boolean:
        return st.booleans() | st.sampled_from(["true", 1, 0])
    if feature.type == FieldType.category:
        return st.sampled_from(feature.categories or ["x"]) | st.text(max_size=70)
    if feature.type == FieldType.timestamp:
        return (
            st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat())
            | st.datetimes().map(lambda d: d.isoformat())  # naive: no offset
            | st.integers(min_value=-(10**10), max_value=10**10)
            | st.text(max_size=25)
        )
    return st.from_regex(feature.pattern, fullmatch=True) if feature.pattern else st.text(max_size=80)


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    """A valid record, then: fields dropped, set to near-valid or arbitrary values, keys added."""
    record = valid_request()
    for name in list(FIELDS):
        action = draw(st.sampled_from(["keep", "keep", "plausible", "plausible", "any", "drop"]))
        if action == "drop":
            record.pop(name, None)
        elif action == "plausible":
            record[name] = draw(plausible(name))
        elif action == "any":
            record[name] = draw(json_values)
    record.update(draw(st.dictionaries(st.text(max_size=12), json_values, max_size=2)))
    return record


def _assert_accepted_record_keeps_the_rules(accepted: Any) -> None:
    for name, feature in FIELDS.items():
        value = getattr(accepted, name)
        if value is None:
            assert not feature.required, name
            continue
        if feature.is_numeric:
            assert math.isfinite(value), name
            assert feature.min is None or value >= feature.min, name
            assert feature.max is None or value <= feature.max, name
        if feature.type == FieldType.category and feature.unseen == "reject":
            assert value in feature.categories, name
        if feature.type == FieldType.timestamp:
            assert value.tzinfo is not None, name


def _assert_names_fields(exc: ValidationError, record: dict[str, Any]) -> None:
    assert exc.errors(), "a refusal lists at least one problem"
    for error in exc.errors():
        assert error["loc"], error
        field = str(error["loc"][0])
        assert field in FIELDS or field in record, error  # a contract field, or the unknown key sent
        assert error["type"], error


@PROPERTY_SETTINGS
@given(record=records())
def test_the_request_model_accepts_or_names_the_field(record: dict[str, Any]) -> None:
    try:
        accepted = REQUEST_MODEL.model_validate(record)
    except ValidationError as exc:
        _assert_names_fields(exc, record)
    else:
        _assert_accepted_record_keeps_the_rules(accepted)


@PROPERTY_SETTINGS
@given(record=records())
def test_json_bodies_get_the_same_verdict_as_python_input(record: dict[str, Any]) -> None:
    """/predict validates JSON bytes, /invocations parsed dicts: same verdict, same fields named."""
    text = json.dumps(record)  # NaN and Infinity included, as a lenient client writes them
    verdicts = []
    for validate in (
        lambda: REQUEST_MODEL.model_validate_json(text),
        lambda: REQUEST_MODEL.model_validate(record),
    ):
        try:
            validate()
            verdicts.append(set())
        except ValidationError as exc:
            _assert_names_fields(exc, record)
            verdicts.append({str(e["loc"][0]) for e in exc.errors()})
    assert (verdicts[0] == set()) == (verdicts[1] == set()), verdicts


# ------------------------------------------------------------------------------ the table validator


@st.composite
def tables(draw: st.DrawFn):
    """1-20 rows of request fields as typed Arrow columns; sometimes a column missing or mistyped."""
    import pyarrow as pa

    rows = draw(st.integers(min_value=1, max_value=20))
    columns: dict[str, pa.Array] = {}
    for name, feature in FIELDS.items():
        shape = draw(st.sampled_from(["typed"] * 8 + ["missing", "wrong_type"]))
        if shape == "missing":
            continue
        if shape == "wrong_type":
            columns[name] = pa.array(draw(st.lists(st.booleans(), min_size=rows, max_size=rows)))
            if feature.type == FieldType.boolean:
                columns[name] = pa.array([str(v) for v in columns[name].to_pylist()])
            continue
        values = draw(st.lists(st.none() | _typed(feature), min_size=rows, max_size=rows))
        columns[name] = pa.array(values, type=_arrow_type(feature))
    return pa.table(columns) if columns else pa.table({"unrelated": pa.array([1] * rows)})


def _arrow_type(feature):
    import pyarrow as pa

    return {
        FieldType.number: pa.float64(),
        FieldType.integer: pa.int64(),
        FieldType.boolean: pa.bool_(),
    }.get(feature.type, pa.string())


def _typed(feature) -> st.SearchStrategy[Any]:
    if feature.type == FieldType.number:
        return st.floats(min_value=-1, max_value=(feature.max or 1e6) + 10) | st.floats()
    if feature.type == FieldType.integer:
        return st.integers(min_value=-(2**40), max_value=2**40)
    if feature.type == FieldType.boolean:
        return st.booleans()
    return plausible(feature.name).map(str)


@PROPERTY_SETTINGS
@given(table=tables())
def test_the_table_validator_refuses_naming_columns_or_lists_row_column_and_rule(table) -> None:
    from shipml.contract.validate import validate_table

    try:
        report = validate_table(CONTRACT, table, include_online=False)
    except DataError as exc:
        problems = str(exc).splitlines()[1:]
        assert problems, str(exc)
        for line in problems:
            assert line.strip().split(":", 1)[0] in FIELDS, line
        return
    assert report.rows == table.num_rows
    violations = report.violations.to_pylist()
    for violation in violations:
        assert violation["column"] in FIELDS, violation
        assert 0 <= violation["row"] < table.num_rows and violation["rule"], violation
        if FIELDS[violation["column"]].pii:
            assert violation["value"] == "<redacted>"
    flagged = {v["row"] for v in violations}
    assert {i for i, ok in enumerate(report.valid) if not ok} == flagged


def _one_row_table(record: dict[str, Any]):
    import pyarrow as pa

    return pa.table(
        {
            name: pa.array([record.get(name)], type=_arrow_type(feature))
            for name, feature in FIELDS.items()
            if name in record
        }
    )


@st.composite
def typed_records(draw: st.DrawFn) -> dict[str, Any]:
    """Records whose values have their column's Python type, so both validators can be asked."""
    record = valid_request()
    for name, feature in FIELDS.items():
        action = draw(st.sampled_from(["keep", "keep", "typed", "none"]))
        if action == "typed":
            record[name] = draw(_typed(feature))
        elif action == "none":
            record[name] = None
    return record


#: ISO 8601 as both validators read it today; outside it they disagree (pinned by the xfails below).
CANONICAL_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$")
MAX_OTHER_CATEGORY = 64


def _known_skew(record: dict[str, Any]) -> set[str]:
    """Fields outside the contract's shared formats (both validators must refuse them: see below)."""
    skewed = set()
    for name, feature in FIELDS.items():
        value = record.get(name)
        if not isinstance(value, str):
            continue
        if feature.type == FieldType.timestamp and not CANONICAL_TIME.match(value):
            skewed.add(name)
        other = feature.type == FieldType.category and feature.unseen != "reject"
        if other and not 1 <= len(value) <= MAX_OTHER_CATEGORY:
            skewed.add(name)
    return skewed


def _verdicts(record: dict[str, Any]) -> tuple[set[str], set[str]]:
    """(fields the request model refuses, columns the table validator refuses) for one record."""
    from shipml.contract.validate import validate_table

    try:
        REQUEST_MODEL.model_validate(record)
        online: set[str] = set()
    except ValidationError as exc:
        online = {str(e["loc"][0]) for e in exc.errors()}
    report = validate_table(CONTRACT, _one_row_table(record), include_online=False)
    return online, {v["column"] for v in report.violations.to_pylist()}


@PROPERTY_SETTINGS
@given(record=typed_records())
def test_a_field_refused_online_is_refused_in_batch_and_the_other_way_round(record: dict[str, Any]) -> None:
    online, batch = _verdicts(record)
    assert online == batch, (json.dumps(record, default=str), online, batch)


KNOWN_SKEW_EXAMPLES = [
    ("event_time", 86400),  # a number: Unix seconds online, a mistyped column in batch
    ("event_time", "86400"),
    ("event_time", "2026-01-15t23:45:00Z"),
    ("event_time", "2026-01-15_23:45:00Z"),
    ("event_time", "2026-01-15T23:45:00.1234567+01:00"),
    ("event_time", "2026-01-15T23:45:00+01"),  # refused online, accepted in batch
    ("merchant_category", ""),  # 'unseen: other': 1 to 64 characters online, anything in batch
    ("merchant_category", "x" * 65),
]


@pytest.mark.parametrize(("field", "value"), KNOWN_SKEW_EXAMPLES)
def test_both_validators_give_the_same_verdict_on_the_known_skew(field: str, value: Any) -> None:
    record = valid_request(**{field: value})
    if isinstance(value, str):
        online, batch = _verdicts(record)
        assert online == batch
        return
    # A JSON number arrives in batch as a numeric column, which the table validator refuses whole.
    import pyarrow as pa

    from shipml.contract.validate import validate_table

    table = _one_row_table({**record, field: None})
    table = table.set_column(table.schema.get_field_index(field), field, pa.array([value]))
    with pytest.raises(DataError, match=field):
        validate_table(CONTRACT, table, include_online=False)
    with pytest.raises(ValidationError):
        REQUEST_MODEL.model_validate(record)


def test_an_iso_timestamp_with_offset_is_accepted_by_both() -> None:
    """The counterpart of the xfail above: the contract's own format passes both validators."""
    from shipml.contract.validate import validate_table

    record = valid_request(event_time=datetime(2026, 1, 15, 22, 45, tzinfo=UTC).isoformat())
    assert REQUEST_MODEL.model_validate(record).event_time.tzinfo is not None
    assert validate_table(CONTRACT, _one_row_table(record), include_online=False).ok
