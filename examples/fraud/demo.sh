#!/usr/bin/env bash
# `make demo`: the main job end to end on the local backend, nothing to start by hand:
# generate data -> validate it -> fill the online store -> train with 2 torchrun workers
# -> register -> approve -> promote to live -> predict sample requests.
# Each run starts from a clean demo root, so the output is the same every time.
set -euo pipefail
cd "$(dirname "$0")/../.."

export SHIPML_ROOT="${SHIPML_ROOT:-.shipml/demo}"
export SHIPML_CONTRACT="examples/fraud/contract.yaml"
ROWS="${DEMO_ROWS:-50000}"
EPOCHS="${DEMO_EPOCHS:-4}"
DATA="$SHIPML_ROOT/data"
started=$(date +%s)

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

rm -rf "$SHIPML_ROOT"
mkdir -p "$DATA"

step "1/10 generate $ROWS synthetic transactions (seeded)"
shipml data generate "$DATA/transactions.parquet" --rows "$ROWS"

step "2/10 validate the data against the contract"
shipml data validate "$DATA/transactions.parquet"

step "3/10 compute the online features: point in time for training, as of the end for the online store"
# One definition (the contract's aggregations) serves both, so training and serving see the same numbers.
shipml features training-set "$DATA/transactions.parquet" "$DATA/training.parquet"
shipml features materialize --data "$DATA/transactions.parquet" --as-of "2026-01-31T00:00:00+00:00"

step "4/10 train with 2 torchrun workers (gloo) in a local /opt/ml layout, then register"
shipml train --data "$DATA/training.parquet" --workers 2 --epochs "$EPOCHS" --description "make demo"

step "5/10 approve and promote version 1 to live"
shipml models approve 1
shipml models promote 1
shipml models list

step "6/10 predict sample requests with the live model"
shipml predict --file examples/fraud/requests.jsonl | tee "$SHIPML_ROOT/predictions.jsonl"

step "7/10 serve the live model over HTTP (the same app as on Lambda) and send real requests"
PORT="${DEMO_PORT:-8765}"
shipml serve --port "$PORT" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
python examples/fraud/http_demo.py "http://127.0.0.1:$PORT"
kill -TERM $server && wait $server 2>/dev/null || true
trap - EXIT
echo "captured predictions: $(find "$SHIPML_ROOT/capture" -name '*.parquet' | wc -l) Parquet part(s) under $SHIPML_ROOT/capture"

step "8/10 retrain through the synthesized Step Functions definition on drifted data; the gate decides"
# Amounts shifted by 1.5x and three times the fraud odds in Brazil: the same pipeline that runs on
# AWS (validate -> train -> evaluate -> gate -> register -> deploy) runs here, state by state.
shipml data generate "$DATA/drifted.parquet" --rows "$ROWS" --seed 8 --amount-shift 1.5 --fraud-segment country=BR
shipml features training-set "$DATA/drifted.parquet" "$DATA/drifted-training.parquet"
shipml retrain --data "$DATA/drifted-training.parquet" --hp epochs="$EPOCHS" --reason "make demo: drifted data"
shipml models list

step "9/10 summary"
python - "$SHIPML_ROOT/predictions.jsonl" "$started" <<'PY'
import json, subprocess, sys, time
versions = json.loads(subprocess.run(["shipml", "models", "list", "--json"], check=True,
                                     capture_output=True, text=True).stdout)
live = next(v for v in versions if "live" in v["aliases"])
print(f"live model   : {live['model_name']}:{live['version']} ({live['status']}, digest {live['digest'][:12]})")
print(f"holdout AUC  : {live['metrics']['auc']:.4f} on {live['metrics']['rows']:,} rows")
for line in open(sys.argv[1]):
    p = json.loads(line)
    flags = f"  (defaults used: {', '.join(p['fallbacks'])})" if p["fallbacks"] else ""
    print(f"prediction   : {p['id']:<20} score {p['score']:.4f}  fraud={p['label']!s:<5} by {p['model_version']}{flags}")
print(f"demo time    : {time.time() - float(sys.argv[2]):.0f} s")
PY

step "10/10 monitor: the drifted transactions replayed through version 1, against its baseline"
# The retrain above may have promoted a model trained on the drift: watch version 1.
shipml monitor replay "$DATA/drifted-training.parquet" --version 1 --labels-out "$DATA/drifted-labels.jsonl"
shipml monitor quality --version 1 --labels "$DATA/drifted-labels.jsonl"
shipml monitor status
shipml monitor drift --version 1
