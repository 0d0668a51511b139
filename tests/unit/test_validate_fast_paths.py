"""The validator's fast paths give exactly the violations of the row-by-row checks.

Two shortcuts skip work on clean data: character lengths bounded by byte lengths, and category
columns checked once per dictionary entry. Each is compared here with the plain check it replaces.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shipml.contract.validate import _length_outside, validate_table


def test_character_lengths_count_characters_not_bytes() -> None:
    column = pa.array(["é" * 64, "a" * 64, None, "é" * 65, ""])
    outside = _length_outside(column, 1, 64)
    assert pc.fill_null(outside, False).to_pylist() == [False, False, False, True, True]
    assert _length_outside(pa.array(["ab", "c", None]), 1, 64) is None


def _dictionary_encoded(table: pa.Table, columns: list[str]) -> pa.Table:
    for name in columns:
        index = table.column_names.index(name)
        table = table.set_column(index, name, pc.dictionary_encode(table.column(name)))
    return table


def test_dictionary_category_columns_give_the_violations_of_plain_ones(contract, sample_table) -> None:
    table = sample_table.slice(0, 40)
    values = {
        "currency": {2: "XXX", 5: None},
        "channel": {7: "carrier_pigeon"},
        "merchant_category": {9: "", 11: "x" * 65, 12: "pet_shops"},
        "country": {13: None},
    }
    for name, changes in values.items():
        column = table.column(name).to_pylist()
        for row, value in changes.items():
            column[row] = value
        table = table.set_column(table.column_names.index(name), name, pa.array(column, pa.string()))
    plain = validate_table(contract, table)
    encoded = _dictionary_encoded(table, list(values))
    fast = validate_table(contract, encoded, decode_dictionaries=False)
    assert fast.violations.to_pylist() == plain.violations.to_pylist()
    assert {(v["row"], v["rule"]) for v in plain.violations.to_pylist()} == {
        (2, "category"),
        (5, "required"),
        (7, "category"),
        (9, "length"),
        (11, "length"),
        (13, "required"),
    }
    assert np.array_equal(fast.valid, plain.valid)
    assert pa.types.is_dictionary(fast.table.schema.field("currency").type)
    decoded = validate_table(contract, encoded)  # the default decodes, as before
    assert decoded.table.schema.field("currency").type == pa.string()
    assert decoded.table.column("currency").to_pylist() == plain.table.column("currency").to_pylist()
