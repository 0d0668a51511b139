"""The three handlers of bench/serving.py, in a module of their own.

The cold-start children import this module and nothing else of the benchmark, so a fresh process
pays for the handler it builds, not for the benchmark around it.
"""

from __future__ import annotations

import io
import json
import os
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = ROOT / "examples" / "fraud" / "contract.yaml"


class InMemoryFirehose:
    """Stands in for the Firehose client: keeps the batches, answers success."""

    def __init__(self) -> None:
        self.records = 0

    def put_record_batch(self, DeliveryStreamName: str, Records: list) -> dict:  # noqa: N803 - boto3's names
        self.records += len(Records)
        return {"FailedPutCount": 0, "RequestResponses": [{"RecordId": str(i)} for i in range(len(Records))]}


TYPICAL_APP = textwrap.dedent(
    """
    import pickle
    import pandas as pd
    from fastapi import FastAPI
    from mangum import Mangum

    def build(model_path, online):
        pipeline, categorical, numeric = pickle.loads(open(model_path, "rb").read())
        app = FastAPI()

        @app.post("/predict")
        def predict(payload: dict):
            row = {**payload, **online.get(payload["customer_id"], {})}
            frame = pd.DataFrame([row])
            score = float(pipeline.predict_proba(frame[categorical + numeric])[0, 1])
            return {"transaction_id": payload["transaction_id"], "score": score, "label": score >= 0.5}

        return Mangum(app, lifespan="off")
    """
)


def floor_handler():
    from fastapi import FastAPI
    from mangum import Mangum

    app = FastAPI()

    @app.post("/predict")
    async def predict() -> dict:
        return {"ok": True}

    return Mangum(app, lifespan="off")


def typical_handler(model_path: Path, root: Path):
    namespace: dict = {}
    exec(TYPICAL_APP, namespace)  # noqa: S102 - our own benchmark code
    online = online_items(root)
    return namespace["build"](model_path, online)


def online_items(root: Path) -> dict:
    import sqlite3

    with sqlite3.connect(root / "online.db") as db:
        return {entity: json.loads(item) for entity, item in db.execute("SELECT entity, item FROM features")}


class InMemoryS3:
    """Stands in for the S3 client: the artifact bucket's objects, from memory."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects

    def get_object(self, Bucket: str, Key: str) -> dict:  # noqa: N803 - boto3's names
        return {"Body": io.BytesIO(self.objects[Key])}


class InMemoryDynamoDb:
    """Stands in for the DynamoDB client of the online store: BatchGetItem answered from the items
    (in DynamoDB's attribute format, as the table holds them), so the adapter's own work (the keys,
    the attributes back to numbers) is counted and the network round trip is not."""

    def __init__(self, items: dict[str, dict], group: str) -> None:
        from shipml.backends.aws.online import PARTITION_KEY, SORT_KEY, to_item

        self.keys = (PARTITION_KEY, SORT_KEY)
        self.items = {(entity, group): to_item(group, entity, values) for entity, values in items.items()}

    def batch_get_item(self, RequestItems: dict) -> dict:  # noqa: N803 - boto3's names
        ((table, request),) = RequestItems.items()
        keys = [tuple(k[name]["S"] for name in self.keys) for k in request["Keys"]]
        return {"Responses": {table: [self.items[k] for k in keys if k in self.items]}, "UnprocessedKeys": {}}


class InMemorySecretsManager:
    """Stands in for the Secrets Manager client: the PII hash key, as the stack generates it."""

    def get_secret_value(self, SecretId: str) -> dict:  # noqa: N803 - boto3's names
        return {"ARN": SecretId, "SecretString": "k" * 32}


HASH_KEY_SECRET = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:shipml-fraud-dev-pii-hash-key"


class InMemoryAws:
    """Stands in for botocore's session on Lambda: S3 (the artifact), DynamoDB (online features),
    Firehose (capture) and Secrets Manager (the PII hash key), each an in-memory client."""

    def __init__(self, artifact: bytes, online: dict[str, dict]) -> None:
        from shipml.artifact import artifact_key

        self.clients = {
            "s3": InMemoryS3({artifact_key("fraud", 1): artifact}),
            "dynamodb": InMemoryDynamoDb(online, "fraud"),
            "firehose": InMemoryFirehose(),
            "secretsmanager": InMemorySecretsManager(),
        }

    def create_client(self, name: str, **_: object) -> object:
        return self.clients[name]


# A trace header as Lambda sets it for each invocation of an actively traced function.
TRACE_HEADER = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled={sampled}"


def our_handler(root: Path, artifact: Path, cache_dir: Path, contract: Path, *, sampled: bool = False):
    """The real handler, with its context built exactly as on Lambda (`aws_context`: the artifact
    from S3 unpacked into `cache_dir`, the PII hash key from Secrets Manager, DynamoDB online
    features, Firehose capture, EMF metrics), on in-memory AWS clients, through the handler
    module's own cold start. The artifact's bytes and the online items are read from disk here,
    as the typical handler reads its pickle and its online items.

    Traced as deployed (the setting `tracing` is on by default): the Lambda runtime names the
    function and its task root, so the handler module starts Powertools' Tracer (the X-Ray SDK is
    imported, botocore patched), and each invocation carries a trace header. X-Ray's default
    sampling records the first request of each second and 5% of the others, so timed events run
    unsampled and a cold start's first request sampled (`sampled=True`); the in-memory clients
    are not botocore's, so no AWS-call subsegment is made here (their cost goes with the network's)."""
    os.environ["AWS_LAMBDA_FUNCTION_NAME"] = "shipml-inference"
    os.environ["LAMBDA_TASK_ROOT"] = str(ROOT)  # the X-Ray SDK takes its Lambda mode from it
    os.environ["_X_AMZN_TRACE_ID"] = TRACE_HEADER.format(sampled=int(sampled))
    from functions.inference import handler as module

    def build() -> tuple:
        from mangum import Mangum

        from shipml.serving.app import create_app
        from shipml.serving.factory import aws_context
        from shipml.settings import Settings

        settings = Settings(
            backend="aws",
            contract=contract,
            model="fraud",
            model_version="1",
            artifact_bucket="artifacts",
            online_table="online",
            capture_stream="capture",
            hash_key_secret=HASH_KEY_SECRET,  # as the stack configures the function
        )
        session = InMemoryAws(artifact.read_bytes(), online_items(root))
        context = aws_context(settings, session=session, cache_dir=cache_dir)
        return Mangum(create_app(context), lifespan="off"), context

    # The handler module's own cold start (as in Lambda's init phase: the collector paused for
    # the imports and the build, then what they made frozen), with this build in place of the
    # one from the environment's settings.
    module._cold_start(build)
    return module.handler
