"""Load with hot swaps: `shipml serve` on 127.0.0.1 under concurrent clients while `live` moves twice.

One run, bounded in requests and in time:
1. a temporary root with fraud:1 registered, approved and live; fraud:2 and fraud:3 built;
2. `python -m shipml.cli serve --poll 0.2` in a subprocess (the real uvicorn host);
3. N clients (threads, one keep-alive httpx.Client each) send valid /predict requests, each with
   its own x-request-id, until the request budget or the deadline is spent;
4. after 40 % and 70 % of the requests, `live` is promoted (register + approve + set_alias through
   `local_backends(root).registry`, as `shipml models promote` does);
5. SIGTERM: the server's lifespan flushes capture; the Parquet rows under <root>/capture are
   matched against the answered request ids.

Checked: zero errors, every answer names its model version, no client ever sees the version go
backwards, both promotions are served, and capture holds every answered request exactly once.
The first 25 % of the requests (before any swap) are the baseline: the p99 of the whole run is
also printed as a ratio against it. The last line is one JSON object with `requests`, `errors`,
`lost_captures`, `p99_ms`, `rps` (and more); the exit code is 1 if any check failed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONTRACT = ROOT / "examples" / "fraud" / "contract.yaml"
REQUESTS = [
    json.loads(line) for line in (ROOT / "examples" / "fraud" / "requests.jsonl").read_text().splitlines()
]
VERSION = re.compile(r"^fraud:(\d+)$")


@dataclass
class Answer:
    sequence: int  # the order in which the run handed out requests
    request_id: str
    status: int
    latency_ms: float
    version: int | None  # None: the answer named no version (counted as an error)


@dataclass
class Client:
    index: int
    answers: list[Answer] = field(default_factory=list)
    transport_errors: int = 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare(root: Path, workdir: Path, versions: int) -> list[Path]:
    """fraud:1 live in `root`; the artifacts of the later versions, ready to promote."""
    from shipml.backends import LIVE, local_backends
    from tests.conftest import artifact_for

    artifacts = [artifact_for(CONTRACT, workdir / f"artifact-{n}", seed=n) for n in range(1, versions + 1)]
    registry = local_backends(root).registry
    registry.register("fraud", artifacts[0])
    registry.approve("fraud", 1)
    registry.set_alias("fraud", LIVE, 1)
    return artifacts[1:]


def promote(root: Path, artifact: Path) -> int:
    from shipml.backends import LIVE, local_backends

    registry = local_backends(root).registry
    version = registry.register("fraud", artifact, description="bench/load.py").version
    registry.approve("fraud", version)
    registry.set_alias("fraud", LIVE, version)
    return version


def start_server(root: Path, port: int, poll: float) -> subprocess.Popen:
    env = {**os.environ, "SHIPML_ROOT": str(root), "SHIPML_CONTRACT": str(CONTRACT)}
    return subprocess.Popen(
        [sys.executable, "-m", "shipml.cli", "serve", "--port", str(port), "--poll", str(poll)],
        env=env,
        cwd=str(ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def wait_until_up(base: str, server: subprocess.Popen, timeout_s: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=base, timeout=2) as client:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise SystemExit(
                    f"the server exited with {server.returncode}: {server.stdout.read().decode()}"
                )
            try:
                if client.get("/ping").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    raise SystemExit("the server did not come up")


def run_client(client: Client, base: str, tickets: itertools.count, total: int, deadline: float) -> None:
    import httpx

    with httpx.Client(base_url=base, timeout=10) as http:
        while time.monotonic() < deadline:
            sequence = next(tickets)  # itertools.count is thread-safe in CPython (one C call)
            if sequence >= total:
                return
            request_id = f"load-{client.index}-{sequence}"
            body = {**REQUESTS[sequence % len(REQUESTS)], "transaction_id": f"L{sequence}"}
            started = time.perf_counter()
            try:
                response = http.post("/predict", json=body, headers={"x-request-id": request_id})
            except httpx.HTTPError:
                client.transport_errors += 1
                continue
            latency_ms = (time.perf_counter() - started) * 1000
            version = None
            if response.status_code == 200:
                match = VERSION.match(str(response.json().get("model_version", "")))
                version = int(match.group(1)) if match else None
            client.answers.append(Answer(sequence, request_id, response.status_code, latency_ms, version))


def count_captured(root: Path) -> tuple[int, set[str]]:
    import pyarrow.parquet as pq

    rows, ids = 0, set()
    for part in (root / "capture").rglob("*.parquet"):
        column = pq.read_table(part, columns=["request_id"]).column("request_id").to_pylist()
        rows += len(column)
        ids.update(column)
    return rows, ids


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests in all (the bound)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (threads)")
    parser.add_argument("--max-seconds", type=float, default=300, help="stop sending after this long")
    parser.add_argument("--poll", type=float, default=0.2, help="the server's live-alias poll interval")
    args = parser.parse_args()
    swap_points = [int(args.requests * 0.4), int(args.requests * 0.7)]
    baseline_until = int(args.requests * 0.25)

    with tempfile.TemporaryDirectory(prefix="shipml-load-") as tmp:
        work = Path(tmp)
        root = work / "root"
        later = prepare(root, work, versions=1 + len(swap_points))
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = start_server(root, port, args.poll)
        clients = [Client(i) for i in range(args.clients)]
        swaps: list[tuple[int, int, float]] = []  # (version, answered when promoted, seconds into the run)
        try:
            wait_until_up(base, server)
            tickets = itertools.count()
            started = time.monotonic()
            deadline = started + args.max_seconds
            threads = [
                threading.Thread(
                    target=run_client, args=(c, base, tickets, args.requests, deadline), daemon=True
                )
                for c in clients
            ]
            for thread in threads:
                thread.start()
            for point, artifact in zip(swap_points, later, strict=True):
                while sum(len(c.answers) for c in clients) < point and any(t.is_alive() for t in threads):
                    time.sleep(0.01)
                answered = sum(len(c.answers) for c in clients)
                swaps.append((promote(root, artifact), answered, time.monotonic() - started))
            for thread in threads:
                thread.join(timeout=max(0.0, deadline - time.monotonic()) + 15)
            elapsed = time.monotonic() - started
        finally:
            server.send_signal(signal.SIGTERM)  # the lifespan flushes capture
            try:
                log = server.communicate(timeout=30)[0].decode()
            except subprocess.TimeoutExpired:
                server.kill()
                log = server.communicate()[0].decode()
        captured_rows, captured_ids = count_captured(root)

    answers = [a for c in clients for a in c.answers]
    ok = [a for a in answers if a.status == 200 and a.version is not None]
    errors = len(answers) - len(ok) + sum(c.transport_errors for c in clients)
    regressions = 0
    for client in clients:
        versions = [a.version for a in sorted(client.answers, key=lambda a: a.sequence) if a.version]
        regressions += sum(1 for before, after in itertools.pairwise(versions) if after < before)
    answered_ids = {a.request_id for a in ok}
    lost = len(answered_ids - captured_ids)
    duplicates = captured_rows - len(captured_ids)
    latencies = [a.latency_ms for a in ok]
    baseline = [a.latency_ms for a in ok if a.sequence < baseline_until]
    served = sorted({a.version for a in ok})
    p99 = percentile(latencies, 99)
    figures = {
        "requests": len(answers),
        "errors": errors,
        "lost_captures": lost,
        "p99_ms": round(p99, 2),
        "rps": round(len(answers) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(percentile(latencies, 50), 2),
        "p99_vs_baseline": round(p99 / percentile(baseline, 99), 2) if baseline else None,
        "clients": args.clients,
        "versions_served": served,
        "version_regressions": regressions,
        "captured_rows": captured_rows,
        "duplicate_captures": duplicates,
        "seconds": round(elapsed, 2),
    }
    print(f"server log:\n{log.strip()}")
    print(f"{len(answers)} requests from {args.clients} clients in {elapsed:.1f} s ({figures['rps']} req/s)")
    for version, answered, at in swaps:
        print(f"  promoted fraud:{version} after {answered} answers ({at:.1f} s in)")
    print(
        f"  latency p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms "
        f"(baseline p99 before any swap {percentile(baseline, 99):.2f} ms: x{figures['p99_vs_baseline']})"
    )
    print(f"  versions served {served}; regressions seen by a client: {regressions}")
    print(
        f"  errors {errors}; captured {captured_rows} rows for {len(answered_ids)} answers "
        f"(lost {lost}, duplicates {duplicates})"
    )
    expected_versions = list(range(1, 2 + len(swap_points)))
    failed = [
        name
        for name, bad in [
            ("errors", errors > 0),
            ("lost captures", lost > 0 or duplicates > 0 or captured_rows != len(answered_ids)),
            ("a version went backwards", regressions > 0),
            (f"not every promoted version served (want {expected_versions})", served != expected_versions),
            ("the request budget was not spent before the deadline", len(answers) < args.requests),
        ]
        if bad
    ]
    for name in failed:
        print(f"FAILED: {name}")
    print(json.dumps(figures))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
