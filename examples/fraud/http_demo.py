"""Part of `make demo`: real HTTP requests, good and bad, to a running `shipml serve`."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

BASE = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080"
REQUESTS = Path(__file__).with_name("requests.jsonl")


def call(
    method: str, path: str, body: bytes | None = None, content_type: str = "application/json"
) -> tuple[int, str]:
    request = urllib.request.Request(
        BASE + path, data=body, method=method, headers={"content-type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def wait_until_up(seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if call("GET", "/ping")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server at {BASE} did not answer /ping within {seconds:.0f} s")


def show(label: str, status: int, text: str) -> None:
    lines = text.splitlines()
    body = json.loads(text) if len(lines) == 1 and text.startswith("{") else [json.loads(x) for x in lines]
    if isinstance(body, dict) and "errors" in body:
        body = {"error": body["error"], "errors": [f"{e['field']}: {e['rule']}" for e in body["errors"]]}
    if isinstance(body, list):  # JSON Lines: one answer per record
        body = [{k: r[k] for k in ("transaction_id", "fraud_score", "is_fraud_predicted")} for r in body]
    print(f"{label:<44} -> {status} {json.dumps(body)[:150]}")


def main() -> None:
    wait_until_up()
    good = json.loads(REQUESTS.read_text().splitlines()[1])
    show("GET /health", *call("GET", "/health"))
    show("POST /predict (a good request)", *call("POST", "/predict", json.dumps(good).encode()))
    show(
        "POST /predict (amount -5, channel 'bike')",
        *call("POST", "/predict", json.dumps(good | {"amount": -5, "channel": "bike"}).encode()),
    )
    show(
        "POST /predict (timestamp without offset)",
        *call("POST", "/predict", json.dumps(good | {"event_time": "2026-02-03T03:20:00"}).encode()),
    )
    show("POST /predict (malformed JSON)", *call("POST", "/predict", b'{"amount": 12,'))
    show("POST /predict (a 300 kB body)", *call("POST", "/predict", b" " * 300_000))
    lines = REQUESTS.read_bytes()
    show(
        "POST /invocations (JSON Lines, 3 records)",
        *call("POST", "/invocations", lines, "application/jsonlines"),
    )


if __name__ == "__main__":
    main()
