"""The `shipml` command line: the whole local lifecycle on the embedded backend.

Every command reads `Settings` once (SHIPML_* variables, then the global options), works through
the ports, and turns a `ShipmlError` into a one-line message on stderr and exit code 1.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from shipml.errors import ShipmlError
from shipml.settings import Settings

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


class _Commands(typer.core.TyperGroup):
    """Maps domain errors to one line on stderr and exit code 1, for every command."""

    def invoke(self, ctx):  # noqa: ANN001, ANN201 - click's signature
        try:
            return super().invoke(ctx)
        except ShipmlError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_Commands,
    name="shipml",
    help="Take a trained model into production: train, register, serve and monitor it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Example data: generate and validate.", no_args_is_help=True)
features_app = typer.Typer(help="The online feature store.", no_args_is_help=True)
models_app = typer.Typer(
    help="The model registry: versions, approval and the live alias.", no_args_is_help=True
)
batch_app = typer.Typer(help="Batch scoring of files (Parquet, CSV, JSON Lines).", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(features_app, name="features")
app.add_typer(models_app, name="models")
app.add_typer(batch_app, name="batch")


class _State:
    settings: Settings


state = _State()


@app.callback()
def _configure(
    root: Annotated[
        Path | None, typer.Option(help="Root folder of the local backend [env SHIPML_ROOT].")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model name [env SHIPML_MODEL].")] = None,
    contract: Annotated[Path | None, typer.Option(help="Contract file [env SHIPML_CONTRACT].")] = None,
) -> None:
    state.settings = Settings.from_env(root=root, model=model, contract=contract)


def _contract():
    from shipml.contract import load_contract

    return load_contract(state.settings.contract)


def _backends():
    from shipml.backends import build_backends

    return build_backends(state.settings)


# --------------------------------------------------------------------------------------- data


@data_app.command("generate")
def data_generate(
    output: Annotated[Path, typer.Argument(help="Parquet file to write.")],
    rows: Annotated[int, typer.Option(min=1_000, max=10_000_000, help="Number of rows.")] = 50_000,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same data.")] = 7,
    amount_shift: Annotated[float, typer.Option(help="Drift: multiply every amount by this.")] = 1.0,
    new_merchant_category: Annotated[
        str | None, typer.Option(help="Drift: move a share of rows to this unseen merchant category.")
    ] = None,
    fraud_segment: Annotated[
        str | None, typer.Option(help="Drift: change the fraud rate in one segment, as FEATURE=VALUE.")
    ] = None,
    fraud_multiplier: Annotated[
        float, typer.Option(help="Drift: fraud odds multiplier in that segment.")
    ] = 3.0,
    snapshot: Annotated[
        Path | None,
        typer.Option(help="Also write the customers' latest online features to this Parquet file."),
    ] = None,
) -> None:
    """Generate synthetic card transactions that follow the fraud example's contract."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from shipml.data.synth import DriftKnobs, generate, write_online_snapshot

    segment = None
    if fraud_segment is not None:
        name, sep, value = fraud_segment.partition("=")
        if not sep or not name or not value:
            raise ShipmlError(f"--fraud-segment must look like FEATURE=VALUE, got {fraud_segment!r}")
        segment = (name, value)
    try:
        drift = DriftKnobs(
            amount_shift=amount_shift,
            new_merchant_category=new_merchant_category,
            fraud_rate_segment=segment,
            fraud_rate_multiplier=fraud_multiplier,
        )
    except ValueError as exc:
        raise ShipmlError(str(exc)) from None
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task("generating", total=rows)
        try:
            report = generate(
                output, rows, seed=seed, drift=drift, progress=lambda n: progress.update(task, completed=n)
            )
        except ValueError as exc:
            raise ShipmlError(str(exc)) from None
    out.print(
        f"wrote {report.rows:,} rows to {report.path} "
        f"(fraud rate {report.fraud_rate:.2%}, {report.seconds:.1f} s)"
    )
    if snapshot is not None:
        count = write_online_snapshot(snapshot, seed=seed, rows=rows)
        out.print(f"wrote online features of {count:,} customers to {snapshot}")


@data_app.command("validate")
def data_validate(
    path: Annotated[Path, typer.Argument(help="Parquet/CSV/JSON Lines file or folder.")],
    labels: Annotated[bool, typer.Option(help="Require the target column (training data).")] = True,
) -> None:
    """Check a data file against the contract; list every violation by row and column."""
    from shipml.contract.validate import validate_table
    from shipml.data import read_table

    report = validate_table(_contract(), read_table(path), require_target=labels)
    out.print(report.summary(limit=20), markup=False)
    if not report.ok:
        raise typer.Exit(1)


# ----------------------------------------------------------------------------------- features


@features_app.command("load")
def features_load(
    path: Annotated[Path, typer.Argument(help="Parquet file: the entity key and online features.")],
) -> None:
    """Write entity rows into the online store (the materialisation job will do this on a schedule)."""
    from shipml.contract.validate import validate_table
    from shipml.data import read_table

    contract = _contract()
    key = contract.entity_key
    names = [f.name for f in contract.online_features]
    if key is None or not names:
        raise ShipmlError(f"the {contract.model!r} contract has no online features")
    report = validate_table(contract, read_table(path), only={key, *names})
    items = {str(row.pop(key)): row for row in report.valid_table().select([key, *names]).to_pylist()}
    written = _backends().online.put_many(contract.model, items)
    out.print(f"wrote {written:,} items to the online store; refused {report.invalid_rows:,} invalid rows")
    if report.invalid_rows:
        err.print(report.summary(limit=10), markup=False)


def _mount_feature_jobs() -> None:
    from shipml.features.cli import materialize_command, training_set_command

    features_app.command("materialize")(materialize_command)
    features_app.command("training-set")(training_set_command)


_mount_feature_jobs()


def _mount_capabilities() -> None:
    from shipml.monitoring.cli import monitor_app
    from shipml.pipeline.cli import retrain
    from shipml.stream.cli import stream_app

    app.command("retrain")(retrain)
    app.add_typer(stream_app, name="stream")
    app.add_typer(monitor_app, name="monitor")


_mount_capabilities()


# ------------------------------------------------------------------------------------ training


@app.command("train")
def train(
    data: Annotated[Path, typer.Option(help="Training data: a Parquet file or folder.")],
    workers: Annotated[int, typer.Option(min=1, max=64, help="torchrun worker processes (gloo on CPU).")] = 2,
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs.")] = 4,
    register: Annotated[bool, typer.Option(help="Register the artifact as a new version.")] = True,
    description: Annotated[str, typer.Option(help="Note stored with the registered version.")] = "",
) -> None:
    """Train with the SageMaker launcher in a local /opt/ml layout, then register the artifact."""
    from shipml.artifact import load_artifact
    from shipml.data import data_files
    from training.launcher import TrainingFailed, run_local

    settings = state.settings
    _contract()  # fail fast on a bad contract or missing data, before starting workers
    data_files(data)
    run_dir = settings.root / "runs" / datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    with err.status(f"training with {workers} workers..."):
        try:
            artifact_dir = run_local(
                data,
                run_dir / "model",
                contract_path=settings.contract,
                workers=workers,
                hyperparameters={"epochs": epochs},
                checkpoint_dir=run_dir / "checkpoints",
            )
        except TrainingFailed as exc:
            raise ShipmlError(str(exc)) from None
    card = load_artifact(artifact_dir).card
    auc = card.metrics.get("overall", {}).get("auc")
    out.print(f"trained {card.model_name}: holdout AUC {auc:.4f}; artifact at {artifact_dir}")
    if register:
        version = _backends().registry.register(settings.model, artifact_dir, description=description)
        out.print(f"registered {version.ref} ({version.status.value})")


# ------------------------------------------------------------------------------------ registry


def _versions_table(versions) -> Table:
    table = Table("version", "status", "aliases", "auc", "created", "digest")
    for v in versions:
        auc = v.metrics.get("auc")
        table.add_row(
            str(v.version),
            v.status.value,
            ",".join(v.aliases),
            f"{auc:.4f}" if auc is not None else "",
            v.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            v.digest[:12],
        )
    return table


@models_app.command("list")
def models_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List the versions of the model."""
    versions = _backends().registry.list_versions(state.settings.model)
    if as_json:
        print(json.dumps([v.model_dump(mode="json") for v in versions], indent=2))
    elif not versions:
        out.print(f"no versions of {state.settings.model!r} yet")
    else:
        out.print(_versions_table(versions))


@models_app.command("show")
def models_show(version: Annotated[str, typer.Argument(help="A version number or an alias (live).")]) -> None:
    """Show one version: registry entry and model card."""
    backends = _backends()
    found = backends.registry.resolve(state.settings.model, version)
    card = backends.registry.open_artifact(found).card
    print(
        json.dumps(
            {
                "version": found.model_dump(mode="json"),
                "card": card.model_dump(mode="json", exclude={"baseline"}),
            },
            indent=2,
        )
    )


@models_app.command("register")
def models_register(
    artifact_dir: Annotated[Path, typer.Argument(help="An artifact folder (model.onnx, card.json, ...).")],
    description: Annotated[str, typer.Option(help="Note stored with the version.")] = "",
) -> None:
    """Register an artifact folder as a new version (PendingManualApproval)."""
    version = _backends().registry.register(state.settings.model, artifact_dir, description=description)
    out.print(f"registered {version.ref} ({version.status.value})")


@models_app.command("approve")
def models_approve(version: Annotated[int, typer.Argument(help="Version number.")]) -> None:
    """Approve a version, so that it may be promoted."""
    found = _backends().registry.approve(state.settings.model, version)
    out.print(f"{found.ref} is {found.status.value}")


@models_app.command("reject")
def models_reject(version: Annotated[int, typer.Argument(help="Version number.")]) -> None:
    """Reject a version."""
    found = _backends().registry.reject(state.settings.model, version)
    out.print(f"{found.ref} is {found.status.value}")


@models_app.command("promote")
def models_promote(
    version: Annotated[int, typer.Argument(help="Version number (must be Approved).")],
) -> None:
    """Point the `live` alias at a version; servers following `live` pick it up."""
    from shipml.backends import LIVE

    backends = _backends()
    backends.registry.open_artifact(
        backends.registry.get_version(state.settings.model, version)
    )  # verify first
    found = backends.registry.set_alias(state.settings.model, LIVE, version)
    backends.notifier.notify("model promoted", f"{found.ref} is now {LIVE}")
    out.print(f"{found.ref} is now {LIVE}")


# ---------------------------------------------------------------------------------- prediction


def _read_records(payload: str | None, file: Path | None) -> list[dict[str, Any]]:
    if (payload is None) == (file is None):
        raise ShipmlError("give exactly one of --json or --file")
    try:
        if payload is not None:
            parsed = json.loads(payload)
            return parsed if isinstance(parsed, list) else [parsed]
        assert file is not None
        lines = file.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    except json.JSONDecodeError as exc:
        raise ShipmlError(f"the input is not valid JSON: {exc}") from None
    except OSError as exc:
        raise ShipmlError(f"cannot read {file}: {exc.strerror}") from None


@app.command("predict")
def predict(
    payload: Annotated[
        str | None, typer.Option("--json", help="One record (object) or a list of records.")
    ] = None,
    file: Annotated[Path | None, typer.Option(help="JSON Lines file, one record per line.")] = None,
    version: Annotated[str, typer.Option(help="Version number or alias.")] = "live",
) -> None:
    """Score records with a registered version (the `live` one by default); prints JSON Lines."""
    from pydantic import ValidationError
    from pydantic_core import to_json

    from shipml.contract import build_request_model
    from shipml.predict import Predictor

    records = _read_records(payload, file)
    backends = _backends()
    found = backends.registry.resolve(state.settings.model, version)
    artifact = backends.registry.open_artifact(found)
    request_model = build_request_model(artifact.contract)
    valid = []
    for index, record in enumerate(records):
        try:
            valid.append(request_model.model_validate(record).model_dump())
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']} ({e['type']})" for e in exc.errors()
            )
            raise ShipmlError(f"record {index} is invalid: {problems}") from None
    predictor = Predictor(artifact, model_version=found.ref, online=backends.online)
    for prediction in predictor.predict(valid):
        print(to_json(prediction).decode())


@batch_app.command("score")
def batch_score(
    input_path: Annotated[Path, typer.Argument(metavar="INPUT", help="Parquet, CSV or JSON Lines file.")],
    output: Annotated[Path, typer.Argument(help="Parquet file to write: id, score, label, model version.")],
    rejects: Annotated[
        Path | None, typer.Option(help="Rejected rows with the reason [default: OUTPUT.rejects.parquet].")
    ] = None,
    version: Annotated[str, typer.Option(help="Version number or alias.")] = "live",
    batch_rows: Annotated[
        int, typer.Option(min=1_000, max=2_000_000, help="Rows per record batch.")
    ] = 65_536,
) -> None:
    """Score a file of any size in bounded memory; invalid rows go to the rejects file with the reason."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from shipml.batch.scorer import score_file
    from shipml.predict import Predictor

    backends = _backends()
    found = backends.registry.resolve(state.settings.model, version)
    artifact = backends.registry.open_artifact(found)
    # Batch throughput wants every core for onnxruntime (serving uses one thread per request).
    predictor = Predictor(artifact, model_version=found.ref, online=backends.online, threads=0)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        TextColumn("{task.completed:,} rows"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task("scoring", total=None)
        report = score_file(
            input_path,
            output,
            predictor,
            rejects_path=rejects,
            batch_rows=batch_rows,
            progress=lambda n: progress.update(task, completed=n),
        )
    out.print(report.summary())


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port.")] = 8080,
    version: Annotated[str | None, typer.Option(help="Pin a version number; default: follow live.")] = None,
    poll: Annotated[float | None, typer.Option(help="Seconds between checks of the live alias.")] = None,
) -> None:
    """Serve the FastAPI app with uvicorn (the same app as on Lambda), following the live alias."""
    import uvicorn

    from shipml.serving.app import create_app
    from shipml.serving.factory import local_context

    settings = state.settings.model_copy(
        update={
            k: v for k, v in {"model_version": version, "live_poll_seconds": poll}.items() if v is not None
        }
    )
    context = local_context(settings)
    status = context.holder.status()
    err.print(f"serving {status.version or 'no model yet'} on http://{host}:{port} (docs at /docs)")
    if settings.model_version == "live":
        context.holder.start_polling()
    # The app's lifespan flushes capture and metrics on shutdown (SIGINT/SIGTERM).
    uvicorn.run(create_app(context), host=host, port=port, log_level="warning", access_log=False)


def main() -> None:
    """Entry point of the `shipml` command."""
    app()


if __name__ == "__main__":
    main()
