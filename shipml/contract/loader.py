"""Loading a contract file, with errors that name the file, the field and the rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
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


def load_contract(path: str | Path) -> Contract:
    """Read and validate a contract YAML file; raise `ContractError` naming what is wrong and where."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ContractError(f"{path}: cannot read the contract: {exc.strerror or exc}") from None
    try:
        # libyaml's parser where the wheel has it (a cold start reads the contract): the same safe
        # constructor, several times faster than the pure-Python parser.
        raw = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        raise ContractError(f"{path}: not valid YAML: {exc}") from None
    return parse_contract(raw, source=str(path))
