"""The pydantic request model generated from a contract.

FastAPI turns it into the OpenAPI document, so every rule (range, categories, pattern, offset on
timestamps) is documented, and a request that breaks one gets a 422 naming the field and the rule.
Online and http features are not request fields: they are looked up by the entity key.

Internationalisation: a number feature with `locales` also accepts a string written in one of
them ("1.234,56" for de_DE), read strictly and refused when ambiguous; a number feature with a
`currency` rule is converted to the contract's currency after validation, and a currency the
contract cannot convert is refused with a 422 naming the currency field. Timestamps with any
offset are accepted (and a naive one refused); `normalise_times` turns them to UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    create_model,
    model_validator,
)
from pydantic_core import PydanticCustomError

from shipml.contract.schema import (
    ISO_TIMESTAMP_WITH_OFFSET,
    MAX_OTHER_CATEGORY_LENGTH,
    TIMESTAMP_FORMAT_MESSAGE,
    Contract,
    CurrencyConversion,
    Feature,
    FieldType,
)
from shipml.features.i18n import currency_rate, parse_locale_number

_MAX_OTHER_CATEGORY_LENGTH = MAX_OTHER_CATEGORY_LENGTH
_ISO_TIMESTAMP = re.compile(ISO_TIMESTAMP_WITH_OFFSET)


def _iso_timestamp_text(value: Any) -> Any:
    """Let a datetime or a string in the contract's format through; refuse numbers and other forms."""
    if isinstance(value, datetime) or (isinstance(value, str) and _ISO_TIMESTAMP.match(value)):
        return value
    raise PydanticCustomError("timestamp_format", TIMESTAMP_FORMAT_MESSAGE)


def _read_locale_number(value: Any, *, locales: list[str], integer: bool) -> Any:
    """Strings are read as locale-formatted numbers; anything else goes on to the strict check."""
    if isinstance(value, str):
        return parse_locale_number(value, locales, integer=integer)
    return value


def _convertible(value: str, *, rules: list[CurrencyConversion]) -> str:
    for rule in rules:
        currency_rate(rule, value)  # raises ValueError naming the currency and the accepted ones
    return value


def _annotation(feature: Feature, currency_rules: list[CurrencyConversion]) -> Any:
    extra: dict[str, Any] = {"description": feature.description or None}
    if feature.unit:
        extra["json_schema_extra"] = {"unit": feature.unit}
    validators: list[Any] = []
    if feature.locales:
        integer = feature.type == FieldType.integer
        # The documented input: the number with its range, or a string formatted in an allowed locale.
        as_number = Annotated[int if integer else float, Field(ge=feature.min, le=feature.max)]
        as_text = Annotated[
            str, Field(max_length=64, description=f"formatted in {', '.join(feature.locales)}")
        ]
        validators.append(
            BeforeValidator(
                partial(_read_locale_number, locales=list(feature.locales), integer=integer),
                json_schema_input_type=as_number | as_text,
            )
        )
        extra["json_schema_extra"] = {**extra.get("json_schema_extra", {}), "x-locales": feature.locales}
    if currency_rules:
        validators.append(AfterValidator(partial(_convertible, rules=currency_rules)))
    if feature.type == FieldType.number:
        base: Any = float
        extra.update(ge=feature.min, le=feature.max, allow_inf_nan=False, strict=True)
    elif feature.type == FieldType.integer:
        base = int
        # A locale-read integer arrives as a whole float; lax mode turns it into an int.
        extra.update(ge=feature.min, le=feature.max, strict=not feature.locales)
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
        # The contract's one timestamp format (shared with the batch validator), then a datetime.
        base = AwareDatetime
        validators.insert(0, BeforeValidator(_iso_timestamp_text))
        extra["json_schema_extra"] = {
            **extra.get("json_schema_extra", {}),
            "pattern": ISO_TIMESTAMP_WITH_OFFSET,
        }
    else:
        base = str
        extra.update(pattern=feature.pattern, max_length=feature.max_length)
    extra = {k: v for k, v in extra.items() if v is not None}
    return Annotated[base, Field(**extra), *validators]


def _class_name(contract: Contract) -> str:
    return "".join(part.capitalize() for part in contract.model.split("_")) + "Request"


def build_request_model(contract: Contract) -> type[BaseModel]:
    """One request model per contract: request-sourced fields, strict types, unknown keys refused.

    Build it once per process (at app start), not per request.
    """
    fields: dict[str, Any] = {}
    converted = [f for f in contract.request_features if f.currency is not None]
    for feature in contract.request_features:
        rules = [f.currency for f in converted if f.currency is not None and f.currency.field == feature.name]
        annotation = _annotation(feature, rules)
        if feature.required:
            fields[feature.name] = (annotation, ...)
        else:
            fields[feature.name] = (annotation | None, feature.default)
    validators: dict[str, Any] = {}
    if converted:
        validators["_convert_currencies"] = model_validator(mode="after")(
            partial(_convert_currencies, features=converted)
        )
    model = create_model(  # type: ignore[call-overload]
        _class_name(contract),
        __config__=ConfigDict(extra="forbid", title=_class_name(contract)),
        __doc__=contract.description or f"A request to the {contract.model} model.",
        __validators__=validators or None,
        **fields,
    )
    return model


def _convert_currencies(record: BaseModel, *, features: list[Feature]) -> BaseModel:
    """Express amounts in the contract's currency; the currency field has already refused the rest."""
    for feature in features:
        rule = feature.currency
        amount = getattr(record, feature.name)
        currency = getattr(record, rule.field)  # type: ignore[union-attr]
        if amount is not None and currency is not None:
            # object.__setattr__: no re-validation; the range was checked in the request's currency.
            object.__setattr__(record, feature.name, amount * currency_rate(rule, currency))  # type: ignore[arg-type]
    return record


def normalise_times(record: dict[str, Any], contract: Contract) -> dict[str, Any]:
    """The record with every timestamp feature expressed in UTC (the instant is unchanged)."""
    out = dict(record)
    for feature in contract.request_features:
        value = out.get(feature.name)
        if feature.type == FieldType.timestamp and isinstance(value, datetime):
            out[feature.name] = value.astimezone(UTC)
    return out


__all__ = ["BaseModel", "build_request_model", "normalise_times"]
