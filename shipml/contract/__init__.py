"""The contract: one YAML file per model, and everything generated from it.

- `load_contract` / `Contract`: the validated schema;
- `build_request_model`: the pydantic request model (every rule in the OpenAPI document);
- `validate_table`: the vectorised validator over Arrow tables (every violation, by row and column);
- `FeatureEncoder`: raw values -> the model's float32 input (one implementation for all paths);
- `Masker`: the PII rules for logs, metrics and capture.

Serving imports this package, so nothing here imports pyarrow at module level.
"""

from shipml.contract.encode import FeatureEncoder, encode_target
from shipml.contract.loader import load_contract, parse_contract
from shipml.contract.masking import Masker
from shipml.contract.request import build_request_model
from shipml.contract.schema import Contract, Feature, FieldType, PiiPolicy, Segment, Source

__all__ = [
    "Contract",
    "Feature",
    "FeatureEncoder",
    "FieldType",
    "Masker",
    "PiiPolicy",
    "Segment",
    "Source",
    "build_request_model",
    "encode_target",
    "load_contract",
    "parse_contract",
]


def validate_table(*args, **kwargs):  # noqa: ANN002, ANN003 - thin lazy re-export, see validate.py
    """Lazy re-export of `shipml.contract.validate.validate_table` (imports pyarrow)."""
    from shipml.contract.validate import validate_table as _validate_table

    return _validate_table(*args, **kwargs)
