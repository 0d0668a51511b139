"""Benchmark: the inference Lambda handler against a framework floor and a typical handler.

Measured in one run, on this machine, with the same API Gateway REST event:
- ours: `functions.inference.handler.handler` (Powertools logger, Mangum, the shipml app with
  contract validation, an online-feature lookup in SQLite, encoding, onnxruntime, PII masking,
  capture into the Firehose adapter and EMF metrics). The Firehose client is an in-memory fake, so
  the time to *prepare and hand over* capture records is counted and the network round trip,
  which any handler that captures would pay, is not;
- floor: a bare `async` FastAPI route behind Mangum that returns a constant;
- typical: a `def` FastAPI route behind Mangum that builds a pandas DataFrame from the body and
  calls a pickled scikit-learn pipeline (one-hot + scaling + logistic regression).
Cold start: a fresh Python process until the first response, for ours and the typical handler,
each built as in the timed runs (ours: the model from the local registry, features from SQLite,
capture into the Firehose adapter with the in-memory client, EMF metrics; so, as on Lambda, no
Parquet writer and no pyarrow).
The bundle size comes from the real Lambda bundle (built for cp312, cached under .shipml/build).

Prints a table, then one JSON line (lower is better everywhere):
- overhead_vs_floor: the time our handler adds over the framework floor, relative to the floor,
  (ours - floor) / floor; 0 would be a handler that costs no more than returning a constant. The
  plain ratio ours / floor (= overhead_vs_floor + 1) is printed in the table;
- latency_vs_typical: ours / typical (median time per event);
- cold_start_vs_typical: ours / typical (fresh process to first response);
- bundle_mb: the unzipped Lambda bundle.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.builders import LambdaContext, rest_v1_event  # noqa: E402

CONTRACT = ROOT / "examples" / "fraud" / "contract.yaml"
ROUNDS = 5
REQUEST = json.loads((ROOT / "examples" / "fraud" / "requests.jsonl").read_text().splitlines()[1])


class InMemoryFirehose:
    """Stands in for the Firehose client: keeps the batches, answers success."""

    def __init__(self) -> None:
        self.records = 0

    def put_record_batch(self, DeliveryStreamName: str, Records: list) -> dict:  # noqa: N803 - boto3's names
        self.records += len(Records)
        return {"FailedPutCount": 0, "RequestResponses": [{"RecordId": str(i)} for i in range(len(Records))]}


def prepare(workdir: Path, rows: int) -> tuple[Path, Path]:
    """Train the example model (ONNX, registered live) and a typical sklearn pipeline on the same data."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from shipml.backends import LIVE, local_backends
    from shipml.data.synth import generate, write_online_snapshot
    from training.launcher import run_local

    data = workdir / "transactions.parquet"
    generate(data, rows, seed=5)
    customers = workdir / "customers.parquet"
    write_online_snapshot(customers, seed=5, rows=rows)
    root = workdir / "root"
    artifact = run_local(
        data, workdir / "model", contract_path=CONTRACT, workers=2, hyperparameters={"epochs": 1}, echo=False
    )
    backends = local_backends(root)
    backends.registry.register("fraud", artifact)
    backends.registry.approve("fraud", 1)
    backends.registry.set_alias("fraud", LIVE, 1)
    snapshot = pd.read_parquet(customers)
    backends.online.put_many("fraud", {r.pop("customer_id"): r for r in snapshot.to_dict("records")})

    frame = pd.read_parquet(data)
    categorical = ["currency", "merchant_category", "country", "channel", "card_present"]
    numeric = ["amount", "txn_count_24h", "mean_amount_30d", "days_since_first_seen"]
    pipeline = Pipeline(
        [
            (
                "prepare",
                ColumnTransformer(
                    [
                        ("cat", OneHotEncoder(handle_unknown="ignore"), categorical),
                        ("num", StandardScaler(), numeric),
                    ]
                ),
            ),
            ("model", LogisticRegression(max_iter=500)),
        ]
    )
    pipeline.fit(frame[categorical + numeric], frame["is_fraud"])
    model_path = workdir / "typical.pkl"
    model_path.write_bytes(pickle.dumps((pipeline, categorical, numeric)))
    return root, model_path


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


def time_events(handler, event: dict, count: int) -> list[float]:
    context = LambdaContext()
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink):  # EMF and logs are printed on Lambda; the cost stays counted
        for _ in range(200):
            response = handler(event, context)
        assert response["statusCode"] == 200, response
        samples = []
        for _ in range(count):
            started = time.perf_counter_ns()
            handler(event, context)
            samples.append((time.perf_counter_ns() - started) / 1e3)
            sink.seek(0)
            sink.truncate()
    return samples


def cold_start(kind: str, root: Path, model_path: Path, runs: int) -> float:
    """Median wall time from spawning a fresh process to its first response (interpreter start
    included; its exit, which no caller waits for, not)."""
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from tests.builders import LambdaContext, rest_v1_event
        event = rest_v1_event("POST", "/predict", {REQUEST!r})
        sys.path.insert(0, {str(ROOT / "bench")!r})
        from pathlib import Path
        if {kind!r} == "ours":
            from serving import our_handler
            handler = our_handler(Path({str(root)!r}))
        else:
            from serving import typical_handler
            handler = typical_handler(Path({str(model_path)!r}), Path({str(root)!r}))
        response = handler(event, LambdaContext())
        assert response["statusCode"] == 200, response
        sys.stderr.write(f"answered_at={{time.time()!r}}")
        """
    )
    env = {
        **os.environ,
        "SHIPML_ROOT": str(root),
        "SHIPML_CONTRACT": str(CONTRACT),
        "SHIPML_BACKEND": "local",
    }
    times = []
    for _ in range(runs):
        started = time.time()  # the wall clock: the child reports the moment it answered
        result = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise SystemExit(f"cold start of {kind} failed:\n{result.stderr[-2000:]}")
        answered = float(result.stderr.rsplit("answered_at=", 1)[1])
        times.append(answered - started)
    return statistics.median(times)


def bundle_megabytes(workdir: Path) -> float:
    """Unzipped size of the real Lambda bundle for this machine's architecture (cached deps)."""
    import platform

    from stacks.lambda_bundle import BundleSpec, build_bundle

    architecture = {"x86_64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}[platform.machine()]
    spec = BundleSpec(
        repo_root=ROOT, architecture=architecture, contract_path="examples/fraud/contract.yaml", budget_mb=150
    )
    return build_bundle(spec, workdir / "bundle").bundle_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000, help="timed events per handler")
    parser.add_argument("--cold-runs", type=int, default=3, help="fresh processes per handler")
    parser.add_argument("--rows", type=int, default=20_000, help="training rows for both models")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root, model_path = prepare(Path(tmp), args.rows)
        event = rest_v1_event("POST", "/predict", REQUEST)
        handlers = {
            "ours": our_handler(root),
            "floor": floor_handler(),
            "typical": typical_handler(model_path, root),
        }
        # Blocks of events per handler, taking turns: each block runs back to back (as a warm
        # Lambda environment does), and a noisy neighbour slows every handler alike rather than
        # whichever happened to run at that moment.
        samples: dict[str, list[float]] = {name: [] for name in handlers}
        for _ in range(ROUNDS):
            for name, h in handlers.items():
                samples[name] += time_events(h, event, max(1, args.events // ROUNDS))
        cold = {name: cold_start(name, root, model_path, args.cold_runs) for name in ("ours", "typical")}
        bundle_mb = bundle_megabytes(Path(tmp))

    def p99(values: list[float]) -> float:
        return statistics.quantiles(values, n=100)[98]

    print(f"{'handler':<10}{'median us':>12}{'p99 us':>12}{'cold start s':>15}")
    for name, values in samples.items():
        cold_s = f"{cold[name]:.2f}" if name in cold else "-"
        print(f"{name:<10}{statistics.median(values):>12.1f}{p99(values):>12.1f}{cold_s:>15}")
    ours = statistics.median(samples["ours"])
    floor = statistics.median(samples["floor"])
    print(f"ours / floor = {ours / floor:.3f} (the time ours adds over the floor: {ours - floor:.1f} us)")
    figures = {
        "overhead_vs_floor": round((ours - floor) / floor, 3),
        "latency_vs_typical": round(ours / statistics.median(samples["typical"]), 3),
        "cold_start_vs_typical": round(cold["ours"] / cold["typical"], 3),
        "bundle_mb": round(bundle_mb, 1),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
