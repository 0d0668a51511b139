"""The pydantic request model generated from a contract.

FastAPI turns it into the OpenAPI document, so every rule (range, categories, pattern, offset on
timestamps) is documented, and a request that breaks one gets a 422 naming the field and the rule.
Online features are not request fields: they are looked up by the entity key.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, create_model

from shipml.contract.schema import Contract, Feature, FieldType

_MAX_OTHER_CATEGORY_LENGTH = 64


def _annotation(feature: Feature) -> Any:
    extra: dict[str, Any] = {"description": feature.description or None}
    if feature.unit:
        extra["json_schema_extra"] = {"unit": feature.unit}
    if feature.type == FieldType.number:
        base: Any = float
        extra.update(ge=feature.min, le=feature.max, allow_inf_nan=False, strict=True)
    elif feature.type == FieldType.integer:
        base = int
        extra.update(ge=feature.min, le=feature.max, strict=True)
    elif feature.type == FieldType.boolean:
        base = StrictBool
    elif feature.type == FieldType.category:
        if feature.unseen == "reject":
            base = Literal[tuple(feature.categories or ())]  # type: ignore[misc]
        else:
            base = str
            extra.update(min_length=1, max_length=_MAX_OTHER_CATEGORY_LENGTH)
            extra["json_schema_extra"] = {
                **extra.get("json_schema_extra", {}),
                "examples": feature.categories,
            }
    elif feature.type == FieldType.timestamp:
        base = AwareDatetime  # ISO 8601 with an offset; a naive time is refused
    else:
        base = str
        extra.update(pattern=feature.pattern, max_length=feature.max_length)
    extra = {k: v for k, v in extra.items() if v is not None}
    return Annotated[base, Field(**extra)]


def _class_name(contract: Contract) -> str:
    return "".join(part.capitalize() for part in contract.model.split("_")) + "Request"


def build_request_model(contract: Contract) -> type[BaseModel]:
    """One request model per contract: request-sourced fields, strict types, unknown keys refused.

    Build it once per process (at app start), not per request.
    """
    fields: dict[str, Any] = {}
    for feature in contract.request_features:
        annotation = _annotation(feature)
        if feature.required:
            fields[feature.name] = (annotation, ...)
        else:
            fields[feature.name] = (annotation | None, feature.default)
    model = create_model(  # type: ignore[call-overload]
        _class_name(contract),
        __config__=ConfigDict(extra="forbid", title=_class_name(contract)),
        __doc__=contract.description or f"A request to the {contract.model} model.",
        **fields,
    )
    return model


__all__ = ["BaseModel", "build_request_model"]
