"""Benchmark: the inference Lambda handler against a framework floor and a typical handler.

Measured in one run, on this machine, with the same API Gateway REST event:
- ours: `functions.inference.handler.handler` with its context built exactly as on Lambda
  (`shipml.serving.factory.aws_context`: Powertools logger, Mangum, the shipml app with contract
  validation, the online-feature lookup through the DynamoDB adapter, encoding, onnxruntime, PII
  masking, capture through the Firehose adapter, EMF metrics). The AWS clients are in-memory
  fakes (S3, DynamoDB, Firehose, Secrets Manager), so the time our adapters take to prepare the
  calls and read the answers is counted and the network round trips, which any handler on AWS
  would wait for, are not; the typical handler, likewise, keeps its online features in a dict.
  What botocore itself does with a call is not counted either, nor, at a cold start, creating its
  four clients (about 100 ms on this machine); importing it is. Traced as deployed (X-Ray active
  tracing is on by default): the handler starts Powertools' Tracer, which patches botocore, with
  Lambda's environment and trace header (see `serving_handlers.our_handler`);
- floor: a bare `async` FastAPI route behind Mangum that returns a constant;
- typical: a `def` FastAPI route behind Mangum that builds a pandas DataFrame from the body and
  calls a pickled scikit-learn pipeline (one-hot + scaling + logistic regression).
Cold start: a fresh Python process until the first response, for ours and the typical handler
taking turns (the median of each counts), each built as in the timed runs. Ours reads the packed
artifact and the online items from disk into its in-memory clients, then `aws_context` unpacks
and verifies the artifact into an empty cache folder (as into a new Lambda environment's /tmp);
the typical handler reads its pickle and its online items from the same files. Ours reads its
contract as the Lambda bundle carries it (the file and its JSON rendition, so PyYAML is not
imported) and is built by the handler module's own cold start, as in Lambda's init phase (the
cyclic garbage collector paused for the imports and the build, then what they made frozen;
`pydantic.v1` marked absent). Ours imports the X-Ray SDK and its first request is sampled, as a
traced function's first request is. As on Lambda, no Parquet writer and no pyarrow. Both start
from byte-compiled code: pip compiled the libraries when it installed them, and our package
(installed in editable mode, so never compiled by pip, and left so where PYTHONDONTWRITEBYTECODE
is set) and the benchmark's handlers module are compiled before the first start, so neither
handler pays for compiling source at each start.
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
import pickle
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from serving_handlers import CONTRACT, floor_handler, our_handler, typical_handler  # noqa: E402

from tests.builders import LambdaContext, rest_v1_event  # noqa: E402

ROUNDS = 5
REQUEST = json.loads((ROOT / "examples" / "fraud" / "requests.jsonl").read_text().splitlines()[1])


class Prepared(NamedTuple):
    root: Path  # the local root: the online features in SQLite
    model: Path  # the typical handler's pickle
    artifact: Path  # our packed artifact, as the S3 bucket holds it
    contract: Path  # our contract, as the Lambda bundle carries it


def prepare(workdir: Path, rows: int) -> Prepared:
    """Train the example model (ONNX; packed as the S3 bucket holds it) and a typical sklearn
    pipeline on the same data; the online features in SQLite, from which both handlers load them;
    the contract as the Lambda bundle carries it (the file and its JSON rendition)."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from shipml.artifact import pack
    from shipml.backends import local_backends
    from shipml.contract.loader import write_rendition
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
    packed = workdir / "model.tar.gz"
    packed.write_bytes(pack(artifact))
    backends = local_backends(root)
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
    contract = workdir / "task" / "contract.yaml"
    contract.parent.mkdir()
    contract.write_bytes(CONTRACT.read_bytes())
    write_rendition(contract)
    return Prepared(root, model_path, packed, contract)


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


def cold_start(kind: str, prepared: Prepared, cache_dir: Path) -> float:
    """Wall time from spawning a fresh process to its first response (interpreter start included;
    its exit, which no caller waits for, not)."""
    # The child does what a Lambda runtime does: import the handler's module, build the handler,
    # invoke it with the event (made here and handed over as JSON) and a context; nothing of the
    # benchmark around it is imported.
    script = textwrap.dedent(
        f"""
        import json, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        sys.path.insert(0, {str(ROOT / "bench")!r})
        from pathlib import Path
        class Context:
            function_name = "shipml-inference"
            memory_limit_in_mb = 1024
            invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:shipml-inference:live"
            aws_request_id = "cold-start"
            def get_remaining_time_in_millis(self):
                return 10_000
        if {kind!r} == "ours":
            from serving_handlers import our_handler
            handler = our_handler(
                Path({str(prepared.root)!r}),
                Path({str(prepared.artifact)!r}),
                Path({str(cache_dir)!r}),
                Path({str(prepared.contract)!r}),
                sampled=True,
            )
        else:
            from serving_handlers import typical_handler
            handler = typical_handler(Path({str(prepared.model)!r}), Path({str(prepared.root)!r}))
        response = handler(json.loads(sys.argv[1]), Context())
        assert response["statusCode"] == 200, response
        sys.stderr.write(f"answered_at={{time.time()!r}}")
        """
    )
    event = json.dumps(rest_v1_event("POST", "/predict", REQUEST))
    started = time.time()  # the wall clock: the child reports the moment it answered
    result = subprocess.run(
        [sys.executable, "-c", script, event], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"cold start of {kind} failed:\n{result.stderr[-2000:]}")
    return float(result.stderr.rsplit("answered_at=", 1)[1]) - started


def byte_compile() -> None:
    """Compile our package, the handler module and the benchmark's handlers module, as pip
    compiles an installed package (the typical handler's libraries were, when pip installed them)."""
    import compileall

    for folder in ("shipml", "functions"):
        compileall.compile_dir(ROOT / folder, quiet=1)
    compileall.compile_file(ROOT / "bench" / "serving_handlers.py", quiet=1)


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
    parser.add_argument("--cold-runs", type=int, default=7, help="fresh processes per handler")
    parser.add_argument("--rows", type=int, default=20_000, help="training rows for both models")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        prepared = prepare(Path(tmp), args.rows)
        event = rest_v1_event("POST", "/predict", REQUEST)
        handlers = {
            "ours": our_handler(prepared.root, prepared.artifact, Path(tmp) / "cache", prepared.contract),
            "floor": floor_handler(),
            "typical": typical_handler(prepared.model, prepared.root),
        }
        # Blocks of events per handler, taking turns: each block runs back to back (as a warm
        # Lambda environment does), and a noisy neighbour slows every handler alike rather than
        # whichever happened to run at that moment.
        samples: dict[str, list[float]] = {name: [] for name in handlers}
        for _ in range(ROUNDS):
            for name, h in handlers.items():
                samples[name] += time_events(h, event, max(1, args.events // ROUNDS))
        # Cold starts take turns too (ours, typical, ours, ...), and the median of each counts.
        byte_compile()
        starts: dict[str, list[float]] = {"ours": [], "typical": []}
        for run in range(args.cold_runs):
            for name, times in starts.items():
                # A new cache folder each time, as a new Lambda environment starts with an empty /tmp.
                times.append(cold_start(name, prepared, Path(tmp) / f"cold-{run}"))
        cold = {name: statistics.median(times) for name, times in starts.items()}
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
