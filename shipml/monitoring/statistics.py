"""Distribution distances between a baseline and a current sample. numpy only, vectorised.

Every function takes *shares* (non-negative vectors over the same bins or categories, each
summing to 1) or, for the Wasserstein distance, quantile functions; turning raw values into those is
`bin_counts` (numeric, over the baseline's inner quantile edges) and the window's categorical codes.

Definitions (tests check them against hand-computed cases):

- PSI (population stability index): ``sum((a - e) * ln(a / e))`` over bins, with each share floored
  at `PSI_EPSILON` (then renormalised) so that an empty bin or an unseen category gives a large but
  finite term instead of infinity.
- Jensen-Shannon distance: ``sqrt(JSD)`` with ``JSD = (KL(e||m) + KL(a||m)) / 2``, ``m = (e + a) / 2``,
  logarithms in base 2, so it lies in [0, 1] (what scipy calls `jensenshannon(e, a, base=2)`).
- Normalised Wasserstein distance: ``W1 = integral over u in [0, 1] of |Qe(u) - Qa(u)|``, the mean
  absolute difference of the two quantile functions, estimated by the trapezoid rule on the
  baseline's percentile grid (101 levels), divided by the baseline's standard deviation. A shift of
  the whole distribution by one standard deviation gives 1.0.
"""

from __future__ import annotations

import numpy as np

#: Floor on a share inside PSI; also used by `shipml.pipeline.quality` (same value on purpose).
PSI_EPSILON = 1e-4


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of `actual` shares against `expected` shares (same bins)."""
    e = np.clip(np.asarray(expected, dtype=np.float64), PSI_EPSILON, None)
    a = np.clip(np.asarray(actual, dtype=np.float64), PSI_EPSILON, None)
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def psi_rows(expected: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """PSI of each row of `actual` (a matrix of share vectors) against `expected` (one vector or a
    matrix of the same shape): the per-segment form, in one vectorised pass."""
    e = np.clip(np.asarray(expected, dtype=np.float64), PSI_EPSILON, None)
    a = np.clip(np.asarray(actual, dtype=np.float64), PSI_EPSILON, None)
    e = e / e.sum(axis=-1, keepdims=True)
    a = a / a.sum(axis=-1, keepdims=True)
    return np.sum((a - e) * np.log(a / e), axis=-1)


def js_distance(expected: np.ndarray, actual: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two share vectors over the same categories."""
    return float(js_distance_rows(np.asarray(expected)[None, :], np.asarray(actual)[None, :])[0])


def js_distance_rows(expected: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Jensen-Shannon distance of each row pair (vectorised over segments)."""
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    e = e / np.maximum(e.sum(axis=-1, keepdims=True), 1e-300)
    a = a / np.maximum(a.sum(axis=-1, keepdims=True), 1e-300)
    m = (e + a) / 2

    def kl(p: np.ndarray) -> np.ndarray:
        # 0 * log(0 / m) = 0; where p > 0, m > 0 too.
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(p > 0, p * np.log2(p / m), 0.0)
        return terms.sum(axis=-1)

    divergence = np.clip((kl(e) + kl(a)) / 2, 0.0, 1.0)
    return np.sqrt(divergence)


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of the present values per bin: bins are (-inf, e0), [e0, e1), ..., [ek, inf)."""
    present = values[~np.isnan(values)]
    return np.bincount(np.searchsorted(edges, present, side="right"), minlength=len(edges) + 1)


def bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The bin of every value (as `bin_counts`), with missing values in an extra last bin."""
    index = np.searchsorted(edges, values, side="right")
    index[np.isnan(values)] = len(edges) + 1
    return index


def quantile_levels(count: int) -> np.ndarray:
    """The evenly spaced levels 0, 1/(count-1), ..., 1 at which baselines keep their quantiles."""
    return np.linspace(0.0, 1.0, count)


def wasserstein_from_quantiles(baseline_quantiles: np.ndarray, current_quantiles: np.ndarray) -> float:
    """W1 between two distributions given by their quantiles at the same evenly spaced levels."""
    diff = np.abs(np.asarray(baseline_quantiles, dtype=np.float64) - np.asarray(current_quantiles))
    if len(diff) < 2:
        return float(diff.mean()) if len(diff) else 0.0
    # Trapezoid rule on an even grid over [0, 1].
    return float((diff[:-1] + diff[1:]).sum() / (2 * (len(diff) - 1)))


def normalised_wasserstein(
    baseline_quantiles: np.ndarray, baseline_std: float, current: np.ndarray
) -> float | None:
    """W1 between the baseline (its quantiles) and the present `current` values, over the baseline std.

    None when there is nothing to compare (no quantiles in the baseline, or no current values).
    A baseline with zero spread is compared on the raw scale.
    """
    quantiles = np.asarray(baseline_quantiles, dtype=np.float64)
    present = current[~np.isnan(current)]
    if len(quantiles) == 0 or len(present) == 0:
        return None
    current_quantiles = np.quantile(present, quantile_levels(len(quantiles)))
    distance = wasserstein_from_quantiles(quantiles, current_quantiles)
    return distance / baseline_std if baseline_std > 0 else distance
