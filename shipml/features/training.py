"""Point-in-time training data: the online features as each training row would have seen them.

`point_in_time_join` evaluates the contract's aggregations for every row at the row's own event
time with the same code that materialisation runs at its `as_of` (`aggregate_at`), over the events
strictly before that time. So no training row ever sees its own event or anything later, and the
model trains on the numbers serving will look up: no leakage, no training/serving skew.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from shipml.contract.schema import Contract
from shipml.errors import ShipmlError
from shipml.features.aggregate import (
    aggregate_at,
    aggregation_columns,
    epoch_us,
    prepare_events,
    to_feature_array,
)

if TYPE_CHECKING:
    import pyarrow as pa


class JoinReport(BaseModel):
    """What the join used: history rows read and refused, training rows joined."""

    model_config = ConfigDict(frozen=True)

    rows: int
    history_rows: int
    history_refused: int
    features: list[str]


def point_in_time_join(
    contract: Contract, rows: pa.Table, history: pa.Table | None = None
) -> tuple[pa.Table, JoinReport]:
    """`rows` with each aggregated online feature computed at the row's event time.

    `history` is the event table the features are computed from (default: `rows` themselves,
    as for transactions that are both the training rows and the history). History rows that break
    the contract (bad key, time or aggregated value) are left out and counted. Existing feature
    columns in `rows` are replaced; rows without a key or time get missing values.
    """
    import pyarrow as pa

    from shipml.contract.validate import validate_table

    if contract.entity_key is None or contract.event_time is None or not contract.aggregated_features:
        raise ShipmlError(f"the {contract.model!r} contract has no online features with an aggregation")
    history = rows if history is None else history
    columns = aggregation_columns(contract)
    checked = validate_table(contract, history.select(columns), only=set(columns))
    events = prepare_events(contract, checked.valid_table())
    # The query times: the rows' own event times, normalised to UTC the way the validator does it.
    # Query times: the rows' own event times, normalised to UTC as the validator does it (an
    # unparseable one becomes missing, and its row gets no features).
    query = validate_table(contract, rows.select([contract.event_time]), only={contract.event_time})
    times = epoch_us(query.table.column(contract.event_time))
    keys = pa.array(rows.column(contract.entity_key).to_pylist(), pa.string())
    values = aggregate_at(contract, events, keys, times)
    joined = rows
    for feature in contract.aggregated_features:
        column = to_feature_array(feature, values[feature.name])
        if feature.name in joined.column_names:
            joined = joined.set_column(joined.column_names.index(feature.name), feature.name, column)
        else:
            joined = joined.append_column(feature.name, column)
    report = JoinReport(
        rows=rows.num_rows,
        history_rows=history.num_rows,
        history_refused=checked.invalid_rows,
        features=[f.name for f in contract.aggregated_features],
    )
    return joined, report


def write_training_set(contract: Contract, data: str | Path, output: str | Path) -> JoinReport:
    """Read transactions, join their point-in-time features, and write Parquet atomically."""
    import pyarrow.parquet as pq

    from shipml.atomic import atomic_path
    from shipml.data import read_table

    joined, report = point_in_time_join(contract, read_table(data))
    with atomic_path(output) as tmp:
        pq.write_table(joined, tmp, compression="zstd")
    return report
