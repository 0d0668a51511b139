"""The model artifact: `model.onnx`, the contract it was trained on, `card.json`, and a manifest.

The manifest lists the SHA-256 of every other file. `load_artifact` verifies each checksum, and
that no file is missing or extra, before anything uses the model; a mismatch is an
`ArtifactError` naming the file. Serving needs this module, numpy and onnxruntime only.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shipml import atomic
from shipml.contract import Contract, load_contract
from shipml.errors import ArtifactError, ContractError

MODEL_FILE = "model.onnx"
CONTRACT_FILE = "contract.yaml"
CARD_FILE = "card.json"
MANIFEST_FILE = "manifest.json"
PAYLOAD_FILES = (MODEL_FILE, CONTRACT_FILE, CARD_FILE)


class ModelCard(BaseModel):
    """What a model is, how it was made, how good it was, and the baseline its drift is measured against."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_name: str
    created_at: datetime
    data_fingerprint: str
    code_version: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    baseline: dict[str, Any] = Field(default_factory=dict)
    input_name: str
    feature_names: list[str]
    threshold: float
    framework: str = ""
    onnx_opset: int | None = None


def artifact_key(model: str, version: int | str) -> str:
    """Where a version's packed artifact lives in a blob store (local folder or S3 bucket)."""
    return f"models/{model}/{version}/model.tar.gz"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_artifact(
    dest_dir: str | Path, *, onnx_bytes: bytes, contract_path: str | Path, card: ModelCard
) -> Path:
    """Write a complete artifact folder at `dest_dir` atomically (it must not exist yet)."""
    dest = Path(dest_dir)
    # Byte for byte: a server that loaded the same file then shares its parse (`load_contract`).
    contract_bytes = Path(contract_path).read_bytes()
    with atomic.atomic_dir(dest) as tmp:
        (tmp / MODEL_FILE).write_bytes(onnx_bytes)
        (tmp / CONTRACT_FILE).write_bytes(contract_bytes)
        (tmp / CARD_FILE).write_text(card.model_dump_json(indent=2), encoding="utf-8")
        manifest = {"algorithm": "sha256", "files": {name: sha256_file(tmp / name) for name in PAYLOAD_FILES}}
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
    return dest


@dataclass(frozen=True)
class Artifact:
    """A verified artifact folder."""

    path: Path
    card: ModelCard
    contract: Contract
    digest: str  # SHA-256 of the manifest: identifies the artifact's exact content

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE


def manifest_digest(path: str | Path) -> str:
    return sha256_file(Path(path) / MANIFEST_FILE)


def verify_artifact(path: str | Path) -> str:
    """Check the manifest against the files; return the manifest's digest or raise `ArtifactError`."""
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"{path}: no artifact folder here")
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8"))
        expected: dict[str, str] = manifest["files"]
    except FileNotFoundError:
        raise ArtifactError(f"{path}: {MANIFEST_FILE} is missing") from None
    except (ValueError, KeyError, TypeError):
        raise ArtifactError(f"{path}: {MANIFEST_FILE} is not a valid manifest") from None
    if set(expected) != set(PAYLOAD_FILES):
        raise ArtifactError(f"{path}: the manifest lists {sorted(expected)}, expected {list(PAYLOAD_FILES)}")
    extra = sorted(p.name for p in path.iterdir() if p.name not in (*PAYLOAD_FILES, MANIFEST_FILE))
    if extra:
        raise ArtifactError(f"{path}: unexpected files in the artifact: {extra}")
    for name, checksum in expected.items():
        file = path / name
        if not file.is_file():
            raise ArtifactError(f"{path}: {name} is missing")
        actual = sha256_file(file)
        if actual != checksum:
            raise ArtifactError(
                f"{path}: checksum mismatch for {name} (expected {checksum[:12]}..., got {actual[:12]}...): "
                "the artifact is corrupt or was modified"
            )
    return manifest_digest(path)


def load_artifact(path: str | Path) -> Artifact:
    """Verify and open an artifact folder; raise `ArtifactError` on any mismatch."""
    path = Path(path)
    digest = verify_artifact(path)
    try:
        card = ModelCard.model_validate_json((path / CARD_FILE).read_text(encoding="utf-8"))
    except ValidationError as exc:
        raise ArtifactError(f"{path}: {CARD_FILE} is invalid: {exc.errors()[0]['msg']}") from None
    try:
        contract = load_contract(path / CONTRACT_FILE)
    except ContractError as exc:
        raise ArtifactError(f"{path}: the bundled contract is invalid: {exc}") from None
    return Artifact(path=path, card=card, contract=contract, digest=digest)


def pack(path: str | Path) -> bytes:
    """The artifact as a tar.gz (the form it takes in S3 and in SageMaker's ModelDataUrl)."""
    path = Path(path)
    verify_artifact(path)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in (*PAYLOAD_FILES, MANIFEST_FILE):
            tar.add(path / name, arcname=name)
    return buffer.getvalue()


def unpack(data: bytes, dest_dir: str | Path) -> Artifact:
    """Extract a packed artifact into `dest_dir` atomically and verify it."""
    dest = Path(dest_dir)
    allowed = {*PAYLOAD_FILES, MANIFEST_FILE}
    try:
        with (
            atomic.atomic_dir(dest, replace=True) as tmp,
            tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar,
        ):
            for member in tar.getmembers():
                if member.name not in allowed or not member.isfile():
                    raise ArtifactError(f"unexpected entry {member.name!r} in the artifact archive")
                tar.extract(member, tmp, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ArtifactError(f"the artifact archive cannot be read: {exc}") from None
    return load_artifact(dest)
