"""The `shipml` command line end to end on the local backend, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shipml.cli import app

REQUESTS = Path(__file__).resolve().parents[2] / "examples" / "fraud" / "requests.jsonl"


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("shipml")
    return {
        "SHIPML_ROOT": str(root / "root"),
        "SHIPML_CONTRACT": "examples/fraud/contract.yaml",
        "ROOT": str(root),
    }


def run(env: dict[str, str], *args: str, code: int = 0):
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == code, result.output
    return result


@pytest.fixture(scope="module")
def trained(env):
    """Generate, load features and train once (2 workers, 1 epoch); later tests reuse version 1."""
    data = Path(env["ROOT"]) / "transactions.parquet"
    customers = Path(env["ROOT"]) / "customers.parquet"
    run(env, "data", "generate", str(data), "--rows", "6000", "--snapshot", str(customers))
    loaded = run(env, "features", "load", str(customers))
    assert "refused 0 invalid rows" in loaded.output
    trained = run(env, "train", "--data", str(data), "--workers", "2", "--epochs", "1")
    assert "registered fraud:1 (PendingManualApproval)" in trained.output
    return data


@pytest.mark.slow
def test_lifecycle_train_register_approve_promote_predict(env, trained):
    listed = json.loads(run(env, "models", "list", "--json").output)
    assert [(v["version"], v["status"], v["aliases"]) for v in listed] == [(1, "PendingManualApproval", [])]

    refused = run(env, "models", "promote", "1", code=1)
    assert "only an Approved version can be 'live'" in refused.output

    run(env, "models", "approve", "1")
    assert "fraud:1 is now live" in run(env, "models", "promote", "1").output

    shown = json.loads(run(env, "models", "show", "live").output)
    assert shown["version"]["aliases"] == ["live"]
    assert shown["card"]["metrics"]["overall"]["auc"] > 0.5

    lines = run(env, "predict", "--file", str(REQUESTS)).stdout.splitlines()
    predictions = [json.loads(line) for line in lines]
    assert [p["id"] for p in predictions] == ["demo-grocery", "demo-night-online", "demo-new-customer"]
    assert all(p["model_version"] == "fraud:1" and 0 <= p["score"] <= 1 for p in predictions)
    assert predictions[0]["fallbacks"] == []  # a known customer: online features found
    assert predictions[2]["fallbacks"] == ["txn_count_24h", "mean_amount_30d", "days_since_first_seen"]

    single = json.loads(
        run(env, "predict", "--json", REQUESTS.read_text().splitlines()[0], "--version", "1").stdout
    )
    assert single["score"] == pytest.approx(predictions[0]["score"])


@pytest.mark.slow
def test_prediction_errors_name_the_field(env, trained):
    body = json.loads(REQUESTS.read_text().splitlines()[0]) | {"amount": -3, "channel": "bike"}
    result = run(env, "predict", "--json", json.dumps(body), "--version", "1", code=1)
    assert "record 0 is invalid" in result.output
    assert "amount: Input should be greater than or equal to 0.01 (greater_than_equal)" in result.output
    assert "channel:" in result.output and "(literal_error)" in result.output
    assert "not valid JSON" in run(env, "predict", "--json", "{oops", "--version", "1", code=1).output
    assert "exactly one of --json or --file" in run(env, "predict", code=1).output


@pytest.mark.slow
def test_unknown_versions_are_clear_errors(env, trained):
    assert "has no version 9 (known versions: [1])" in run(env, "models", "approve", "9", code=1).output
    assert "has no version 9" in run(env, "predict", "--file", str(REQUESTS), "--version", "9", code=1).output


def test_validate_reports_bad_rows_and_exits_1(env, tmp_path, sample_table):
    import pyarrow as pa
    import pyarrow.parquet as pq

    amounts = sample_table.column("amount").to_pylist()
    amounts[5] = -1.0
    table = sample_table.set_column(sample_table.column_names.index("amount"), "amount", pa.array(amounts))
    pq.write_table(table, tmp_path / "bad.parquet")
    result = run(env, "data", "validate", str(tmp_path / "bad.parquet"), code=1)
    assert "1 invalid" in result.output and "row 5: amount: must be >= 0.01" in result.output

    pq.write_table(sample_table.drop_columns(["currency"]), tmp_path / "missing.parquet")
    result = run(env, "data", "validate", str(tmp_path / "missing.parquet"), code=1)
    assert "currency: missing column" in result.output


def test_bad_contract_and_missing_data_exit_1(env, tmp_path):
    bad = tmp_path / "contract.yaml"
    bad.write_text("model: fraud\nid: x\ntarget: y\nfeatures: []\n")
    result = run({**env, "SHIPML_CONTRACT": str(bad)}, "data", "validate", str(tmp_path), code=1)
    assert "invalid contract" in result.output and "features" in result.output
    result = run(env, "train", "--data", str(tmp_path / "absent.parquet"), code=1)
    assert "no such file or folder" in result.output


def test_register_refuses_a_tampered_artifact(env, make_artifact):
    path = make_artifact()
    (path / "card.json").write_text("{}")
    result = run(env, "models", "register", str(path), code=1)
    assert "checksum mismatch for card.json" in result.output


def test_generate_rejects_bad_knobs(env, tmp_path):
    result = run(
        env,
        "data",
        "generate",
        str(tmp_path / "x.parquet"),
        "--rows",
        "1000",
        "--fraud-segment",
        "country",
        code=1,
    )
    assert "--fraud-segment must look like FEATURE=VALUE" in result.output
    assert not (tmp_path / "x.parquet").exists()


@pytest.mark.slow
def test_training_refuses_data_that_breaks_the_contract(env, tmp_path, sample_table):
    import pyarrow as pa
    import pyarrow.parquet as pq

    times = sample_table.column("event_time").cast(pa.string()).to_pylist()
    times[3] = "2026-01-05 10:00:00"  # no offset
    table = sample_table.set_column(
        sample_table.column_names.index("event_time"), "event_time", pa.array(times)
    )
    pq.write_table(table, tmp_path / "bad.parquet")
    runs = Path(env["SHIPML_ROOT"]) / "runs"
    before = set(runs.glob("*/model"))
    result = run(env, "train", "--data", str(tmp_path / "bad.parquet"), "--no-register", code=1)
    assert "the training data breaks the contract" in result.output
    assert "row 3: event_time: must be an ISO 8601 timestamp with a UTC offset" in result.output
    assert set(runs.glob("*/model")) == before


def test_a_model_that_answers_nan_is_an_error_not_a_prediction(tmp_path):
    from shipml.backends import LIVE, local_backends
    from tests.conftest import CONTRACT_PATH, artifact_for

    backends = local_backends(tmp_path / "root")
    backends.registry.register("fraud", artifact_for(CONTRACT_PATH, tmp_path / "nan", bias=float("nan")))
    backends.registry.approve("fraud", 1)
    backends.registry.set_alias("fraud", LIVE, 1)
    env = {"SHIPML_ROOT": str(tmp_path / "root"), "SHIPML_CONTRACT": str(CONTRACT_PATH)}

    result = run(env, "predict", "--json", REQUESTS.read_text().splitlines()[0], code=1)

    assert "fraud:1 produced no valid score" in result.output
    assert not [line for line in result.stdout.splitlines() if line.startswith("{")]  # no prediction printed
