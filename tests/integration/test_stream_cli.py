"""`shipml stream score`: JSON Lines in, decisions out, through the stream consumer's code path."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import shipml.cli
from shipml.backends import LIVE, local_backends
from shipml.settings import Settings
from shipml.stream.cli import stream_app
from tests.conftest import valid_request


@pytest.fixture
def settings(tmp_path, make_artifact, contract_path, monkeypatch):
    settings = Settings(root=tmp_path / "root", contract=contract_path)
    backends = local_backends(settings.root)
    backends.registry.register("fraud", make_artifact())
    backends.registry.approve("fraud", 1)
    backends.registry.set_alias("fraud", LIVE, 1)
    # As the main command's global options set them (shipml --root ... stream score).
    monkeypatch.setattr(shipml.cli.state, "settings", settings, raising=False)
    return settings


def lines(*records) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def test_score_reads_stdin_and_writes_one_decision_per_good_record(settings):
    text = lines(
        valid_request(transaction_id="T1"),
        "not json at all",
        valid_request(transaction_id="T2", channel="carrier_pigeon"),
        "",
        valid_request(transaction_id="T3"),
    )

    result = CliRunner().invoke(stream_app, ["score", "--batch-size", "2"], input=text)

    assert result.exit_code == 0, result.output
    decisions = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d["transaction_id"] for d in decisions] == ["T1", "T3"]
    assert [d["record_id"] for d in decisions] == ["line-1", "line-5"]
    assert all(d["model_version"] == "fraud:1" and 0 <= d["fraud_score"] <= 1 for d in decisions)
    assert "scored 2, dead-lettered 2" in result.stderr
    letters = [
        json.loads(line)
        for line in (settings.root / "stream" / "dead-letters.jsonl").read_text().splitlines()
    ]
    assert [(letter["record_id"], letter["reason"]) for letter in letters] == [
        ("line-2", "undecodable"),
        ("line-3", "contract_violation"),
    ]
    assert letters[1]["detail"].startswith("channel: literal_error")


def test_score_reads_a_file_and_writes_files_and_capture(settings, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(lines(*(valid_request(transaction_id=f"T{i}") for i in range(7))))
    out, rejects = tmp_path / "out.jsonl", tmp_path / "rejects.jsonl"

    result = CliRunner().invoke(
        stream_app,
        ["score", str(source), "--output", str(out), "--dead-letters", str(rejects), "--batch-size", "3"],
    )

    assert result.exit_code == 0, result.output
    assert [json.loads(line)["transaction_id"] for line in out.read_text().splitlines()] == [
        f"T{i}" for i in range(7)
    ]
    assert rejects.read_text() == ""
    assert list((settings.root / "capture").rglob("*.parquet"))  # flushed at the end


def test_without_a_model_every_record_is_reported_and_the_exit_is_an_error(
    tmp_path, contract_path, monkeypatch
):
    monkeypatch.setattr(
        shipml.cli.state, "settings", Settings(root=tmp_path / "empty", contract=contract_path), raising=False
    )

    result = CliRunner().invoke(stream_app, ["score"], input=lines(valid_request(), valid_request()))

    assert result.exit_code != 0
    assert "2 records were not scored (first: line-1: no model is loaded" in str(result.exception)
