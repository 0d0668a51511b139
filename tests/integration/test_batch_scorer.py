"""The local batch scorer: row accounting, rejects with reasons, formats, online features, atomicity."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from shipml.backends import LIVE, local_backends
from shipml.batch.scorer import REASON, ROW, score_file
from shipml.cli import app
from shipml.errors import DataError
from shipml.predict import Predictor


@pytest.fixture
def backends(tmp_path, make_artifact):
    backends = local_backends(tmp_path / "root")
    backends.registry.register("fraud", make_artifact())
    backends.registry.approve("fraud", 1)
    backends.registry.set_alias("fraud", LIVE, 1)
    return backends


@pytest.fixture
def predictor(backends):
    version = backends.registry.get_version("fraud", 1)
    return Predictor(
        backends.registry.open_artifact(version), model_version=version.ref, online=backends.online
    )


def broken(table: pa.Table, column: str, rows: dict[int, object]) -> pa.Table:
    values = table.column(column).to_pylist()
    for row, value in rows.items():
        values[row] = value
    kind = pa.string() if any(isinstance(v, str) for v in rows.values()) else table.schema.field(column).type
    if pa.types.is_timestamp(table.schema.field(column).type) and kind == pa.string():
        values = [v if isinstance(v, str) or v is None else v.isoformat() for v in values]
    return table.set_column(table.column_names.index(column), column, pa.array(values, kind))


def test_rows_in_equal_scored_plus_rejected_and_every_reject_has_its_reason(
    tmp_path, predictor, sample_table
):
    table = broken(sample_table, "amount", {3: -1.0, 900: 99_999.0})
    table = broken(table, "currency", {10: "XXX"})
    table = broken(table, "event_time", {25: "2026-01-05 10:00:00"})
    table = broken(table, "channel", {1999: None})
    pq.write_table(table, tmp_path / "in.parquet")
    report = score_file(tmp_path / "in.parquet", tmp_path / "out.parquet", predictor, batch_rows=500)
    assert (report.rows_in, report.scored, report.rejected) == (2_000, 1_995, 5)
    scored = pq.read_table(tmp_path / "out.parquet")
    assert scored.schema.names == ["transaction_id", "fraud_score", "is_fraud_predicted", "model_version"]
    assert scored.schema.field("fraud_score").type == pa.float32()
    assert scored.schema.field("is_fraud_predicted").type == pa.bool_()
    assert set(scored.column("model_version").to_pylist()) == {"fraud:1"}
    assert scored.num_rows == 1_995 and len(set(scored.column("transaction_id").to_pylist())) == 1_995
    rejects = pq.read_table(report.rejects)
    assert rejects.column(ROW).to_pylist() == [3, 10, 25, 900, 1999]  # row numbers across batches
    reasons = dict(zip(rejects.column(ROW).to_pylist(), rejects.column(REASON).to_pylist(), strict=True))
    assert reasons[3] == "amount: must be >= 0.01"
    assert reasons[10].startswith("currency: must be one of")
    assert "event_time: must be an ISO 8601 timestamp with a UTC offset" in reasons[25]
    assert reasons[1999] == "channel: is required"
    expected_ids = sample_table.column("transaction_id").to_pylist()
    assert sorted(
        scored.column("transaction_id").to_pylist() + rejects.column("transaction_id").to_pylist()
    ) == sorted(expected_ids)


def test_scores_equal_the_predictor_on_the_same_rows(tmp_path, predictor, sample_table):
    pq.write_table(sample_table.slice(0, 50), tmp_path / "in.parquet")
    score_file(tmp_path / "in.parquet", tmp_path / "out.parquet", predictor)
    batch_scores = pq.read_table(tmp_path / "out.parquet").column("fraud_score").to_pylist()
    direct = predictor.score_matrix(predictor.encoder.encode_table(sample_table.slice(0, 50)))
    assert batch_scores == pytest.approx(direct.tolist(), abs=1e-6)


def test_csv_text_that_does_not_convert_rejects_the_row_only(tmp_path, predictor, sample_table):
    table = sample_table.slice(0, 20)
    pacsv.write_csv(table, tmp_path / "in.csv")
    lines = (tmp_path / "in.csv").read_text().splitlines()
    header = lines[0].replace('"', "").split(",")
    cells = lines[4].split(",")
    cells[header.index("amount")] = "abc"
    cells[header.index("card_present")] = "maybe"
    lines[4] = ",".join(cells)
    (tmp_path / "in.csv").write_text("\n".join(lines) + "\n")
    report = score_file(tmp_path / "in.csv", tmp_path / "out.parquet", predictor)
    assert (report.rows_in, report.scored, report.rejected) == (20, 19, 1)
    (reason,) = pq.read_table(report.rejects).column(REASON).to_pylist()
    assert reason == "amount: must be a number; card_present: must be true/false"


def test_json_lines_input(tmp_path, predictor, sample_table):
    rows = sample_table.slice(0, 30).to_pylist()
    with (tmp_path / "in.jsonl").open("w") as handle:
        for row in rows:
            handle.write(json.dumps({**row, "event_time": row["event_time"].isoformat()}) + "\n")
    report = score_file(tmp_path / "in.jsonl", tmp_path / "out.parquet", predictor)
    assert (report.rows_in, report.scored, report.rejected) == (30, 30, 0)


def test_online_features_come_from_the_store_when_the_input_lacks_them(
    tmp_path, backends, predictor, sample_table
):
    table = sample_table.slice(0, 100)
    online = ["txn_count_24h", "mean_amount_30d", "days_since_first_seen"]
    known = table.column("customer_id")[0].as_py()
    backends.online.put_many(
        "fraud", {known: {"txn_count_24h": 2, "mean_amount_30d": 10.0, "days_since_first_seen": 5}}
    )
    pq.write_table(table.drop_columns(online), tmp_path / "in.parquet")
    report = score_file(tmp_path / "in.parquet", tmp_path / "out.parquet", predictor)
    known_rows = pc.sum(pc.equal(table.column("customer_id"), known)).as_py()
    assert report.scored == 100
    assert report.fallbacks == 3 * (100 - known_rows)


def test_a_file_that_breaks_the_contract_is_refused_before_scoring(tmp_path, predictor, sample_table):
    folder = tmp_path / "io"
    folder.mkdir()
    pq.write_table(sample_table.drop_columns(["amount"]), folder / "in.parquet")
    with pytest.raises(DataError, match="amount: missing column"):
        score_file(folder / "in.parquet", folder / "out.parquet", predictor)
    assert sorted(p.name for p in folder.iterdir()) == ["in.parquet"]


def test_a_truncated_file_leaves_no_partial_output(tmp_path, predictor, sample_table):
    folder = tmp_path / "io"
    folder.mkdir()
    pq.write_table(sample_table, folder / "in.parquet", row_group_size=500)
    data = (folder / "in.parquet").read_bytes()
    (folder / "in.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cannot read it"):
        score_file(folder / "in.parquet", folder / "out.parquet", predictor)
    assert sorted(p.name for p in folder.iterdir()) == ["in.parquet"]


def test_the_cli_scores_and_reports(tmp_path, backends, sample_data):
    env = {"SHIPML_ROOT": str(tmp_path / "root"), "SHIPML_CONTRACT": "examples/fraud/contract.yaml"}
    result = CliRunner().invoke(
        app, ["batch", "score", str(sample_data), str(tmp_path / "out.parquet")], env=env
    )
    assert result.exit_code == 0, result.output
    assert "2,000 rows in = 2,000 scored + 0 rejected" in result.output
    missing = CliRunner().invoke(
        app, ["batch", "score", str(tmp_path / "nope.csv"), str(tmp_path / "o.parquet")], env=env
    )
    assert missing.exit_code == 1 and "no such file" in missing.output


def test_parallel_workers_keep_the_input_order_and_the_same_results(tmp_path, predictor, sample_table):
    """Batches scored side by side come out in input order, identical to one worker's output."""
    table = broken(sample_table, "amount", {5: -1.0, 1_234: 99_999.0})
    table = broken(table, "channel", {777: "carrier_pigeon"})
    pq.write_table(table, tmp_path / "in.parquet")
    outputs = {}
    for workers in (1, 3):
        out = tmp_path / f"out-{workers}.parquet"
        report = score_file(tmp_path / "in.parquet", out, predictor, batch_rows=150, workers=workers)
        assert (report.rows_in, report.scored, report.rejected) == (2_000, 1_997, 3)
        outputs[workers] = (pq.read_table(out), pq.read_table(report.rejects))
    (one_scored, one_rejects), (many_scored, many_rejects) = outputs[1], outputs[3]
    assert many_scored.equals(one_scored)
    assert many_rejects.equals(one_rejects)
    assert many_rejects.column(ROW).to_pylist() == [5, 777, 1_234]
    kept = [i for i in range(2_000) if i not in (5, 777, 1_234)]
    assert many_scored.column("transaction_id").to_pylist() == [
        table.column("transaction_id")[i].as_py() for i in kept
    ]


def test_rejects_keep_the_input_types_though_categories_are_read_as_dictionaries(
    tmp_path, predictor, sample_table
):
    """Category columns are read dictionary-encoded for speed; the rejects file still has plain text."""
    table = broken(sample_table.slice(0, 300), "currency", {7: "XXX"})
    table = broken(table, "merchant_category", {8: ""})
    pq.write_table(table, tmp_path / "in.parquet")
    report = score_file(tmp_path / "in.parquet", tmp_path / "out.parquet", predictor)
    assert (report.scored, report.rejected) == (298, 2)
    rejects = pq.read_table(report.rejects)
    assert rejects.schema.names == [*table.schema.names, ROW, REASON]
    for field in table.schema:
        assert rejects.schema.field(field.name).type == field.type
    assert rejects.column("currency").to_pylist() == ["XXX", table["currency"][8].as_py()]
    reasons = rejects.column(REASON).to_pylist()
    assert reasons[0].startswith("currency: must be one of")
    assert reasons[1] == "merchant_category: must be 1 to 64 characters"
    scored = pq.read_table(tmp_path / "out.parquet")
    assert scored.schema.field("model_version").type == pa.string()
