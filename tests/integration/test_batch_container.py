"""The SageMaker batch container: its context over a folder laid out like /opt/ml/model, the
container contract in-process (/ping, /invocations with CSV and JSON Lines, MultiRecord), the
`serve` entry as a real process, and the image's files (Dockerfile, pinned requirements).

Docker is not needed: the app runs in-process (TestClient) and as `python -m
shipml.serving.container serve` under uvicorn on a free port; the Dockerfile is checked textually.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from packaging.markers import default_environment
from packaging.requirements import Requirement

from shipml.artifact import load_artifact, pack
from shipml.backends.ports import OnlineStore
from shipml.errors import ArtifactError, ShipmlError
from shipml.predict import Predictor
from shipml.serving import container
from shipml.serving.app import create_app
from shipml.serving.container import ContainerSettings, LookedUpFeatures, container_context

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE_DIR = REPO_ROOT / "training" / "batch_image"
REQUIREMENT_FILES = [
    REPO_ROOT / "functions" / "inference" / "requirements.txt",
    IMAGE_DIR / "requirements.txt",
]
HEAVY = ("torch", "pandas", "sklearn", "scikit-learn", "pyarrow")
ONLINE = {"txn_count_24h": 3, "mean_amount_30d": 80.0, "days_since_first_seen": 400}


class FakeOnlineStore(OnlineStore):
    """Our OnlineStore port over a dict, recording the keys it was asked for."""

    def __init__(self, items: Mapping[str, Mapping[str, Any]]) -> None:
        self.items = {k: dict(v) for k, v in items.items()}
        self.asked: list[list[str]] = []

    def get_many(self, group: str, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        self.asked.append(list(keys))
        return {k: self.items[k] for k in keys if k in self.items}

    def put_many(self, group: str, items: Mapping[str, Mapping[str, Any]]) -> int:
        self.items.update({k: dict(v) for k, v in items.items()})
        return len(items)


class RecordingMetrics(container.StdoutMetricsSink):
    def __init__(self) -> None:
        self.stream = io.StringIO()
        super().__init__(self.stream)

    def points(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]


@pytest.fixture
def model_dir(tmp_path: Path, make_artifact) -> Path:
    """/opt/ml/model as SageMaker leaves it: the registry's model.tar.gz extracted into it."""
    folder = tmp_path / "opt" / "ml" / "model"
    folder.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(pack(make_artifact(seed=3))), mode="r:gz") as tar:
        tar.extractall(folder, filter="data")
    return folder


def settings_for(model_dir: Path, **overrides: Any) -> ContainerSettings:
    return ContainerSettings(model_dir=model_dir, model_version="7", workers=1, **overrides)


@pytest.fixture
def metrics() -> RecordingMetrics:
    return RecordingMetrics()


@pytest.fixture
def client(model_dir: Path, metrics: RecordingMetrics):
    context = container_context(settings_for(model_dir), metrics=metrics)
    with TestClient(create_app(context)) as client:
        yield client


def records(request_body, count: int, *, carried: bool = True) -> list[dict[str, Any]]:
    rows = []
    for i in range(count):
        row = request_body(transaction_id=f"T{i:04d}", customer_id=f"C{i:08d}", amount=10.0 + 7 * i)
        if carried:
            row.update(txn_count_24h=i % 5, mean_amount_30d=40.0 + i, days_since_first_seen=30 * i)
        rows.append(row)
    return rows


def as_csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Headerless CSV in contract order, as Batch Transform's line split sends it."""

    def text(value: Any) -> str:
        if value is None:
            return ""
        return str(value).lower() if isinstance(value, bool) else str(value)

    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([[text(row.get(c)) for c in columns] for row in rows])
    return out.getvalue()


def input_columns(contract) -> list[str]:
    """The columns of a batch input row: request fields and carried online features, in contract order."""
    return [f.name for f in contract.features if f.source in ("request", "online")]


def reference_scores(model_dir: Path, rows: list[dict[str, Any]]) -> list[float]:
    """What the real-time path scores for the same rows when the online store holds the carried values."""
    artifact = load_artifact(model_dir)
    names = [f.name for f in artifact.contract.online_features]
    store = FakeOnlineStore({r["customer_id"]: {n: r[n] for n in names} for r in rows})
    requests = [{k: v for k, v in r.items() if k not in names} for r in rows]
    predictor = Predictor(artifact, model_version="fraud:7", online=store)
    return [p.score for p in predictor.predict(requests)]


# --- settings --------------------------------------------------------------------------------------


def test_settings_follow_sagemakers_variables_and_name_the_variable_of_a_bad_value() -> None:
    settings = ContainerSettings.from_env(
        {
            "SAGEMAKER_BIND_TO_PORT": "9090",
            "SAGEMAKER_MAX_PAYLOAD_IN_MB": "4",
            "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "3",
            "SHIPML_MODEL_VERSION": "12",
        }
    )

    assert (settings.port, settings.max_payload_mb, settings.workers, settings.model_version) == (
        9090,
        4,
        3,
        "12",
    )
    assert settings.model_dir == Path("/opt/ml/model")
    assert settings.looked_up_features == LookedUpFeatures.input
    assert settings.max_body_bytes == 4 * 1024 * 1024 + 64 * 1024
    assert (
        ContainerSettings.from_env(
            {"SHIPML_WORKERS": "2", "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "8"}
        ).workers
        == 2
    )
    with pytest.raises(
        ShipmlError, match=r"SAGEMAKER_MAX_PAYLOAD_IN_MB: Input should be less than or equal to 100"
    ):
        ContainerSettings.from_env({"SAGEMAKER_MAX_PAYLOAD_IN_MB": "500"})
    with pytest.raises(ShipmlError, match=r"SHIPML_LOOKED_UP_FEATURES: Input should be 'input' or 'store'"):
        ContainerSettings.from_env({"SHIPML_LOOKED_UP_FEATURES": "dynamo"})


# --- the SageMaker container contract, in-process ------------------------------------------------------


def test_ping_answers_200_once_the_extracted_model_is_loaded(client: TestClient) -> None:
    assert client.get("/ping").status_code == 200
    health = client.get("/health").json()
    assert (health["model_version"], health["model_loaded"]) == ("fraud:7", True)


def test_csv_multirecord_scores_every_line_in_order_with_the_carried_online_features(
    client: TestClient, model_dir: Path, request_body, contract
) -> None:
    rows = records(request_body, 25)
    columns = input_columns(contract)
    response = client.post(
        "/invocations",
        content=as_csv(rows, columns),
        headers={"content-type": "text/csv", "accept": "text/csv"},
    )

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    lines = list(csv.reader(io.StringIO(response.text)))
    assert [line[0] for line in lines] == [r["transaction_id"] for r in rows]
    scores = [float(line[1]) for line in lines]
    assert scores == pytest.approx(reference_scores(model_dir, rows), abs=1e-6)
    assert [line[2] for line in lines] == [str(s >= contract.outputs.threshold).lower() for s in scores]


def test_json_lines_multirecord_answers_one_line_per_record_with_id_score_label_and_version(
    client: TestClient, model_dir: Path, request_body, contract
) -> None:
    rows = records(request_body, 40)
    body = "".join(json.dumps(r) + "\n" for r in rows)
    response = client.post("/invocations", content=body, headers={"content-type": "application/jsonlines"})

    assert response.status_code == 200, response.text
    answers = [json.loads(line) for line in response.text.splitlines()]
    assert [a["transaction_id"] for a in answers] == [r["transaction_id"] for r in rows]
    assert {a["model_version"] for a in answers} == {"fraud:7"}
    assert [a["fraud_score"] for a in answers] == pytest.approx(reference_scores(model_dir, rows), abs=1e-6)
    assert all(a["is_fraud_predicted"] == (a["fraud_score"] >= contract.outputs.threshold) for a in answers)
    assert all(a["fallbacks"] == [] for a in answers)


def test_the_carried_values_change_the_score(client: TestClient, request_body) -> None:
    (row,) = records(request_body, 1)
    rich, poor = {**row, "days_since_first_seen": 5000}, {**row, "days_since_first_seen": 0}
    body = json.dumps(rich) + "\n" + json.dumps(poor) + "\n"
    answers = client.post(
        "/invocations", content=body, headers={"content-type": "application/jsonlines"}
    ).text

    first, second = (json.loads(line)["fraud_score"] for line in answers.splitlines())
    assert first != second


def test_rows_without_the_carried_columns_take_the_contracts_defaults(
    client: TestClient, model_dir: Path, request_body, contract
) -> None:
    rows = records(request_body, 3, carried=False)
    body = "".join(json.dumps(r) + "\n" for r in rows)
    answers = client.post("/invocations", content=body, headers={"content-type": "application/jsonlines"})

    defaults = {f.name: f.default for f in contract.online_features}
    expected = reference_scores(model_dir, [{**r, **defaults} for r in rows])
    assert [json.loads(line)["fraud_score"] for line in answers.text.splitlines()] == pytest.approx(
        expected, abs=1e-6
    )


def test_a_bad_row_in_a_mini_batch_is_refused_naming_row_field_and_rule(
    client: TestClient, request_body
) -> None:
    rows = records(request_body, 3)
    rows[1]["amount"] = -5
    rows[2]["txn_count_24h"] = -1  # a carried online feature keeps its contract rule (min 0)
    body = "".join(json.dumps(r) + "\n" for r in rows)
    response = client.post("/invocations", content=body, headers={"content-type": "application/jsonlines"})

    assert response.status_code == 422
    problems = {(p["field"], p["rule"]) for p in response.json()["errors"]}
    assert problems == {("1.amount", "greater_than_equal"), ("2.txn_count_24h", "greater_than_equal")}
    assert "C00000001" not in response.text  # inputs are never echoed


def test_a_short_csv_line_is_a_400_naming_the_line_and_the_expected_columns(client: TestClient) -> None:
    response = client.post("/invocations", content="T1,C00000001\n", headers={"content-type": "text/csv"})

    assert response.status_code == 400
    assert "CSV line 1 has 2 values, expected 13" in response.json()["message"]


def test_a_mini_batch_of_megabytes_is_accepted_up_to_max_payload(client: TestClient, request_body) -> None:
    rows = records(request_body, 1)
    line = json.dumps(rows[0]) + "\n"
    count = (2 * 1024 * 1024) // len(line)  # 2 MB: eight times the real-time body limit
    response = client.post(
        "/invocations", content=line * count, headers={"content-type": "application/jsonlines"}
    )

    assert response.status_code == 200
    assert len(response.text.splitlines()) == count
    too_big = line * ((7 * 1024 * 1024) // len(line))  # over SageMaker's default 6 MB
    assert (
        client.post(
            "/invocations", content=too_big, headers={"content-type": "application/jsonlines"}
        ).status_code
        == 413
    )


def test_metrics_go_to_stdout_as_json_lines(
    client: TestClient, metrics: RecordingMetrics, request_body
) -> None:
    body = "".join(json.dumps(r) + "\n" for r in records(request_body, 4))
    client.post("/invocations", content=body, headers={"content-type": "application/jsonlines"})

    predictions = [p for p in metrics.points() if p["metric"] == "Predictions"]
    assert predictions == [
        {"metric": "Predictions", "value": 4, "unit": "Count", "dimensions": {"model": "fraud"}}
    ]


def test_store_mode_looks_the_features_up_and_refuses_them_as_columns(
    model_dir: Path, request_body, metrics: RecordingMetrics
) -> None:
    store = FakeOnlineStore({"C00000000": ONLINE})
    context = container_context(
        settings_for(model_dir, looked_up_features=LookedUpFeatures.store), online=store, metrics=metrics
    )
    client = TestClient(create_app(context))
    rows = records(request_body, 2, carried=False)
    answers = client.post(
        "/invocations",
        content="".join(json.dumps(r) + "\n" for r in rows),
        headers={"content-type": "application/jsonlines"},
    )

    assert answers.status_code == 200
    fallbacks = [json.loads(line)["fallbacks"] for line in answers.text.splitlines()]
    assert fallbacks == [[], ["txn_count_24h", "mean_amount_30d", "days_since_first_seen"]]
    assert store.asked == [["C00000000", "C00000001"]]
    carried = client.post(
        "/invocations",
        content=json.dumps({**rows[0], **ONLINE}),
        headers={"content-type": "application/jsonlines"},
    )
    assert carried.status_code == 422
    assert {p["rule"] for p in carried.json()["errors"]} == {"extra_forbidden"}


def test_without_a_model_version_the_artifact_digest_names_the_version(model_dir: Path) -> None:
    context = container_context(ContainerSettings(model_dir=model_dir), metrics=RecordingMetrics())
    digest = load_artifact(model_dir).digest

    assert context.holder.status().version == f"fraud:sha256-{digest[:12]}"


def test_a_corrupt_model_folder_refuses_to_start_and_says_why(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    onnx = model_dir / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-1] + b"\x00")

    with pytest.raises(ArtifactError, match="checksum mismatch for model.onnx"):
        container_context(settings_for(model_dir))
    monkeypatch.setenv("SHIPML_MODEL_DIR", str(model_dir))
    assert container.main(["serve"]) == 1
    assert "checksum mismatch for model.onnx" in capsys.readouterr().err


def test_anything_but_serve_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert container.main(["train"]) == 2
    assert "usage: python -m shipml.serving.container serve" in capsys.readouterr().err


# --- the serve entry as SageMaker runs it: a real process, real HTTP -----------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _call(url: str, body: bytes | None = None, content_type: str = "") -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, headers={"content-type": content_type} if body else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - a local test server
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_serve_runs_uvicorn_workers_on_the_port_and_answers_the_contract(
    model_dir: Path, request_body, contract
) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "SHIPML_MODEL_DIR": str(model_dir),
        "SHIPML_MODEL_VERSION": "7",
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "2",
        "PYTHONPATH": str(REPO_ROOT),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "shipml.serving.container", "serve"],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        status = None
        for _ in range(300):  # SageMaker waits for /ping; so do we (up to 30 s on a busy machine)
            if process.poll() is not None:
                break
            try:
                status, _ = _call(f"{base}/ping")
                if status == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.1)
        assert status == 200, process.stdout.read() if process.poll() is not None else "no 200 from /ping"

        rows = records(request_body, 5)
        columns = input_columns(contract)
        code, text = _call(f"{base}/invocations", as_csv(rows, columns).encode(), "text/csv")
        assert code == 200, text
        assert [line.split(",")[0] for line in text.splitlines()] == [r["transaction_id"] for r in rows]
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    assert (
        "Started parent process" in output
    )  # uvicorn's supervisor, with SAGEMAKER_MAX_CONCURRENT_TRANSFORMS workers
    assert len(re.findall(r"Started server process", output)) == 2
    assert '"metric":"Predictions"' in output  # metrics on stdout


def test_the_container_path_imports_only_pinned_distributions_and_nothing_heavy(
    model_dir: Path, request_body
) -> None:
    body = json.dumps(request_body()) + "\n"
    # A fresh process builds the context, starts nothing but calls the ASGI app directly (no test
    # client to pollute sys.modules) and scores a record; every third-party module it then holds
    # must come from a distribution the image installs. `_`-prefixed names are the venv's .pth hooks.
    script = f"""
import asyncio, json, sys
from importlib import metadata
import uvicorn
from shipml.serving import container
ctx = container.container_context(container.ContainerSettings(model_dir={str(model_dir)!r}))
app = container.create_app(ctx)

async def call(method, path, body=b"", content_type=b"application/jsonlines"):
    sent = []
    async def receive():
        return {{"type": "http.request", "body": body, "more_body": False}}
    async def send(message):
        sent.append(message)
    scope = {{"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": [(b"content-type", content_type)], "http_version": "1.1", "scheme": "http",
             "server": ("container", 8080), "client": ("sagemaker", 1), "root_path": ""}}
    await app(scope, receive, send)
    return sent[0]["status"]

assert asyncio.run(call("GET", "/ping")) == 200
assert asyncio.run(call("POST", "/invocations", {body!r}.encode())) == 200
dists = metadata.packages_distributions()
tops = {{name.split(".")[0] for name, module in list(sys.modules.items())
        if "site-packages" in (getattr(module, "__file__", None) or "")}}
print(json.dumps({{top: dists.get(top, []) for top in sorted(tops)}}))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=120
    )
    imported = json.loads(result.stdout.strip().splitlines()[-1])
    pins = {name for path in REQUIREMENT_FILES for name in _pins(path)}

    assert not [top for top in imported if top in HEAVY]
    assert "onnxruntime" in imported and "fastapi" in imported
    unpinned = {
        top: dists
        for top, dists in imported.items()
        if not top.startswith("_") and not {metadata_name(d) for d in dists} & pins
    }
    assert unpinned == {}


# --- the image's files -------------------------------------------------------------------------------


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", f"{path.name}: {line} is not pinned"
            pins[metadata_name(requirement.name)] = specifier.version
    return pins


def metadata_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_dockerfile_runs_the_one_app_on_8080_with_the_serve_entry() -> None:
    dockerfile = (IMAGE_DIR / "Dockerfile").read_text()
    instructions = [line for line in dockerfile.splitlines() if line and not line.startswith(("#", " "))]

    assert re.search(r"^FROM python:3\.12(\.\d+)?-slim", dockerfile, flags=re.MULTILINE)
    assert "EXPOSE 8080" in instructions
    assert 'ENTRYPOINT ["python", "-m", "shipml.serving.container"]' in instructions
    assert 'CMD ["serve"]' in instructions  # `docker run image serve` replaces CMD with the same word
    assert re.search(r"^USER (?!root|0\b)\S+", dockerfile, flags=re.MULTILINE)
    assert "pip install --no-deps --only-binary=:all:" in dockerfile
    # The only mention of a heavy package outside comments is the guard that fails the build on one.
    mentions = [line for line in instructions if any(h in line for h in HEAVY)]
    assert mentions == [] or all("heavy packages in the image" in line for line in mentions)
    assert any("heavy packages in the image" in line for line in dockerfile.splitlines())
    for source in re.findall(r"^COPY\s+(\S+)\s", dockerfile, flags=re.MULTILINE):
        assert (REPO_ROOT / source).exists(), source


def test_the_image_requirements_are_pinned_lean_and_complete() -> None:
    pins: dict[str, str] = {}
    for path in REQUIREMENT_FILES:
        pins.update(_pins(path))
    # Linux CPython 3.12, as in the image.
    environment = {
        **default_environment(),
        "python_version": "3.12",
        "python_full_version": "3.12.8",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "implementation_name": "cpython",
    }
    missing = []
    for name, version in pins.items():
        assert metadata.version(name) == version, (
            f"{name}: the venv has {metadata.version(name)}, pinned {version}"
        )
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate(
                {**environment, "extra": ""}
            ):
                continue
            if metadata_name(requirement.name) not in pins:
                missing.append(f"{name} needs {requirement.name}")

    assert not [h for h in HEAVY if h in pins]
    assert {"uvicorn", "fastapi", "onnxruntime", "numpy", "pydantic", "pyyaml", "boto3"} <= set(pins)
    assert missing == []
