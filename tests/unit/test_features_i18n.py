"""Internationalisation: locale-formatted numbers, currencies, non-ASCII text, timestamps with offsets.

Each is checked on both paths (the request model and the table validator) and through the encoder,
so that training and serving see the same tensor whatever way a value was written.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest
import yaml
from pydantic import ValidationError

from shipml.contract import FeatureEncoder, build_request_model, parse_contract
from shipml.contract.request import normalise_times
from shipml.contract.validate import validate_table
from shipml.errors import ContractError
from shipml.features.i18n import parse_locale_number

RATES = {"USD": 0.9, "GBP": 1.15, "CHF": 1.05}


@pytest.fixture(scope="module")
def raw(contract_path) -> dict:
    return yaml.safe_load(contract_path.read_text())


def _variant(raw: dict, **amount_rules) -> dict:
    changed = copy.deepcopy(raw)
    for feature in changed["features"]:
        if feature["name"] == "amount":
            feature.update(amount_rules)
    return changed


@pytest.fixture(scope="module")
def i18n_contract(raw):
    """Amounts may be written in de_DE or fr_FR and come in EUR, USD, GBP or CHF (converted to EUR)."""
    return parse_contract(
        _variant(raw, locales=["de_DE", "fr_FR"], currency={"field": "currency", "to": "EUR", "rates": RATES})
    )


@pytest.mark.parametrize(
    ("text", "locales", "expected"),
    [
        ("1.234,56", ["de_DE"], 1234.56),
        ("1234,56", ["de_DE"], 1234.56),
        ("1\u202f234,56", ["fr_FR"], 1234.56),  # CLDR's narrow no-break space
        ("1 234,56", ["fr_FR"], 1234.56),  # and the plain space people type
        ("1\u2019234.56", ["de_CH"], 1234.56),
        ("-1.000", ["de_DE"], -1000.0),
        ("\u22121\u00a0000,5", ["sv_SE"], -1000.5),  # U+2212 minus sign
        ("1,234.56", ["en_US"], 1234.56),
        ("1.234,56", ["de_DE", "fr_FR"], 1234.56),  # only de_DE reads it
    ],
)
def test_locale_numbers_are_read(text, locales, expected):
    assert parse_locale_number(text, locales) == expected


@pytest.mark.parametrize(
    ("text", "locales", "message"),
    [
        ("1.234", ["de_DE", "en_US"], "ambiguous"),  # 1234 or 1.234: refused, never guessed
        ("1,234.56", ["de_DE", "fr_FR"], "not a number"),
        ("12.34.5", ["de_DE"], "not a number"),  # groups must have three digits
        ("1e5", ["en_US"], "not a number"),
        ("12 EUR", ["fr_FR"], "not a number"),
        ("", ["de_DE"], "not a number"),
        ("1" * 65, ["de_DE"], "at most 64"),
        ("1,5", ["de_DE"], "whole number"),
    ],
)
def test_bad_or_ambiguous_locale_numbers_are_refused(text, locales, message):
    with pytest.raises(ValueError, match=message):
        parse_locale_number(text, locales, integer=message == "whole number")


def test_locales_only_where_the_contract_allows_them(raw, contract, request_body):
    # The example contract allows none: a string amount stays a type error
    with pytest.raises(ValidationError) as caught:
        build_request_model(contract).model_validate(request_body(amount="1.234,56"))
    assert caught.value.errors()[0]["type"] == "float_type"
    # and a contract may not name an unknown locale, or put locales on a category
    with pytest.raises(ContractError, match="unknown: \\['xx_XX'\\]"):
        parse_contract(_variant(raw, locales=["xx_XX"]))
    bad = copy.deepcopy(raw)
    next(f for f in bad["features"] if f["name"] == "channel")["locales"] = ["de_DE"]
    with pytest.raises(ContractError, match="locales apply to number and integer features"):
        parse_contract(bad)


def test_request_reads_locale_amounts_and_converts_currencies(i18n_contract, request_body):
    model = build_request_model(i18n_contract)
    assert model.model_validate(request_body(amount="1.234,56", currency="EUR")).amount == 1234.56
    assert model.model_validate(request_body(amount="100,00", currency="USD")).amount == pytest.approx(90.0)
    assert model.model_validate(request_body(amount=100, currency="GBP")).amount == pytest.approx(115.0)
    schema = model.model_json_schema()["properties"]["amount"]
    assert {"type": "string", "maxLength": 64, "description": "formatted in de_DE, fr_FR"} in schema["anyOf"]


def test_a_currency_without_a_rate_is_refused_naming_the_field(i18n_contract, request_body):
    with pytest.raises(ValidationError) as caught:
        build_request_model(i18n_contract).model_validate(request_body(currency="SEK"))
    (error,) = caught.value.errors()
    assert error["loc"] == ("currency",)
    assert "no exchange rate from 'SEK' to EUR" in error["msg"] and "CHF, GBP, USD" in error["msg"]


def test_table_path_reads_locales_converts_currencies_and_reports_the_rest(i18n_contract, sample_table):
    # Given amounts as de_DE/fr_FR strings, one unreadable and one ambiguous-free, and a SEK row
    rows = sample_table.slice(0, 5)
    amounts = ["1.234,56", "1 234,56", "12,5", "1,234.56", "7"]
    currencies = ["EUR", "USD", "GBP", "EUR", "SEK"]
    rows = rows.set_column(rows.column_names.index("amount"), "amount", pa.array(amounts))
    rows = rows.set_column(rows.column_names.index("currency"), "currency", pa.array(currencies))

    report = validate_table(i18n_contract, rows)

    rules = {(v["row"], v["column"], v["rule"]) for v in report.violations.to_pylist()}
    assert rules == {(3, "amount", "locale_number"), (4, "currency", "currency_rate")}
    got = report.table.column("amount").to_pylist()
    assert got[:3] == pytest.approx([1234.56, 1234.56 * 0.9, 12.5 * 1.15])


def test_training_and_serving_tensors_match_with_locales_and_currencies(
    i18n_contract, sample_table, request_body
):
    # Given the same three transactions as request bodies and as a table of strings
    encoder = FeatureEncoder(i18n_contract)
    model = build_request_model(i18n_contract)
    bodies = [
        request_body(amount="1.234,56", currency="USD"),
        request_body(amount="99,90", currency="CHF", merchant_category="Café Zürich"),
        request_body(amount=12.5, currency="EUR"),
    ]
    served = encoder.encode_rows([model.model_validate(b).model_dump() for b in bodies])
    written_in_fr = ["1 234,56", "99,90", "12,5"]
    table = pa.Table.from_pylist([{**b, "amount": a} for b, a in zip(bodies, written_in_fr, strict=True)])
    report = validate_table(i18n_contract, table, include_online=False)
    assert report.ok, report.summary()
    trained = encoder.encode_table(report.table)
    np.testing.assert_array_equal(trained, served)


def test_non_ascii_text_and_categories_survive_both_paths(raw, request_body):
    # Given a contract with a non-ASCII category and a free-text merchant name
    changed = copy.deepcopy(raw)
    next(f for f in changed["features"] if f["name"] == "merchant_category")["categories"].append("épicerie")
    changed["features"].append(
        {"name": "merchant_name", "type": "text", "input": False, "required": False, "max_length": 8}
    )
    contract = parse_contract(changed)
    model = build_request_model(contract)
    body = request_body(merchant_category="épicerie", merchant_name="東京の店")

    # Then the request model counts characters, not bytes (12 bytes in UTF-8, 4 characters)
    parsed = model.model_validate(body).model_dump()
    assert parsed["merchant_name"] == "東京の店"
    with pytest.raises(ValidationError, match="at most 8 characters"):
        model.model_validate(request_body(merchant_name="Bäckerei Müller"))
    # and the table validator agrees, and the one-hot slot is the same on both paths
    report = validate_table(contract, pa.Table.from_pylist([body]), include_online=False)
    assert report.ok, report.summary()
    encoder = FeatureEncoder(contract)
    np.testing.assert_array_equal(encoder.encode_table(report.table), encoder.encode_rows([parsed]))
    named = dict(zip(encoder.feature_names, encoder.encode_rows([parsed])[0], strict=True))
    assert named["merchant_category=épicerie"] == 1.0


@pytest.mark.parametrize(
    "offset",
    [timedelta(0), timedelta(hours=5, minutes=30), timedelta(hours=-9, minutes=-30), timedelta(hours=14)],
)
def test_timestamps_with_any_offset_are_the_same_instant_in_utc(contract, request_body, offset):
    # Given one instant written with different offsets
    instant = datetime(2026, 1, 15, 22, 45, tzinfo=UTC)
    written = instant.astimezone(timezone(offset)).isoformat()
    model = build_request_model(contract)

    # When read by the request model and by the validator
    record = normalise_times(model.model_validate(request_body(event_time=written)).model_dump(), contract)
    table = pa.Table.from_pylist([request_body(event_time=written)])
    report = validate_table(contract, table, include_online=False)

    # Then both hold the same UTC instant and encode identically
    assert record["event_time"] == instant and record["event_time"].utcoffset() == timedelta(0)
    assert report.table.column("event_time")[0].as_py() == instant
    encoder = FeatureEncoder(contract)
    np.testing.assert_array_equal(encoder.encode_rows([record]), encoder.encode_table(report.table))
