"""The vectorised validator: checks a whole Arrow table against the contract at once.

Two levels, as a user expects from a batch tool:
- the schema (a missing column, a column of the wrong type) is a `DataError` that refuses the
  whole table before any work, naming every bad column;
- values are checked column by column with pyarrow compute kernels, and *every* violation is
  reported by row, column and rule instead of stopping at the first. Rows with a violation are
  marked invalid; the caller decides where they go (a rejects file, a 422, a failed pipeline step).

PII values never appear in a report: their `value` is redacted.

Internationalisation, as in the request model: a number feature with `locales` may arrive as a
string column of locale-formatted numbers (read strictly, refused when ambiguous: rule
`locale_number`); a number feature with a `currency` rule is converted to the contract's
currency in the normalised table, and rows in a currency the contract cannot convert are
reported on the currency column (rule `currency_rate`). Timestamps with any offset become UTC.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shipml.contract.schema import (
    ISO_TIMESTAMP_WITH_OFFSET,
    MAX_OTHER_CATEGORY_LENGTH,
    TIMESTAMP_FORMAT_MESSAGE,
    Contract,
    Feature,
    FieldType,
    Source,
)
from shipml.errors import DataError

# ISO 8601 date-time with an explicit offset: the one format of every path (shipml.contract.schema).
_ISO_WITH_OFFSET = ISO_TIMESTAMP_WITH_OFFSET
TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")
VIOLATION_SCHEMA = pa.schema(
    [
        ("row", pa.int64()),
        ("column", pa.string()),
        ("rule", pa.string()),
        ("message", pa.string()),
        ("value", pa.string()),
    ]
)
REDACTED = "<redacted>"


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of `validate_table`.

    `table` is the input normalised for encoding (timestamps parsed to UTC, dictionary columns
    decoded); `valid` marks rows without any violation; `violations` has one row per violation.
    """

    table: pa.Table
    valid: np.ndarray
    violations: pa.Table

    @property
    def rows(self) -> int:
        return self.table.num_rows

    @property
    def invalid_rows(self) -> int:
        return int(self.rows - self.valid.sum())

    @property
    def ok(self) -> bool:
        return self.violations.num_rows == 0

    def valid_table(self) -> pa.Table:
        return self.table.filter(pa.array(self.valid))

    def invalid_table(self) -> pa.Table:
        return self.table.filter(pa.array(~self.valid))

    def reasons(self) -> pa.Array:
        """One line per invalid row ("column: rule; ..."), aligned with `invalid_table()`."""
        if self.violations.num_rows == 0:
            return pa.array([], pa.string())
        grouped = self.violations.group_by("row").aggregate([("message", "list")]).sort_by("row")
        joined = pc.binary_join(grouped.column("message_list"), "; ")
        return joined

    def summary(self, limit: int = 10) -> str:
        """Counts per column and rule, then the first `limit` violations, for a CLI or a log."""
        if self.ok:
            return f"{self.rows} rows, no violations"
        counts = self.violations.group_by(["column", "rule"]).aggregate([("row", "count")])
        lines = [f"{self.rows} rows, {self.invalid_rows} invalid, {self.violations.num_rows} violations:"]
        for item in counts.sort_by([("row_count", "descending")]).to_pylist():
            lines.append(f"  {item['column']}: {item['rule']} x{item['row_count']}")
        for item in self.violations.slice(0, limit).to_pylist():
            lines.append(f"  row {item['row']}: {item['message']} (value: {item['value']})")
        return "\n".join(lines)


def _is_string(dtype: pa.DataType) -> bool:
    return pa.types.is_string(dtype) or pa.types.is_large_string(dtype)


def _is_type_ok(feature: Feature, dtype: pa.DataType) -> bool:
    if pa.types.is_null(dtype):
        return True
    if feature.locales and _is_string(dtype):
        return True
    if feature.type == FieldType.number:
        return pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_decimal(dtype)
    if feature.type == FieldType.integer:
        return pa.types.is_integer(dtype) or pa.types.is_floating(dtype)
    if feature.type == FieldType.boolean:
        return pa.types.is_boolean(dtype)
    if feature.type == FieldType.timestamp:
        return pa.types.is_timestamp(dtype) or pa.types.is_string(dtype) or pa.types.is_large_string(dtype)
    return pa.types.is_string(dtype) or pa.types.is_large_string(dtype)


def _expected(feature: Feature) -> str:
    return {
        FieldType.number: "a number",
        FieldType.integer: "an integer",
        FieldType.boolean: "a boolean",
        FieldType.timestamp: "a timestamp or an ISO 8601 string with offset",
    }.get(feature.type, "a string")


def _columns_to_check(
    contract: Contract, include_online: bool, only: Collection[str] | None
) -> list[Feature]:
    return [
        f
        for f in contract.features
        if (include_online or f.source == Source.request) and (only is None or f.name in only)
    ]


def check_schema(
    contract: Contract,
    schema: pa.Schema,
    *,
    require_target: bool = False,
    include_online: bool = True,
    only: Collection[str] | None = None,
) -> None:
    """Refuse a table whose columns cannot be checked row by row: missing or wrongly typed ones."""
    problems: list[str] = []
    names = set(schema.names)
    for feature in _columns_to_check(contract, include_online, only):
        if feature.name not in names:
            # An optional request field may be absent as a whole column; online features may not
            # (a table that carries them must carry all of them, or none with include_online=False).
            if not feature.may_be_missing or feature.looked_up:
                problems.append(f"{feature.name}: missing column ({feature.type} expected)")
            continue
        dtype = schema.field(feature.name).type
        if pa.types.is_dictionary(dtype):
            dtype = dtype.value_type
        if not _is_type_ok(feature, dtype):
            problems.append(f"{feature.name}: column has type {dtype}, expected {_expected(feature)}")
    if require_target:
        if contract.target not in names:
            problems.append(f"{contract.target}: missing target column")
        else:
            dtype = schema.field(contract.target).type
            if not (pa.types.is_boolean(dtype) or pa.types.is_integer(dtype)):
                problems.append(f"{contract.target}: target has type {dtype}, expected a boolean or 0/1")
    if problems:
        raise DataError("the data does not match the contract:\n  " + "\n  ".join(problems))


class _Collector:
    def __init__(self, contract: Contract, table: pa.Table) -> None:
        self.rows = table.num_rows
        self.valid = np.ones(self.rows, dtype=bool)
        self._pii = {f.name for f in contract.pii_features}
        self._parts: list[pa.RecordBatch] = []

    def add(
        self, column: str, rule: str, message: str, mask: pa.Array | np.ndarray | None, values: pa.Array
    ) -> None:
        """Record a violation for every row where `mask` is true (nulls in the mask count as false).

        A `None` mask is a check that proved the column clean without a mask.
        """
        if mask is None:
            return
        if isinstance(mask, np.ndarray):
            hits = np.nonzero(mask)[0]
        else:
            if isinstance(mask, pa.ChunkedArray):
                mask = mask.combine_chunks()
            if mask.true_count == 0:  # the common case on good data: nothing to gather
                return
            hits = np.nonzero(pc.fill_null(mask, False).to_numpy(zero_copy_only=False))[0]
        if len(hits) == 0:
            return
        self.valid[hits] = False
        if column in self._pii:
            shown = pa.array([REDACTED] * len(hits), pa.string())
        else:
            taken = values.take(pa.array(hits))
            shown = pc.fill_null(pc.cast(taken, pa.string(), safe=False), "null")
        count = len(hits)
        self._parts.append(
            pa.record_batch(
                [
                    pa.array(hits, pa.int64()),
                    pa.array([column] * count, pa.string()),
                    pa.array([rule] * count, pa.string()),
                    pa.array([f"{column}: {message}"] * count, pa.string()),
                    shown,
                ],
                schema=VIOLATION_SCHEMA,
            )
        )

    def table(self) -> pa.Table:
        if not self._parts:
            # Not `VIOLATION_SCHEMA.empty_table()`: pyarrow builds that through pandas, whose import
            # alone costs a batch run half a second.
            return pa.Table.from_batches([], VIOLATION_SCHEMA)
        return pa.Table.from_batches(self._parts, VIOLATION_SCHEMA).sort_by([("row", "ascending")])


def _fmt(number: float) -> str:
    return f"{number:g}"


def _check_numeric(feature: Feature, values: pa.Array, out: _Collector) -> None:
    as_float = pc.cast(values, pa.float64(), safe=False)
    finite = pc.is_finite(as_float)
    out.add(feature.name, "finite", "must be a finite number", pc.invert(finite), values)
    if feature.type == FieldType.integer and pa.types.is_floating(values.type):
        fractional = pc.and_(finite, pc.not_equal(pc.floor(as_float), as_float))
        out.add(feature.name, "integer", "must be a whole number", fractional, values)
    if feature.min is not None:
        out.add(
            feature.name, "min", f"must be >= {_fmt(feature.min)}", pc.less(as_float, feature.min), values
        )
    if feature.max is not None:
        out.add(
            feature.name, "max", f"must be <= {_fmt(feature.max)}", pc.greater(as_float, feature.max), values
        )


def _read_locale_numbers(feature: Feature, values: pa.Array, out: _Collector) -> pa.Array:
    """A string column of locale-formatted numbers -> float64, reporting what cannot be read."""
    from shipml.features.i18n import parse_locale_numbers

    integer = feature.type == FieldType.integer
    parsed, errors = parse_locale_numbers(values.to_pylist(), feature.locales or [], integer=integer)
    messages = sorted({e for e in errors if e is not None})
    for message in messages:
        hits = np.array([e == message for e in errors], dtype=bool)
        out.add(feature.name, "locale_number", message, hits, values)
    return pa.array(parsed, pa.float64())


def _convert_currencies(contract: Contract, columns: dict, out: _Collector) -> None:
    """Express converted amounts in the contract's currency; report currencies it cannot convert."""
    for feature in contract.features:
        rule = feature.currency
        if rule is None or feature.name not in columns or rule.field not in columns:
            continue
        currencies = columns[rule.field]
        currencies = currencies.combine_chunks() if isinstance(currencies, pa.ChunkedArray) else currencies
        if pa.types.is_dictionary(currencies.type):
            currencies = currencies.dictionary_decode()
        known = pa.array(rule.accepted, pa.string())
        rates = pa.array([rule.rate(c) for c in rule.accepted], pa.float64())
        position = pc.index_in(currencies, value_set=known)
        refused = pc.and_(pc.is_valid(currencies), pc.is_null(position))
        out.add(
            rule.field,
            "currency_rate",
            f"has no exchange rate to {rule.to} in the contract (accepted: {', '.join(rule.accepted)})",
            refused,
            currencies,
        )
        amounts = columns[feature.name]
        amounts = amounts.combine_chunks() if isinstance(amounts, pa.ChunkedArray) else amounts
        row_rates = pc.take(rates, position)
        columns[feature.name] = pc.multiply(pc.cast(amounts, pa.float64()), row_rates)


def _parse_timestamps(feature: Feature, values: pa.Array, out: _Collector) -> pa.Array:
    if pa.types.is_timestamp(values.type):
        if values.type.tz is None:
            # A naive timestamp column gives no way to know the offset: refuse the rows.
            out.add(feature.name, "timestamp_offset", "must carry a UTC offset", pc.is_valid(values), values)
            return pa.nulls(len(values), TIMESTAMP_TYPE)
        return pc.cast(values, TIMESTAMP_TYPE)
    text = pc.cast(values, pa.string())
    well_formed = pc.match_substring_regex(text, _ISO_WITH_OFFSET)
    out.add(
        feature.name,
        "timestamp_format",
        TIMESTAMP_FORMAT_MESSAGE,
        pc.invert(well_formed),
        values,
    )
    candidates = pc.if_else(well_formed, text, pa.scalar(None, pa.string()))
    try:
        return pc.cast(candidates, TIMESTAMP_TYPE)
    except pa.ArrowInvalid:
        # Well formed but impossible (month 13, hour 25): parse one by one to find which.
        parsed, bad = [], []
        for value in candidates.to_pylist():
            try:
                parsed.append(None if value is None else pc.cast(pa.scalar(value), TIMESTAMP_TYPE).as_py())
                bad.append(False)
            except pa.ArrowInvalid:
                parsed.append(None)
                bad.append(True)
        out.add(feature.name, "timestamp_value", "is not a valid date and time", np.array(bad), values)
        return pa.array(parsed, TIMESTAMP_TYPE)


def _spread(values: pa.DictionaryArray, entry_mask: pa.Array) -> pa.Array | None:
    """A mask over dictionary entries spread to the rows (null rows false); None when no entry is hit."""
    if entry_mask.true_count == 0:
        return None
    return pc.take(entry_mask, values.indices)


def _length_outside(values: pa.Array, low: int, high: int) -> pa.Array | None:
    """Rows whose length in characters is outside [low, high]; None when the byte lengths prove none is.

    A character is one to four bytes, so byte lengths within [low, high] prove character lengths
    within it too for `low <= 1` (a non-empty string has at least one character); only a column
    with a value of more than `high` bytes, or fewer than `low`, pays for counting characters.
    """
    if low <= 1 and len(values) and values.null_count < len(values):
        extremes = pc.min_max(pc.binary_length(values)).as_py()
        if extremes["min"] >= low and extremes["max"] <= high:
            return None
    length = pc.utf8_length(values)
    return pc.or_(pc.less(length, low), pc.greater(length, high))


def validate_table(
    contract: Contract,
    table: pa.Table,
    *,
    require_target: bool = False,
    include_online: bool = True,
    only: Collection[str] | None = None,
    decode_dictionaries: bool = True,
) -> ValidationReport:
    """Check every row of `table`; raise `DataError` if its schema cannot be checked at all.

    `include_online=False` skips the online features (request-shaped input); `only` limits the
    check to the named fields (an online-store load checks just the key and the online features).
    `decode_dictionaries=False` keeps dictionary-encoded category columns as they are in the
    normalised table (the batch scorer encodes them per dictionary entry, not per row).
    """
    check_schema(
        contract, table.schema, require_target=require_target, include_online=include_online, only=only
    )
    out = _Collector(contract, table)
    columns: dict[str, pa.ChunkedArray | pa.Array] = {name: table.column(name) for name in table.column_names}
    for feature in _columns_to_check(contract, include_online, only):
        if feature.name not in columns:
            continue
        values = columns[feature.name].combine_chunks()
        by_entry = (
            feature.type == FieldType.category
            and pa.types.is_dictionary(values.type)
            and _is_string(values.type.value_type)
            and values.dictionary.null_count == 0
        )
        if pa.types.is_dictionary(values.type) and not by_entry:
            values = values.dictionary_decode()
        if not feature.may_be_missing:
            out.add(feature.name, "required", "is required", pc.is_null(values), values)
        if feature.is_numeric and feature.locales and _is_string(values.type):
            values = _read_locale_numbers(feature, values, out)
        if feature.is_numeric:
            _check_numeric(feature, values, out)
        elif feature.type == FieldType.category and feature.unseen == "reject":
            allowed = pa.array(feature.categories, pa.string())
            choices = ", ".join(feature.categories or [])
            if by_entry:
                unseen = _spread(values, pc.invert(pc.is_in(values.dictionary, value_set=allowed)))
            else:
                unseen = pc.and_(pc.is_valid(values), pc.invert(pc.is_in(values, value_set=allowed)))
            out.add(feature.name, "category", f"must be one of {choices}", unseen, values)
        elif feature.type == FieldType.category:
            # `unseen: other` takes any text, within the same length as the request model allows.
            checked = values.dictionary if by_entry else values
            bad = _length_outside(checked, 1, MAX_OTHER_CATEGORY_LENGTH)
            if by_entry and bad is not None:
                bad = _spread(values, bad)
            out.add(
                feature.name, "length", f"must be 1 to {MAX_OTHER_CATEGORY_LENGTH} characters", bad, values
            )
        elif feature.type == FieldType.text:
            if feature.pattern is not None:
                mismatch = pc.invert(pc.match_substring_regex(values, feature.pattern))
                out.add(feature.name, "pattern", f"must match {feature.pattern}", mismatch, values)
            out.add(
                feature.name,
                "max_length",
                f"must be at most {feature.max_length} characters",
                _length_outside(values, 0, feature.max_length),
                values,
            )
        elif feature.type == FieldType.timestamp:
            values = _parse_timestamps(feature, values, out)
        if by_entry and decode_dictionaries:
            values = values.dictionary_decode()
        columns[feature.name] = values
    if require_target:
        target = columns[contract.target].combine_chunks()
        out.add(contract.target, "required", "the label is required", pc.is_null(target), target)
        if pa.types.is_integer(target.type):
            not_binary = pc.invert(pc.is_in(target, value_set=pa.array([0, 1], target.type)))
            out.add(
                contract.target, "label", "must be 0 or 1", pc.and_(pc.is_valid(target), not_binary), target
            )
    _convert_currencies(contract, columns, out)
    normalised = pa.table(columns)
    return ValidationReport(table=normalised, valid=out.valid, violations=out.table())
