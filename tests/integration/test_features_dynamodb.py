"""The DynamoDB online store (moto and botocore's Stubber) and the scheduled job end to end on
moto: S3 lake -> materialisation -> DynamoDB, through the Lambda handler."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from botocore.stub import ANY, Stubber

from shipml.backends.aws.online import DynamoDbOnlineStore, item_key
from shipml.errors import FeatureSourceUnavailable, OnlineStoreWriteError
from shipml.features.materialize import materialize
from tests.builders import create_online_table

REGION = "eu-west-1"
TABLE = "online-features"
AS_OF = datetime(2026, 1, 25, tzinfo=UTC)


@pytest.fixture
def aws(moto_aws):
    client = moto_aws.client("dynamodb")
    create_online_table(client, TABLE)
    return client


def test_round_trip_of_many_items_converts_decimals_back(aws):
    store = DynamoDbOnlineStore(aws, TABLE)
    items = {
        f"C{n:08d}": {
            "txn_count_24h": n,
            "mean_amount_30d": n + 0.1,
            "flag": n % 2 == 0,
            "note": "café",
            "gone": None,
        }
        for n in range(260)  # > 100 keys per BatchGetItem, > 25 items per BatchWriteItem
    }

    assert store.put_many("fraud", items) == 260
    found = store.get_many("fraud", [*items, "C99999999"])

    assert len(found) == 260 and "C99999999" not in found
    assert found["C00000007"] == {"txn_count_24h": 7, "mean_amount_30d": 7.1, "flag": False, "note": "café"}
    assert (
        type(found["C00000007"]["txn_count_24h"]) is int
        and type(found["C00000007"]["mean_amount_30d"]) is float
    )
    raw = aws.get_item(TableName=TABLE, Key=item_key("fraud", "C00000007"))["Item"]
    assert raw["mean_amount_30d"] == {"N": "7.1"} and "gone" not in raw
    assert store.get_many("other_model", ["C00000007"]) == {}  # groups do not see each other


def test_materialisation_into_dynamodb_equals_the_local_store(aws, contract, sample_data, tmp_path):
    from shipml.backends.local import SqliteOnlineStore
    from shipml.features.lake import PathSource

    dynamo = DynamoDbOnlineStore(aws, TABLE)
    local = SqliteOnlineStore(tmp_path / "online.db")
    report = materialize(contract, PathSource(sample_data), dynamo, as_of=AS_OF)
    materialize(contract, PathSource(sample_data), local, as_of=AS_OF)

    keys = [f"C{n:08d}" for n in range(600)]
    from_dynamo = dynamo.get_many("fraud", keys)
    from_local = {
        k: {n: v for n, v in item.items() if v is not None}
        for k, item in local.get_many("fraud", keys).items()
    }
    assert report.items_written == len(from_dynamo) > 100
    assert from_dynamo == from_local


def _stubbed(client=None):
    client = client or boto3.client(
        "dynamodb", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x"
    )
    return client, Stubber(client)


def _put(entity: str) -> dict:
    return {"PutRequest": {"Item": {**item_key("fraud", entity), "n": {"N": "1"}}}}


def test_unprocessed_items_are_retried_with_backoff_until_written():
    client, stub = _stubbed()
    delays: list[float] = []
    store = DynamoDbOnlineStore(client, TABLE, sleep=delays.append, jitter=lambda: 1.0, base_delay_s=0.05)
    items = {f"C{n:08d}": {"n": 1} for n in range(30)}  # two chunks: 25 + 5
    first_chunk = [_put(k) for k in list(items)[:25]]
    second_chunk = [_put(k) for k in list(items)[25:]]
    # Chunk one: DynamoDB leaves three items unprocessed, then one, then takes the last
    stub.add_response(
        "batch_write_item",
        {"UnprocessedItems": {TABLE: first_chunk[:3]}},
        {"RequestItems": {TABLE: first_chunk}},
    )
    stub.add_response(
        "batch_write_item",
        {"UnprocessedItems": {TABLE: first_chunk[:1]}},
        {"RequestItems": {TABLE: first_chunk[:3]}},
    )
    stub.add_response(
        "batch_write_item", {"UnprocessedItems": {}}, {"RequestItems": {TABLE: first_chunk[:1]}}
    )
    stub.add_response("batch_write_item", {}, {"RequestItems": {TABLE: second_chunk}})

    with stub:
        assert store.put_many("fraud", items) == 30
    stub.assert_no_pending_responses()
    assert delays == [0.05, 0.1]  # exponential; the jitter factor is 1 here


def test_items_still_unprocessed_after_the_attempts_are_reported_by_key():
    client, stub = _stubbed()
    store = DynamoDbOnlineStore(client, TABLE, write_attempts=3, sleep=lambda s: None)
    items = {"C00000001": {"n": 1}, "C00000002": {"n": 1}, "C00000003": {"n": 1}}
    stuck = [_put("C00000002")]
    stub.add_response(
        "batch_write_item", {"UnprocessedItems": {TABLE: stuck}}, {"RequestItems": {TABLE: ANY}}
    )
    stub.add_client_error(
        "batch_write_item", service_error_code="ProvisionedThroughputExceededException", http_status_code=400
    )
    stub.add_response(
        "batch_write_item", {"UnprocessedItems": {TABLE: stuck}}, {"RequestItems": {TABLE: stuck}}
    )

    with stub, pytest.raises(OnlineStoreWriteError) as caught:
        store.put_many("fraud", items)
    assert caught.value.failed_keys == ["C00000002"] and caught.value.written == 2
    assert "1 of 3 items could not be written" in str(caught.value)


def test_a_validation_error_is_not_retried():
    client, stub = _stubbed()
    store = DynamoDbOnlineStore(client, TABLE, sleep=lambda s: pytest.fail("must not back off"))
    stub.add_client_error(
        "batch_write_item", service_error_code="ValidationException", service_message="item too large"
    )
    with stub, pytest.raises(OnlineStoreWriteError, match="ValidationException: item too large") as caught:
        store.put_many("fraud", {"C00000001": {"n": 1}})
    assert caught.value.failed_keys == ["C00000001"]


def test_unprocessed_keys_are_retried_within_the_latency_budget():
    client, stub = _stubbed()
    now = [0.0]
    store = DynamoDbOnlineStore(
        client,
        TABLE,
        budget_ms=50,
        clock=lambda: now[0],
        sleep=lambda s: now.__setitem__(0, now[0] + s),
        jitter=lambda: 1.0,
    )
    keys = [item_key("fraud", "C00000001"), item_key("fraud", "C00000002")]
    found = {**item_key("fraud", "C00000001"), "txn_count_24h": {"N": "3"}}
    stub.add_response(
        "batch_get_item",
        {"Responses": {TABLE: [found]}, "UnprocessedKeys": {TABLE: {"Keys": keys[1:]}}},
        {"RequestItems": {TABLE: {"Keys": keys}}},
    )
    stub.add_response(
        "batch_get_item", {"Responses": {TABLE: []}}, {"RequestItems": {TABLE: {"Keys": keys[1:]}}}
    )
    with stub:
        assert store.get_many("fraud", ["C00000001", "C00000002"]) == {"C00000001": {"txn_count_24h": 3}}

    # A table that keeps throttling: the lookup gives up at the deadline instead of blowing the budget
    stub = Stubber(client)
    for _ in range(20):
        stub.add_response(
            "batch_get_item", {"Responses": {TABLE: []}, "UnprocessedKeys": {TABLE: {"Keys": keys}}}
        )
    now[0] = 0.0
    with (
        stub,
        pytest.raises(FeatureSourceUnavailable, match="2 keys still unprocessed at the 50 ms deadline"),
    ):
        store.get_many("fraud", ["C00000001", "C00000002"])
    assert now[0] < 0.05


def test_dynamodb_errors_become_feature_source_unavailable():
    client, stub = _stubbed()
    stub.add_client_error("batch_get_item", service_error_code="ResourceNotFoundException")
    with stub, pytest.raises(FeatureSourceUnavailable, match="online store lookup failed"):
        DynamoDbOnlineStore(client, TABLE).get_many("fraud", ["C00000001"])


def test_the_serving_client_fits_the_latency_budget():
    from shipml.backends.aws.online import serving_client

    config = serving_client(50, region=REGION).meta.config
    assert config.connect_timeout + config.read_timeout <= 0.05
    assert config.retries["total_max_attempts"] == 1


def test_the_scheduled_job_reads_the_s3_lake_and_fills_the_table(
    aws, contract_path, sample_table, monkeypatch
):
    # Given the lake in S3, partitioned by day, and the job's settings as the construct sets them
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="lake", CreateBucketConfiguration={"LocationConstraint": REGION})
    days = pa.compute.strftime(sample_table.column("event_time"), format="%Y-%m-%d").to_pylist()
    for day in sorted(set(days)):
        buffer = io.BytesIO()
        pq.write_table(sample_table.filter(pa.array([d == day for d in days])), buffer)
        s3.put_object(
            Bucket="lake", Key=f"lake/transactions/event_date={day}/part-0.parquet", Body=buffer.getvalue()
        )
    s3.put_object(Bucket="lake", Key="models/fraud/1/model.tar.gz", Body=b"not the lake")
    env = {
        "SHIPML_CONTRACT": str(contract_path),
        "SHIPML_LAKE_BUCKET": "lake",
        "SHIPML_LAKE_PREFIX": "lake/transactions/",
        "SHIPML_STATE_PREFIX": "features/state/",
        "SHIPML_ONLINE_TABLE": TABLE,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    from functions.features import handler as module

    module._settings.cache_clear()
    module._clients.cache_clear()

    # When EventBridge Scheduler invokes it twice with the same scheduled time
    event = {"time": "2026-01-25T00:00:00Z"}
    first = module.handler(event, None)
    second = module.handler(event, None)

    # Then the first run was full, the second incremental and wrote nothing; the state is in S3
    assert first["mode"] == "full" and first["items_written"] == first["entities"] > 0
    assert second["mode"] == "incremental" and second["items_written"] == 0
    assert first["source"] == "s3://lake/lake/transactions/"
    state = s3.list_objects_v2(Bucket="lake", Prefix="features/state/")["Contents"]
    assert [o["Key"] for o in state] == ["features/state/features/fraud/materialization-state.parquet"]
    item = DynamoDbOnlineStore(aws, TABLE).get("fraud", sample_table.column("customer_id")[0].as_py())
    assert set(item) == {"txn_count_24h", "mean_amount_30d", "days_since_first_seen"}
    assert json.dumps(first)  # the report is JSON for the log and the Lambda result
