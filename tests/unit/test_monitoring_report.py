"""The drift report as one self-contained HTML file: a plot per drifted feature, nothing fetched."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import pytest

from shipml.monitoring.drift import compute_drift
from shipml.monitoring.report import render_html
from shipml.monitoring.window import monitored_columns, window_from_arrow

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append((tag, dict(attrs)))


@pytest.fixture(scope="module")
def drifted_report(monitoring_world):
    captured, _ = monitoring_world.capture(monitoring_world.drifted)
    window = window_from_arrow(
        captured,
        kinds=monitored_columns(monitoring_world.contract),
        model_version="fraud:1",
        start=AT - timedelta(hours=1),
        end=AT + timedelta(hours=1),
    )
    return compute_drift(monitoring_world.contract, monitoring_world.artifact.card.baseline, window)


def test_one_inline_svg_plot_per_drifted_feature(drifted_report) -> None:
    html = render_html(drifted_report)
    parser = _Tags()
    parser.feed(html)

    plots = [attrs["aria-label"] for tag, attrs in parser.tags if tag == "svg"]
    assert plots == drifted_report.drifted_features
    assert "crypto" in html  # the unseen category is named
    assert "drift" in html and drifted_report.model_version in html


def test_the_report_fetches_nothing(drifted_report) -> None:
    html = render_html(drifted_report)
    parser = _Tags()
    parser.feed(html)

    assert not [tag for tag, _ in parser.tags if tag in ("script", "link", "img", "iframe")]
    urls = re.findall(r"(?:src|href)\s*=", html)
    assert urls == []
    assert set(re.findall(r"https?://[^\"' ]+", html)) <= {"http://www.w3.org/2000/svg"}


def test_values_from_the_data_are_escaped(drifted_report) -> None:
    report = drifted_report.model_copy(deep=True)
    report.problems.append("<script>alert(1)</script>")
    report.features[0].unseen = {"<b>x</b>": 1}
    report.features[0].unseen_share = 0.1

    html = render_html(report)

    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<b>x</b>" not in html


def test_a_report_without_data_still_renders_its_verdict(monitoring_world) -> None:
    from shipml.monitoring.window import CapturedWindow

    empty = CapturedWindow("fraud:1", AT - timedelta(hours=1), AT, 0, {})
    report = compute_drift(monitoring_world.contract, monitoring_world.artifact.card.baseline, empty)

    html = render_html(report)

    assert "insufficient data" in html and "the window is empty" in html
