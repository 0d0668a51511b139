"""Loading a contract file, with errors that name the file, the field and the rule.

Where start-up time counts (the Lambda bundles), the contract file travels with its JSON rendition
(`write_rendition`, a build output): the document as JSON next to the file, with the SHA-256 of the
file's bytes. `load_contract` reads the rendition instead of parsing YAML when that digest matches
the file, so a cold start never imports the YAML library (about 12 ms). The document goes through
the same validation either way; a stale, foreign or unreadable rendition, or one whose document
does not validate, is ignored and the YAML parsed, so the YAML file stays the source of truth.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from shipml.contract.schema import Contract
from shipml.errors import ContractError


def _where(loc: tuple[Any, ...], raw: Any) -> str:
    """Render a pydantic location, naming features and segments by name instead of index."""
    parts: list[str] = []
    node = raw
    for item in loc:
        if isinstance(item, int) and isinstance(node, list) and 0 <= item < len(node):
            node = node[item]
            name = node.get("name") if isinstance(node, dict) else None
            parts[-1] = f"{parts[-1]}[{item}]" + (f" ({name})" if name else "")
            continue
        parts.append(str(item))
        node = node.get(item) if isinstance(node, dict) else None
    return ".".join(parts) or "contract"


def parse_contract(raw: Any, *, source: str = "<contract>") -> Contract:
    """Validate an already-parsed YAML document into a `Contract`."""
    if not isinstance(raw, dict):
        raise ContractError(f"{source}: a contract is a YAML mapping, got {type(raw).__name__}")
    try:
        return Contract.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown key"
            elif error["type"] == "enum":
                expected = error.get("ctx", {}).get("expected", "")
                message = f"unknown value {error.get('input')!r}; expected {expected}"
            problems.append(f"{_where(error['loc'], raw)}: {message}")
        raise ContractError(f"{source}: invalid contract:\n  " + "\n  ".join(problems)) from None


#: Contracts loaded by this process, by the SHA-256 of their file's bytes. A `Contract` is frozen,
#: so one object serves every load of the same bytes: a model's artifact carries a byte-for-byte
#: copy of the contract file it was trained on, which a server that loaded its own first then
#: checks without parsing it again.
_loaded: dict[str, Contract] = {}
#: The rendition's layout; a file without it (or with another) is not a rendition this code wrote.
RENDITION_FORMAT = 1


def rendition_path(path: str | Path) -> Path:
    """Where the JSON rendition of the contract file `path` lives: `<file name>.json` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def write_rendition(path: str | Path) -> Path | None:
    """Validate the contract file `path`, then write its JSON rendition (see the module docstring).

    None, and nothing written, when JSON cannot carry the document exactly (YAML has dates and
    non-text keys, which JSON has not): the contract then validates to something else from JSON,
    and a cold start parses the YAML instead."""
    path = Path(path)
    data = _read(path)
    document = _parse_yaml(data, path)
    contract = parse_contract(document, source=str(path))  # an invalid contract is refused here
    try:
        rendition = {
            "format": RENDITION_FORMAT,
            "sha256": hashlib.sha256(data).hexdigest(),
            "contract": document,
        }
        text = json.dumps(rendition, sort_keys=True)
    except (TypeError, ValueError):
        return None
    if parse_contract(json.loads(text)["contract"], source=str(path)) != contract:
        return None
    target = rendition_path(path)
    target.write_text(text + "\n", encoding="utf-8")
    return target


def load_contract(path: str | Path) -> Contract:
    """Read and validate a contract YAML file; raise `ContractError` naming what is wrong and where."""
    path = Path(path)
    data = _read(path)
    digest = hashlib.sha256(data).hexdigest()
    contract = _loaded.get(digest)
    if contract is None:
        contract = _from_rendition(path, digest)
        if contract is None:
            contract = parse_contract(_parse_yaml(data, path), source=str(path))
        _loaded[digest] = contract
    return contract


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ContractError(f"{path}: cannot read the contract: {exc.strerror or exc}") from None


def _parse_yaml(data: bytes, path: Path) -> Any:
    import yaml  # here, not at import: a cold start with a rendition never needs it

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContractError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        # libyaml's parser where the wheel has it: the same safe constructor, several times faster
        # than the pure-Python parser.
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        raise ContractError(f"{path}: not valid YAML: {exc}") from None


def _from_rendition(path: Path, digest: str) -> Contract | None:
    """The contract from `path`'s JSON rendition; None when there is none, it renders other bytes,
    or its document does not validate (the YAML, parsed instead, then names what is wrong)."""
    try:
        rendition = json.loads(rendition_path(path).read_bytes())
    except (OSError, ValueError):
        return None
    if (
        not isinstance(rendition, dict)
        or rendition.get("format") != RENDITION_FORMAT
        or rendition.get("sha256") != digest
    ):
        return None
    try:
        return parse_contract(rendition.get("contract"), source=str(path))
    except ContractError:
        return None
