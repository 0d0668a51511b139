"""The local batch scorer: any size of Parquet, CSV or JSON Lines, in bounded memory.

The input is read in Arrow record batches; each batch is checked by the contract's vectorised
validator, enriched with online features (from its own columns when it carries them, else from
the online store), encoded and scored in one onnxruntime call. Valid rows go to the output with
their id, score, label and model version; invalid rows go to the rejects file with the reason.
Nothing is dropped silently: rows in = scored + rejected, checked at the end. Both files are
written atomically: an unreadable or truncated input leaves neither behind.

The scoring itself is `shipml.predict.Predictor`, the same encoder and onnxruntime session that
backs `/predict` and `/predict/batch`; what is batch-only here is Arrow I/O, which the Lambda
bundle deliberately does not carry.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from shipml.atomic import atomic_path
from shipml.contract import Contract, FieldType
from shipml.contract.validate import VIOLATION_SCHEMA, check_schema, validate_table
from shipml.errors import DataError
from shipml.predict import Predictor

DEFAULT_BATCH_ROWS = 65_536
MAX_WORKERS = 4
ROW = "_row"
REASON = "_reason"
_NUMBER = r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$"
_INTEGER = r"^\s*[+-]?\d+\s*$"
_BOOLEAN = {"true": True, "1": True, "false": False, "0": False}


@dataclass(frozen=True)
class BatchReport:
    input: Path
    output: Path
    rejects: Path
    model_version: str
    rows_in: int
    scored: int
    rejected: int
    fallbacks: int
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.rows_in / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        return (
            f"{self.rows_in:,} rows in = {self.scored:,} scored + {self.rejected:,} rejected "
            f"({self.fallbacks:,} online-feature defaults) with {self.model_version} in {self.seconds:.1f} s "
            f"({self.rows_per_second:,.0f} rows/s); output {self.output}, rejects {self.rejects}"
        )


def _text_columns(contract: Contract) -> dict[str, pa.DataType]:
    """CSV is read as text and converted here, so a bad value rejects its row, not the file."""
    return {f.name: pa.string() for f in contract.features}


def _dictionary_columns(contract: Contract, schema: pa.Schema) -> list[str]:
    """Category columns to read as Parquet stores them, dictionary-encoded.

    Parquet writers dictionary-encode low-cardinality text; reading those columns as dictionaries
    skips building millions of strings, and the validator and the encoder then work once per
    dictionary entry instead of once per row.
    """
    return [
        f.name
        for f in contract.features
        if f.type == FieldType.category
        and f.name in schema.names
        and (
            pa.types.is_string(schema.field(f.name).type)
            or pa.types.is_large_string(schema.field(f.name).type)
        )
    ]


def read_batches(path: Path, contract: Contract, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Record batches of a Parquet, CSV or JSON Lines file; a read error is a `DataError`."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            # pre_buffer=False: pyarrow's pre-buffering keeps every column chunk read so far until
            # the file is closed, i.e. memory in proportion to the file (measured: +77 MB from 1M to
            # 4M rows); without it memory stays a few row groups, at the same speed.
            # The footer is read once: its schema picks the dictionary columns, and the reader
            # is given the same metadata instead of reading it again.
            metadata = pq.read_metadata(path)
            parquet = pq.ParquetFile(
                path,
                metadata=metadata,
                read_dictionary=_dictionary_columns(contract, metadata.schema.to_arrow_schema()),
                pre_buffer=False,
            )
            # One decoding thread per batch: the scoring workers already keep the cores busy, and
            # Arrow's own decoding threads would only compete with them (measured: less CPU per row).
            yield from parquet.iter_batches(batch_size=batch_rows, use_threads=False)
        elif suffix == ".csv":
            reader = pacsv.open_csv(
                path,
                read_options=pacsv.ReadOptions(block_size=1 << 24),
                convert_options=pacsv.ConvertOptions(
                    column_types=_text_columns(contract), strings_can_be_null=True
                ),
            )
            yield from reader
        elif suffix in (".jsonl", ".json", ".ndjson"):
            yield from pajson.open_json(path, read_options=pajson.ReadOptions(block_size=1 << 24))
        else:
            raise DataError(f"{path}: unsupported input format {suffix!r}; use .parquet, .csv or .jsonl")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: cannot read it ({exc}); nothing was written") from None


def _coerce_text(contract: Contract, batch: pa.Table) -> tuple[pa.Table, list[pa.Table]]:
    """Convert text columns of numeric/boolean features; rows whose text does not convert are rejected."""
    problems = []
    for feature in contract.features:
        if feature.name not in batch.column_names:
            continue
        if not pa.types.is_string(batch.schema.field(feature.name).type) or feature.type not in (
            FieldType.number,
            FieldType.integer,
            FieldType.boolean,
        ):
            continue
        column = batch.column(feature.name).combine_chunks()
        if feature.type == FieldType.boolean:
            lowered = pc.utf8_lower(pc.utf8_trim_whitespace(column))
            good = pc.is_in(lowered, value_set=pa.array(list(_BOOLEAN)))
            converted = pc.is_in(lowered, value_set=pa.array(["true", "1"]))
            target, rule, message = pa.bool_(), "type", "must be true/false"
        else:
            pattern = _INTEGER if feature.type == FieldType.integer else _NUMBER
            good = pc.match_substring_regex(column, pattern)
            target = pa.int64() if feature.type == FieldType.integer else pa.float64()
            converted = pc.cast(pc.if_else(good, pc.utf8_trim_whitespace(column), None), target)
            rule, message = (
                "type",
                f"must be {'an integer' if feature.type == FieldType.integer else 'a number'}",
            )
        bad = pc.and_(pc.is_valid(column), pc.invert(pc.fill_null(good, False)))
        rows = np.flatnonzero(bad.to_numpy(zero_copy_only=False))
        if len(rows):
            shown = ["<redacted>"] * len(rows) if feature.pii else column.take(pa.array(rows)).to_pylist()
            problems.append(
                pa.table(
                    {
                        "row": pa.array(rows, pa.int64()),
                        "column": [feature.name] * len(rows),
                        "rule": [rule] * len(rows),
                        "message": [f"{feature.name}: {message}"] * len(rows),
                        "value": pa.array(shown, pa.string()),
                    },
                    schema=VIOLATION_SCHEMA,
                )
            )
        batch = batch.set_column(
            batch.column_names.index(feature.name),
            feature.name,
            pc.if_else(good, converted, None).cast(target),
        )
    return batch, problems


class BatchScorer:
    """Scores Arrow tables with one model version, splitting them into scored rows and rejects."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.contract = predictor.contract
        self.online_names = [f.name for f in self.contract.online_features]

    def _online_columns(self, table: pa.Table) -> tuple[pa.Table, int, np.ndarray]:
        """Add the online features from the store when the input lacks them.

        Returns the table, the number of defaulted values, and a mask of rows to reject because a
        feature whose contract allows no default was missing.
        """
        reject = np.zeros(table.num_rows, dtype=bool)
        if not self.online_names or all(n in table.column_names for n in self.online_names):
            return table, 0, reject
        keys = [None if k is None else str(k) for k in table.column(self.contract.entity_key).to_pylist()]
        found = {}
        if self.predictor.online is not None:
            unique = sorted({k for k in keys if k is not None})
            found = self.predictor.online.get_many(self.contract.model, unique)
        defaulted = 0
        for feature in self.contract.online_features:
            values = [found.get(k, {}).get(feature.name) if k is not None else None for k in keys]
            missing = np.array([v is None for v in values], dtype=bool)
            if feature.on_missing == "reject":
                reject |= missing
            else:
                defaulted += int(missing.sum())
                values = [feature.default if v is None else v for v in values]
            kind = pa.float64() if feature.type == FieldType.number else pa.int64()
            kind = pa.bool_() if feature.type == FieldType.boolean else kind
            table = table.append_column(feature.name, pa.array(values, kind))
        return table, defaulted, reject

    def score_table(self, table: pa.Table) -> tuple[pa.Table, pa.Table, int]:
        """(scored rows, rejected rows with `_reason`, defaulted online values) for one table.

        The rejected rows keep the input's columns and carry `_row`, the row number within `table`.
        """
        contract = self.contract
        table, coercion_problems = _coerce_text(contract, table)
        table, defaulted, online_reject = self._online_columns(table)
        report = validate_table(contract, table, decode_dictionaries=False)
        violations = report.violations
        if coercion_problems:
            # A value that did not convert is reported once, as a type error, not also as "required".
            coerced = pa.concat_tables(coercion_problems)
            pairs = set(
                zip(coerced.column("row").to_pylist(), coerced.column("column").to_pylist(), strict=True)
            )
            keep = [
                (r, c) not in pairs
                for r, c in zip(
                    violations.column("row").to_pylist(), violations.column("column").to_pylist(), strict=True
                )
            ]
            violations = pa.concat_tables([violations.filter(pa.array(keep, pa.bool_())), coerced]).sort_by(
                "row"
            )
        if online_reject.any():
            rows = np.flatnonzero(online_reject)
            violations = pa.concat_tables(
                [
                    violations,
                    pa.table(
                        {
                            "row": pa.array(rows, pa.int64()),
                            "column": [contract.entity_key] * len(rows),
                            "rule": ["online_feature"] * len(rows),
                            "message": ["an online feature with no default is unavailable for this key"]
                            * len(rows),
                            "value": pa.array(["<redacted>"] * len(rows), pa.string()),
                        },
                        schema=VIOLATION_SCHEMA,
                    ),
                ]
            ).sort_by("row")
        if violations.num_rows == 0:
            # The common case: every row is valid, so nothing is filtered or gathered.
            valid, rejected_rows = report.table, np.zeros(0, dtype=np.int64)
        else:
            invalid = np.zeros(table.num_rows, dtype=bool)
            invalid[violations.column("row").to_numpy()] = True
            valid = report.table.filter(pa.array(~invalid))
            rejected_rows = np.flatnonzero(invalid)
        scores = self.predictor.score_matrix(self.predictor.encoder.encode_table(valid))
        scored = pa.table(
            {
                contract.id: valid.column(contract.id),
                contract.outputs.score: pa.array(scores, pa.float32()),
                contract.outputs.label: pa.array(scores >= contract.outputs.decision_threshold),
                "model_version": pa.repeat(
                    pa.scalar(self.predictor.model_version, pa.string()), valid.num_rows
                ),
            }
        )
        if len(rejected_rows):
            grouped = violations.group_by("row").aggregate([("message", "list")]).sort_by("row")
            reasons = pc.binary_join(grouped.column("message_list"), "; ")
        else:
            reasons = pa.array([], pa.string())
        rejects = _plain(table.take(pa.array(rejected_rows, pa.int64())))
        rejects = rejects.append_column(ROW, pa.array(rejected_rows, pa.int64()))
        rejects = rejects.append_column(REASON, reasons)
        return scored, rejects, defaulted


def _plain(table: pa.Table) -> pa.Table:
    """Dictionary-encoded columns decoded, so that the rejects keep the input's plain types."""
    for index, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):
            table = table.set_column(index, field.name, table.column(index).cast(field.type.value_type))
    return table


def _default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, MAX_WORKERS))


def score_file(
    input_path: str | Path,
    output_path: str | Path,
    predictor: Predictor,
    *,
    rejects_path: str | Path | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> BatchReport:
    """Score a whole file into `output_path` (Parquet) and its rejects; return the accounting.

    `workers` batches are validated, encoded and scored at the same time (default: one per core,
    at most `MAX_WORKERS`); the output keeps the input's order whatever the number of workers.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    rejects = (
        Path(rejects_path) if rejects_path else output_path.with_name(output_path.stem + ".rejects.parquet")
    )
    if output_path.resolve() in (input_path.resolve(), rejects.resolve()):
        raise DataError("the output must differ from the input and from the rejects file")
    workers = workers or _default_workers()
    scorer = BatchScorer(predictor)
    contract = predictor.contract
    started = time.perf_counter()
    rows_in = scored_rows = rejected_rows = defaulted = 0
    batches = read_batches(input_path, contract, batch_rows)
    first = next(batches, None)
    if first is None:
        raise DataError(f"{input_path}: the file holds no rows")
    has_online = all(n in first.schema.names for n in scorer.online_names)
    # Refused before any scoring: a missing column or a wrong type names every bad column.
    check_schema(
        contract,
        _schema_after_coercion(contract, first.schema),
        include_online=has_online,
    )
    out_writer = rej_writer = None
    # Every stage releases the GIL for its heavy part (Parquet decoding and encoding, Arrow compute
    # kernels, numpy, onnxruntime), so threads overlap them: a reader thread prefetches batches,
    # `workers` threads validate, encode and score whole batches side by side, and a writer thread
    # writes finished ones in input order. Every queue is bounded, so memory stays a few batches
    # whatever the input size.
    scoring = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="shipml-batch-score")
    writes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shipml-batch-write")
    in_flight: deque[tuple[int, Future]] = deque()
    pending: deque[Future] = deque()

    def finish_oldest() -> None:
        nonlocal out_writer, rej_writer, scored_rows, rejected_rows, defaulted
        offset, future = in_flight.popleft()
        scored, rejected, fallback_count = future.result()
        rejected = rejected.set_column(
            rejected.column_names.index(ROW), ROW, pc.add(rejected.column(ROW), offset)
        )
        if out_writer is None:
            out_writer = _parquet_writer(out_tmp, scored.schema, plain=[contract.id])
            rej_writer = _parquet_writer(rej_tmp, rejected.schema, plain=[])
        pending.append(writes.submit(_write, out_writer, rej_writer, scored, rejected))
        while len(pending) > 2:
            pending.popleft().result()
        scored_rows += scored.num_rows
        rejected_rows += rejected.num_rows
        defaulted += fallback_count
        if progress is not None:
            progress(scored_rows + rejected_rows)

    try:
        with atomic_path(output_path) as out_tmp, atomic_path(rejects) as rej_tmp:
            for batch in _prefetch(_chain(first, batches), depth=workers + 1):
                table = pa.Table.from_batches([batch])
                in_flight.append((rows_in, scoring.submit(scorer.score_table, table)))
                rows_in += table.num_rows
                while len(in_flight) > workers:
                    finish_oldest()
            while in_flight:
                finish_oldest()
            while pending:
                pending.popleft().result()
            out_writer.close()
            rej_writer.close()
    except BaseException:
        for _, future in in_flight:
            future.cancel()
        for future in pending:
            future.cancel()
        scoring.shutdown(wait=True)
        writes.shutdown(wait=True)
        for writer in (out_writer, rej_writer):
            if writer is not None and writer.is_open:
                writer.close()
        raise
    scoring.shutdown(wait=True)
    writes.shutdown(wait=True)
    if rows_in != scored_rows + rejected_rows:  # the accounting is an invariant, not a hope
        raise AssertionError(f"rows in {rows_in} != scored {scored_rows} + rejected {rejected_rows}")
    return BatchReport(
        input=input_path,
        output=output_path,
        rejects=rejects,
        model_version=predictor.model_version,
        rows_in=rows_in,
        scored=scored_rows,
        rejected=rejected_rows,
        fallbacks=defaulted,
        seconds=time.perf_counter() - started,
    )


def _parquet_writer(path: Path, schema: pa.Schema, *, plain: list[str]) -> pq.ParquetWriter:
    """A Parquet writer (snappy) that dictionary-encodes and keeps statistics except on `plain` columns.

    Unique ids gain nothing from a dictionary (the writer would build one per page and then fall
    back to plain encoding) nor from min/max statistics; skipping both halves the writing time.
    """
    others = [name for name in schema.names if name not in plain]
    return pq.ParquetWriter(
        path,
        schema,
        compression="snappy",
        use_dictionary=others,
        write_statistics=others,
    )


def _write(
    out_writer: pq.ParquetWriter, rej_writer: pq.ParquetWriter, scored: pa.Table, rejected: pa.Table
) -> None:
    out_writer.write_table(scored)
    if rejected.num_rows:
        rej_writer.write_table(rejected.cast(rej_writer.schema))


def _prefetch(batches: Iterator[pa.RecordBatch], *, depth: int) -> Iterator[pa.RecordBatch]:
    """Iterate `batches` in a background thread, at most `depth` batches ahead; errors re-raise here."""
    done = object()
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def fill() -> None:
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        slots.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put(done)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            slots.put(exc)

    thread = threading.Thread(target=fill, name="shipml-batch-read", daemon=True)
    thread.start()
    try:
        while True:
            item = slots.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def _chain(first: pa.RecordBatch, rest: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    yield first
    yield from rest


def _schema_after_coercion(contract: Contract, schema: pa.Schema) -> pa.Schema:
    """The schema the validator will see once text columns of numeric/boolean features are converted."""
    types = {
        FieldType.number: pa.float64(),
        FieldType.integer: pa.int64(),
        FieldType.boolean: pa.bool_(),
    }
    fields = []
    for field in schema:
        feature = next((f for f in contract.features if f.name == field.name), None)
        if feature is not None and pa.types.is_string(field.type) and feature.type in types:
            field = field.with_type(types[feature.type])
        fields.append(field)
    return pa.schema(fields)
