"""`shipml monitor drift|quality|status|replay`: the monitors on the local backend.

Mounted by shipml/cli.py with one line:

    app.add_typer(monitor_app, name="monitor")   # from shipml.monitoring.cli import monitor_app

The commands read the settings the global options set (`shipml --root ... monitor drift`) and raise
`ShipmlError` for the CLI's one error handler. Local layout: capture under `<root>/capture/`,
reports under `<root>/blobs/monitoring/<model>/`, metrics appended to `<root>/metrics/metrics.jsonl`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from shipml.errors import ShipmlError
from shipml.settings import Settings

if TYPE_CHECKING:
    from shipml.monitoring.drift import DriftReport
    from shipml.monitoring.quality import QualityReport

out = Console(soft_wrap=True)
monitor_app = typer.Typer(
    help="Monitoring: drift against the live model's baseline, quality from delayed labels.",
    no_args_is_help=True,
)

_VERDICT_STYLE = {"drift": "bold red", "degraded": "bold red", "no_drift": "green", "ok": "green"}


def _settings() -> Settings:
    # The global options live on the main app's state; standalone use falls back to SHIPML_*.
    try:
        from shipml.cli import state

        return state.settings
    except (ImportError, AttributeError):
        return Settings.from_env()


def _end(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ShipmlError(f"--end must be an ISO 8601 time with an offset, got {text!r}") from None
    if moment.tzinfo is None:
        raise ShipmlError(f"--end must carry a UTC offset (e.g. {text}+00:00), got {text!r}")
    return moment


def _local(settings: Settings, version: str):  # noqa: ANN202 - (backends, model source, capture source)
    from shipml.backends import local_backends
    from shipml.monitoring.jobs import RegistryModelSource
    from shipml.monitoring.window import LocalCaptureFolder

    if settings.backend != "local":
        raise ShipmlError("`shipml monitor` runs on the local backend; on AWS the scheduled functions run it")
    backends = local_backends(settings.root)
    return (
        backends,
        RegistryModelSource(backends.registry, settings.model, version),
        LocalCaptureFolder(settings.root / "capture"),
    )


def _verdict(text: str) -> str:
    return f"[{_VERDICT_STYLE.get(text, 'bold yellow')}]{text.replace('_', ' ')}[/]"


def _local_path(uri: str) -> str:
    return uri.removeprefix("file://")


def _print_verdict(report: DriftReport | QualityReport) -> None:
    """A drift or quality report's verdict and summary line, then each problem the job met."""
    out.print(f"{_verdict(report.verdict)} {escape(report.summary())}")
    for problem in report.problems:
        out.print(f"  [yellow]![/] {escape(problem)}")


@monitor_app.command("drift")
def drift_command(
    hours: Annotated[float, typer.Option(help="Length of the window, ending at --end.")] = 24.0,
    end: Annotated[
        str | None, typer.Option(help="End of the window (ISO 8601 with offset); default now.")
    ] = None,
    version: Annotated[str, typer.Option(help="Model version to watch: a number or 'live'.")] = "live",
    segments: Annotated[bool, typer.Option(help="Compare each contract segment too.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Compare the captured window with the baseline in the model's card; save an HTML report."""
    from shipml.monitoring.jobs import run_drift_job, window_bounds

    settings = _settings()
    backends, models, capture = _local(settings, version)
    start, stop = window_bounds(_end(end), hours)
    result = run_drift_job(
        models=models,
        capture=capture,
        blobs=backends.blobs,
        metrics=backends.metrics,
        start=start,
        end=stop,
        segments=segments,
    )
    report = result.report
    if as_json:
        print(report.model_dump_json(indent=2))
        return
    _print_verdict(report)
    if report.features:
        table = Table("feature", "PSI", "Jensen-Shannon", "Wasserstein/std", "missing", "verdict")
        for item in [*report.features, *([report.prediction] if report.prediction else [])]:
            table.add_row(
                item.feature,
                f"{item.psi:.3f}" if item.psi is not None else "",
                f"{item.js_distance:.3f}" if item.js_distance is not None else "",
                f"{item.wasserstein:.3f}" if item.wasserstein is not None else "",
                f"{item.missing_rate_baseline:.1%} -> {item.missing_rate_current:.1%}",
                "[red]" + escape("; ".join(item.reasons)) + "[/]" if item.drifted else "ok",
            )
        out.print(table)
    judged = [s for s in report.segments if s.status == "compared"]
    if report.segments:
        out.print(
            f"segments: {len(judged)} compared, {len(report.segments) - len(judged)} not judged "
            f"(too few rows or no baseline); drifted: {', '.join(report.drifted_segments) or 'none'}"
        )
    out.print(f"report: {_local_path(result.html_uri)}")


@monitor_app.command("quality")
def quality_command(
    labels: Annotated[Path, typer.Option(help="Ground truth: a file or folder (JSON Lines, CSV, Parquet).")],
    hours: Annotated[float, typer.Option(help="Length of the capture window, ending at --end.")] = 24.0 * 7,
    end: Annotated[
        str | None, typer.Option(help="End of the window (ISO 8601 with offset); default now.")
    ] = None,
    version: Annotated[str, typer.Option(help="Model version to watch: a number or 'live'.")] = "live",
    min_rows: Annotated[
        int | None, typer.Option(help="Labelled rows a slice needs (default: min_samples).")
    ] = None,
    auc_floor: Annotated[float | None, typer.Option(help="Lowest acceptable AUC.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Join delayed labels with the captured predictions; AUC, precision, recall, calibration."""
    from shipml.backends.local import FolderBlobStore
    from shipml.monitoring.jobs import run_quality_job, window_bounds
    from shipml.monitoring.quality import QualityRules

    settings = _settings()
    backends, models, capture = _local(settings, version)
    if not labels.exists():
        raise ShipmlError(f"--labels {labels}: no such file or folder")
    store, prefix = (
        (FolderBlobStore(labels.parent), labels.name) if labels.is_file() else (FolderBlobStore(labels), "")
    )
    start, stop = window_bounds(_end(end), hours)
    ref, artifact = models.current()
    rules = QualityRules(min_rows=min_rows or artifact.contract.drift.min_samples, auc_floor=auc_floor)
    result = run_quality_job(
        models=models,
        capture=capture,
        labels=store,
        blobs=backends.blobs,
        metrics=backends.metrics,
        start=start,
        end=stop,
        labels_prefix=prefix,
        rules=rules,
    )
    report = result.report
    if as_json:
        print(report.model_dump_json(indent=2))
        return
    _print_verdict(report)
    slices = [
        s
        for s in ([report.overall] if report.overall else []) + report.segments
        if s.status != "too_few_rows"
    ]
    if slices:
        table = Table(
            "slice", "rows", "positives", "AUC", "precision", "recall", "calibration error", "verdict"
        )
        for item in slices:
            table.add_row(
                item.name,
                f"{item.rows:,}",
                f"{item.positives:,}",
                *(
                    f"{v:.4f}" if v is not None else ""
                    for v in (item.auc, item.precision, item.recall, item.calibration_error)
                ),
                "[red]" + escape("; ".join(item.reasons)) + "[/]" if item.degraded else "ok",
            )
        out.print(table)
    out.print(f"report: {_local_path(result.json_uri)}")


@monitor_app.command("status")
def status_command() -> None:
    """The watched version, the captured rows per day, and the latest drift and quality verdicts."""
    from shipml.monitoring.jobs import MonitoringError, latest_reports

    settings = _settings()
    backends, models, capture = _local(settings, "live")
    try:
        ref, _ = models.current()
        out.print(f"live model: {ref}")
    except MonitoringError as exc:
        out.print(f"live model: none ({escape(str(exc))})")
    days = sorted(p.name for p in capture.folder.glob("date=*")) if capture.folder.is_dir() else []
    if days:
        import pyarrow.parquet as pq

        for day in days[-7:]:
            rows = sum(
                pq.ParquetFile(p).metadata.num_rows for p in (capture.folder / day).glob("part-*.parquet")
            )
            out.print(f"captured {day.removeprefix('date=')}: {rows:,} rows")
    else:
        out.print(f"captured: nothing under {capture.folder}")
    for kind in ("drift", "quality"):
        keys = latest_reports(backends.blobs, settings.model, kind, count=1)
        if not keys:
            out.print(f"{kind}: no report yet (run `shipml monitor {kind}`)")
            continue
        report = json.loads(backends.blobs.get_bytes(keys[0]))
        out.print(
            f"{kind}: {_verdict(report['verdict'])} for {report['model_version']} "
            f"(window ending {report['window_end']}): {_local_path(backends.blobs.uri(keys[0]))}"
        )


@monitor_app.command("replay")
def replay_command(
    data: Annotated[Path, typer.Argument(help="Data file to replay (Parquet, CSV, JSON Lines).")],
    labels_out: Annotated[
        Path | None,
        typer.Option(help="Also write its ground truth here (JSON Lines), for `monitor quality`."),
    ] = None,
    version: Annotated[str, typer.Option(help="Model version to score with: a number or 'live'.")] = "live",
) -> None:
    """Score a data file with a model version and capture it as served traffic (shadow traffic, demos)."""
    from shipml.contract import Masker
    from shipml.data import read_table
    from shipml.monitoring.replay import replay

    settings = _settings()
    backends, models, _ = _local(settings, version)
    ref, artifact = models.current()
    result = replay(
        read_table(data),
        artifact,
        model_version=ref,
        capture=backends.capture,
        masker=Masker(artifact.contract, hash_key=settings.hash_key.encode()),
        request_prefix=f"replay-{datetime.now(UTC):%Y%m%dT%H%M%S}",
    )
    out.print(f"captured {result.rows:,} rows scored by {ref} under {settings.root / 'capture'}")
    if labels_out is not None:
        if result.labels is None:
            raise ShipmlError(f"{data} has no {artifact.contract.target} column: no labels to write")
        from shipml import atomic

        lines = "".join(json.dumps(row) + "\n" for row in result.labels.to_pylist())
        atomic.write_bytes(labels_out, lines.encode("utf-8"))
        out.print(f"wrote {result.labels.num_rows:,} labels to {labels_out}")
