"""Seeded synthetic card transactions for the shipped fraud example.

`generate` writes one Parquet file of 1,000 to 10,000,000 transactions that satisfy
`examples/fraud/contract.yaml`, chunk by chunk, so that memory depends on the chunk size and the
customer population, never on the number of rows. `DriftKnobs` injects the drift that the
monitors are meant to catch: shifted amounts, an unseen merchant category, and a changed fraud
rate in one segment. `write_online_snapshot` writes the online features of the same customers, to
fill the online store in the demo.

How the data comes about:

* A fixed population of customers (``clamp(rows // 40, 500, 250_000)``) with persistent profiles:
  home country, typical amount, activity (transactions a day), share of online shopping,
  first-seen date and a Luhn-valid card number.
* Each row picks a customer in proportion to activity, then a channel, a merchant category and a
  merchant country (mostly domestic) that depend on the customer and the channel; the amount
  follows the customer's typical amount and the category. The online features (``txn_count_24h``,
  ``mean_amount_30d``, ``days_since_first_seen``) follow from the profile and the row's time.
* The label comes from a logistic model of the features (`_fraud_logit`), sampled, with a little
  label noise on top, so that it is learnable but not trivially separable.

Determinism: the profiles come from a generator seeded by ``(seed, 0)``, chunk ``k`` from
``(seed, 1, k)`` and the drift draws of chunk ``k`` from ``(seed, 2, k)``. The same seed and
arguments therefore give the same values, and a drifted data set equals the undrifted one with
the same seed except where a knob changes it.

This module is used by the CLI and the training side; it needs numpy and pyarrow and therefore
never goes into a Lambda bundle.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shipml.atomic import atomic_path

# --- the vocabulary of examples/fraud/contract.yaml (tests check these against the YAML) ---------
CURRENCIES = ("EUR", "USD", "GBP", "CHF", "SEK", "PLN")
MERCHANT_CATEGORIES = (
    "grocery",
    "restaurants",
    "fuel",
    "travel",
    "electronics",
    "fashion",
    "digital_goods",
    "gambling",
    "utilities",
)
COUNTRIES = ("DE", "FR", "GB", "ES", "IT", "NL", "PL", "SE", "US", "BR", "NG", "CN")
CHANNELS = ("in_store", "online", "atm", "phone")
AMOUNT_MIN, AMOUNT_MAX = 0.01, 50_000.0
TXN_COUNT_MAX = 10_000
DAYS_SINCE_FIRST_SEEN_MAX = 20_000

# Meant for 1,000 to 10,000,000 rows; smaller files are allowed because they are handy in tests.
MIN_ROWS, MAX_ROWS = 1, 10_000_000
DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)
DEFAULT_DAYS = 30

#: The category columns, by name, with their vocabularies (a segment knob must name one of them).
CATEGORY_COLUMNS: dict[str, tuple[str, ...]] = {
    "currency": CURRENCIES,
    "merchant_category": MERCHANT_CATEGORIES,
    "country": COUNTRIES,
    "channel": CHANNELS,
}

SCHEMA = pa.schema(
    [
        ("transaction_id", pa.string()),
        ("customer_id", pa.string()),
        ("card_number", pa.string()),
        ("amount", pa.float64()),
        ("currency", pa.string()),
        ("merchant_category", pa.string()),
        ("country", pa.string()),
        ("channel", pa.string()),
        ("card_present", pa.bool_()),
        ("event_time", pa.timestamp("us", tz="UTC")),
        ("txn_count_24h", pa.int64()),
        ("mean_amount_30d", pa.float64()),
        ("days_since_first_seen", pa.int64()),
        ("is_fraud", pa.bool_()),
    ]
)

SNAPSHOT_SCHEMA = pa.schema(
    [
        ("customer_id", pa.string()),
        ("txn_count_24h", pa.int64()),
        ("mean_amount_30d", pa.float64()),
        ("days_since_first_seen", pa.int64()),
    ]
)

_US_PER_DAY = 86_400_000_000

# --- the world the customers live in ------------------------------------------------------------
# Where customers live (indexes into COUNTRIES). Mostly Europe and the US; BR, NG and CN are
# rare homes but common destinations of cross-border card-not-present fraud.
_HOME_WEIGHTS = np.array([0.20, 0.15, 0.14, 0.10, 0.10, 0.07, 0.07, 0.05, 0.09, 0.015, 0.01, 0.005])
# Where a cross-border transaction goes.
_ABROAD_WEIGHTS = np.array([0.10, 0.10, 0.12, 0.10, 0.08, 0.06, 0.03, 0.03, 0.20, 0.06, 0.05, 0.07])
# The currency of each merchant country (indexes into CURRENCIES); BR, NG and CN settle in USD
# because the contract accepts no other currency of theirs.
_COUNTRY_CURRENCY = np.array([0, 0, 2, 0, 0, 0, 5, 4, 1, 1, 1, 1])
_OTHER_CURRENCY_WEIGHTS = np.array([0.35, 0.35, 0.12, 0.10, 0.04, 0.04])  # dynamic currency conversion
_OTHER_CURRENCY_SHARE = 0.04

# Channel index order as CHANNELS: in_store, online, atm, phone. Off-line rows split like this.
_OFFLINE_CHANNEL_WEIGHTS = np.array([0.80, 0.0, 0.14, 0.06])
_ABROAD_SHARE_BY_CHANNEL = np.array([0.06, 0.30, 0.06, 0.10])
# Merchant category mix per channel (rows as CHANNELS, columns as MERCHANT_CATEGORIES). ATMs
# reuse the in-store mix: the contract has no cash category, and an ATM sits at a merchant.
_CATEGORY_BY_CHANNEL = np.array(
    [
        [0.33, 0.22, 0.14, 0.03, 0.05, 0.12, 0.01, 0.02, 0.08],  # in_store
        [0.06, 0.05, 0.00, 0.15, 0.14, 0.20, 0.22, 0.06, 0.12],  # online
        [0.33, 0.22, 0.14, 0.03, 0.05, 0.12, 0.01, 0.02, 0.08],  # atm
        [0.02, 0.10, 0.00, 0.30, 0.08, 0.05, 0.05, 0.10, 0.30],  # phone
    ]
)
# How much a purchase in each category costs relative to the customer's typical purchase.
_CATEGORY_AMOUNT = np.array([0.9, 0.7, 1.0, 4.0, 3.0, 1.5, 0.4, 1.5, 1.6])
_AMOUNT_SIGMA = 0.7  # spread of log(amount) around the customer's typical amount for a category
# A drifted unseen category is priced like an average purchase.
_NEW_CATEGORY_AMOUNT = 1.0
_BURST_SHARE, _BURST_MEAN = 0.02, 6.0  # a few rows sit in a burst of activity (card testing)
_NEW_CUSTOMER_SHARE = 0.12

# --- the fraud model: log-odds contributions (see _fraud_logit) -----------------------------------
_FRAUD_INTERCEPT = -8.5  # calibrated so that the overall rate is about 3 %
_CATEGORY_RISK = np.array([-1.2, -0.6, -0.6, 0.6, 1.8, 0.0, 2.2, 2.6, -1.6])
_COUNTRY_RISK = np.array([0.0, 0.0, 0.0, 0.0, 0.2, 0.0, 0.4, 0.0, 0.4, 1.4, 2.4, 1.2])
_NEW_CATEGORY_RISK = 1.0  # an unseen category is somewhat risky: nobody knows it yet
_LABEL_FLIP_TO_FRAUD = 0.001  # a few genuine rows are reported as fraud (friendly fraud, errors)
_LABEL_FLIP_TO_GENUINE = 0.04  # and some fraud is never reported


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class DriftKnobs:
    """What to change in generated data so that monitors have something to find.

    The defaults change nothing. Knobs are checked on construction; a bad one raises ValueError
    naming it.

    * ``amount_shift``: multiplier applied to every amount (and to the customer's 30-day mean,
      which is made of such amounts). Labels follow the behaviour before the shift, so this is a
      pure covariate shift.
    * ``new_merchant_category`` / ``new_merchant_share``: move that share of rows to a merchant
      category that the contract does not know.
    * ``fraud_rate_segment`` / ``fraud_rate_multiplier``: ``(feature, value)``, e.g.
      ``("country", "BR")``; the odds of fraud of rows in that segment are multiplied.
    """

    amount_shift: float = 1.0
    new_merchant_category: str | None = None
    new_merchant_share: float = 0.1
    fraud_rate_segment: tuple[str, str] | None = None
    fraud_rate_multiplier: float = 3.0

    def __post_init__(self) -> None:
        shift = self.amount_shift
        if not _is_number(shift) or not (math.isfinite(shift) and shift > 0):
            raise ValueError(f"amount_shift must be a finite number > 0, got {shift!r}")
        if self.new_merchant_category is not None:
            name = self.new_merchant_category
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"new_merchant_category must be a non-empty string, got {name!r}")
            if name in MERCHANT_CATEGORIES:
                raise ValueError(
                    f"new_merchant_category {name!r} is already a category of the contract; "
                    "choose an unseen one"
                )
        share = self.new_merchant_share
        if not _is_number(share) or not 0 < share <= 1:
            raise ValueError(f"new_merchant_share must be in (0, 1], got {share!r}")
        if self.fraud_rate_segment is not None:
            segment = self.fraud_rate_segment
            if not (isinstance(segment, tuple | list) and len(segment) == 2):
                raise ValueError(f"fraud_rate_segment must be a (feature, value) pair, got {segment!r}")
            feature, value = segment
            if feature not in CATEGORY_COLUMNS:
                raise ValueError(
                    f"fraud_rate_segment feature must be a category column of the data "
                    f"({', '.join(CATEGORY_COLUMNS)}), got {feature!r}"
                )
            known = CATEGORY_COLUMNS[feature]
            if feature == "merchant_category" and self.new_merchant_category is not None:
                known = (*known, self.new_merchant_category)
            if value not in known:
                raise ValueError(
                    f"fraud_rate_segment value {value!r} is not a value of {feature} ({', '.join(known)})"
                )
            object.__setattr__(self, "fraud_rate_segment", (feature, value))
        mult = self.fraud_rate_multiplier
        if not _is_number(mult) or not (math.isfinite(mult) and mult > 0):
            raise ValueError(f"fraud_rate_multiplier must be a finite number > 0, got {mult!r}")


@dataclass(frozen=True)
class GenerationReport:
    """What `generate` wrote."""

    path: Path
    rows: int
    fraud_rate: float
    customers: int
    seconds: float


def customer_count(rows: int) -> int:
    """The size of the customer population for a data set of ``rows`` rows."""
    return int(min(max(rows // 40, 500), 250_000))


def generate(
    path: str | os.PathLike[str],
    rows: int,
    *,
    seed: int = 7,
    drift: DriftKnobs = DriftKnobs(),
    start: datetime | None = None,
    days: int = DEFAULT_DAYS,
    chunk_rows: int = 200_000,
    progress: Callable[[int], None] | None = None,
) -> GenerationReport:
    """Write ``rows`` synthetic card transactions to one Parquet file at ``path``.

    Rows cover ``days`` days from ``start`` (default 2026-01-01T00:00:00Z) in ascending
    ``event_time``. They are made and written ``chunk_rows`` at a time (one row group each), so
    memory stays bounded whatever ``rows`` is. The file appears atomically: it is written to a
    temporary file in the same folder and renamed; on any error nothing is left behind.
    ``progress``, if given, is called with the number of rows written so far after each chunk.
    The same arguments always give the same values.
    """
    t0 = time.perf_counter()
    rows = _check_int("rows", rows, MIN_ROWS, MAX_ROWS)
    chunk_rows = _check_int("chunk_rows", chunk_rows, 1, None)
    days = _check_int("days", days, 1, None)
    seed = _check_int("seed", seed, 0, None)
    if not isinstance(drift, DriftKnobs):
        raise ValueError(f"drift must be a DriftKnobs, got {type(drift).__name__}")
    start = _check_start(start)

    profiles = _Profiles.make(seed, customer_count(rows))
    day_cdf = _diurnal_cdf()
    metadata = {
        b"shipml.synth": json.dumps(
            {"seed": seed, "rows": rows, "start": start.isoformat(), "days": days, "drift": asdict(drift)}
        ).encode()
    }
    frauds = 0
    schema = SCHEMA.with_metadata(metadata)
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        for index, first in enumerate(range(0, rows, chunk_rows)):
            n = min(chunk_rows, rows - first)
            table = _chunk(profiles, seed, index, first, n, rows, start, days, day_cdf, drift)
            frauds += sum(chunk.true_count for chunk in table["is_fraud"].chunks)
            writer.write_table(table)
            if progress is not None:
                progress(first + n)
    return GenerationReport(
        path=Path(path),
        rows=rows,
        fraud_rate=frauds / rows,
        customers=profiles.count,
        seconds=time.perf_counter() - t0,
    )


def write_online_snapshot(
    path: str | os.PathLike[str], *, seed: int = 7, rows: int, as_of: datetime | None = None
) -> int:
    """Write the online features of the customers of ``generate(rows=rows, seed=seed)`` to Parquet.

    One row per customer: ``customer_id``, ``txn_count_24h``, ``mean_amount_30d`` and
    ``days_since_first_seen`` as of ``as_of`` (default: the end of the default generated window,
    2026-01-31T00:00:00Z; first-seen dates are those of the default window). Written atomically
    like `generate`. Returns the number of customers.
    """
    rows = _check_int("rows", rows, MIN_ROWS, MAX_ROWS)
    seed = _check_int("seed", seed, 0, None)
    as_of = DEFAULT_START + timedelta(days=DEFAULT_DAYS) if as_of is None else _check_start(as_of, "as_of")
    profiles = _Profiles.make(seed, customer_count(rows))
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(3,)))
    count = profiles.count
    elapsed_days = (as_of - DEFAULT_START) / timedelta(days=1)
    table = pa.table(
        {
            "customer_id": _ascii_column(profiles.customer_id_bytes),
            "txn_count_24h": np.minimum(rng.poisson(profiles.daily_rate), TXN_COUNT_MAX).astype(np.int64),
            "mean_amount_30d": np.clip(
                np.round(profiles.mean_amount * rng.lognormal(0.0, 0.05, count), 2), 0, AMOUNT_MAX
            ),
            "days_since_first_seen": _days_since_first_seen(profiles.age_days, elapsed_days),
        },
        schema=SNAPSHOT_SCHEMA,
    )
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return count


# --- internals ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Profiles:
    """Per-customer arrays; the only state that lives across chunks."""

    count: int
    customer_id_bytes: np.ndarray  # (count, 9) uint8, ASCII "C%08d"
    card_bytes: np.ndarray  # (count, 16) uint8, ASCII digits, Luhn-valid
    home: np.ndarray  # index into COUNTRIES
    typical_amount: np.ndarray
    mean_amount: np.ndarray  # expected amount per transaction, given the customer's channel mix
    daily_rate: np.ndarray  # transactions a day
    pick_cdf: np.ndarray  # cumulative share of rows, in proportion to daily_rate
    online_share: np.ndarray
    age_days: np.ndarray  # days since first seen, at the start of the window

    @classmethod
    def make(cls, seed: int, count: int) -> _Profiles:
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
        home = rng.choice(len(COUNTRIES), size=count, p=_HOME_WEIGHTS)
        typical = rng.lognormal(np.log(35.0), 0.7, count)
        daily_rate = rng.lognormal(np.log(1.0), 0.8, count)
        online_share = rng.beta(2.0, 5.0, count)
        # Some customers are new (first seen shortly before the window); most have a long history.
        new = rng.random(count) < _NEW_CUSTOMER_SHARE
        settled = np.minimum(rng.lognormal(np.log(600), 1.0, count), 15_000)
        age = np.where(new, rng.uniform(0.0, 30.0, count), settled)
        # The customer's expected amount: typical amount times the category mix of each channel,
        # weighted by how the customer splits off-line and online purchases.
        offline = _OFFLINE_CHANNEL_WEIGHTS @ (_CATEGORY_BY_CHANNEL @ _CATEGORY_AMOUNT)
        online = _CATEGORY_BY_CHANNEL[1] @ _CATEGORY_AMOUNT
        expected_mult = (1 - online_share) * offline + online_share * online
        mean_amount = typical * expected_mult * math.exp(_AMOUNT_SIGMA**2 / 2)
        # Card numbers: a network prefix (4 Visa, 5 Mastercard), 14 random digits, a Luhn digit.
        body = rng.integers(0, 10, size=(count, 15), dtype=np.uint8)
        body[:, 0] = np.where(rng.random(count) < 0.6, 4, 5)
        cards = np.concatenate([body, _luhn_check_digit(body)[:, None]], axis=1) + ord("0")
        pick_cdf = np.cumsum(daily_rate)
        pick_cdf /= pick_cdf[-1]
        return cls(
            count=count,
            customer_id_bytes=_fixed_width_ascii(b"C", np.arange(count), 8),
            card_bytes=cards.astype(np.uint8),
            home=home,
            typical_amount=typical,
            mean_amount=mean_amount,
            daily_rate=daily_rate,
            pick_cdf=pick_cdf,
            online_share=online_share,
            age_days=age,
        )


def _chunk(
    profiles: _Profiles,
    seed: int,
    index: int,
    first: int,
    n: int,
    rows: int,
    start: datetime,
    days: int,
    day_cdf: tuple[np.ndarray, np.ndarray],
    drift: DriftKnobs,
) -> pa.Table:
    """Rows ``first .. first + n`` of the data set, as an Arrow table."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, index)))
    # Drift draws come from their own stream, so the undrifted values stay the same.
    drift_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2, index)))

    # Time: row i sits at quantile (i + u) / rows of the window, so rows are in order across
    # chunks; a quantile maps to a day and then, through the daily rhythm, to a time of day.
    position = (first + np.arange(n) + rng.random(n)) / rows * days
    day = np.floor(position)
    day_fraction = np.interp(position - day, day_cdf[0], day_cdf[1])
    offset_us = np.minimum(((day + day_fraction) * _US_PER_DAY).astype(np.int64), days * _US_PER_DAY - 1)
    start_us = _epoch_us(start)
    elapsed_days = offset_us / _US_PER_DAY
    hour = ((start_us + offset_us) // 3_600_000_000) % 24

    customer = np.minimum(np.searchsorted(profiles.pick_cdf, rng.random(n), side="right"), profiles.count - 1)
    home = profiles.home[customer]

    online = rng.random(n) < profiles.online_share[customer]
    channel = np.where(online, 1, _draw(rng, _OFFLINE_CHANNEL_WEIGHTS, n))
    card_present = np.where(
        (channel == 0) | (channel == 2),
        rng.random(n) < np.where(channel == 0, 0.98, 0.995),  # a few keyed-in or skimmed cards
        False,
    )
    category = _draw_rows(rng, _CATEGORY_BY_CHANNEL[channel])

    abroad = rng.random(n) < _ABROAD_SHARE_BY_CHANNEL[channel]
    country = np.where(abroad, _draw(rng, _ABROAD_WEIGHTS, n), home)
    cross_border = country != home
    other_currency = rng.random(n) < _OTHER_CURRENCY_SHARE
    currency = np.where(other_currency, _draw(rng, _OTHER_CURRENCY_WEIGHTS, n), _COUNTRY_CURRENCY[country])

    typical = profiles.typical_amount[customer]
    amount = typical * _CATEGORY_AMOUNT[category] * rng.lognormal(0.0, _AMOUNT_SIGMA, n)
    # ATMs hand out notes: multiples of 10.
    amount = np.where(channel == 2, np.maximum(np.round(amount / 10) * 10, 10), amount)

    # Online features: the 30-day mean moves around the customer's expected amount (more for new
    # customers, who have little history); the 24-hour count follows the activity, with bursts.
    days_seen = _days_since_first_seen(profiles.age_days[customer], elapsed_days)
    mean_noise = np.where(days_seen < 30, 0.35, 0.12)
    mean_30d = profiles.mean_amount[customer] * np.exp(rng.normal(0.0, 1.0, n) * mean_noise)
    count_24h = rng.poisson(profiles.daily_rate[customer])
    burst = rng.random(n) < _BURST_SHARE
    count_24h = count_24h + np.where(burst, rng.poisson(_BURST_MEAN, n), 0)

    # Drift: an unseen merchant category for a share of rows.
    new_category = np.zeros(n, dtype=bool)
    new_category_draw = drift_rng.random(n)
    if drift.new_merchant_category is not None:
        new_category = new_category_draw < drift.new_merchant_share
        amount = np.where(
            new_category,
            typical * _NEW_CATEGORY_AMOUNT * drift_rng.lognormal(0.0, _AMOUNT_SIGMA, n),
            amount,
        )

    amount = np.clip(np.round(amount, 2), AMOUNT_MIN, AMOUNT_MAX)
    mean_30d = np.clip(np.round(mean_30d, 2), 0.0, AMOUNT_MAX)
    count_24h = np.minimum(count_24h, TXN_COUNT_MAX).astype(np.int64)

    logit = _fraud_logit(
        channel=channel,
        card_present=card_present,
        hour=hour,
        amount=amount,
        mean_amount_30d=mean_30d,
        txn_count_24h=count_24h,
        days_since_first_seen=days_seen,
        category=category,
        new_category=new_category,
        country=country,
        cross_border=cross_border,
    )
    category_names = MERCHANT_CATEGORIES
    if drift.new_merchant_category is not None:
        category_names = (*MERCHANT_CATEGORIES, drift.new_merchant_category)
        category = np.where(new_category, len(MERCHANT_CATEGORIES), category)
    if drift.fraud_rate_segment is not None:
        feature, value = drift.fraud_rate_segment
        codes = {"currency": currency, "merchant_category": category, "country": country, "channel": channel}
        names = category_names if feature == "merchant_category" else CATEGORY_COLUMNS[feature]
        in_segment = codes[feature] == names.index(value)
        logit = logit + np.where(in_segment, math.log(drift.fraud_rate_multiplier), 0.0)
    # Sampling from the probability is the first source of noise; flipped labels the second.
    # The uniforms are drawn whatever the knobs are, so a higher probability only ever adds fraud.
    is_fraud = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    flip = rng.random(n)
    is_fraud = np.where(is_fraud, flip >= _LABEL_FLIP_TO_GENUINE, flip < _LABEL_FLIP_TO_FRAUD)

    if drift.amount_shift != 1.0:
        # After the label: the customers behave as before, only the amounts (and hence the 30-day
        # means made of them) read differently.
        amount = np.clip(np.round(amount * drift.amount_shift, 2), AMOUNT_MIN, AMOUNT_MAX)
        mean_30d = np.clip(np.round(mean_30d * drift.amount_shift, 2), 0.0, AMOUNT_MAX)

    return pa.Table.from_arrays(
        [
            _ascii_column(_fixed_width_ascii(b"T", np.arange(first, first + n), 12)),
            _ascii_column(profiles.customer_id_bytes[customer]),
            _ascii_column(profiles.card_bytes[customer]),
            pa.array(amount, pa.float64()),
            _names(CURRENCIES, currency),
            _names(category_names, category),
            _names(COUNTRIES, country),
            _names(CHANNELS, channel),
            pa.array(card_present, pa.bool_()),
            pa.array(start_us + offset_us, pa.timestamp("us", tz="UTC")),
            pa.array(count_24h, pa.int64()),
            pa.array(mean_30d, pa.float64()),
            pa.array(days_seen, pa.int64()),
            pa.array(is_fraud, pa.bool_()),
        ],
        schema=SCHEMA,
    )


def _fraud_logit(
    *,
    channel: np.ndarray,
    card_present: np.ndarray,
    hour: np.ndarray,
    amount: np.ndarray,
    mean_amount_30d: np.ndarray,
    txn_count_24h: np.ndarray,
    days_since_first_seen: np.ndarray,
    category: np.ndarray,
    new_category: np.ndarray,
    country: np.ndarray,
    cross_border: np.ndarray,
) -> np.ndarray:
    """Log-odds of fraud of each row: the ground truth a model is meant to learn.

    Each term is a pattern that fraud teams know: card-not-present remote purchases, keyed-in
    cards in a shop, night hours, an amount far above the customer's usual, a burst of
    transactions, a new customer, risky merchant categories and countries, and cross-border use.
    """
    remote = (channel == 1) | (channel == 3)
    logit = np.full(channel.shape, _FRAUD_INTERCEPT)
    logit += 2.6 * (remote & ~card_present)
    logit += 3.0 * ((channel == 0) & ~card_present)
    logit += 1.8 * (hour < 6)
    # Amount far above the customer's 30-day mean: log ratio beyond e^0.7 (about twice).
    ratio = np.log(np.maximum(amount, AMOUNT_MIN) / np.maximum(mean_amount_30d, 1.0))
    logit += 2.2 * np.clip(ratio - 0.7, 0.0, 3.0)
    # More than three transactions in a day, on a log scale.
    logit += 1.8 * np.maximum(np.log1p(txn_count_24h) - math.log(4.0), 0.0)
    logit += 3.2 * np.exp(-days_since_first_seen / 20.0)
    logit += np.where(new_category, _NEW_CATEGORY_RISK, _CATEGORY_RISK[category])
    logit += _COUNTRY_RISK[country]
    logit += 2.0 * cross_border
    return logit


def _days_since_first_seen(age_at_start: np.ndarray, elapsed_days: np.ndarray | float) -> np.ndarray:
    """Whole days since first seen, given the age at the window start and the days elapsed since."""
    days = np.floor(age_at_start + elapsed_days)
    return np.clip(days, 0, DAYS_SINCE_FIRST_SEEN_MAX).astype(np.int64)


def _diurnal_cdf() -> tuple[np.ndarray, np.ndarray]:
    """The cumulative share of a day's transactions by time of day, on a one-minute grid.

    Activity peaks mid-afternoon (UTC) and is lowest around 3 am, which makes night transactions
    rarer, as they are.
    """
    minutes = np.linspace(0.0, 1.0, 24 * 60 + 1)
    intensity = 1.0 + 0.6 * np.cos(2 * np.pi * (minutes * 24 - 15) / 24)
    cdf = np.concatenate([[0.0], np.cumsum((intensity[1:] + intensity[:-1]) / 2)])
    return cdf / cdf[-1], minutes


def _draw(rng: np.random.Generator, weights: np.ndarray, n: int) -> np.ndarray:
    """``n`` indexes drawn with the given weights."""
    cdf = np.cumsum(weights) / np.sum(weights)
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(weights) - 1)


def _draw_rows(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    """One index per row of ``weights`` (shape rows x choices), drawn with that row's weights."""
    cdf = np.cumsum(weights, axis=1)
    cdf /= cdf[:, -1:]
    picked = (rng.random(len(weights))[:, None] >= cdf).sum(axis=1)
    return np.minimum(picked, weights.shape[1] - 1)


def _luhn_check_digit(body: np.ndarray) -> np.ndarray:
    """The Luhn check digit of each row of digits (shape rows x digits, most significant first)."""
    digits = body.astype(np.int64)
    # Counting from the right of the body, every first, third, ... digit is doubled.
    doubled = np.zeros(body.shape[1], dtype=bool)
    doubled[::-1][::2] = True
    d = np.where(doubled, digits * 2, digits)
    d = np.where(d > 9, d - 9, d)
    return ((10 - d.sum(axis=1) % 10) % 10).astype(np.uint8)


def _fixed_width_ascii(prefix: bytes, numbers: np.ndarray, width: int) -> np.ndarray:
    """``prefix`` + zero-padded decimal ``numbers`` as a (rows, len(prefix) + width) uint8 array."""
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    digits = (np.asarray(numbers, dtype=np.int64)[:, None] // powers) % 10 + ord("0")
    out = np.empty((len(digits), len(prefix) + width), dtype=np.uint8)
    out[:, : len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
    out[:, len(prefix) :] = digits
    return out


def _ascii_column(chars: np.ndarray) -> pa.StringArray:
    """An Arrow string array from a (rows, width) uint8 array of ASCII, without Python objects."""
    rows, width = chars.shape
    offsets = np.arange(0, (rows + 1) * width, width, dtype=np.int32)
    data = np.ascontiguousarray(chars)
    return pa.StringArray.from_buffers(rows, pa.py_buffer(offsets), pa.py_buffer(data))


def _names(vocabulary: tuple[str, ...], codes: np.ndarray) -> pa.Array:
    """An Arrow string array of ``vocabulary[code]`` per row."""
    return pa.array(vocabulary, pa.string()).take(pa.array(codes, pa.int32()))


def _epoch_us(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _check_int(name: str, value: object, low: int, high: int | None) -> int:
    if not isinstance(value, int | np.integer) or isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f"{low:,}..{high:,}" if high is not None else f">= {low:,}"
        raise ValueError(f"{name} must be in {bounds}, got {value:,}")
    return int(value)


def _check_start(value: datetime | None, name: str = "start") -> datetime:
    if value is None:
        return DEFAULT_START
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")
    return value.astimezone(UTC)
