"""Benchmark: the full drift result on 1M captured rows against a straightforward pandas implementation.

    python bench/drift.py [--rows 1000000] [--repeat 3] [--false-positives 20]

Both sides start from the same in-memory Arrow table of captured rows (the example's features as
the serving app captures them: ISO-string times, the score, the model version) and produce the
same statistics against the same baseline: per feature PSI, Jensen-Shannon (categorical, with
unseen categories), normalised Wasserstein (numeric), missing-rate change, the prediction's PSI,
and, in the segmented run, the same per value of each contract segment. The pandas side is what
one would write first: `to_pandas`, `pd.cut` / `value_counts` per feature, `groupby` per segment.
The results are compared (largest PSI difference) so that the timing compares equal work.

Prints a table, then one JSON line: `drift_1m_seconds_vs_pandas` and `segmented_vs_pandas` are our
time over pandas' time (lower is better), measured in this run. `--false-positives N` also
measures how often a sample of the same distribution is called drift, over N seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shipml.contract import FeatureEncoder, load_contract  # noqa: E402
from shipml.data.synth import generate  # noqa: E402
from shipml.monitoring import statistics as st  # noqa: E402
from shipml.monitoring.drift import compute_drift  # noqa: E402
from shipml.monitoring.window import monitored_columns, window_from_arrow  # noqa: E402
from shipml.stats import OTHER, baseline_statistics  # noqa: E402

CONTRACT = Path(__file__).resolve().parents[1] / "examples" / "fraud" / "contract.yaml"
AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
VERSION = "fraud:1"


def score(contract, table: pa.Table) -> np.ndarray:
    """A fixed logistic score of the encoded features (the model does not matter for drift)."""
    encoder = FeatureEncoder(contract)
    weights = np.random.default_rng(0).normal(0, 0.3, encoder.width).astype(np.float32)
    return 1 / (1 + np.exp(-(encoder.encode_table(table) @ weights - 2.0).astype(np.float64)))


def as_captured(contract, table: pa.Table, scores: np.ndarray) -> pa.Table:
    """The table as captured rows: ISO-string times, the score, the label, the model version."""
    rows = table.num_rows
    iso = pc.strftime(table.column("event_time"), format="%Y-%m-%dT%H:%M:%S+00:00")
    table = table.set_column(table.column_names.index("event_time"), "event_time", iso)
    return (
        table.append_column(contract.outputs.score, pa.array(scores))
        .append_column("model_version", pa.array([VERSION] * rows))
        .append_column("time", pa.array([AT.isoformat()] * rows))
        .append_column("request_id", pa.array([f"r{i}" for i in range(rows)]))
    )


# --- the pandas implementation -----------------------------------------------------------------------


def _psi(e: np.ndarray, a: np.ndarray) -> float:
    return st.psi(e, a)


def _numeric(series: pd.Series, entry: dict, *, quantiles: bool) -> dict:
    present = series.dropna()
    out = {"missing": 1 - len(present) / len(series) if len(series) else 0.0}
    edges = entry["edges"]
    bins = pd.cut(present, [-np.inf, *edges, np.inf], right=False, labels=False)
    shares = bins.value_counts(normalize=True).reindex(range(len(edges) + 1), fill_value=0.0).to_numpy()
    out["psi"] = _psi(np.asarray(entry["frequencies"]), shares) if len(present) else None
    if quantiles and len(present):
        levels = np.linspace(0, 1, len(entry["quantiles"]))
        diff = np.abs(np.asarray(entry["quantiles"]) - present.quantile(levels).to_numpy())
        w1 = float((diff[:-1] + diff[1:]).sum() / (2 * (len(diff) - 1)))
        out["wasserstein"] = w1 / entry["std"] if entry["std"] > 0 else w1
    return out


def _categorical(series: pd.Series, entry: dict, known: list[str] | None) -> dict:
    present = series.dropna().astype(str)
    out = {"missing": 1 - len(present) / len(series) if len(series) else 0.0}
    freqs = entry["frequencies"]
    mapped = (
        present.where(present.isin(list(freqs)) | ~present.isin(known or []), OTHER)
        if OTHER in freqs
        else present
    )
    shares = mapped.value_counts(normalize=True)
    names = list(freqs) + [n for n in shares.index if n not in freqs]
    base = np.array([freqs.get(n, 0.0) for n in names])
    current = shares.reindex(names, fill_value=0.0).to_numpy()
    if len(present):
        out["psi"] = _psi(base, current)
        out["js"] = st.js_distance(base, current)
        out["unseen"] = float(shares[[n for n in shares.index if n not in freqs]].sum())
    return out


def pandas_drift(contract, baseline: dict, table: pa.Table, *, segments: bool) -> dict:
    frame = table.to_pandas()
    times = pd.to_datetime(frame["time"], utc=True, format="ISO8601")
    start, end = pd.Timestamp(AT - timedelta(hours=12)), pd.Timestamp(AT + timedelta(hours=12))
    frame = frame[(times >= start) & (times < end) & (frame["model_version"] == VERSION)]
    for feature in contract.monitored_features:
        if feature.type.value == "timestamp":
            frame[feature.name] = pd.to_datetime(
                frame[feature.name], utc=True, format="ISO8601"
            ).dt.hour.astype(float)
        elif feature.type.value == "boolean":
            frame[feature.name] = frame[feature.name].map({True: "True", False: "False"})

    def stats(part: pd.DataFrame, entries: dict, score_entry: dict, *, overall: bool) -> dict:
        result = {}
        for name, entry in entries.items():
            full = baseline["features"][name]
            if full["kind"] == "numeric":
                entry = {**full, **entry}
                result[name] = _numeric(part[name], entry, quantiles=overall)
            else:
                result[name] = _categorical(part[name], {**full, **entry}, contract.feature(name).categories)
        result["prediction"] = _numeric(
            part[contract.outputs.score], {**baseline["score"], **score_entry}, quantiles=overall
        )
        return result

    out = {"overall": stats(frame, baseline["features"], baseline["score"], overall=True), "segments": {}}
    if segments:
        for segment in contract.segments:
            column = frame[segment.feature]
            if segment.bins is not None:
                edges = [-np.inf, *segment.bins, np.inf]
                labels = [f"[{lo:g},{hi:g})" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
                column = pd.cut(column, edges, right=False, labels=labels).astype(str)
            for value, part in frame.groupby(column.astype(str)):
                base = baseline["segments"][segment.name].get(value)
                if base is None or len(part) < contract.drift.min_samples:
                    continue
                out["segments"][f"{segment.name}={value}"] = stats(
                    part, base["features"], base["score"], overall=False
                )
    return out


# --- ours ---------------------------------------------------------------------------------------------


def ours(contract, baseline: dict, table: pa.Table, *, segments: bool):
    window = window_from_arrow(
        table,
        kinds=monitored_columns(contract),
        model_version=VERSION,
        start=AT - timedelta(hours=12),
        end=AT + timedelta(hours=12),
    )
    return compute_drift(contract, baseline, window, segments=segments)


def largest_difference(report, reference: dict) -> float:
    worst = 0.0
    for item in [*report.features, report.prediction]:
        other = reference["overall"][item.feature]
        worst = max(worst, abs(item.psi - other["psi"]))
    for segment in report.segments:
        if segment.status != "compared":
            continue
        for item in segment.features:
            worst = max(worst, abs(item.psi - reference["segments"][segment.name][item.feature]["psi"]))
    return worst


def best_of(repeat: int, run) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    return min(times), result


def false_positive_rate(contract, seeds: int, window_rows: int = 10_000) -> dict:
    runs = drifted = segment_runs = segment_alarms = 0
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(1, seeds + 1):
            generate(Path(folder) / "d.parquet", 60_000, seed=seed)
            table = pq.read_table(Path(folder) / "d.parquet")
            third = pa.array(np.arange(table.num_rows) % 3 == 0)
            reference, held_out = table.filter(pc.invert(third)), table.filter(third)
            baseline = baseline_statistics(contract, reference, score(contract, reference))
            captured = as_captured(contract, held_out, score(contract, held_out))
            rows = np.random.default_rng(seed).choice(captured.num_rows, window_rows, replace=False)
            report = ours(contract, baseline, captured.take(rows), segments=True)
            runs += 1
            drifted += report.verdict == "drift"
            compared = [s for s in report.segments if s.status == "compared"]
            segment_runs += len(compared)
            segment_alarms += sum(s.drifted for s in compared)
    return {
        "seeds": runs,
        "window_rows": window_rows,
        "false_positive_rate": drifted / runs,
        "segment_false_positive_rate": segment_alarms / segment_runs if segment_runs else 0.0,
        "segments_compared": segment_runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--false-positives", type=int, default=0, metavar="SEEDS")
    args = parser.parse_args()
    contract = load_contract(CONTRACT)

    with tempfile.TemporaryDirectory() as folder:
        generate(Path(folder) / "reference.parquet", 200_000, seed=1)
        generate(Path(folder) / "current.parquet", args.rows, seed=2)
        reference = pq.read_table(Path(folder) / "reference.parquet")
        current = pq.read_table(Path(folder) / "current.parquet")
    baseline = baseline_statistics(contract, reference, score(contract, reference))
    captured = as_captured(contract, current, score(contract, current))

    rows = []
    ratios = {}
    for segmented in (False, True):
        ours_s, report = best_of(
            args.repeat, lambda s=segmented: ours(contract, baseline, captured, segments=s)
        )
        pandas_s, reference_result = best_of(
            args.repeat, lambda s=segmented: pandas_drift(contract, baseline, captured, segments=s)
        )
        difference = largest_difference(report, reference_result)
        label = "with segments" if segmented else "no segments"
        rows.append((label, ours_s, pandas_s, ours_s / pandas_s, difference, len(report.segments)))
        ratios[segmented] = ours_s / pandas_s

    print(
        f"drift on {captured.num_rows:,} captured rows, {len(baseline['features'])} features + prediction; "
        f"best of {args.repeat}"
    )
    print(f"{'run':<15} {'shipml s':>9} {'pandas s':>9} {'ratio':>7} {'max |dPSI|':>11} {'segments':>9}")
    for label, a, b, ratio, difference, count in rows:
        print(f"{label:<15} {a:>9.3f} {b:>9.3f} {ratio:>7.3f} {difference:>11.2e} {count:>9}")
    result = {
        "drift_1m_seconds_vs_pandas": round(ratios[False], 4),
        "segmented_vs_pandas": round(ratios[True], 4),
    }
    if args.false_positives:
        fp = false_positive_rate(contract, args.false_positives)
        print(
            f"false positives: {fp['false_positive_rate']:.1%} of {fp['seeds']} same-distribution windows of "
            f"{fp['window_rows']:,} rows called drift; {fp['segment_false_positive_rate']:.2%} of "
            f"{fp['segments_compared']} segment comparisons"
        )
        result["false_positive_rate"] = fp["false_positive_rate"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
