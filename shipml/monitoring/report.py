"""The drift report as one self-contained HTML file: no scripts, no fonts, no CDN, nothing fetched.

It holds the verdict, the problems and notes, the table of statistics per feature (and the
prediction), a plot per drifted feature (baseline against current shares, as inline SVG), and the
table of segments. Every value from the data is escaped.
"""

from __future__ import annotations

from html import escape

from shipml.monitoring.drift import Distribution, DriftReport, FeatureDrift

_BASELINE_COLOUR = "#8da0cb"
_CURRENT_COLOUR = "#fc8d62"
_VERDICT_COLOUR = {
    "drift": "#c0392b",
    "no_drift": "#1e8449",
    "insufficient_data": "#b9770e",
    "no_baseline": "#b9770e",
}

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem;color:#222;
max-width:72rem}
h1{font-size:1.4rem}h2{font-size:1.15rem;margin-top:2rem}
table{border-collapse:collapse;font-size:.85rem}
td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}tr.drift td{background:#fdecea}
.verdict{display:inline-block;padding:.2rem .6rem;border-radius:.3rem;color:#fff;font-weight:600}
.plots{display:flex;flex-wrap:wrap;gap:1rem}figure{margin:0}figcaption{font-size:.85rem;margin-bottom:.2rem}
.muted{color:#666;font-size:.85rem}
"""


def _number(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def bar_chart_svg(title: str, distribution: Distribution, *, width: int = 520, bar_height: int = 11) -> str:
    """Horizontal grouped bars: per bin or category, the baseline share and the current share."""
    labels = distribution.labels
    top = max([*distribution.baseline, *distribution.current, 1e-9])
    label_width, value_width, gap = 150, 50, 6
    plot_width = width - label_width - value_width
    row = 2 * bar_height + gap
    height = 24 + row * len(labels)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(title)}" font-size="11">',
        f'<rect x="{label_width}" y="2" width="10" height="10" fill="{_BASELINE_COLOUR}"/>'
        f'<text x="{label_width + 14}" y="11">baseline</text>'
        f'<rect x="{label_width + 80}" y="2" width="10" height="10" fill="{_CURRENT_COLOUR}"/>'
        f'<text x="{label_width + 94}" y="11">current</text>',
    ]
    for i, (label, base, current) in enumerate(
        zip(labels, distribution.baseline, distribution.current, strict=True)
    ):
        y = 20 + i * row
        shown = label if len(label) <= 24 else label[:23] + "…"
        parts.append(
            f'<text x="{label_width - 4}" y="{y + bar_height + 3}" text-anchor="end">{escape(shown)}</text>'
        )
        for j, (share, colour) in enumerate(((base, _BASELINE_COLOUR), (current, _CURRENT_COLOUR))):
            length = plot_width * share / top
            parts.append(
                f'<rect x="{label_width}" y="{y + j * bar_height}" width="{length:.1f}" '
                f'height="{bar_height - 1}" fill="{colour}"/>'
                f'<text x="{label_width + length + 3:.1f}" y="{y + j * bar_height + bar_height - 2}">'
                f"{share:.1%}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _feature_row(item: FeatureDrift) -> str:
    unseen = ""
    if item.unseen_share:
        names = ", ".join(f"{escape(k)} ({v:,})" for k, v in item.unseen.items())
        unseen = f"{item.unseen_share:.1%}: {names}"
    return (
        f'<tr class="{"drift" if item.drifted else ""}"><td class="l">{escape(item.feature)}</td>'
        f"<td class='l'>{item.kind}</td><td>{item.rows:,}</td><td>{_number(item.psi)}</td>"
        f"<td>{_number(item.js_distance)}</td><td>{_number(item.wasserstein)}</td>"
        f"<td>{item.missing_rate_baseline:.1%} → {item.missing_rate_current:.1%}</td>"
        f"<td class='l'>{unseen}</td><td class='l'>{escape('; '.join(item.reasons)) or 'ok'}</td></tr>"
    )


def render_html(report: DriftReport) -> str:
    """The report as a complete HTML document (a string)."""
    colour = _VERDICT_COLOUR[report.verdict]
    t = report.thresholds
    head = (
        f"<h1>Drift report: {escape(report.model_version)}</h1>"
        f'<p><span class="verdict" style="background:{colour}">{escape(report.verdict.replace("_", " "))}'
        f"</span> {escape(report.summary())}</p>"
        f'<p class="muted">window {escape(report.window_start.isoformat())} to '
        f"{escape(report.window_end.isoformat())}; {report.rows:,} rows of {escape(report.model_version)}; "
        f"source {escape(report.source)}; generated {escape(report.generated_at.isoformat())}.<br>"
        f"Thresholds (contract): PSI &gt; {t.psi:g}, Jensen-Shannon &gt; {t.js:g}, missing-rate change "
        f"&gt; {t.missing_rate_delta:.0%}; segments judged from {t.min_samples:,} rows.</p>"
    )
    problems = "".join(f"<li>{escape(p)}</li>" for p in report.problems)
    notes = "".join(f"<li>{escape(n)}</li>" for n in report.notes)
    sections = [head]
    if problems:
        sections.append(f"<h2>Problems</h2><ul>{problems}</ul>")
    if notes:
        sections.append(f'<h2>Notes</h2><ul class="muted">{notes}</ul>')
    items = [*report.features, *([report.prediction] if report.prediction else [])]
    if items:
        rows = "".join(_feature_row(i) for i in items)
        sections.append(
            "<h2>Features and prediction</h2><table><tr><th class='l'>feature</th><th class='l'>kind</th>"
            "<th>rows</th><th>PSI</th><th>Jensen-Shannon</th><th>Wasserstein / std</th>"
            "<th>missing</th><th class='l'>unseen</th><th class='l'>verdict</th></tr>" + rows + "</table>"
        )
    plotted = [i for i in items if i.drifted and i.distribution is not None]
    if plotted:
        figures = "".join(
            f"<figure><figcaption><b>{escape(i.feature)}</b>: {escape('; '.join(i.reasons))}</figcaption>"
            f"{bar_chart_svg(i.feature, i.distribution)}</figure>"  # type: ignore[arg-type]
            for i in plotted
        )
        sections.append(f'<h2>Drifted features</h2><div class="plots">{figures}</div>')
    if report.segments:
        rows = "".join(
            f'<tr class="{"drift" if s.drifted else ""}"><td class="l">{escape(s.segment)}</td>'
            f"<td class='l'>{escape(s.value)}</td><td>{s.rows:,}</td>"
            f"<td>{'' if s.baseline_rows is None else f'{s.baseline_rows:,}'}</td>"
            f"<td class='l'>{s.status}</td>"
            f"<td>{_number(s.max_psi)}</td><td class='l'>{escape(', '.join(s.drifted_features))}</td>"
            f"<td class='l'>{escape(s.note)}</td></tr>"
            for s in report.segments
        )
        sections.append(
            "<h2>Segments</h2><table><tr><th class='l'>segment</th><th class='l'>value</th><th>rows</th>"
            "<th>baseline rows</th><th class='l'>status</th><th>max PSI</th><th class='l'>drifted</th>"
            "<th class='l'>note</th></tr>" + rows + "</table>"
        )
    body = "".join(sections)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Drift report {escape(report.model_version)}</title><style>{_STYLE}</style></head>"
        f"<body>{body}</body></html>"
    )
