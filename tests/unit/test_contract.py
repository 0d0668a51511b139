"""The contract loader: the example loads, and each kind of bad contract gets a clear error."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from shipml.contract import FieldType, build_request_model, load_contract, loader, parse_contract
from shipml.contract.loader import rendition_path, write_rendition
from shipml.errors import ContractError
from tests.builders import run_fresh_python


@pytest.fixture
def raw(contract_path: Path) -> dict:
    return yaml.safe_load(contract_path.read_text())


def feature(raw: dict, name: str) -> dict:
    return next(f for f in raw["features"] if f["name"] == name)


def test_example_contract_loads_with_its_views(contract):
    assert contract.model == "fraud"
    assert contract.entity_key == "customer_id"
    assert [f.name for f in contract.online_features] == [
        "txn_count_24h",
        "mean_amount_30d",
        "days_since_first_seen",
    ]
    assert {f.name for f in contract.pii_features} == {"customer_id", "card_number"}
    assert all(f.input for f in contract.monitored_features)
    assert "transaction_id" not in [f.name for f in contract.input_features]
    assert contract.feature("event_time").type == FieldType.timestamp


def _break(raw: dict, change) -> dict:
    broken = copy.deepcopy(raw)
    change(broken)
    return broken


BAD_CONTRACTS = {
    "unknown type": (
        lambda r: feature(r, "amount").update(type="decimal"),
        "features[3] (amount).type: unknown value 'decimal'",
    ),
    "min above max": (
        lambda r: feature(r, "amount").update(min=10, max=1),
        "features[3] (amount): min (10.0) is above max (1.0)",
    ),
    "max not a number": (  # NaN would make every range check pass
        lambda r: feature(r, "amount").update(max=float("nan")),
        "features[3] (amount).max: Input should be a finite number",
    ),
    "duplicate feature": (
        lambda r: r["features"].append(dict(feature(r, "amount"))),
        "duplicate feature 'amount'",
    ),
    "segment naming no feature": (
        lambda r: r["segments"].append({"name": "region", "feature": "region"}),
        "segment 'region' names no feature ('region')",
    ),
    "pii without policy": (
        lambda r: feature(r, "card_number").pop("pii_policy"),
        "features[2] (card_number): a PII field needs a pii_policy",
    ),
    "unknown key": (
        lambda r: feature(r, "amount").update(maximum=5),
        "features[3] (amount).maximum: unknown key",
    ),
    "category without categories": (
        lambda r: feature(r, "channel").pop("categories"),
        "needs a non-empty 'categories' list",
    ),
    "duplicate categories": (
        lambda r: feature(r, "channel").update(categories=["atm", "atm"]),
        "categories contain duplicates",
    ),
    "text as model input": (
        lambda r: feature(r, "transaction_id").update(input=True),
        "cannot be a model input",
    ),
    "online without default": (
        lambda r: feature(r, "txn_count_24h").pop("default"),
        "on_missing: default needs a default",
    ),
    "default out of range": (
        lambda r: feature(r, "txn_count_24h").update(default=-1),
        "default -1 is outside [0.0, 10000.0]",
    ),
    "bad pattern": (
        lambda r: feature(r, "customer_id").update(pattern="(["),
        "pattern is not a valid regular expression",
    ),
    "id naming no feature": (lambda r: r.update(id="txn"), "id 'txn' names no feature"),
    "target is a feature": (
        lambda r: r.update(target="amount"),
        "target 'amount' must not also be a feature",
    ),
    "event_time not a timestamp": (
        lambda r: r.update(event_time="amount"),
        "event_time 'amount' must be a feature of type timestamp",
    ),
    "numeric segment without bins": (
        lambda r: r["segments"].append({"name": "amt", "feature": "amount"}),
        "give 'bins' to slice a numeric feature",
    ),
    "bin edge not finite": (
        lambda r: r["segments"][2].update(bins=[10, float("nan")]),
        "segments[2] (amount_band).bins[1]: Input should be a finite number",
    ),
    "bins not ascending": (
        lambda r: r["segments"][2].update(bins=[100, 10]),
        "bins need at least two strictly ascending edges",
    ),
    "threshold out of (0,1)": (
        lambda r: r["outputs"].update(threshold=1.5),
        "outputs.threshold: Input should be less than 1",
    ),
    "bad feature name": (lambda r: feature(r, "amount").update(name="Amount!"), "should match pattern"),
    "online without entity key": (lambda r: r.pop("entity_key"), "need an entity_key"),
}


@pytest.mark.parametrize("case", list(BAD_CONTRACTS), ids=list(BAD_CONTRACTS))
def test_bad_contract_names_what_and_where(raw, case):
    change, expected = BAD_CONTRACTS[case]
    with pytest.raises(ContractError) as caught:
        parse_contract(_break(raw, change), source="broken.yaml")
    message = str(caught.value)
    assert message.startswith("broken.yaml: invalid contract")
    assert expected in message


def test_unreadable_and_non_yaml_files_are_clear_errors(tmp_path):
    with pytest.raises(ContractError, match="cannot read the contract"):
        load_contract(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ContractError, match="not valid YAML"):
        load_contract(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ContractError, match="a contract is a YAML mapping"):
        load_contract(bad)
    bad.write_bytes(b"model: fr\xe4ud\n")  # Latin-1, not UTF-8
    with pytest.raises(ContractError, match=r"bad.yaml: not UTF-8 text \(byte 9\)"):
        load_contract(bad)


def test_loads_of_the_same_text_share_one_contract(contract_path, tmp_path):
    """A model's artifact carries a copy of its contract file: checking it against the server's
    own is then no second parse."""
    copy_of = tmp_path / "contract.yaml"
    copy_of.write_bytes(contract_path.read_bytes())

    assert load_contract(copy_of) is load_contract(contract_path)
    copy_of.write_bytes(contract_path.read_bytes() + b"# edited\n")
    assert load_contract(copy_of) is not load_contract(contract_path)
    assert load_contract(copy_of) == load_contract(contract_path)


def _bundled(contract_path: Path, folder: Path) -> Path:
    """The contract as a Lambda bundle carries it: the file and its JSON rendition."""
    folder.mkdir()
    bundled = folder / "contract.yaml"
    bundled.write_bytes(contract_path.read_bytes())
    assert write_rendition(bundled) == rendition_path(bundled) == folder / "contract.yaml.json"
    return bundled


NO_YAML = """
import json, sys
sys.modules["yaml"] = None  # PyYAML cannot be imported
from shipml.contract import load_contract
try:
    print(json.dumps({"model": load_contract(sys.argv[1]).model}))
except ImportError:
    print(json.dumps({"model": None}))
"""


def test_a_contract_with_its_rendition_loads_without_the_yaml_library(contract_path, tmp_path):
    bundled = _bundled(contract_path, tmp_path / "bundle")
    alone = tmp_path / "contract.yaml"
    alone.write_bytes(contract_path.read_bytes())

    assert run_fresh_python(NO_YAML, str(bundled)) == {"model": "fraud"}
    assert run_fresh_python(NO_YAML, str(alone)) == {"model": None}  # without one, the YAML is parsed
    json_document = parse_contract(json.loads(rendition_path(bundled).read_text())["contract"])
    assert json_document == load_contract(contract_path)


def test_a_rendition_of_other_bytes_or_unreadable_is_ignored(contract_path, tmp_path):
    bundled = _bundled(contract_path, tmp_path / "bundle")
    # The file edited after its rendition was written: the rendition is stale, the file wins.
    bundled.write_text(bundled.read_text().replace("description: Scores", "description: Now scores", 1))
    assert load_contract(bundled).description.startswith("Now scores")
    # Renditions of the file's very bytes that are not JSON, of another format, or hold a document
    # that does not validate: ignored, the YAML parsed (and it names any error).
    for edit, rendition in enumerate(
        [
            "{not json",
            "[]",
            {"format": 0},
            {"contract": []},
            {"contract": {"model": "fraud"}},
        ]
    ):
        bundled.write_text(bundled.read_text() + f"# {edit}\n")  # new bytes: no earlier load answers
        if not isinstance(rendition, str):
            digest = hashlib.sha256(bundled.read_bytes()).hexdigest()
            rendition = json.dumps({"format": 1, "sha256": digest, "contract": {}} | rendition)
        rendition_path(bundled).write_text(rendition)
        assert load_contract(bundled).description.startswith("Now scores")
    bundled.write_text("- a list\n")
    with pytest.raises(ContractError, match="contract.yaml: a contract is a YAML mapping, got list"):
        load_contract(bundled)


def test_an_invalid_contract_gets_no_rendition(raw, tmp_path):
    bad = tmp_path / "contract.yaml"
    bad.write_text(yaml.safe_dump(_break(raw, lambda r: r.pop("features"))))
    with pytest.raises(ContractError, match="invalid contract"):
        write_rendition(bad)
    assert not rendition_path(bad).exists()


def test_a_document_json_cannot_carry_gets_no_rendition(contract_path, tmp_path, monkeypatch):
    """JSON lacks some of YAML's values (dates, non-text keys): then no rendition, and a cold start
    parses the YAML."""
    bundled = tmp_path / "contract.yaml"
    bundled.write_bytes(contract_path.read_bytes())

    def cannot(*args, **kwargs):
        raise TypeError("Object of type date is not JSON serializable")

    monkeypatch.setattr(loader.json, "dumps", cannot)
    assert write_rendition(bundled) is None
    assert not rendition_path(bundled).exists()


# ---- the generated request model -------------------------------------------------------------


def errors_of(model, body) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(body)
    return {".".join(map(str, e["loc"])): e["type"] for e in caught.value.errors()}


def test_request_model_accepts_a_valid_body_and_leaves_out_online_features(contract, request_body):
    model = build_request_model(contract)
    parsed = model.model_validate(request_body())
    assert parsed.amount == 129.99
    assert parsed.event_time.utcoffset().total_seconds() == 3600
    assert "txn_count_24h" not in model.model_fields


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("amount", -1, "greater_than_equal"),
        ("amount", 50_000.01, "less_than_equal"),
        ("amount", "12.5", "float_type"),
        ("amount", float("nan"), "finite_number"),
        ("currency", "XXX", "literal_error"),
        ("channel", "bike", "literal_error"),
        ("card_present", "yes", "bool_type"),
        ("event_time", "2026-01-15T23:45:00", "timestamp_format"),
        ("event_time", "yesterday", "timestamp_format"),
        ("customer_id", "C1", "string_pattern_mismatch"),
        ("card_number", "4111-1111", "string_pattern_mismatch"),
        ("merchant_category", "", "string_too_short"),
    ],
)
def test_request_model_names_the_field_and_rule(contract, request_body, field, value, rule):
    model = build_request_model(contract)
    assert errors_of(model, request_body(**{field: value})) == {field: rule}


def test_request_model_refuses_unknown_and_missing_fields(contract, request_body):
    model = build_request_model(contract)
    body = request_body(txn_count_24h=3)
    del body["amount"]
    assert errors_of(model, body) == {"amount": "missing", "txn_count_24h": "extra_forbidden"}


def test_unseen_category_with_other_policy_is_accepted(contract, request_body):
    model = build_request_model(contract)
    assert model.model_validate(request_body(merchant_category="pet_shops")).merchant_category == "pet_shops"


def test_optional_field_may_be_left_out(contract, request_body):
    body = request_body()
    del body["card_number"]
    assert build_request_model(contract).model_validate(body).card_number is None


def test_openapi_schema_states_every_rule(contract):
    schema = build_request_model(contract).model_json_schema()
    props = schema["properties"]
    assert props["amount"]["minimum"] == 0.01 and props["amount"]["maximum"] == 50000
    assert props["currency"]["enum"] == ["EUR", "USD", "GBP", "CHF", "SEK", "PLN"]
    assert props["customer_id"]["pattern"] == "^C[0-9]{8}$"
    assert props["event_time"]["format"] == "date-time"
    assert props["amount"]["description"].startswith("Transaction amount")
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) >= {"amount", "currency", "event_time", "customer_id"}
    assert "card_number" not in schema["required"]
