"""The stream consumer's bundle, built by stacks/lambda_bundle.py as synth builds it, run under CPython 3.12.

The interpreter runs isolated (`-I -S`) with only the bundle on sys.path, as Lambda's /var/task: a
missing dependency, or an import of something the bundle does not carry (FastAPI, pyarrow), fails
here. The first build downloads the pinned wheels from PyPI; later runs reuse `.shipml/build/`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from shipml.backends import LIVE, local_backends
from stacks import lambda_bundle
from stacks.stream_construct import STREAM_REQUIREMENTS, STREAM_SOURCES
from tests.builders import RawData, build_host_bundle, bundle_test_marks, kinesis_event, run_in_bundle
from tests.conftest import valid_request

CONTRACT = "examples/fraud/contract.yaml"

# Runs inside the bundle's interpreter. The local backend captures to Parquet through pyarrow, which
# the bundle rightly lacks (on Lambda capture goes to Firehose): a fake of our CaptureSink stands in.
_DRIVER = r"""
import json, sys, sysconfig
bundle, event = sys.argv[1], json.loads(sys.argv[2])
sys.path.insert(0, bundle)
captured = []
import shipml.backends.local as local
from shipml.backends.ports import CaptureSink

class MemoryCaptureSink(CaptureSink):
    def __init__(self, *args, **kwargs):
        pass

    def write(self, records):
        captured.extend(records)

local.ParquetCaptureSink = MemoryCaptureSink
from functions.stream.handler import handler

class LambdaContext:
    function_name = "shipml-fraud-dev-stream"
    function_version = "$LATEST"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:shipml-fraud-dev-stream"
    aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e812345678"

response = handler(event, LambdaContext())
stdlib = sysconfig.get_paths()["stdlib"]
print(json.dumps({
    "python": list(sys.version_info[:2]),
    "response": response,
    "heavy_imported": [
        n for n in ("torch", "pandas", "sklearn", "pyarrow", "fastapi", "starlette") if n in sys.modules
    ],
    "imported_from_outside": sorted(
        name for name, module in list(sys.modules.items())
        if getattr(module, "__file__", None) and not module.__file__.startswith((bundle, stdlib))
    ),
    "captured": len(captured),
}))
"""


pytestmark = bundle_test_marks()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> tuple[Path, lambda_bundle.BundleReport]:
    out = tmp_path_factory.mktemp("stream-bundle")
    report = build_host_bundle(
        out, contract_path=CONTRACT, budget_mb=150, requirements=STREAM_REQUIREMENTS, sources=STREAM_SOURCES
    )
    return out, report


def test_the_bundle_is_lean_and_holds_the_stream_handler(bundle):
    folder, report = bundle

    print(f"stream bundle: {report.bundle_mb:.1f} MB unzipped")
    assert lambda_bundle.heavy_packages(folder) == []
    assert (folder / "functions" / "stream" / "handler.py").is_file() and (folder / CONTRACT).is_file()
    assert not (folder / "fastapi").exists() and not (folder / "mangum").exists()
    assert not (folder / "functions" / "inference").exists()


def test_the_handler_settles_a_kinesis_batch_under_python_312_with_only_the_bundle(
    bundle, tmp_path, make_artifact
):
    folder, _ = bundle
    root = tmp_path / "shipml"
    backends = local_backends(root)
    backends.registry.register("fraud", make_artifact())
    backends.registry.approve("fraud", 1)
    backends.registry.set_alias("fraud", LIVE, 1)
    event = kinesis_event(
        [valid_request(transaction_id="T1"), RawData("@@"), valid_request(transaction_id="T2")]
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "SHIPML_BACKEND": "local",
        "SHIPML_ROOT": str(root),
        "SHIPML_CONTRACT": CONTRACT,
        "SHIPML_STREAM_SOURCE": "kinesis",
        "SHIPML_STREAM_OUTPUT": "jsonl",
        "SHIPML_STREAM_OUTPUT_FILE": str(tmp_path / "decisions.jsonl"),
        "LAMBDA_TASK_ROOT": str(folder),
    }

    result = run_in_bundle(folder, _DRIVER, json.dumps(event), env=env)

    assert result["python"] == [3, 12]
    assert result["response"] == {"batchItemFailures": []}
    assert result["heavy_imported"] == [] and result["imported_from_outside"] == []
    assert result["captured"] == 2
    decisions = [json.loads(line) for line in (tmp_path / "decisions.jsonl").read_text().splitlines()]
    assert [d["transaction_id"] for d in decisions] == ["T1", "T2"]
    letters = (root / "stream" / "dead-letters.jsonl").read_text().splitlines()
    assert [json.loads(line)["reason"] for line in letters] == ["undecodable"]
