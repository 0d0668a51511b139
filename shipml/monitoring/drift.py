"""Drift of a window of captured predictions against the baseline in the live model's card.

Per monitored feature: numeric features (and the timestamp's UTC hour) by PSI over the baseline's
quantile bins and the normalised Wasserstein distance; categorical and boolean features by PSI and
the Jensen-Shannon distance over the baseline's categories, with categories the baseline never saw
counted apart (`unseen`); every feature by the change in its missing rate. The score gets the
numeric treatment (prediction drift). Then the same per value of each contract segment, against
that segment's own baseline, for values with at least `min_samples` rows in the window.

Thresholds come from the contract's `drift` block. A feature drifts when its PSI is above
`psi_threshold`, or (categorical) its Jensen-Shannon distance above `js_threshold`, or its missing
rate moved by more than `missing_rate_delta`. The Wasserstein distance is reported, not judged: the
contract sets no threshold for it.

The verdict says plainly when there is nothing to judge: `insufficient_data` for an empty window or
one under `min_samples` rows, `no_baseline` for a card without baseline statistics; never
`no_drift` on no data. Everything is vectorised: one `searchsorted` and one `bincount` per feature,
and the per-segment counts come from one `bincount` over (segment, bin) pairs.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from shipml.contract.schema import Contract, Segment
from shipml.evaluation import MISSING
from shipml.monitoring import statistics as st
from shipml.monitoring.window import CapturedWindow, Column
from shipml.stats import OTHER

Verdict = Literal["drift", "no_drift", "insufficient_data", "no_baseline"]
#: Categories shown per feature in a report's plot; the rest are pooled.
PLOT_CATEGORIES = 15
#: Unseen categories listed by name per feature (the share counts all of them).
LISTED_UNSEEN = 10
PREDICTION = "prediction"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class Thresholds(_Model):
    """What counts as drift (from the contract's `drift` block)."""

    psi: float
    js: float
    missing_rate_delta: float
    min_samples: int

    @classmethod
    def from_contract(cls, contract: Contract) -> Thresholds:
        drift = contract.drift
        return cls(
            psi=drift.psi_threshold,
            js=drift.js_threshold,
            missing_rate_delta=drift.missing_rate_delta,
            min_samples=drift.min_samples,
        )


class Distribution(_Model):
    """Baseline against current shares over the same bins or categories (for plots)."""

    labels: list[str]
    baseline: list[float]
    current: list[float]


class FeatureDrift(_Model):
    """The drift statistics of one feature (or of the score) in one slice of the window."""

    feature: str
    kind: Literal["numeric", "categorical"]
    rows: int
    psi: float | None = None
    js_distance: float | None = None
    wasserstein: float | None = Field(default=None, description="W1 over the baseline std (reported only).")
    missing_rate_baseline: float = 0.0
    missing_rate_current: float = 0.0
    missing_rate_delta: float = 0.0
    unseen_share: float | None = None
    unseen: dict[str, int] = {}
    drifted: bool = False
    reasons: list[str] = []
    distribution: Distribution | None = None


class SegmentDrift(_Model):
    """One value of one contract segment: compared with its baseline, or why not."""

    segment: str
    value: str
    rows: int
    baseline_rows: int | None = None
    status: Literal["compared", "too_few_rows", "no_baseline"]
    drifted: bool = False
    drifted_features: list[str] = []
    max_psi: float | None = None
    features: list[FeatureDrift] = []
    note: str = ""

    @property
    def name(self) -> str:
        return f"{self.segment}={self.value}"


class DriftReport(_Model):
    """The drift result of one window: per feature, the prediction, per segment, and the verdict."""

    model: str
    model_version: str
    window_start: datetime
    window_end: datetime
    generated_at: datetime
    source: str = ""
    rows: int
    excluded: dict[str, int] = {}
    thresholds: Thresholds
    verdict: Verdict
    problems: list[str] = []
    notes: list[str] = []
    features: list[FeatureDrift] = []
    prediction: FeatureDrift | None = None
    segments: list[SegmentDrift] = []
    drifted_features: list[str] = []
    drifted_segments: list[str] = []
    max_psi: float | None = None

    def summary(self) -> str:
        """One line for logs and the command line."""
        head = f"{self.model_version}: {self.verdict} on {self.rows:,} rows"
        if self.verdict == "drift":
            parts = []
            if self.drifted_features:
                parts.append("features " + ", ".join(self.drifted_features))
            if self.drifted_segments:
                parts.append("segments " + ", ".join(self.drifted_segments))
            return f"{head} ({'; '.join(parts)}; max PSI {self.max_psi:.3f})"
        if self.problems:
            return f"{head} ({self.problems[0]})"
        return head


# --- one slice, from counts ------------------------------------------------------------------------


def _judge(item: FeatureDrift, thresholds: Thresholds) -> FeatureDrift:
    reasons = []
    if item.psi is not None and item.psi > thresholds.psi:
        reasons.append(f"PSI {item.psi:.3f} > {thresholds.psi:g}")
    if item.js_distance is not None and item.js_distance > thresholds.js:
        reasons.append(f"Jensen-Shannon {item.js_distance:.3f} > {thresholds.js:g}")
    if item.missing_rate_delta > thresholds.missing_rate_delta:
        reasons.append(
            f"missing rate {item.missing_rate_baseline:.1%} -> {item.missing_rate_current:.1%} "
            f"(change > {thresholds.missing_rate_delta:.0%})"
        )
    item.reasons = reasons
    item.drifted = bool(reasons)
    return item


def _counted(
    name: str,
    kind: Literal["numeric", "categorical"],
    counts: np.ndarray,
    entry: Mapping[str, Any],
    baseline_missing: float | None,
) -> FeatureDrift:
    """A slice's result before any distance: its rows and missing rates, from its slot counts (the
    last slot counts the missing values) and the baseline entry's missing rate (or an override)."""
    rows = int(counts.sum())
    missing_base = float(entry.get("missing_rate", 0.0) if baseline_missing is None else baseline_missing)
    missing_now = float(counts[-1] / rows) if rows else 0.0
    return FeatureDrift(
        feature=name,
        kind=kind,
        rows=rows,
        missing_rate_baseline=missing_base,
        missing_rate_current=missing_now,
        missing_rate_delta=abs(missing_now - missing_base),
    )


def _numeric_labels(edges: list[float]) -> list[str]:
    if not edges:
        return []
    inner = [f"[{lo:.4g}, {hi:.4g})" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    return [f"< {edges[0]:.4g}", *inner, f">= {edges[-1]:.4g}"]


class _NumericPlan:
    """How to bin one numeric column against its baseline entry."""

    def __init__(self, name: str, entry: Mapping[str, Any]) -> None:
        self.name = name
        self.entry = entry
        self.edges = np.asarray(entry.get("edges") or [], dtype=np.float64)
        self.frequencies = np.asarray(entry.get("frequencies") or [], dtype=np.float64)
        self.slots = len(self.edges) + 2  # the bins, then missing

    def slot_codes(self, column: Column) -> np.ndarray:
        return st.bin_index(column.values, self.edges)

    def feature(
        self,
        counts: np.ndarray,
        *,
        baseline_frequencies: np.ndarray | None = None,
        baseline_missing: float | None = None,
        values: np.ndarray | None = None,
        plot: bool = False,
    ) -> FeatureDrift:
        item = _counted(self.name, "numeric", counts, self.entry, baseline_missing)
        present = counts[:-1]
        present_rows = int(present.sum())
        base = self.frequencies if baseline_frequencies is None else baseline_frequencies
        if present_rows and len(base) == len(present) and base.sum() > 0:
            shares = present / present_rows
            item.psi = st.psi(base, shares)
            if plot:
                item.distribution = Distribution(
                    labels=_numeric_labels(self.edges.tolist()),
                    baseline=base.tolist(),
                    current=shares.tolist(),
                )
        if values is not None:
            item.wasserstein = st.normalised_wasserstein(
                np.asarray(self.entry.get("quantiles") or [], dtype=np.float64),
                float(self.entry.get("std") or 0.0),
                values,
            )
        return item


class _CategoricalPlan:
    """How to map one categorical column's codes onto its baseline's categories (plus unseen ones)."""

    def __init__(self, name: str, entry: Mapping[str, Any], column: Column, known: list[str] | None) -> None:
        self.name = name
        self.entry = entry
        frequencies: Mapping[str, float] = entry.get("frequencies") or {}
        self.categories = list(frequencies)
        slot = {c: i for i, c in enumerate(self.categories)}
        pooled = slot.get(OTHER)
        known_set = set(known or ())
        self.unseen: list[str] = []
        code_to_slot = []
        for value in column.vocabulary or ():
            if value in slot:
                code_to_slot.append(slot[value])
            elif pooled is not None and value in known_set:
                code_to_slot.append(pooled)  # a known category the baseline pooled as rare
            else:
                code_to_slot.append(len(self.categories) + len(self.unseen))
                self.unseen.append(value)
        self.seen_slots = len(self.categories)
        self.slots = self.seen_slots + len(self.unseen) + 1  # categories, unseen ones, then missing
        self.lookup = np.asarray([*code_to_slot, self.slots - 1], dtype=np.int64)  # code -1 -> missing
        self.frequencies = np.array([frequencies[c] for c in self.categories], dtype=np.float64)

    def slot_codes(self, column: Column) -> np.ndarray:
        return self.lookup[column.values]  # -1 indexes the last entry: missing

    def baseline_vector(self, frequencies: Mapping[str, float] | None = None) -> np.ndarray:
        if frequencies is None:
            seen = self.frequencies
        else:
            seen = np.array([frequencies.get(c, 0.0) for c in self.categories], dtype=np.float64)
        return np.concatenate([seen, np.zeros(len(self.unseen))])

    def feature(
        self,
        counts: np.ndarray,
        *,
        baseline_frequencies: Mapping[str, float] | None = None,
        baseline_missing: float | None = None,
        plot: bool = False,
    ) -> FeatureDrift:
        item = _counted(self.name, "categorical", counts, self.entry, baseline_missing)
        present = counts[:-1]
        present_rows = int(present.sum())
        base = self.baseline_vector(baseline_frequencies)
        if not present_rows or base.sum() <= 0:
            return item
        shares = present / present_rows
        item.psi = st.psi(base, shares)
        item.js_distance = st.js_distance(base, shares)
        unseen_counts = present[self.seen_slots :]
        item.unseen_share = float(unseen_counts.sum() / present_rows)
        ranked = sorted(zip(self.unseen, unseen_counts.tolist(), strict=True), key=lambda x: -x[1])
        item.unseen = {name: int(n) for name, n in ranked[:LISTED_UNSEEN] if n}
        if plot:
            item.distribution = _category_distribution([*self.categories, *self.unseen], base, shares)
        return item


def _category_distribution(labels: list[str], base: np.ndarray, shares: np.ndarray) -> Distribution:
    order = np.argsort(-np.maximum(base, shares), kind="stable")
    shown, rest = order[:PLOT_CATEGORIES], order[PLOT_CATEGORIES:]
    names = [labels[i] for i in shown]
    baseline, current = base[shown].tolist(), shares[shown].tolist()
    if len(rest):
        names.append(f"({len(rest)} others)")
        baseline.append(float(base[rest].sum()))
        current.append(float(shares[rest].sum()))
    return Distribution(labels=names, baseline=baseline, current=current)


# --- segments ------------------------------------------------------------------------------------


def segment_codes(segment: Segment, column: Column) -> tuple[np.ndarray, list[str]]:
    """Each row's segment value as a code, and the value names (as `shipml.evaluation.segment_values`
    spells them: the category, or the numeric bin `[lo,hi)`; `__missing__` for a missing value)."""
    if segment.bins is None:
        names = [*(column.vocabulary or ()), MISSING]
        codes = np.where(column.values < 0, len(names) - 1, column.values)
        return codes.astype(np.int64), names
    edges = [-np.inf, *segment.bins, np.inf]
    names = [f"[{lo:g},{hi:g})" for lo, hi in zip(edges[:-1], edges[1:], strict=True)] + [MISSING]
    codes = np.searchsorted(np.asarray(segment.bins), column.values, side="right")
    codes[np.isnan(column.values)] = len(names) - 1
    return codes.astype(np.int64), names


def _joint_counts(groups: np.ndarray, group_count: int, slots: np.ndarray, slot_count: int) -> np.ndarray:
    flat = np.bincount(groups * slot_count + slots, minlength=group_count * slot_count)
    return flat.reshape(group_count, slot_count)


# --- the whole window --------------------------------------------------------------------------------


def compute_drift(
    contract: Contract,
    baseline: Mapping[str, Any],
    window: CapturedWindow,
    *,
    thresholds: Thresholds | None = None,
    segments: bool = True,
    generated_at: datetime | None = None,
    source: str = "",
) -> DriftReport:
    """The drift report of `window` against `baseline` (a model card's `baseline`)."""
    thresholds = thresholds or Thresholds.from_contract(contract)
    report = DriftReport(
        model=contract.model,
        model_version=window.model_version,
        window_start=window.start,
        window_end=window.end,
        generated_at=generated_at or datetime.now(UTC),
        source=source,
        rows=window.rows,
        excluded=dict(window.excluded),
        thresholds=thresholds,
        verdict="insufficient_data",
        problems=list(window.problems),
    )
    for reason, count in window.excluded.items():
        if reason == "outside the window":
            report.notes.append(f"{count:,} rows of the same capture days fall outside the window")
        else:
            report.problems.append(
                f"{count:,} captured rows left out: {reason} (not {window.model_version})"
                if reason.startswith(("model version", "no model version"))
                else f"{count:,} captured rows left out: {reason}"
            )
    features_baseline: Mapping[str, Any] = baseline.get("features") or {}
    if not features_baseline:
        report.verdict = "no_baseline"
        report.problems.append(
            f"the card of {window.model_version} has no baseline statistics: nothing to compare the "
            "window with (retrain it with a shipml that writes the baseline)"
        )
        return report
    if window.rows == 0:
        report.problems.append(
            f"the window is empty: no captured rows of {window.model_version} between "
            f"{window.start.isoformat()} and {window.end.isoformat()}"
        )
        return report

    plans = _plans(contract, features_baseline, window, report)
    score_entry = baseline.get("score") or {}
    score_name = contract.outputs.score
    score_plan = _NumericPlan(score_name, score_entry) if score_entry.get("edges") else None
    slots = {name: plan.slot_codes(window.columns[name]) for name, plan in plans.items()}
    if score_plan is not None and score_name in window.columns:
        slots[PREDICTION] = score_plan.slot_codes(window.columns[score_name])
    elif score_plan is None:
        report.problems.append("the baseline has no score distribution: prediction drift is not measured")

    for name, plan in plans.items():
        counts = np.bincount(slots[name], minlength=plan.slots)
        values = window.columns[name].values if isinstance(plan, _NumericPlan) else None
        item = (
            plan.feature(counts, values=values, plot=True)
            if values is not None
            else plan.feature(counts, plot=True)
        )
        report.features.append(_judge(item, thresholds))
    if PREDICTION in slots and score_plan is not None:
        counts = np.bincount(slots[PREDICTION], minlength=score_plan.slots)
        item = score_plan.feature(counts, values=window.columns[score_name].values, plot=True)
        item.feature = PREDICTION
        report.prediction = _judge(item, thresholds)

    enough = window.rows >= thresholds.min_samples
    if not enough:
        report.problems.append(
            f"the window has {window.rows:,} rows, under the contract's min_samples "
            f"({thresholds.min_samples:,}): statistics are shown, but no verdict is drawn from them"
        )
        for item in [*report.features, *([report.prediction] if report.prediction else [])]:
            item.drifted = False
        return report

    if segments:
        segment_baselines: Mapping[str, Any] = baseline.get("segments") or {}
        if contract.segments and not segment_baselines:
            report.notes.append(
                "the card has no per-segment baseline (trained before shipml kept one): "
                "segments are not compared"
            )
        else:
            for segment in contract.segments:
                report.segments += _segment_drift(
                    segment,
                    window,
                    plans,
                    score_plan,
                    slots,
                    segment_baselines.get(segment.name) or {},
                    thresholds,
                )

    report.drifted_features = [f.feature for f in report.features if f.drifted]
    if report.prediction is not None and report.prediction.drifted:
        report.drifted_features.append(PREDICTION)
    report.drifted_segments = [s.name for s in report.segments if s.drifted]
    psis = [
        f.psi
        for f in [*report.features, *([report.prediction] if report.prediction else [])]
        if f.psi is not None
    ]
    report.max_psi = max(psis) if psis else None
    report.verdict = "drift" if report.drifted_features or report.drifted_segments else "no_drift"
    return report


def _plans(
    contract: Contract, features_baseline: Mapping[str, Any], window: CapturedWindow, report: DriftReport
) -> dict[str, _NumericPlan | _CategoricalPlan]:
    plans: dict[str, _NumericPlan | _CategoricalPlan] = {}
    for name, entry in features_baseline.items():
        column = window.columns.get(name)
        if column is None:
            report.notes.append(f"{name}: in the baseline but not monitored by this contract; skipped")
            continue
        if entry.get("kind") == "numeric" and not column.categorical:
            plans[name] = _NumericPlan(name, entry)
        elif entry.get("kind") == "categorical" and column.categorical:
            try:
                known = contract.feature(name).categories
            except KeyError:
                known = None
            plans[name] = _CategoricalPlan(name, entry, column, known)
        else:
            report.problems.append(
                f"{name}: the baseline says {entry.get('kind')}, the contract reads it otherwise; skipped"
            )
    return plans


def _segment_drift(
    segment: Segment,
    window: CapturedWindow,
    plans: Mapping[str, _NumericPlan | _CategoricalPlan],
    score_plan: _NumericPlan | None,
    slots: Mapping[str, np.ndarray],
    baselines: Mapping[str, Any],
    thresholds: Thresholds,
) -> list[SegmentDrift]:
    column = window.columns.get(segment.feature)
    if column is None:
        return []
    groups, names = segment_codes(segment, column)
    sizes = np.bincount(groups, minlength=len(names))
    joint = {
        name: _joint_counts(groups, len(names), codes, plans.get(name, score_plan).slots)  # type: ignore[union-attr]
        for name, codes in slots.items()
    }
    out: list[SegmentDrift] = []
    for index, value in enumerate(names):
        rows = int(sizes[index])
        if rows == 0:
            continue
        base = baselines.get(value)
        if rows < thresholds.min_samples:
            out.append(
                SegmentDrift(
                    segment=segment.name,
                    value=value,
                    rows=rows,
                    baseline_rows=base.get("rows") if base else None,
                    status="too_few_rows",
                    note=f"{rows:,} rows < min_samples {thresholds.min_samples:,}: not judged",
                )
            )
            continue
        if not base:
            out.append(
                SegmentDrift(
                    segment=segment.name,
                    value=value,
                    rows=rows,
                    status="no_baseline",
                    note="no training rows of this value in the baseline (see the unseen categories)",
                )
            )
            continue
        items = []
        for name, plan in plans.items():
            entry = (base.get("features") or {}).get(name)
            if entry is None:
                continue
            counts = joint[name][index]
            if isinstance(plan, _NumericPlan):
                item = plan.feature(
                    counts,
                    baseline_frequencies=np.asarray(entry.get("frequencies") or [], dtype=np.float64),
                    baseline_missing=entry.get("missing_rate", 0.0),
                )
            else:
                item = plan.feature(
                    counts,
                    baseline_frequencies=entry.get("frequencies") or {},
                    baseline_missing=entry.get("missing_rate", 0.0),
                )
            items.append(_judge(item, thresholds))
        if PREDICTION in joint and score_plan is not None and (base.get("score") or {}).get("frequencies"):
            item = score_plan.feature(
                joint[PREDICTION][index],
                baseline_frequencies=np.asarray(base["score"]["frequencies"], dtype=np.float64),
                baseline_missing=base["score"].get("missing_rate", 0.0),
            )
            item.feature = PREDICTION
            items.append(_judge(item, thresholds))
        drifted = [i.feature for i in items if i.drifted]
        psis = [i.psi for i in items if i.psi is not None]
        out.append(
            SegmentDrift(
                segment=segment.name,
                value=value,
                rows=rows,
                baseline_rows=base.get("rows"),
                status="compared",
                drifted=bool(drifted),
                drifted_features=drifted,
                max_psi=max(psis) if psis else None,
                features=items,
            )
        )
    return out
