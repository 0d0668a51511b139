"""OnlineStore on DynamoDB.

Table layout (the infrastructure creates it; PAY_PER_REQUEST, KMS-encrypted):

| attribute | type | what |
| --- | --- | --- |
| `entity` | S, partition key | the entity key's value, e.g. `C00000042` |
| `feature_group` | S, sort key | the group: the model name (the predictor looks features up there) |
| one per feature | N, S or BOOL | the feature values; a missing value is left out (`None` on reading) |

The key names match `stacks.constants.ONLINE_TABLE_PARTITION_KEY` / `ONLINE_TABLE_SORT_KEY` (an
infrastructure test checks it); no feature may be called `entity` or `feature_group`.

Reading (serving): BatchGetItem, 100 keys per call, eventually consistent; UnprocessedKeys are
retried with backoff until the lookup's deadline (the contract's `serving.latency_budget_ms`).
A lookup that cannot finish in time, or a DynamoDB error, raises `FeatureSourceUnavailable`, and
the caller applies the contract's fallback policy. Use `serving_client(latency_budget_ms)`: its
connect and read timeouts split the budget and botocore does not retry on its own, so one lookup
fits the budget. `DynamoDbOnlineStore(client, table, budget_ms=...)`; retries of UnprocessedKeys
start at `read_base_delay_s` (5 ms) so that a few fit the budget.

Writing (materialisation): BatchWriteItem in chunks of 25; UnprocessedItems and throttled calls
are retried with exponential backoff and full jitter; keys still not written after the attempts
are reported in `OnlineStoreWriteError` (each item is written whole or not at all).

DynamoDB numbers come back as decimal text; they are returned as `int` when whole, else `float`.
Floats are sent as the shortest decimal that reads back as the same float (`repr`).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from shipml.backends.ports import OnlineStore
from shipml.errors import FeatureSourceUnavailable, OnlineStoreWriteError, ShipmlError

PARTITION_KEY = "entity"
SORT_KEY = "feature_group"
KEY_ATTRIBUTES = (PARTITION_KEY, SORT_KEY)
_KEYS = frozenset(KEY_ATTRIBUTES)

try:  # the clients' errors; botocore comes with every host that makes a DynamoDB client
    from botocore.exceptions import BotoCoreError, ClientError

    _CALL_ERRORS: tuple[type[Exception], ...] = (BotoCoreError, ClientError)
except ImportError:  # pragma: no cover - an interpreter without botocore makes no such call
    _CALL_ERRORS = ()
READ_BATCH = 100  # BatchGetItem's limit
WRITE_BATCH = 25  # BatchWriteItem's limit


def item_key(group: str, entity: str) -> dict[str, dict[str, str]]:
    """The DynamoDB key of an entity's item in a group."""
    return {PARTITION_KEY: {"S": entity}, SORT_KEY: {"S": group}}


def to_item(group: str, entity: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """An entity's item as the table holds it: its key, then one attribute per feature that has a
    value (a missing or NaN value is left out)."""
    clash = set(KEY_ATTRIBUTES) & set(values)
    if clash:
        raise ShipmlError(f"a feature may not be called {sorted(clash)}: the table's key attributes")
    item: dict[str, Any] = item_key(group, entity)
    for name, value in values.items():
        attribute = _to_attribute(value)
        if attribute is not None:
            item[name] = attribute
    return item


def serving_client(latency_budget_ms: int, *, region: str | None = None, session: Any = None) -> Any:
    """A DynamoDB client whose timeouts fit one lookup into the latency budget (no SDK retries).

    `session`: a botocore session (see `shipml.backends.aws.clients`); a new one when None."""
    from botocore.config import Config

    from shipml.backends.aws.clients import make_client

    half = max(latency_budget_ms / 2000.0, 0.005)
    config = Config(
        connect_timeout=half,
        read_timeout=half,
        retries={"total_max_attempts": 1, "mode": "standard"},
        tcp_keepalive=True,
    )
    return make_client(session, "dynamodb", region_name=region, config=config)


def batch_client(*, region: str | None = None, session: Any = None) -> Any:
    """A DynamoDB client for materialisation: patient timeouts, SDK retries in standard mode."""
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 5, "mode": "standard"})
    return (session or boto3.session.Session()).client("dynamodb", region_name=region, config=config)


def _to_attribute(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int):
        return {"N": str(value)}
    if isinstance(value, float):
        if not math.isfinite(value):
            return None  # NaN is "missing"; DynamoDB cannot store it anyway
        return {"N": repr(value)}
    if isinstance(value, Decimal):
        return {"N": str(value)}
    if isinstance(value, str):
        return {"S": value}
    raise ShipmlError(f"cannot store a {type(value).__name__} in the online store: {value!r}")


def _number(text: str) -> int | float:
    """A DynamoDB number: an `int` when it is whole, else a `float`.

    The common forms are read directly (a lookup reads several per request, and `Decimal` took
    ~1 us each); anything else (an exponent, a whole number written with a fraction of zeros)
    goes through `Decimal`, which decides exactly."""
    digits = text[1:] if text[:1] == "-" else text
    if digits.isdigit():
        return int(text)
    whole, dot, fraction = digits.partition(".")
    if dot and whole.isdigit() and fraction.isdigit() and fraction.strip("0"):
        return float(text)  # a nonzero fraction: not whole; float() rounds as float(Decimal) does
    number = Decimal(text)
    return int(number) if number == number.to_integral_value() else float(number)


def _from_attribute(attribute: Mapping[str, Any]) -> Any:
    if "N" in attribute:
        return _number(attribute["N"])
    if "S" in attribute:
        return attribute["S"]
    if "BOOL" in attribute:
        return bool(attribute["BOOL"])
    if "NULL" in attribute:
        return None
    raise ShipmlError(f"unexpected DynamoDB attribute type {sorted(attribute)}")


class DynamoDbOnlineStore(OnlineStore):
    """The OnlineStore port on one DynamoDB table (see the module docstring for the layout)."""

    def __init__(
        self,
        client: Any,
        table_name: str,
        *,
        budget_ms: int = 100,
        write_attempts: int = 8,
        base_delay_s: float = 0.05,
        read_base_delay_s: float = 0.005,
        max_delay_s: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.table_name = table_name
        self.client = client
        # A lookup (all its BatchGetItem calls and retries) must finish within the budget.
        self.read_deadline_s = budget_ms / 1000.0
        self.write_attempts = write_attempts
        self.base_delay_s = base_delay_s
        self.read_base_delay_s = read_base_delay_s
        self.max_delay_s = max_delay_s
        self._sleep = sleep
        self._clock = clock
        self._jitter = jitter

    def _backoff(self, attempt: int, base: float | None = None) -> float:
        # Full jitter: a random delay up to the exponential bound, so retries of many writers spread out.
        base = self.base_delay_s if base is None else base
        return min(self.max_delay_s, base * (2**attempt)) * self._jitter()

    # ------------------------------------------------------------------------------------ reads

    def get_many(self, group: str, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The items found (missing keys are absent). Raises `FeatureSourceUnavailable` on errors
        or when UnprocessedKeys remain at the deadline."""
        unique = list(dict.fromkeys(map(str, keys)))
        deadline = self._clock() + self.read_deadline_s
        found: dict[str, dict[str, Any]] = {}
        table = self.table_name
        for first in range(0, len(unique), READ_BATCH):
            pending: list[dict[str, Any]] = [item_key(group, k) for k in unique[first : first + READ_BATCH]]
            attempt = 0
            while pending:
                try:
                    response = self.client.batch_get_item(RequestItems={table: {"Keys": pending}})
                except _CALL_ERRORS as exc:
                    raise FeatureSourceUnavailable(f"online store lookup failed: {exc}") from None
                for item in response.get("Responses", {}).get(table, ()):
                    found[item[PARTITION_KEY]["S"]] = {
                        n: _from_attribute(a) for n, a in item.items() if n not in _KEYS
                    }
                unprocessed = response.get("UnprocessedKeys")
                pending = unprocessed.get(table, {}).get("Keys", []) if unprocessed else []
                if pending:
                    delay = self._backoff(attempt, self.read_base_delay_s)
                    attempt += 1
                    if self._clock() + delay >= deadline:
                        raise FeatureSourceUnavailable(
                            f"online store lookup: {len(pending)} keys still unprocessed at the "
                            f"{self.read_deadline_s * 1000:.0f} ms deadline"
                        )
                    self._sleep(delay)
        return found

    # ----------------------------------------------------------------------------------- writes

    def put_many(self, group: str, items: Mapping[str, Mapping[str, Any]]) -> int:
        """Write (replace) the items; return how many were written. Raises `OnlineStoreWriteError`
        naming the keys that could not be written after the retries."""
        requests = [{"PutRequest": {"Item": to_item(group, str(e), values)}} for e, values in items.items()]
        # The same key twice in one BatchWriteItem is refused by DynamoDB; the last one wins here.
        by_key = {r["PutRequest"]["Item"][PARTITION_KEY]["S"]: r for r in requests}
        requests = list(by_key.values())
        written, failed, errors = 0, [], []
        for first in range(0, len(requests), WRITE_BATCH):
            ok, not_written, error = self._write_chunk(requests[first : first + WRITE_BATCH])
            written += ok
            failed.extend(not_written)
            if error:
                errors.append(error)
        if failed:
            keys = failed
            detail = f" ({errors[0]})" if errors else ""
            raise OnlineStoreWriteError(
                f"{len(keys)} of {len(requests)} items could not be written to {self.table_name} after "
                f"{self.write_attempts} attempts{detail}",
                written=written,
                failed_keys=keys,
            )
        return written

    def _write_chunk(self, chunk: list[dict[str, Any]]) -> tuple[int, list[str], str | None]:
        """Write up to 25 requests; (written, keys not written, last error)."""
        from botocore.exceptions import BotoCoreError, ClientError

        pending = chunk
        last_error = None
        for attempt in range(self.write_attempts):
            try:
                response = self.client.batch_write_item(RequestItems={self.table_name: pending})
                pending = response.get("UnprocessedItems", {}).get(self.table_name, [])
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                last_error = f"{code}: {exc.response.get('Error', {}).get('Message', '')}"
                if code not in _RETRYABLE:
                    break  # a validation error does not get better by retrying
            except BotoCoreError as exc:
                last_error = str(exc)
            if not pending:
                return len(chunk), [], None
            if attempt + 1 < self.write_attempts:
                self._sleep(self._backoff(attempt))
        keys = [r["PutRequest"]["Item"][PARTITION_KEY]["S"] for r in pending]
        return len(chunk) - len(pending), keys, last_error


_RETRYABLE = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
}
