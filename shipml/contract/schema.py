"""The contract file's schema: pydantic models for the YAML, with the rules that span fields.

A contract names every field a record may carry (features, ids, keys, PII), how each one is typed
and checked, where it comes from (the request or the online store), how it is masked, and what the
model outputs. Everything else in shipml is generated from a loaded `Contract`.
"""

from __future__ import annotations

import re
import struct
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
# The one timestamp format of every contract, online and in batch: ISO 8601 date and time with
# seconds (a fraction up to microseconds) and an explicit UTC offset ("Z" or +hh:mm).
ISO_TIMESTAMP_WITH_OFFSET = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$"
TIMESTAMP_FORMAT_MESSAGE = "must be an ISO 8601 timestamp with a UTC offset (e.g. 2026-01-31T13:45:00+01:00)"
# Categories with `unseen: other` accept any text of this length, online and in batch.
MAX_OTHER_CATEGORY_LENGTH = 64


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
    http = "http"


#: Windows of an aggregation: a whole number and a unit (m minutes, h hours, d days), e.g. 24h, 30d.
WINDOW_PATTERN = r"^[1-9][0-9]{0,5}[mhd]$"
_WINDOW_SECONDS = {"m": 60, "h": 3600, "d": 86_400}
#: Locales whose number formats the contract may allow (see shipml.features.i18n for the symbols).
KNOWN_LOCALES = (
    "de_AT",
    "de_CH",
    "de_DE",
    "en_GB",
    "en_US",
    "es_ES",
    "fr_CH",
    "fr_FR",
    "it_IT",
    "nl_NL",
    "pl_PL",
    "pt_BR",
    "sv_SE",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Aggregation(_Strict):
    """How an online feature is computed from the entity's event history (one definition, two uses).

    The value for entity `e` at time `t` aggregates the events of `e` (rows keyed by the contract's
    `entity_key`, timed by its `event_time`) with `t - window <= event_time < t`: strictly before
    `t`, so a training row never sees itself or anything later. Materialisation evaluates it at the
    run's `as_of` time; the point-in-time training join at each row's own event time.

    - `count`: how many events (0 when none);
    - `sum`, `mean`, `min`, `max` of a numeric `column` (sum 0, the others missing when none);
    - `days_since_first`: whole days since the entity's first event (no window; missing when none).
    """

    function: Literal["count", "sum", "mean", "min", "max", "days_since_first"]
    column: str | None = None
    window: Annotated[str | None, Field(pattern=WINDOW_PATTERN)] = None

    @model_validator(mode="after")
    def _fits_the_function(self) -> Aggregation:
        needs_column = self.function in ("sum", "mean", "min", "max")
        if needs_column and self.column is None:
            raise ValueError(f"aggregation {self.function} needs a 'column' to aggregate")
        if not needs_column and self.column is not None:
            raise ValueError(f"aggregation {self.function} takes no 'column'")
        if self.function == "days_since_first" and self.window is not None:
            raise ValueError("aggregation days_since_first looks at the whole history; it takes no 'window'")
        return self

    @property
    def window_seconds(self) -> int | None:
        """The window in seconds, or None for the whole history."""
        if self.window is None:
            return None
        return int(self.window[:-1]) * _WINDOW_SECONDS[self.window[-1]]


class CurrencyConversion(_Strict):
    """Amounts in several currencies, converted to one before checks and encoding.

    `field` names the category feature that holds each row's currency code; `rates` gives, per
    currency, how many units of `to` one unit is worth. A currency that is neither `to` nor in
    `rates` is refused (a 422 naming the currency field in a request, a violation in a table).
    """

    field: str
    to: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    rates: dict[Annotated[str, Field(pattern=r"^[A-Z]{3}$")], Annotated[float, Field(gt=0)]] = {}

    def rate(self, currency: str) -> float | None:
        """Units of `to` per unit of `currency`, or None if the contract cannot convert it."""
        if currency == self.to:
            return 1.0
        return self.rates.get(currency)

    @property
    def accepted(self) -> list[str]:
        return [self.to, *sorted(c for c in self.rates if c != self.to)]


class Breaker(_Strict):
    """Circuit breaker of an external source: open after `failures` failed lookups in a row,
    let one trial request through after `reset_s` seconds."""

    failures: Annotated[int, Field(ge=1, le=1000)] = 5
    reset_s: Annotated[float, Field(gt=0, le=3600)] = 30.0


class HttpSource(_Strict):
    """An HTTP API that answers one JSON object per entity key (GET `url` with `{key}` filled in).

    Credentials come from AWS Secrets Manager (`secret`, cached for `secret_ttl_s` and refreshed
    at once when the API answers 401/403, which is what a rotation looks like to a client), sent as
    the `auth_header` header with `auth_scheme` in front. Each attempt has `timeout_ms`; failed
    attempts (timeouts, connection errors, 429 and 5xx) are retried `retries` times with
    exponential backoff from `backoff_ms` and full jitter; a `breaker` stops calling a failing API.
    """

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    url: Annotated[str, Field(pattern=r"^https?://[^\s]+$")]
    secret: str | None = None
    auth_header: str = "Authorization"
    auth_scheme: str = "Bearer"
    secret_ttl_s: Annotated[float, Field(gt=0, le=86_400)] = 300.0
    timeout_ms: Annotated[int, Field(gt=0, le=60_000)] = 200
    retries: Annotated[int, Field(ge=0, le=5)] = 1
    backoff_ms: Annotated[int, Field(ge=0, le=10_000)] = 20
    breaker: Breaker = Breaker()

    @field_validator("url")
    @classmethod
    def _url_has_key(cls, value: str) -> str:
        if "{key}" not in value:
            raise ValueError("url must contain '{key}', where the entity key goes")
        return value


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
    min: Annotated[float | None, Field(allow_inf_nan=False)] = None
    max: Annotated[float | None, Field(allow_inf_nan=False)] = None
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
    # how an online feature is computed from the event history (materialisation and training)
    aggregation: Aggregation | None = None
    # an http feature: which source, and where in its JSON answer (dotted path; default: the name)
    http_source: str | None = None
    response_field: str | None = None
    # internationalisation (number features): locale-formatted strings accepted, e.g. "1.234,56"
    locales: list[str] | None = None
    # amounts in several currencies, converted to one
    currency: CurrencyConversion | None = None

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
        if self.looked_up:
            if self.required is not True:
                raise ValueError(f"an {self.source} feature is looked up, so 'required' does not apply")
            if self.on_missing == "default" and self.default is None:
                raise ValueError("on_missing: default needs a default value")
        if self.aggregation is not None and self.source != Source.online:
            raise ValueError("aggregation applies to online features (source: online)")
        if self.source == Source.http and self.http_source is None:
            raise ValueError(
                "an http feature needs 'http_source', the name of one of the contract's http_sources"
            )
        if self.source != Source.http and (self.http_source is not None or self.response_field is not None):
            raise ValueError("http_source and response_field apply to http features (source: http)")
        if self.locales is not None:
            if not numeric:
                raise ValueError(f"locales apply to number and integer features, not {self.type}")
            unknown = sorted(set(self.locales) - set(KNOWN_LOCALES))
            if unknown or not self.locales:
                raise ValueError(
                    f"locales must be a non-empty list of known locales ({', '.join(KNOWN_LOCALES)}); "
                    f"unknown: {unknown}"
                )
        if self.currency is not None and self.type != FieldType.number:
            raise ValueError(f"currency applies to number features, not {self.type}")
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
    def looked_up(self) -> bool:
        """Whether the value is looked up by the entity key (online store or an http source)."""
        return self.source in (Source.online, Source.http)

    @property
    def may_be_missing(self) -> bool:
        """Whether a record may lack a value: optional fields, and looked-up ones with a default."""
        return not self.required or (self.looked_up and self.on_missing == "default")


def float32_threshold(threshold: float) -> float:
    """`threshold` as a model's float32 scores meet it: its nearest float32, as numpy compares
    float32 scores with a float (NEP 50). Every path that labels a score (the API, the stream,
    batch, replay, evaluation) compares with it, so a score at the threshold gets one label
    everywhere; compared with the float itself, a score equal to a threshold whose float32 rounds
    down (0.7) would be labelled differently."""
    return struct.unpack("<f", struct.pack("<f", threshold))[0]


class Outputs(_Strict):
    score: Annotated[str, Field(pattern=NAME_PATTERN)] = "score"
    label: Annotated[str, Field(pattern=NAME_PATTERN)] = "label"
    threshold: Annotated[float, Field(gt=0, lt=1)] = 0.5

    @property
    def decision_threshold(self) -> float:
        """The threshold every path labels a score with (see `float32_threshold`)."""
        return float32_threshold(self.threshold)


class Serving(_Strict):
    latency_budget_ms: Annotated[int, Field(gt=0)] = 100
    max_batch_rows: Annotated[int, Field(gt=0, le=100_000)] = 500


class Segment(_Strict):
    """A slice for metrics and drift: the values of a category/boolean feature, or numeric bins."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    feature: str
    bins: list[Annotated[float, Field(allow_inf_nan=False)]] | None = None

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
    http_sources: list[HttpSource] = []

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
        online = [f.name for f in self.features if f.looked_up]
        if online and self.entity_key is None:
            raise ValueError(f"online features {online} need an entity_key to be looked up by")
        self._check_aggregations(by_name)
        self._check_http_sources()
        self._check_currencies(by_name)
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

    def _check_aggregations(self, by_name: dict[str, Feature]) -> None:
        for feature in self.features:
            agg = feature.aggregation
            if agg is None:
                continue
            if self.event_time is None:
                raise ValueError(f"feature {feature.name!r} has an aggregation, which needs an event_time")
            if agg.column is not None:
                column = by_name.get(agg.column)
                if column is None or not column.is_numeric or column.source != Source.request:
                    raise ValueError(
                        f"feature {feature.name!r}: aggregation column {agg.column!r} must name a "
                        "numeric request feature"
                    )
            if agg.function in ("count", "days_since_first") and feature.type != FieldType.integer:
                raise ValueError(f"feature {feature.name!r}: aggregation {agg.function} gives an integer")
            if agg.function in ("sum", "mean", "min", "max") and not feature.is_numeric:
                raise ValueError(f"feature {feature.name!r}: aggregation {agg.function} gives a number")

    def _check_http_sources(self) -> None:
        names = [s.name for s in self.http_sources]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate http_sources {duplicates}")
        for feature in self.features:
            if feature.http_source is not None and feature.http_source not in names:
                raise ValueError(
                    f"feature {feature.name!r}: http_source {feature.http_source!r} "
                    "names no http_sources entry"
                )

    def _check_currencies(self, by_name: dict[str, Feature]) -> None:
        for feature in self.features:
            rule = feature.currency
            if rule is None:
                continue
            field = by_name.get(rule.field)
            if field is None or field.type != FieldType.category or field.source != Source.request:
                raise ValueError(
                    f"feature {feature.name!r}: currency field {rule.field!r} "
                    "must name a category request feature"
                )
            if feature.source != Source.request:
                raise ValueError(f"feature {feature.name!r}: currency conversion applies to request features")

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
    def http_features(self) -> list[Feature]:
        return [f for f in self.features if f.source == Source.http]

    @property
    def aggregated_features(self) -> list[Feature]:
        """Online features with an aggregation: what materialisation and the training join compute."""
        return [f for f in self.features if f.aggregation is not None]

    def http_source(self, name: str) -> HttpSource:
        for source in self.http_sources:
            if source.name == name:
                return source
        raise KeyError(name)

    @property
    def pii_features(self) -> list[Feature]:
        return [f for f in self.features if f.pii]

    @property
    def monitored_features(self) -> list[Feature]:
        """Features whose distribution is baselined and watched for drift: the model inputs."""
        return self.input_features
