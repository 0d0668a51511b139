"""`shipml features materialize` and `shipml features training-set`, for the shipml command line.

Mount them on the existing `features` sub-app in shipml/cli.py:

    features_app.command("materialize")(materialize_command)
    features_app.command("training-set")(training_set_command)

They read the settings the global options set (`shipml --root ... features materialize`), and
raise `ShipmlError` for the CLI's one error handler.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from shipml.errors import ShipmlError
from shipml.settings import Settings


def _settings() -> Settings:
    # The global options live on the main app's state; standalone use falls back to SHIPML_*.
    try:
        from shipml.cli import state

        return state.settings
    except (ImportError, AttributeError):
        return Settings.from_env()


def _as_of(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ShipmlError(f"--as-of must be an ISO 8601 time with an offset, got {text!r}") from None
    if moment.tzinfo is None:
        raise ShipmlError(f"--as-of must carry a UTC offset (e.g. {text}+00:00), got {text!r}")
    return moment


def materialize_command(
    data: Annotated[Path, typer.Option(help="The transactions history: a Parquet file or folder.")],
    as_of: Annotated[
        str | None, typer.Option(help="Point in time of the features (ISO 8601 with offset); default now.")
    ] = None,
    full: Annotated[
        bool, typer.Option(help="Recompute from the whole history and rewrite every item.")
    ] = False,
) -> None:
    """Compute the contract's online features from the history and write them to the online store."""
    from shipml.backends import build_backends
    from shipml.contract import load_contract
    from shipml.features.lake import PathSource
    from shipml.features.materialize import materialize

    settings = _settings()
    backends = build_backends(settings)
    report = materialize(
        load_contract(settings.contract),
        PathSource(data),
        backends.online,
        as_of=_as_of(as_of),
        state_store=backends.blobs,
        full=full,
    )
    typer.echo(report.summary())
    if report.refusals:
        typer.echo(report.refusals, err=True)
    if report.failed_count:
        raise ShipmlError(f"{report.failed_count} items could not be written; rerun to retry them")


def training_set_command(
    data: Annotated[Path, typer.Argument(help="Transactions (Parquet/CSV/JSON Lines file or folder).")],
    output: Annotated[Path, typer.Argument(help="Parquet file to write.")],
) -> None:
    """Write training data whose online features are computed point in time (no leakage)."""
    from shipml.contract import load_contract
    from shipml.features.training import write_training_set

    report = write_training_set(load_contract(_settings().contract), data, output)
    typer.echo(
        f"wrote {report.rows:,} rows with point-in-time {', '.join(report.features)} to {output}; "
        f"{report.history_refused:,} history rows refused"
    )
