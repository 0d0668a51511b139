"""The three handlers of bench/serving.py, in a module of their own.

The cold-start children import this module and nothing else of the benchmark, so a fresh process
pays for the handler it builds, not for the benchmark around it.
"""

from __future__ import annotations

import json
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


def our_handler(root: Path):
    """The real handler, with its context built as on Lambda but with in-memory Firehose."""
    from mangum import Mangum

    from functions.inference import handler as module
    from shipml.backends import local_backends
    from shipml.backends.aws.sinks import EmfMetricsSink, FirehoseCaptureSink
    from shipml.serving.app import create_app
    from shipml.serving.factory import local_context
    from shipml.settings import Settings

    settings = Settings(root=root, contract=CONTRACT)
    context = local_context(settings, local_backends(root))
    context.capture = FirehoseCaptureSink(InMemoryFirehose(), "capture")
    context.metrics = EmfMetricsSink("shipml", "fraud", default_dimensions={"model": "fraud"})
    module._runtime.update(app=Mangum(create_app(context), lifespan="off"), ctx=context)
    return module.handler
