"""`shipml serve` end to end over real HTTP on 127.0.0.1: answers, a live promotion, clean shutdown."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pyarrow.parquet as pq
import pytest

from shipml.backends import LIVE, local_backends


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_serve_follows_live_and_flushes_capture_on_shutdown(
    tmp_path, make_artifact, contract_path, request_body
):
    root = tmp_path / "root"
    backends = local_backends(root)
    backends.registry.register("fraud", make_artifact(seed=1))
    backends.registry.approve("fraud", 1)
    backends.registry.set_alias("fraud", LIVE, 1)
    port = free_port()
    env = {**os.environ, "SHIPML_ROOT": str(root), "SHIPML_CONTRACT": str(contract_path)}
    server = subprocess.Popen(
        [sys.executable, "-m", "shipml.cli", "serve", "--port", str(port), "--poll", "0.2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=5) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if client.get("/ping").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.1)

            answered = 0
            first = client.post("/predict", json=request_body())
            assert first.status_code == 200 and first.json()["model_version"] == "fraud:1"
            answered += 1
            assert client.post("/predict", json=request_body(amount=-1)).status_code == 422

            backends.registry.register("fraud", make_artifact(seed=2))
            backends.registry.approve("fraud", 2)
            backends.registry.set_alias("fraud", LIVE, 2)
            versions = []
            for _ in range(100):  # bounded: at most ~10 s
                versions.append(client.post("/predict", json=request_body()).json()["model_version"])
                answered += 1
                if versions[-1] == "fraud:2":
                    break
                time.sleep(0.1)
            assert versions[-1] == "fraud:2"
            assert versions == sorted(versions)  # never back to the old version after the swap
    finally:
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=20)[0].decode()
    assert "serving fraud:1" in output
    parts = list((root / "capture").rglob("*.parquet"))
    assert sum(pq.read_table(p).num_rows for p in parts) == answered
