"""External feature sources over HTTP: credentials from Secrets Manager, timeouts, retries, a breaker.

A contract names an `http_sources` entry (URL with `{key}`, secret, timeout, retries, breaker)
and the features that come from it (`source: http`, `http_source`, `response_field`). At serving
time `HttpFeatureSource.lookup(keys)` calls the API once per distinct key and returns
`{key: {feature: value}}`; a key the API does not know (404) or a field its answer lacks is
simply absent, and the contract's `on_missing` applies to it, as for the online store.

The lookup raises `FeatureSourceUnavailable`, and the caller applies each feature's fallback
policy (`apply_http_features` does exactly what the predictor does for the online store), when:
- an attempt times out, the connection fails, or the API answers 429 or 5xx, after the retries
  (exponential backoff with full jitter, bounded by `retries` and by the lookup's deadline);
- the API answers garbage: not JSON, not an object, a value of the wrong type or outside the
  contract's range or categories. Garbage is never passed to the model, and is not retried;
- the circuit breaker is open: after `breaker.failures` failed lookups in a row no request is
  made for `breaker.reset_s` seconds, then one trial lookup decides whether it closes again.

Credentials: the secret's value (a plain string, or JSON with a `token` or `api_key` field) is
cached for `secret_ttl_s`; a 401 or 403 drops the cache and retries once with a fresh value,
which is how a rotated secret is picked up without waiting for the TTL.

Standard library only (urllib): this runs inside the serving Lambda.
"""

from __future__ import annotations

import json
import math
import random
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from shipml.contract.schema import Contract, Feature, FieldType, HttpSource
from shipml.errors import FeatureSourceUnavailable, OnlineFeatureError

MAX_RESPONSE_BYTES = 65_536
_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


# --------------------------------------------------------------------------------- credentials


class Credentials(Protocol):
    def get(self) -> str: ...

    def invalidate(self) -> None: ...


class SecretsManagerCredentials:
    """A Secrets Manager secret, cached for `ttl_s` and refetched on `invalidate()` (rotation)."""

    def __init__(
        self,
        client: Any,
        secret_id: str,
        *,
        ttl_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.secret_id = secret_id
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._value: str | None = None
        self._fetched_at = -math.inf
        self.fetches = 0

    def get(self) -> str:
        with self._lock:
            if self._value is None or self._clock() - self._fetched_at >= self.ttl_s:
                self._value = self._fetch()
                self._fetched_at = self._clock()
            return self._value

    def invalidate(self) -> None:
        with self._lock:
            self._value = None

    def _fetch(self) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            secret = self.client.get_secret_value(SecretId=self.secret_id).get("SecretString")
        except (BotoCoreError, ClientError) as exc:
            raise FeatureSourceUnavailable(f"cannot read the secret {self.secret_id!r}: {exc}") from None
        self.fetches += 1
        if not secret:
            raise FeatureSourceUnavailable(f"the secret {self.secret_id!r} has no string value")
        try:
            parsed = json.loads(secret)
        except ValueError:
            return secret
        if isinstance(parsed, dict):
            for field in ("token", "api_key"):
                if isinstance(parsed.get(field), str):
                    return parsed[field]
            raise FeatureSourceUnavailable(f"the secret {self.secret_id!r} has no 'token' or 'api_key' field")
        return secret


# ------------------------------------------------------------------------------------ breaker


class CircuitBreaker:
    """Closed -> open after `failures` failures in a row -> half-open after `reset_s` (one trial)."""

    def __init__(self, failures: int, reset_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.reset_s = reset_s
        self._clock = clock
        self._lock = threading.Lock()
        self._consecutive = 0
        self._opened_at: float | None = None
        self._trial = False

    @property
    def state(self) -> str:
        with self._lock:
            if self._opened_at is None:
                return "closed"
            return "half_open" if self._clock() - self._opened_at >= self.reset_s else "open"

    def allow(self) -> bool:
        """Whether a call may go out now (in half-open state, only one trial at a time)."""
        with self._lock:
            if self._opened_at is None:
                return True
            if self._clock() - self._opened_at < self.reset_s or self._trial:
                return False
            self._trial = True
            return True

    def record_success(self) -> None:
        with self._lock:
            self._consecutive = 0
            self._opened_at = None
            self._trial = False

    def record_failure(self) -> None:
        with self._lock:
            self._consecutive += 1
            if self._trial or self._consecutive >= self.failures:
                self._opened_at = self._clock()
            self._trial = False


# ---------------------------------------------------------------------------------- transport


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


class _Transient(Exception):
    """An attempt failed in a way that another attempt may fix."""


def urllib_get(url: str, headers: Mapping[str, str], timeout_s: float) -> Answer:
    """GET with a socket timeout (connect and each read); the body is capped at 64 KiB."""
    request = urllib.request.Request(url, headers=dict(headers), method="GET")  # noqa: S310 - http(s) only
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            return Answer(response.status, response.read(MAX_RESPONSE_BYTES + 1))
    except urllib.error.HTTPError as exc:
        body = exc.read(MAX_RESPONSE_BYTES + 1) if exc.fp is not None else b""
        return Answer(exc.code, body)
    except TimeoutError as exc:
        raise _Transient(f"timed out after {timeout_s * 1000:.0f} ms") from exc
    except urllib.error.URLError as exc:
        raise _Transient(f"cannot connect: {exc.reason}") from exc
    except (ConnectionError, OSError) as exc:
        raise _Transient(f"connection failed: {exc}") from exc


# ------------------------------------------------------------------------------------- source


def _check_value(feature: Feature, value: Any) -> Any:
    """The value if it fits the contract, else raise ValueError (garbage)."""
    kind = feature.type
    if kind in (FieldType.number, FieldType.integer):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError("is not a finite number")
        if kind == FieldType.integer and value != int(value):
            raise ValueError("is not a whole number")
        if (feature.min is not None and value < feature.min) or (
            feature.max is not None and value > feature.max
        ):
            raise ValueError(f"is outside [{feature.min}, {feature.max}]")
        return int(value) if kind == FieldType.integer else float(value)
    if kind == FieldType.boolean:
        if not isinstance(value, bool):
            raise ValueError("is not a boolean")
        return value
    if not isinstance(value, str):
        raise ValueError("is not a string")
    if kind == FieldType.category and feature.unseen == "reject" and value not in (feature.categories or []):
        raise ValueError("is not one of the categories")
    if kind == FieldType.text and (
        len(value) > feature.max_length or (feature.pattern and re.search(feature.pattern, value) is None)
    ):
        raise ValueError("does not match the contract's pattern or length")
    return value


def _field(document: Mapping[str, Any], path: str) -> Any:
    node: Any = document
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


class HttpFeatureSource:
    """One external API from the contract, for the features that name it.

    Thread-safe; build one per source at cold start and keep it (the breaker and the secret cache
    live in it). `transport`, `clock`, `sleep` and `jitter` are injectable for tests.
    """

    def __init__(
        self,
        spec: HttpSource,
        features: Sequence[Feature],
        *,
        credentials: Credentials | None = None,
        transport: Callable[[str, Mapping[str, str], float], Answer] = urllib_get,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
        max_concurrency: int = 8,
    ) -> None:
        if spec.secret is not None and credentials is None:
            raise ValueError(f"http source {spec.name!r} needs credentials for its secret {spec.secret!r}")
        self.spec = spec
        self.features = list(features)
        self.credentials = credentials
        self.breaker = CircuitBreaker(spec.breaker.failures, spec.breaker.reset_s, clock=clock)
        self._transport = transport
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self._max_concurrency = max_concurrency
        self.requests = 0  # attempts made, for tests and metrics

    @property
    def name(self) -> str:
        return self.spec.name

    def lookup(self, keys: Sequence[str], *, deadline_s: float | None = None) -> dict[str, dict[str, Any]]:
        """`{key: {feature: value}}` for the keys the API knows; raise `FeatureSourceUnavailable`.

        `deadline_s` bounds the whole lookup (default: what the retries can take at most).
        """
        unique = list(dict.fromkeys(str(k) for k in keys))
        if not unique:
            return {}
        if not self.breaker.allow():
            raise FeatureSourceUnavailable(f"http source {self.name!r}: circuit breaker open")
        spec = self.spec
        budget = spec.timeout_ms / 1000 * (spec.retries + 1) + spec.backoff_ms / 1000 * (
            2 ** (spec.retries + 1)
        )
        deadline = self._clock() + (deadline_s if deadline_s is not None else budget)
        try:
            if len(unique) == 1 or self._max_concurrency <= 1:
                answers = [self._fetch(key, deadline) for key in unique]
            else:
                with ThreadPoolExecutor(max_workers=min(self._max_concurrency, len(unique))) as pool:
                    answers = list(pool.map(lambda k: self._fetch(k, deadline), unique))
        except Exception:
            # Any failure (unexpected ones too) counts, so that a half-open trial always ends.
            self.breaker.record_failure()
            raise
        self.breaker.record_success()
        return {key: values for key, values in zip(unique, answers, strict=True) if values is not None}

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "shipml"}
        if self.credentials is not None:
            token = self.credentials.get()
            headers[self.spec.auth_header] = f"{self.spec.auth_scheme} {token}".strip()
        return headers

    def _fetch(self, key: str, deadline: float) -> dict[str, Any] | None:
        spec = self.spec
        url = spec.url.replace("{key}", urllib.parse.quote(key, safe=""))
        refreshed = False
        attempt = 0
        last = "no attempt made"
        while True:
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise FeatureSourceUnavailable(f"http source {self.name!r}: deadline passed ({last})")
            self.requests += 1
            try:
                answer = self._transport(url, self._headers(), min(spec.timeout_ms / 1000, remaining))
            except _Transient as exc:
                last = str(exc)
            else:
                if answer.status in (401, 403) and self.credentials is not None and not refreshed:
                    # The secret may have been rotated: fetch it again, once, and retry at once.
                    refreshed = True
                    self.credentials.invalidate()
                    continue
                if answer.status == 404:
                    return None
                if answer.status == 200:
                    return self._parse(answer.body)
                last = f"HTTP {answer.status}"
                if answer.status not in _RETRYABLE_STATUS:
                    raise FeatureSourceUnavailable(f"http source {self.name!r}: answered {last}")
            if attempt >= spec.retries:
                raise FeatureSourceUnavailable(
                    f"http source {self.name!r}: {last}, after {attempt + 1} attempt(s)"
                )
            delay = min(spec.backoff_ms / 1000 * (2**attempt), 5.0) * self._jitter()
            attempt += 1
            if self._clock() + delay >= deadline:
                raise FeatureSourceUnavailable(f"http source {self.name!r}: {last}; no time left to retry")
            self._sleep(delay)

    def _parse(self, body: bytes) -> dict[str, Any]:
        """The features from a 200 answer; garbage raises FeatureSourceUnavailable."""
        if len(body) > MAX_RESPONSE_BYTES:
            raise FeatureSourceUnavailable(
                f"http source {self.name!r}: answer larger than {MAX_RESPONSE_BYTES} bytes"
            )
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise FeatureSourceUnavailable(f"http source {self.name!r}: the answer is not JSON") from None
        if not isinstance(document, dict):
            raise FeatureSourceUnavailable(f"http source {self.name!r}: the answer is not a JSON object")
        values: dict[str, Any] = {}
        for feature in self.features:
            raw = _field(document, feature.response_field or feature.name)
            if raw is None:
                continue  # absent: the contract's on_missing applies
            try:
                values[feature.name] = _check_value(feature, raw)
            except ValueError as exc:
                raise FeatureSourceUnavailable(
                    f"http source {self.name!r}: field {feature.response_field or feature.name!r} {exc}"
                ) from None
        return values


def build_http_sources(
    contract: Contract, *, secrets_client: Any = None, **options: Any
) -> dict[str, HttpFeatureSource]:
    """One `HttpFeatureSource` per contract http source that some feature uses (build at cold start).

    `secrets_client` is a Secrets Manager client (botocore's, as boto3 makes it too), needed when a
    source names a secret.
    """
    sources: dict[str, HttpFeatureSource] = {}
    for spec in contract.http_sources:
        features = [f for f in contract.http_features if f.http_source == spec.name]
        if not features:
            continue
        credentials = None
        if spec.secret is not None:
            if secrets_client is None:
                raise ValueError(f"http source {spec.name!r} names a secret; pass secrets_client")
            credentials = SecretsManagerCredentials(secrets_client, spec.secret, ttl_s=spec.secret_ttl_s)
        sources[spec.name] = HttpFeatureSource(spec, features, credentials=credentials, **options)
    return sources


def apply_http_features(
    contract: Contract, sources: Mapping[str, HttpFeatureSource], rows: list[dict[str, Any]]
) -> list[list[str]]:
    """Add the http features to `rows` in place; return, per row, the names that fell back to a default.

    The same policy as the online store: a missing value, or a source that is unavailable,
    gives the feature's default (flagged) or, with `on_missing: reject`, an `OnlineFeatureError`.
    """
    key = contract.entity_key
    fallbacks: list[list[str]] = [[] for _ in rows]
    keys = [str(r[key]) for r in rows if key is not None and r.get(key) is not None]
    for spec in contract.http_sources:
        features = [f for f in contract.http_features if f.http_source == spec.name]
        if not features:
            continue
        found: dict[str, dict[str, Any]] = {}
        unavailable: str | None = None
        source = sources.get(spec.name)
        if source is None:
            unavailable = f"http source {spec.name!r} is not configured"
        else:
            try:
                found = source.lookup(keys)
            except FeatureSourceUnavailable as exc:
                unavailable = str(exc)
        for row, flagged in zip(rows, fallbacks, strict=True):
            item = found.get(str(row.get(key)), {})
            for feature in features:
                value = item.get(feature.name)
                if value is None:
                    if feature.on_missing == "reject":
                        reason = unavailable or f"no value for this {key}"
                        raise OnlineFeatureError(
                            f"http feature {feature.name!r} is unavailable ({reason}) "
                            "and the contract allows no default"
                        )
                    value = feature.default
                    flagged.append(feature.name)
                row[feature.name] = value
    return fallbacks
