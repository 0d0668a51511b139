"""The contract file's schema: pydantic models for the YAML, with the rules that span fields.

A contract names every field a record may carry (features, ids, keys, PII), how each one is typed
and checked, where it comes from (the request or the online store), how it is masked, and what the
model outputs. Everything else in shipml is generated from a loaded `Contract`.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"


class FieldType(StrEnum):
    number = "number"
    integer = "integer"
    boolean = "boolean"
    category = "category"
    timestamp = "timestamp"
    text = "text"


class PiiPolicy(StrEnum):
    keep = "keep"
    mask = "mask"
    hash = "hash"
    drop = "drop"


class Source(StrEnum):
    request = "request"
    online = "online"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Feature(_Strict):
    """One field of a record. `input: false` fields (ids, keys, PII) are checked but not encoded."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    type: FieldType
    description: str = ""
    unit: str | None = None
    required: bool = True
    default: Any = None
    input: bool = True
    # number / integer
    min: float | None = None
    max: float | None = None
    transform: Literal["none", "log1p"] = "none"
    # category
    categories: list[str] | None = None
    unseen: Literal["reject", "other"] = "reject"
    # text
    pattern: str | None = None
    max_length: Annotated[int, Field(gt=0)] = 256
    # PII
    pii: bool = False
    pii_policy: PiiPolicy | None = None
    # where the value comes from
    source: Source = Source.request
    on_missing: Literal["default", "reject"] = "reject"

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"pattern is not a valid regular expression: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _rules_fit_the_type(self) -> Feature:
        numeric = self.type in (FieldType.number, FieldType.integer)
        if not numeric and (self.min is not None or self.max is not None):
            raise ValueError(f"min/max apply to number and integer features, not {self.type}")
        if not numeric and self.transform != "none":
            raise ValueError(f"transform applies to number and integer features, not {self.type}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        if self.transform == "log1p" and (self.min is None or self.min < 0):
            raise ValueError("transform log1p needs min >= 0")
        if self.type == FieldType.category:
            if not self.categories:
                raise ValueError("a category feature needs a non-empty 'categories' list")
            if len(set(self.categories)) != len(self.categories):
                raise ValueError("categories contain duplicates")
        elif self.categories is not None:
            raise ValueError(f"categories apply to category features, not {self.type}")
        if self.pattern is not None and self.type != FieldType.text:
            raise ValueError(f"pattern applies to text features, not {self.type}")
        if self.type == FieldType.text and self.input:
            raise ValueError("a text feature cannot be a model input (set input: false)")
        if self.pii and self.pii_policy is None:
            raise ValueError("a PII field needs a pii_policy (keep, mask, hash or drop)")
        if not self.pii and self.pii_policy is not None:
            raise ValueError("pii_policy is set but pii is false")
        if self.source == Source.online:
            if self.required is not True:
                raise ValueError("an online feature is looked up, so 'required' does not apply")
            if self.on_missing == "default" and self.default is None:
                raise ValueError("on_missing: default needs a default value")
        if self.default is not None:
            self._check_default()
        return self

    def _check_default(self) -> None:
        value = self.default
        if self.type in (FieldType.number, FieldType.integer):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"default {value!r} is not a {self.type}")
            if self.type == FieldType.integer and int(value) != value:
                raise ValueError(f"default {value!r} is not an integer")
            if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
                raise ValueError(f"default {value!r} is outside [{self.min}, {self.max}]")
        elif self.type == FieldType.boolean and not isinstance(value, bool):
            raise ValueError(f"default {value!r} is not a boolean")
        elif self.type == FieldType.category and value not in (self.categories or []):
            raise ValueError(f"default {value!r} is not one of the categories")
        elif self.type in (FieldType.text, FieldType.timestamp):
            raise ValueError(f"a default is not supported for {self.type} features")

    @property
    def is_numeric(self) -> bool:
        return self.type in (FieldType.number, FieldType.integer)

    @property
    def from_request(self) -> bool:
        return self.source == Source.request

    @property
    def may_be_missing(self) -> bool:
        """Whether a record may lack a value: optional fields, and online ones that fall back to a default."""
        return not self.required or (self.source == Source.online and self.on_missing == "default")


class Outputs(_Strict):
    score: Annotated[str, Field(pattern=NAME_PATTERN)] = "score"
    label: Annotated[str, Field(pattern=NAME_PATTERN)] = "label"
    threshold: Annotated[float, Field(gt=0, lt=1)] = 0.5


class Serving(_Strict):
    latency_budget_ms: Annotated[int, Field(gt=0)] = 100
    max_batch_rows: Annotated[int, Field(gt=0, le=100_000)] = 500


class Segment(_Strict):
    """A slice for metrics and drift: the values of a category/boolean feature, or numeric bins."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    feature: str
    bins: list[float] | None = None

    @field_validator("bins")
    @classmethod
    def _bins_ascend(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and (
            len(value) < 2 or any(b >= a for a, b in zip(value[1:], value, strict=False))
        ):
            raise ValueError("bins need at least two strictly ascending edges")
        return value


class Drift(_Strict):
    psi_threshold: Annotated[float, Field(gt=0)] = 0.2
    js_threshold: Annotated[float, Field(gt=0, le=1)] = 0.1
    missing_rate_delta: Annotated[float, Field(gt=0, le=1)] = 0.05
    min_samples: Annotated[int, Field(gt=0)] = 500


class Contract(_Strict):
    """A model's contract: the single source of truth for its inputs, outputs and checks."""

    model: Annotated[str, Field(pattern=NAME_PATTERN)]
    description: str = ""
    version: Annotated[int, Field(ge=1)] = 1
    id: str
    entity_key: str | None = None
    event_time: str | None = None
    target: Annotated[str, Field(pattern=NAME_PATTERN)]
    outputs: Outputs = Outputs()
    serving: Serving = Serving()
    features: Annotated[list[Feature], Field(min_length=1)]
    segments: list[Segment] = []
    drift: Drift = Drift()

    @model_validator(mode="after")
    def _names_resolve(self) -> Contract:
        seen: set[str] = set()
        for feature in self.features:
            if feature.name in seen:
                raise ValueError(f"duplicate feature {feature.name!r}")
            seen.add(feature.name)
        by_name = {f.name: f for f in self.features}

        def must_be(field: str, name: str | None, *types: FieldType) -> None:
            if name is None:
                return
            if name not in by_name:
                raise ValueError(f"{field} {name!r} names no feature")
            if types and by_name[name].type not in types:
                allowed = ", ".join(t.value for t in types)
                raise ValueError(f"{field} {name!r} must be a feature of type {allowed}")

        must_be("id", self.id, FieldType.text, FieldType.integer)
        must_be("entity_key", self.entity_key, FieldType.text, FieldType.integer)
        must_be("event_time", self.event_time, FieldType.timestamp)
        if self.target in by_name:
            raise ValueError(f"target {self.target!r} must not also be a feature")
        for name in (self.id, self.entity_key):
            if name is not None and by_name[name].input:
                raise ValueError(f"{name!r} is an id or key and must have input: false")
        online = [f.name for f in self.features if f.source == Source.online]
        if online and self.entity_key is None:
            raise ValueError(f"online features {online} need an entity_key to be looked up by")
        if not any(f.input for f in self.features):
            raise ValueError("no feature has input: true, so the model would have no inputs")
        seg_names: set[str] = set()
        for segment in self.segments:
            if segment.name in seg_names:
                raise ValueError(f"duplicate segment {segment.name!r}")
            seg_names.add(segment.name)
            feature = by_name.get(segment.feature)
            if feature is None:
                raise ValueError(f"segment {segment.name!r} names no feature ({segment.feature!r})")
            if segment.bins is None and feature.type not in (FieldType.category, FieldType.boolean):
                raise ValueError(
                    f"segment {segment.name!r}: feature {feature.name!r} is {feature.type}; "
                    "give 'bins' to slice a numeric feature"
                )
            if segment.bins is not None and not feature.is_numeric:
                raise ValueError(f"segment {segment.name!r}: bins apply to numeric features only")
        if {self.outputs.score, self.outputs.label} & set(by_name):
            raise ValueError("output names must differ from feature names")
        return self

    # Convenience views, computed from the fields above.
    def feature(self, name: str) -> Feature:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(name)

    @property
    def input_features(self) -> list[Feature]:
        return [f for f in self.features if f.input]

    @property
    def request_features(self) -> list[Feature]:
        return [f for f in self.features if f.source == Source.request]

    @property
    def online_features(self) -> list[Feature]:
        return [f for f in self.features if f.source == Source.online]

    @property
    def pii_features(self) -> list[Feature]:
        return [f for f in self.features if f.pii]

    @property
    def monitored_features(self) -> list[Feature]:
        """Features whose distribution is baselined and watched for drift: the model inputs."""
        return self.input_features
