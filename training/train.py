"""The training entry point: one process of a torchrun job, under SageMaker's training contract.

Paths come from the SM_* variables, else from the `/opt/ml` layout (root overridable with
SHIPML_OPT_ML for local runs): the `train` channel, `model/`, `checkpoints/`, `output/failure`.
Hyperparameters come from `input/config/hyperparameters.json` (see `Hyperparameters`).

Every rank reads the whole data set and makes the same time-based split: the last
`holdout_fraction` of the rows by the contract's `event_time` is the holdout ("the future"). The
training part is sharded with a DistributedSampler; the model is wrapped in DDP (gloo on CPUs, NCCL
on GPUs); the positive class is weighted by negatives/positives. After every epoch rank 0 writes a
checkpoint (model, optimizer, epoch, every rank's RNG state) atomically; on start every rank
resumes from the latest checkpoint if there is one (spot interruptions). At the end rank 0 scores
the holdout, evaluates, computes the drift baseline, exports ONNX and writes the artifact into the
model folder. A failure is written to `output/failure` and the process exits non-zero.

Runs without torchrun too (one process, no process group).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import re
import subprocess
import sys
import time
import traceback
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from training.launcher import DEFAULT_ROOT, ROOT_ENV, backend_for, read_hyperparameters

CODE_DIR = Path(__file__).resolve().parent.parent
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)\.pt$")
KEEP_CHECKPOINTS = 2


class HyperparameterError(ValueError):
    """A hyperparameter is missing, unknown or out of range."""


@dataclasses.dataclass(frozen=True)
class Hyperparameters:
    """The job's hyperparameters (SageMaker passes them as strings; JSON values are decoded)."""

    contract: str  # required: absolute, or relative to the code folder (the one holding training/)
    epochs: int = 5
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    hidden: tuple[int, ...] = (64, 32)
    dropout: float = 0.1
    seed: int = 7
    holdout_fraction: float = 0.2
    pos_weight: float | str = "auto"  # "auto" = negatives / positives of the training part
    cpu_workers: int = 1  # read by the launcher: processes per CPU-only host

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["hidden"] = list(self.hidden)
        return out


def _as_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise HyperparameterError(f"hyperparameter {name!r} must be an integer, got {value!r}")
    try:
        number = int(value) if not isinstance(value, float) or value.is_integer() else None
    except ValueError:
        number = None
    if number is None:
        raise HyperparameterError(f"hyperparameter {name!r} must be an integer, got {value!r}")
    if number < low:
        raise HyperparameterError(f"hyperparameter {name!r} must be >= {low}, got {number}")
    return number


def _as_float(
    name: str, value: Any, low: float, high: float | None = None, *, open_low: bool = False
) -> float:
    if isinstance(value, bool):
        raise HyperparameterError(f"hyperparameter {name!r} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise HyperparameterError(f"hyperparameter {name!r} must be a number, got {value!r}") from None
    if not np.isfinite(number) or number < low or (open_low and number == low):
        raise HyperparameterError(
            f"hyperparameter {name!r} must be {'>' if open_low else '>='} {low}, got {value!r}"
        )
    if high is not None and number >= high:
        raise HyperparameterError(f"hyperparameter {name!r} must be < {high}, got {value!r}")
    return number


def parse_hyperparameters(raw: Mapping[str, Any]) -> Hyperparameters:
    """Validate the decoded hyperparameters; `HyperparameterError` names the bad one."""
    fields = {f.name for f in dataclasses.fields(Hyperparameters)}
    unknown = sorted(k for k in raw if k not in fields and not k.startswith("sagemaker_"))
    if unknown:
        raise HyperparameterError(f"unknown hyperparameter(s) {unknown}; known: {sorted(fields)}")
    contract = raw.get("contract")
    if not isinstance(contract, str) or not contract.strip():
        raise HyperparameterError("hyperparameter 'contract' (path of the contract YAML) is required")
    hidden_raw = raw.get("hidden", Hyperparameters.hidden)
    if isinstance(hidden_raw, str):
        hidden_raw = [part for part in re.split(r"[,\s]+", hidden_raw.strip("[]() ")) if part]
    elif isinstance(hidden_raw, int | float):
        hidden_raw = [hidden_raw]
    if not isinstance(hidden_raw, list | tuple) or not hidden_raw:
        raise HyperparameterError(
            f"hyperparameter 'hidden' must be a list of layer sizes, got {hidden_raw!r}"
        )
    hidden = tuple(_as_int("hidden", h, 1) for h in hidden_raw)
    pos_weight = raw.get("pos_weight", "auto")
    if pos_weight != "auto":
        pos_weight = _as_float("pos_weight", pos_weight, 0.0, open_low=True)
    return Hyperparameters(
        contract=contract,
        epochs=_as_int("epochs", raw.get("epochs", Hyperparameters.epochs), 1),
        batch_size=_as_int("batch_size", raw.get("batch_size", Hyperparameters.batch_size), 1),
        lr=_as_float("lr", raw.get("lr", Hyperparameters.lr), 0.0, open_low=True),
        weight_decay=_as_float("weight_decay", raw.get("weight_decay", Hyperparameters.weight_decay), 0.0),
        hidden=hidden,
        dropout=_as_float("dropout", raw.get("dropout", Hyperparameters.dropout), 0.0, 1.0),
        seed=_as_int("seed", raw.get("seed", Hyperparameters.seed), 0),
        holdout_fraction=_as_float(
            "holdout_fraction",
            raw.get("holdout_fraction", Hyperparameters.holdout_fraction),
            0.0,
            1.0,
            open_low=True,
        ),
        pos_weight=pos_weight,
        cpu_workers=_as_int("cpu_workers", raw.get("cpu_workers", Hyperparameters.cpu_workers), 1),
    )


@dataclasses.dataclass(frozen=True)
class Paths:
    root: Path
    train: Path
    model: Path
    checkpoints: Path
    output: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Paths:
        env = os.environ if env is None else env
        root = Path(env.get(ROOT_ENV) or DEFAULT_ROOT)
        return cls(
            root=root,
            train=Path(env.get("SM_CHANNEL_TRAIN") or root / "input" / "data" / "train"),
            model=Path(env.get("SM_MODEL_DIR") or root / "model"),
            # SageMaker has no variable for it: checkpoint_local_path defaults to /opt/ml/checkpoints.
            checkpoints=root / "checkpoints",
            output=Path(env.get("SM_OUTPUT_DIR") or root / "output"),
        )


def resolve_contract_path(value: str) -> Path:
    path = Path(value)
    if not path.is_absolute():
        path = CODE_DIR / path
    if not path.is_file():
        raise HyperparameterError(
            f"contract not found: {path} (hyperparameter 'contract' = {value!r}; relative paths are "
            f"resolved against the code folder {CODE_DIR})"
        )
    return path


def code_version() -> str:
    """shipml's version, plus the git commit when this code is a git checkout (else the version alone)."""
    import shipml

    version = shipml.__version__
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=CODE_DIR, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}+git.{sha}" if re.fullmatch(r"[0-9a-f]{40}", sha) else version


def time_order(table: Any, column: str) -> np.ndarray:
    """Row indexes in ascending event time (stable: ties keep the file order)."""
    import pyarrow as pa

    if column not in table.column_names:
        raise ValueError(f"the event_time column {column!r} is missing from the training data")
    col = table.column(column)
    if col.null_count:
        raise ValueError(f"the event_time column {column!r} has {col.null_count} missing values")
    if pa.types.is_timestamp(col.type) or pa.types.is_date(col.type):
        keys = col.cast(pa.timestamp("us", tz="UTC") if pa.types.is_date(col.type) else col.type).cast(
            pa.int64()
        )
        values = keys.to_numpy()
    else:
        values = np.array([datetime.fromisoformat(str(v)).timestamp() for v in col.to_pylist()])
    return np.argsort(values, kind="stable")


def holdout_split(order: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train indexes, holdout indexes): the holdout is the last `fraction` of rows in time."""
    n = len(order)
    n_hold = int(round(n * fraction))
    if n_hold < 1 or n - n_hold < 1:
        raise ValueError(f"cannot split {n} rows with holdout_fraction={fraction}: one part would be empty")
    return np.sort(order[: n - n_hold]), np.sort(order[n - n_hold :])


# --- checkpoints ------------------------------------------------------------------------------------


def latest_checkpoint(folder: Path) -> Path | None:
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))]
    return max(found)[1] if found else None


def load_checkpoint(path: Path) -> dict[str, Any]:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def model_from_checkpoint(checkpoint: Mapping[str, Any]):  # noqa: ANN201 - TabularModel, torch imported lazily
    """The TabularModel saved in a checkpoint, in eval mode (tests compare it with the ONNX export)."""
    from training.model import TabularModel

    model = TabularModel(int(checkpoint["width"]), checkpoint["hidden"], float(checkpoint["dropout"]))
    model.load_state_dict(checkpoint["model"])
    return model.eval()


def _rng_state() -> dict[str, Any]:
    import torch

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": json.dumps(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached"],
        )
    )
    version, internal, gauss = json.loads(state["python"])
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(folder: Path, payload: dict[str, Any]) -> Path:
    """Write `checkpoint-<epoch>.pt` atomically and keep the last few."""
    import torch

    from shipml import atomic

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"checkpoint-{payload['epoch']:05d}.pt"
    with atomic.atomic_path(path) as tmp:
        torch.save(payload, tmp)
    old = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name)))
    for _, stale in old[:-KEEP_CHECKPOINTS]:
        stale.unlink(missing_ok=True)
    return path


# --- the run ----------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "n/a"


def log(message: str) -> None:
    print(f"[train] {message}", flush=True)


def write_model_dir(model_dir: Path, **artifact_args: Any) -> Path:
    """`write_artifact` into the (existing, SageMaker-made) model folder.

    `write_artifact` wants a folder that does not exist yet, and /opt/ml/model always exists (it may
    be a mount), so the artifact is built atomically in a hidden sub-folder and its files renamed
    up into the model folder, the manifest last; then the sub-folder is removed.
    """
    from shipml.artifact import MANIFEST_FILE, write_artifact

    model_dir.mkdir(parents=True, exist_ok=True)
    staging = model_dir / ".artifact-staging"
    if staging.exists():
        import shutil

        shutil.rmtree(staging)
    write_artifact(staging, **artifact_args)
    names = sorted(p.name for p in staging.iterdir())
    for name in [n for n in names if n != MANIFEST_FILE] + [MANIFEST_FILE]:
        os.replace(staging / name, model_dir / name)
    staging.rmdir()
    return model_dir


def run(paths: Paths, raw_hyperparameters: Mapping[str, Any]) -> None:
    hp = parse_hyperparameters(raw_hyperparameters)
    contract_path = resolve_contract_path(hp.contract)

    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    from shipml.contract import FeatureEncoder, encode_target, load_contract
    from shipml.contract.validate import validate_table
    from shipml.data import fingerprint, read_table
    from shipml.errors import DataError
    from shipml.evaluation import roc_auc
    from training.model import ONNX_OPSET, TabularModel, export_onnx, predict

    distributed = "WORLD_SIZE" in os.environ and "RANK" in os.environ
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    num_gpus = int(os.environ.get("SM_NUM_GPUS") or torch.cuda.device_count())
    backend = backend_for(num_gpus if torch.cuda.is_available() else 0)
    if backend == "nccl":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local_world)))
    if distributed:
        dist.init_process_group(backend=backend)
    is_main = rank == 0
    started = time.monotonic()
    if is_main:
        log(f"world size {world} ({backend}, {device.type}); hyperparameters {json.dumps(hp.as_dict())}")

    # Every rank: the same data, the same encoding, the same time-based split.
    contract = load_contract(contract_path)
    encoder = FeatureEncoder(contract)
    # Refuse data that breaks the contract, naming every bad row and column, before any training.
    report = validate_table(contract, read_table(paths.train), require_target=True)
    if not report.ok:
        raise DataError(f"the training data breaks the contract: {report.summary(limit=10)}")
    table = report.table  # timestamps normalised to UTC
    order = time_order(table, contract.event_time)
    train_idx, hold_idx = holdout_split(order, hp.holdout_fraction)
    train_table, hold_table = table.take(train_idx), table.take(hold_idx)
    x_train, y_train = encoder.encode_table(train_table), encode_target(contract, train_table)
    x_hold, y_hold = encoder.encode_table(hold_table), encode_target(contract, hold_table)
    positives = float(y_train.sum())
    if positives == 0 or positives == len(y_train):
        raise ValueError(f"the training part ({len(y_train)} rows) has only one class of {contract.target!r}")
    pos_weight = (len(y_train) - positives) / positives if hp.pos_weight == "auto" else float(hp.pos_weight)
    width = x_train.shape[1]
    if is_main:
        log(
            f"{table.num_rows} rows: {len(train_idx)} train, {len(hold_idx)} holdout (after "
            f"{hold_table.column(contract.event_time)[0]}); {width} features; positive rate "
            f"{positives / len(y_train):.4f}, pos_weight {pos_weight:.2f}"
        )

    torch.manual_seed(hp.seed)
    model = TabularModel(width, hp.hidden, hp.dropout)
    model.set_normalisation(x_train)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
    start_epoch = 0
    rng_restored = False
    checkpoint_path = latest_checkpoint(paths.checkpoints)
    if checkpoint_path is not None:
        checkpoint = load_checkpoint(checkpoint_path)
        if int(checkpoint["width"]) != width or list(checkpoint["hidden"]) != list(hp.hidden):
            raise ValueError(
                f"checkpoint {checkpoint_path} was made for width {checkpoint['width']} and hidden "
                f"{list(checkpoint['hidden'])}, this run has width {width} and hidden {list(hp.hidden)}; "
                "empty the checkpoint folder to start over"
            )
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        start_epoch = int(checkpoint["epoch"])
        states = checkpoint.get("rng") or []
        if len(states) == world:
            _set_rng_state(states[rank])
            rng_restored = True
        if is_main:
            log(
                f"resuming from epoch {start_epoch} "
                f"(checkpoint {checkpoint_path.name}; {hp.epochs} epochs in all)"
            )
    if not rng_restored:
        torch.manual_seed(hp.seed + 1 + rank)  # dropout differs across ranks; the weights are rank 0's (DDP)

    if distributed:
        ddp = DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)
    else:
        ddp = model
    dataset = TensorDataset(torch.from_numpy(x_train), torch.from_numpy(y_train))
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=hp.seed)
    loader = DataLoader(dataset, batch_size=hp.batch_size, sampler=sampler, num_workers=0)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, device=device))

    for epoch in range(start_epoch, hp.epochs):
        t0 = time.monotonic()
        sampler.set_epoch(epoch)
        ddp.train()
        totals = torch.zeros(2, dtype=torch.float64, device=device)
        for xb, yb in loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(ddp(xb, logits=True), yb)
            loss.backward()
            optimizer.step()
            totals += torch.stack(
                [loss.detach().double() * len(yb), torch.tensor(len(yb), device=device).double()]
            )
        rng = [None] * world
        if distributed:
            dist.all_reduce(totals)
            dist.all_gather_object(rng, _rng_state())
        else:
            rng = [_rng_state()]
        # Every rank holds the same reduced totals, so all of them stop together (no hung peers),
        # before a diverged model reaches a checkpoint or an artifact.
        epoch_loss = float(totals[0] / totals[1])
        if not math.isfinite(epoch_loss):
            raise FloatingPointError(
                f"epoch {epoch + 1}: the training loss is {epoch_loss} (the model diverged); "
                "lower the learning rate or check the data"
            )
        if is_main:
            save_checkpoint(
                paths.checkpoints,
                {
                    "epoch": epoch + 1,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "rng": rng,
                    "width": width,
                    "hidden": list(hp.hidden),
                    "dropout": hp.dropout,
                    "hyperparameters": hp.as_dict(),
                },
            )
            auc = roc_auc(y_hold, predict(model, x_hold))
            log(
                f"epoch {epoch + 1}/{hp.epochs} loss {float(totals[0] / totals[1]):.4f} "
                f"holdout_auc {_fmt(auc)} ({time.monotonic() - t0:.1f} s)"
            )

    if distributed:
        dist.barrier()
    if is_main:
        from shipml.artifact import ModelCard
        from shipml.evaluation import evaluate
        from shipml.stats import baseline_statistics

        hold_scores = predict(model, x_hold)
        metrics = evaluate(contract, hold_table, hold_scores)
        baseline = baseline_statistics(contract, train_table, predict(model, x_train))
        card = ModelCard(
            model_name=contract.model,
            created_at=datetime.now(UTC),
            data_fingerprint=fingerprint(paths.train),
            code_version=code_version(),
            parameters=hp.as_dict(),
            metrics=metrics,
            baseline=baseline,
            input_name=encoder.input_name,
            feature_names=list(encoder.feature_names),
            threshold=float(contract.outputs.threshold),
            framework=f"torch {torch.__version__}",
            onnx_opset=ONNX_OPSET,
        )
        onnx_bytes = export_onnx(model, width, encoder.input_name)
        write_model_dir(paths.model, onnx_bytes=onnx_bytes, contract_path=contract_path, card=card)
        overall = metrics.get("overall", {}) if isinstance(metrics, dict) else {}
        log(
            f"holdout auc {_fmt(overall.get('auc'))}; artifact written to {paths.model} "
            f"({time.monotonic() - started:.1f} s)"
        )
    if distributed:
        # Every rank leaves together: the process group is torn down collectively, as PyTorch
        # documents. A rank that tore it down and exited while rank 0 was still exporting
        # sometimes aborted in gloo's teardown ("terminate called without an active exception",
        # SIGABRT) and failed the run. If rank 0 fails instead, torchrun stops the waiting ranks.
        dist.barrier()
        del ddp
        dist.destroy_process_group()


def _write_failure(paths: Paths, message: str) -> None:
    try:
        paths.output.mkdir(parents=True, exist_ok=True)
        with open(paths.output / "failure", "a", encoding="utf-8") as fh:
            fh.write(message.rstrip() + "\n")
    except OSError:
        pass


def main() -> int:
    paths = Paths.from_env()
    rank = os.environ.get("RANK", "0")
    try:
        run(paths, read_hyperparameters(paths.root))
    except Exception as exc:  # noqa: BLE001 - every failure goes to output/failure, as SageMaker expects
        traceback.print_exc()
        _write_failure(paths, f"rank {rank}: {type(exc).__name__}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
