"""The batch scorer's faster Arrow encoding gives bit-identical tensors to the plain formula.

`reference_encode` is the encoder's algorithm as it stood before the batch fast paths (dictionary
columns looked up per entry, the weekday through a table of its seven values, no `np.where` when
nothing is missing): row-by-row category lookups and the timestamp formula evaluated on every row.
The encoder must give the very same bits on every input, whatever the Arrow layout.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from shipml.contract import FeatureEncoder
from shipml.contract.encode import _EPOCH_WEEKDAY, _SECONDS_PER_DAY, _WEEKDAY_COS, _WEEKDAY_SIN

CATEGORY_COLUMNS = ("currency", "merchant_category", "country", "channel")


def reference_encode(encoder: FeatureEncoder, table: pa.Table) -> np.ndarray:
    """The encoding computed the plain way: Python lookups per row, the full formula per row."""
    rows = table.num_rows
    out = np.zeros((rows, encoder.width), dtype=np.float32)
    block = np.empty((rows, len(encoder._scalar_names)), dtype=np.float64)
    for j, name in enumerate(encoder._scalar_names):
        values = table.column(name).to_pylist() if name in table.column_names else [None] * rows
        block[:, j] = [np.nan if v is None else float(v) for v in values]
    block = np.where(np.isnan(block), encoder._defaults, block)
    np.clip(block, encoder._low, encoder._high, out=block)
    block[:, encoder._log1p] = np.log1p(block[:, encoder._log1p])
    out[:, encoder._scalar_columns] = block
    for plan in encoder._categories:
        values = table.column(plan.name).to_pylist()
        for row, value in enumerate(values):
            column = plan.missing if value is None else plan.index.get(value, plan.unseen)
            if column >= 0:
                out[row, plan.offset + column] = 1.0
    for name, offset in encoder._timestamps:
        stamps = table.column(name).to_pylist()
        seconds = np.array([np.nan if s is None else s.timestamp() for s in stamps], dtype=np.float64)
        missing = np.isnan(seconds)
        seconds = np.where(missing, 0.0, seconds)
        hour_angle = np.mod(seconds, _SECONDS_PER_DAY) * (2 * math.pi / _SECONDS_PER_DAY)
        day_angle = np.mod(np.floor(seconds / _SECONDS_PER_DAY) + _EPOCH_WEEKDAY, 7) * (2 * math.pi / 7)
        out[:, offset] = np.sin(hour_angle)
        out[:, offset + 1] = np.cos(hour_angle)
        out[:, offset + 2] = np.sin(day_angle)
        out[:, offset + 3] = np.cos(day_angle)
        out[missing, offset : offset + 4] = 0.0
    return out


def assert_same_bits(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape and actual.dtype == expected.dtype == np.float32
    differing = np.flatnonzero((actual.view(np.uint32) != expected.view(np.uint32)).any(axis=1))
    assert len(differing) == 0, f"rows {differing[:10].tolist()} differ"


@pytest.fixture(scope="module")
def awkward_table(sample_table) -> pa.Table:
    """The sample with nulls, unseen categories, NaN numbers and far-apart times mixed in."""
    table = sample_table
    rng = np.random.default_rng(7)
    rows = table.num_rows

    def punch(column: str, values: list) -> None:
        nonlocal table
        at = rng.choice(rows, size=len(values), replace=False)
        current = table.column(column).to_pylist()
        for row, value in zip(at.tolist(), values, strict=True):
            current[row] = value
        index = table.column_names.index(column)
        table = table.set_column(index, column, pa.array(current, table.schema.field(column).type))

    for column in CATEGORY_COLUMNS:
        punch(column, [None] * 20 + ["unseen-value"] * 20 + [""] * 5)
    punch("amount", [None] * 10 + [float("nan")] * 5 + [-3.0, 1e9, 0.0])
    punch("card_present", [None] * 10)
    punch("txn_count_24h", [None] * 10 + [-5, 10**7])
    start = datetime(1900, 1, 1, tzinfo=UTC)
    far = [
        start + timedelta(seconds=int(s), microseconds=int(u))
        for s, u in zip(
            rng.integers(0, 200 * 365 * 86_400, size=300), rng.integers(0, 1_000_000, size=300), strict=True
        )
    ]
    punch("event_time", [None] * 10 + far)
    return table


def test_the_weekday_table_holds_what_the_formula_computes_on_long_arrays() -> None:
    angles = np.tile(np.arange(7, dtype=np.float64), 1_001)[3:] * (2 * math.pi / 7)
    weekday = np.tile(np.arange(7), 1_001)[3:]
    assert np.array_equal(np.sin(angles).view(np.uint64), _WEEKDAY_SIN[weekday].view(np.uint64))
    assert np.array_equal(np.cos(angles).view(np.uint64), _WEEKDAY_COS[weekday].view(np.uint64))


def test_plain_arrow_columns_encode_to_the_reference_bits(contract, awkward_table) -> None:
    encoder = FeatureEncoder(contract)
    assert_same_bits(encoder.encode_table(awkward_table), reference_encode(encoder, awkward_table))


def test_dictionary_columns_encode_to_the_same_bits_as_plain_ones(contract, awkward_table) -> None:
    """Parquet's dictionaries read as they are, in chunks whose dictionaries differ, give the same bits."""
    encoder = FeatureEncoder(contract)
    expected = reference_encode(encoder, awkward_table)
    table = awkward_table
    for column in CATEGORY_COLUMNS:
        plain = table.column(column).combine_chunks()
        # Two chunks with their own dictionaries, one of them holding an entry no row uses.
        first = plain.slice(0, 700).dictionary_encode()
        rest = plain.slice(700)
        rest_dictionary = pa.array(["never-used", *pa.compute.unique(rest).drop_null().to_pylist()])
        indices = pa.compute.index_in(rest, value_set=rest_dictionary)
        second = pa.DictionaryArray.from_arrays(indices, rest_dictionary)
        chunked = pa.chunked_array([first, second])
        table = table.set_column(table.column_names.index(column), column, chunked)
    assert_same_bits(encoder.encode_table(table), expected)


def test_rows_and_tables_give_the_same_bits(contract, awkward_table) -> None:
    encoder = FeatureEncoder(contract)
    records = awkward_table.slice(0, 300).to_pylist()
    assert_same_bits(encoder.encode_rows(records), reference_encode(encoder, awkward_table.slice(0, 300)))
