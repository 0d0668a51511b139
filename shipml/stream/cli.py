"""`shipml stream score`: the stream consumer on JSON Lines, locally, through the same code path.

Mount it on the main command line (shipml/cli.py):

    app.add_typer(stream_app, name="stream")

Each input line is one record, as a producer would put it on the stream. Decisions go to stdout
(or --output) as JSON Lines, dead letters to --dead-letters (default `<root>/stream/dead-letters.jsonl`),
capture and metrics to the local backend, exactly as the Lambda consumer writes them on aws.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import ExitStack
from itertools import islice
from pathlib import Path
from typing import Annotated, TextIO

import typer

from shipml.errors import ShipmlError
from shipml.settings import Settings

stream_app = typer.Typer(
    help="Stream inference: score records as the stream consumer does.", no_args_is_help=True
)


@stream_app.callback()
def _group() -> None:
    """Stream inference: score records as the stream consumer does."""
    # A callback keeps `score` a subcommand even while it is the only one.


def _settings() -> Settings:
    # The global options live on the main app's state; standalone use falls back to SHIPML_*.
    try:
        from shipml.cli import state

        return state.settings
    except (ImportError, AttributeError):
        return Settings.from_env()


def _batches(lines: TextIO, size: int) -> Iterator[tuple[int, list[str]]]:
    """(number of the first line, lines) in batches of `size`."""
    first = 1
    while batch := list(islice(lines, size)):
        yield first, batch
        first += len(batch)


@stream_app.command("score")
def score(
    source: Annotated[str, typer.Argument(help="JSON Lines file, one record per line; '-' for stdin.")] = "-",
    output: Annotated[Path | None, typer.Option(help="Write decisions here instead of stdout.")] = None,
    dead_letters: Annotated[
        Path | None,
        typer.Option(help="Dead letters (JSON Lines) [default: <root>/stream/dead-letters.jsonl]."),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=10_000, help="Records scored per batch.")] = 500,
    version: Annotated[str | None, typer.Option(help="Pin a version number; default: the live one.")] = None,
) -> None:
    """Score JSON Lines like the stream consumer: decisions out, rejects dead-lettered with the reason."""
    from shipml.stream.factory import build_consumer
    from shipml.stream.ports import JsonLinesDeadLetterSink, JsonLinesDecisionSink
    from shipml.stream.records import records_from_lines
    from shipml.stream.settings import StreamSettings

    settings = _settings()
    if version is not None:
        settings = settings.model_copy(update={"model_version": version})
    rejects_path = dead_letters or Path(settings.root) / "stream" / "dead-letters.jsonl"
    with ExitStack() as files:
        try:
            lines = sys.stdin if source == "-" else files.enter_context(Path(source).open(encoding="utf-8"))
            out = sys.stdout if output is None else files.enter_context(output.open("w", encoding="utf-8"))
            rejects_path.parent.mkdir(parents=True, exist_ok=True)
            rejects = files.enter_context(rejects_path.open("a", encoding="utf-8"))
        except OSError as exc:
            raise ShipmlError(f"cannot open {exc.filename}: {exc.strerror}") from None
        consumer = build_consumer(
            settings,
            StreamSettings(output="jsonl"),
            output=JsonLinesDecisionSink(out),
            dead_letters=JsonLinesDeadLetterSink(rejects),
        )
        scored = rejected = 0
        unsettled: dict[str, str] = {}
        try:
            for first, batch in _batches(lines, batch_size):
                result = consumer.settle(records_from_lines(batch, start=first))
                scored += len(result.decisions)
                rejected += len(result.dead_letters)
                unsettled.update(result.unsettled)
        finally:
            consumer.flush()
    print(f"scored {scored}, dead-lettered {rejected} (to {rejects_path})", file=sys.stderr)
    if unsettled:
        first_id, reason = next(iter(unsettled.items()))
        raise ShipmlError(f"{len(unsettled)} records were not scored (first: {first_id}: {reason})")
