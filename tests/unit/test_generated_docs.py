"""The configuration reference and the OpenAPI document never drift from the code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_documents_are_current():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate_docs.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_openapi_document_states_the_contract_rules():
    spec = json.loads((ROOT / "docs" / "openapi.json").read_text())
    amount = spec["components"]["schemas"]["FraudRequest"]["properties"]["amount"]
    assert amount["minimum"] == 0.01 and amount["maximum"] == 50000
    assert "/predict" in spec["paths"] and "/invocations" in spec["paths"]
