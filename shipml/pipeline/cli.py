"""`shipml retrain`: run the synthesized retraining state machine on the local backend.

Mounted by `shipml/cli.py` with `app.command("retrain")(retrain)`. Prints each state as it runs,
the gate's verdict and the outcome; saves the execution history under
`{root}/pipeline/executions/`. Exit status 0 when the run reached a decision (promoted, awaiting
approval, or the champion kept by the gate), 1 when it failed (bad data, a failed job, a rollout
failure): the live model is untouched in every case but a promotion.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from shipml.errors import ShipmlError

out = Console(soft_wrap=True)

_STATE_STYLE = {"Task": "cyan", "Choice": "magenta", "Wait": "yellow", "Pass": "white"}


def _settings():  # noqa: ANN202 - shipml.settings.Settings
    # The global options (--root, --model, --contract) are parsed by shipml.cli's callback.
    from shipml.cli import state

    return state.settings


def _parse_hyperparameters(items: list[str]) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ShipmlError(f"--hp expects KEY=VALUE, got {item!r}")
        try:
            parsed[key] = json.loads(value)
        except ValueError:
            parsed[key] = value
    return parsed


def _show(event: dict[str, Any]) -> None:
    kind, state = event["type"], event.get("state")
    if kind == "StateEntered":
        style = _STATE_STYLE.get(event["state_type"], "bold")
        out.print(f"[{style}]▶ {escape(state)}[/] [dim]({event['state_type']})[/]")
    elif kind == "TaskFailed":
        out.print(f"  [red]✗ {escape(event['error'])}[/] {escape(_cause(event.get('cause', '')))}")
    elif kind == "TaskRetryScheduled":
        out.print(f"  [yellow]↻ retry {event['attempt']} in {event['delay_s']:.0f} s[/]")
    elif kind == "StateCaught":
        out.print(f"  [red]→ caught {escape(event['error'])}, going to {escape(event['next'])}[/]")
    elif kind == "StateExited" and state == "Gate":
        gate = (event.get("output") or {}).get("gate", {})
        colour = "green" if gate.get("passed") else "red"
        out.print(f"  [{colour}]gate: {escape(str(gate.get('summary', '')))}[/]")


def _cause(cause: str) -> str:
    try:
        parsed = json.loads(cause)
    except ValueError:
        return cause[:400]
    if isinstance(parsed, dict):
        return str(parsed.get("errorMessage") or parsed.get("FailureReason") or parsed)[:400]
    return cause[:400]


def retrain(
    data: Annotated[
        str | None,
        typer.Option(
            help="Training data (a Parquet file or folder); default: the data lake prefix in the plan."
        ),
    ] = None,
    hp: Annotated[
        list[str] | None,
        typer.Option("--hp", metavar="KEY=VALUE", help="Hyperparameter override; repeatable."),
    ] = None,
    reason: Annotated[str, typer.Option(help="Why this run happens (kept with the version).")] = "manual",
    workers: Annotated[int, typer.Option(min=1, max=64, help="torchrun worker processes (gloo on CPU).")] = 2,
    definition: Annotated[
        Path | None, typer.Option(help="An exported definition (default: synthesize and cache it).")
    ] = None,
    refresh_definition: Annotated[
        bool, typer.Option(help="Synthesize the definition even if cached.")
    ] = False,
) -> None:
    """Retrain through the synthesized Step Functions definition, on the local backend."""
    from shipml.pipeline.definition import load_definition
    from shipml.pipeline.local import LocalTasks, run_pipeline

    settings = _settings()
    execution_input: dict[str, Any] = {"reason": reason}
    if data is not None:
        execution_input["data_uri"] = str(Path(data).resolve())
    if hp:
        execution_input["hyperparameters"] = _parse_hyperparameters(hp)
    with out.status("loading the state machine definition (synthesizing it if the stacks changed)..."):
        document, source = load_definition(settings.root, path=definition, refresh=refresh_definition)
    out.print(f"[dim]definition: {source}[/]")
    tasks = LocalTasks(document, settings, workers=workers, environ=os.environ)
    execution, history = run_pipeline(document, tasks, execution_input, root=settings.root, on_event=_show)
    out.print(f"[dim]history: {history}[/]")
    if execution.status == "SUCCEEDED":
        result = execution.output or {}
        promotion = (result.get("promotion") or {}).get("message")
        registered = result.get("registered") or {}
        message = promotion or f"version {registered.get('version')} registered as {registered.get('status')}"
        out.print(f"[bold green]✓ {escape(execution.visited[-1])}[/]: {escape(message)}")
        return
    if execution.error == "GateRejected":
        out.print(f"[bold yellow]■ {escape(execution.visited[-1])}[/]: {escape(execution.cause or '')}")
        return
    raise ShipmlError(
        f"the retraining run {execution.name} ended in {execution.visited[-1]}: "
        f"{execution.error}: {_cause(execution.cause or '')}"
    )
