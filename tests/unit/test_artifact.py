"""The checksummed artifact: round trip, and refusal of anything corrupt, missing or added."""

from __future__ import annotations

import json

import pytest

from shipml.artifact import (
    CARD_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    ModelCard,
    load_artifact,
    pack,
    unpack,
    write_artifact,
)
from shipml.contract import load_contract
from shipml.errors import ArtifactError
from tests.conftest import artifact_for


def test_round_trip(make_artifact, contract):
    path = make_artifact(auc=0.87)
    loaded = load_artifact(path)
    assert loaded.card.metrics["overall"]["auc"] == 0.87
    assert loaded.contract == contract
    assert loaded.model_path.read_bytes()[:2]  # a real ONNX file
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    assert set(manifest["files"]) == {MODEL_FILE, CARD_FILE, "contract.yaml"}
    assert len(loaded.digest) == 64


def test_the_contract_is_copied_byte_for_byte_and_its_parse_shared(contract_path, tmp_path):
    """Line endings included: a server that loaded the same contract file shares its parse."""
    crlf = tmp_path / "contract.yaml"
    crlf.write_bytes(contract_path.read_bytes().replace(b"\n", b"\r\n"))
    served = load_contract(crlf)

    path = artifact_for(crlf, tmp_path / "artifact")

    assert (path / "contract.yaml").read_bytes() == crlf.read_bytes()
    assert load_artifact(path).contract is served


def test_a_flipped_byte_in_the_model_is_refused(make_artifact):
    path = make_artifact()
    data = bytearray((path / MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (path / MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum mismatch for model.onnx"):
        load_artifact(path)


def test_an_edited_card_is_refused(make_artifact):
    path = make_artifact()
    card = json.loads((path / CARD_FILE).read_text())
    card["metrics"]["overall"]["auc"] = 0.99
    (path / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ArtifactError, match="checksum mismatch for card.json"):
        load_artifact(path)


@pytest.mark.parametrize("victim", [MODEL_FILE, MANIFEST_FILE])
def test_a_missing_file_is_refused(make_artifact, victim):
    path = make_artifact()
    (path / victim).unlink()
    with pytest.raises(ArtifactError, match=f"{victim} is missing"):
        load_artifact(path)


def test_an_extra_file_is_refused(make_artifact):
    path = make_artifact()
    (path / "backdoor.py").write_text("print('hi')")
    with pytest.raises(ArtifactError, match="unexpected files"):
        load_artifact(path)


def test_no_artifact_folder(tmp_path):
    with pytest.raises(ArtifactError, match="no artifact folder"):
        load_artifact(tmp_path / "nothing")


def test_pack_and_unpack(make_artifact, tmp_path):
    path = make_artifact()
    restored = unpack(pack(path), tmp_path / "restored")
    assert restored.digest == load_artifact(path).digest


def test_unpack_refuses_a_truncated_archive_and_leaves_nothing(make_artifact, tmp_path):
    data = pack(make_artifact())
    with pytest.raises(ArtifactError, match="cannot be read"):
        unpack(data[: len(data) // 2], tmp_path / "restored")
    assert not (tmp_path / "restored").exists()


def test_write_is_atomic(make_artifact, contract_path, tmp_path, monkeypatch):
    path = make_artifact()
    card = load_artifact(path).card
    with pytest.raises(FileExistsError):
        write_artifact(path, onnx_bytes=b"x", contract_path=contract_path, card=card)

    def explode(self: ModelCard, **kwargs) -> str:
        raise RuntimeError("disk full")

    monkeypatch.setattr(ModelCard, "model_dump_json", explode)
    target = tmp_path / "half"
    with pytest.raises(RuntimeError):
        write_artifact(target, onnx_bytes=b"x", contract_path=contract_path, card=card)
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".half")] == []
