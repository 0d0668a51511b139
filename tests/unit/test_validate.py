"""The vectorised validator: every violation by row, column and rule; schema problems refuse the table."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from shipml.contract.validate import REDACTED, validate_table
from shipml.errors import DataError


def test_generated_training_data_is_valid(contract, sample_table):
    report = validate_table(contract, sample_table, require_target=True)
    assert report.ok, report.summary()
    assert report.valid.all() and report.rows == 2_000


def _broken(table: pa.Table, column: str, row: int, value) -> pa.Table:
    values = table.column(column).to_pylist()
    values[row] = value
    index = table.column_names.index(column)
    return table.set_column(index, column, pa.array(values, table.schema.field(column).type))


def test_every_violation_is_reported_by_row_column_and_rule(contract, sample_table):
    table = sample_table.slice(0, 50)
    table = _broken(table, "amount", 3, -5.0)
    table = _broken(table, "amount", 7, 60_000.0)
    table = _broken(table, "currency", 7, "XXX")
    table = _broken(table, "channel", 9, None)
    table = _broken(table, "txn_count_24h", 11, -1)
    table = _broken(table, "customer_id", 12, "nobody")
    report = validate_table(contract, table)
    found = {(v["row"], v["column"], v["rule"]) for v in report.violations.to_pylist()}
    assert found == {
        (3, "amount", "min"),
        (7, "amount", "max"),
        (7, "currency", "category"),
        (9, "channel", "required"),
        (11, "txn_count_24h", "min"),
        (12, "customer_id", "pattern"),
    }
    assert report.invalid_rows == 5
    assert report.valid_table().num_rows == 45
    assert (
        report.reasons().to_pylist()[1]
        == "amount: must be <= 50000; currency: must be one of EUR, USD, GBP, CHF, SEK, PLN"
    )


def test_pii_values_never_appear_in_a_report(contract, sample_table):
    table = _broken(sample_table.slice(0, 5), "card_number", 1, "CANARY-4242")
    report = validate_table(contract, table)
    assert report.violations.column("value").to_pylist() == [REDACTED]
    assert "CANARY" not in report.summary()


def test_string_timestamps_are_parsed_to_utc_and_bad_ones_reported(contract, sample_table):
    table = sample_table.slice(0, 4)
    strings = ["2026-01-15T23:45:00+01:00", "2026-01-15T23:45:00", "2026-02-30T10:00:00Z", "not a time"]
    table = table.set_column(table.column_names.index("event_time"), "event_time", pa.array(strings))
    report = validate_table(contract, table)
    rules = {(v["row"], v["rule"]) for v in report.violations.to_pylist() if v["column"] == "event_time"}
    assert rules == {(1, "timestamp_format"), (2, "timestamp_value"), (3, "timestamp_format")}
    parsed = report.table.column("event_time")
    assert parsed.type == pa.timestamp("us", tz="UTC")
    assert parsed[0].as_py().isoformat() == "2026-01-15T22:45:00+00:00"


def test_integer_feature_with_fractional_float_is_reported(contract, sample_table):
    table = sample_table.slice(0, 3)
    idx = table.column_names.index("txn_count_24h")
    table = table.set_column(idx, "txn_count_24h", pa.array([1.0, 2.5, float("inf")]))
    rules = {(v["row"], v["rule"]) for v in validate_table(contract, table).violations.to_pylist()}
    assert rules == {(1, "integer"), (2, "finite"), (2, "max")}


def test_missing_and_mistyped_columns_refuse_the_whole_table(contract, sample_table):
    table = sample_table.drop_columns(["amount", "channel"])
    idx = table.column_names.index("card_present")
    table = table.set_column(idx, "card_present", pc.cast(table.column("card_present"), pa.string()))
    with pytest.raises(DataError) as caught:
        validate_table(contract, table)
    message = str(caught.value)
    assert "amount: missing column" in message
    assert "channel: missing column" in message
    assert "card_present: column has type string, expected a boolean" in message


def test_target_is_required_for_training_data(contract, sample_table):
    with pytest.raises(DataError, match="is_fraud: missing target column"):
        validate_table(contract, sample_table.drop_columns(["is_fraud"]), require_target=True)
    labels = pa.array([0, 1, 2, None], pa.int64())
    table = sample_table.slice(0, 4).drop_columns(["is_fraud"]).append_column("is_fraud", labels)
    rules = {
        (v["row"], v["rule"])
        for v in validate_table(contract, table, require_target=True).violations.to_pylist()
    }
    assert rules == {(2, "label"), (3, "required")}


def test_request_shaped_input_may_omit_online_features(contract, sample_table):
    names = [f.name for f in contract.online_features]
    report = validate_table(contract, sample_table.drop_columns(names), include_online=False)
    assert report.ok


def test_online_features_may_be_missing_when_the_contract_gives_a_default(contract, sample_table):
    table = _broken(sample_table.slice(0, 3), "mean_amount_30d", 0, None)
    assert validate_table(contract, table).ok


def test_summary_counts_per_column_and_rule(contract, sample_table):
    table = _broken(_broken(sample_table.slice(0, 10), "amount", 0, -1.0), "amount", 1, -2.0)
    summary = validate_table(contract, table).summary()
    assert "10 rows, 2 invalid, 2 violations" in summary
    assert "amount: min x2" in summary
