"""Launch `training.train` under torchrun, from SageMaker's training contract.

On SageMaker every host of the job runs this module once (as the job's entry point). It reads
`/opt/ml/input/config/resourceconfig.json` and `SM_NUM_GPUS`, derives torchrun's arguments (nodes,
node rank, processes per node, master address) and replaces itself with
`python -m torch.distributed.run <args> -m training.train`; one job spans several GPU instances,
NCCL on GPUs, gloo on CPUs.

Locally, `run_local` lays out a temporary folder like `/opt/ml` (one host, N CPU workers), points
the same SageMaker variables at it and runs this very module in a subprocess, so the local run
takes exactly the SageMaker code path. The artifact is moved to the output folder only when
training succeeded.

This module imports the standard library only, so it also runs as a plain script
(`python training/launcher.py`) before anything else is importable.

    python -m training.launcher                      # on SageMaker (any --key value is ignored)
    python -m training.launcher --local --data DATA --output DIR --contract CONTRACT [--workers 2]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: Overrides the `/opt/ml` root (local runs); `training.train` honours it too.
ROOT_ENV = "SHIPML_OPT_ML"
DEFAULT_ROOT = "/opt/ml"
#: Overrides the number of worker processes per CPU-only host (else the `cpu_workers` hyperparameter, else 1).
CPU_WORKERS_ENV = "SHIPML_CPU_WORKERS"
#: Overrides torchrun's master port for multi-node jobs.
MASTER_PORT_ENV = "SHIPML_MASTER_PORT"
DEFAULT_MASTER_PORT = 29500
TRAIN_MODULE = "training.train"
CODE_DIR = Path(__file__).resolve().parent.parent
LOG_TAIL_LINES = 60


class ResourceConfigError(ValueError):
    """The resource configuration is unusable (no hosts, current host not among them, ...)."""


class TrainingFailed(RuntimeError):
    """A local training run failed; the message ends with the tail of the worker log."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        self.log_tail = log_tail
        super().__init__(
            f"{message}\n--- last lines of the training log ---\n{log_tail}" if log_tail else message
        )


def backend_for(num_gpus: int) -> str:
    """The torch.distributed backend: NCCL when the host has GPUs, gloo on CPUs."""
    return "nccl" if num_gpus > 0 else "gloo"


def torchrun_args(
    resource_config: Mapping[str, Any],
    *,
    num_gpus: int,
    num_cpu_workers: int,
    master_port: int = DEFAULT_MASTER_PORT,
) -> list[str]:
    """torchrun's arguments for this host, from SageMaker's resourceconfig.json.

    Nodes are the hosts sorted by name (SageMaker names them algo-1, algo-2, ...); the node rank is
    the current host's index among them and the master is the first. A single host uses torchrun's
    `--standalone` rendezvous (a free local port, no master to agree on). Processes per node: one
    per GPU, else `num_cpu_workers`.
    """
    hosts = resource_config.get("hosts")
    current = resource_config.get("current_host")
    if not isinstance(hosts, list | tuple) or not hosts or not all(isinstance(h, str) and h for h in hosts):
        raise ResourceConfigError(
            f"resourceconfig: 'hosts' must be a non-empty list of host names, got {hosts!r}"
        )
    if len(set(hosts)) != len(hosts):
        raise ResourceConfigError(f"resourceconfig: 'hosts' has duplicates: {hosts!r}")
    if not isinstance(current, str) or current not in hosts:
        raise ResourceConfigError(
            f"resourceconfig: current_host {current!r} is not one of the hosts {hosts!r}"
        )
    if num_gpus < 0:
        raise ResourceConfigError(f"the number of GPUs must be >= 0, got {num_gpus}")
    if num_gpus == 0 and num_cpu_workers < 1:
        raise ResourceConfigError(f"the number of CPU workers must be >= 1, got {num_cpu_workers}")
    if not 0 < master_port < 65536:
        raise ResourceConfigError(f"the master port must be in 1..65535, got {master_port}")
    ordered = sorted(hosts)
    nproc = num_gpus if num_gpus > 0 else num_cpu_workers
    args = [f"--nnodes={len(ordered)}", f"--node_rank={ordered.index(current)}", f"--nproc_per_node={nproc}"]
    if len(ordered) == 1:
        return [*args, "--standalone"]
    return [*args, f"--master_addr={ordered[0]}", f"--master_port={master_port}"]


# --- the SageMaker path (also taken by local runs) -------------------------------------------------


def opt_ml_root(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get(ROOT_ENV) or DEFAULT_ROOT)


def read_hyperparameters(root: Path, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The job's hyperparameters: `input/config/hyperparameters.json`, else `SM_HPS`.

    SageMaker stores every value as a string; values that parse as JSON are decoded ("3" -> 3,
    "[64, 32]" -> [64, 32]), others stay strings.
    """
    env = os.environ if env is None else env
    path = root / "input" / "config" / "hyperparameters.json"
    if path.is_file():
        raw = json.loads(path.read_text(encoding="utf-8") or "{}")
    else:
        raw = json.loads(env.get("SM_HPS") or "{}")
    if not isinstance(raw, dict):
        raise ValueError(f"hyperparameters must be a JSON object, got {type(raw).__name__}")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        out[str(key)] = value
    return out


def _cpu_workers(hyperparameters: Mapping[str, Any], env: Mapping[str, str]) -> int:
    raw: Any = env.get(CPU_WORKERS_ENV) or hyperparameters.get("cpu_workers", 1)
    try:
        workers = int(raw)
    except (TypeError, ValueError):
        raise ResourceConfigError(f"cpu_workers must be an integer, got {raw!r}") from None
    if workers < 1:
        raise ResourceConfigError(f"cpu_workers must be >= 1, got {workers}")
    return workers


def torchrun_command(env: Mapping[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The torchrun command line and environment for this host, from the /opt/ml layout and SM_* variables."""
    env = dict(os.environ if env is None else env)
    root = opt_ml_root(env)
    config_path = root / "input" / "config" / "resourceconfig.json"
    try:
        resource_config = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        # Outside a SageMaker job (or in old local mode): one host.
        host = env.get("SM_CURRENT_HOST", "algo-1")
        resource_config = {
            "current_host": host,
            "hosts": json.loads(env.get("SM_HOSTS") or json.dumps([host])),
        }
    except ValueError as exc:
        raise ResourceConfigError(f"{config_path}: not valid JSON: {exc}") from None
    if not isinstance(resource_config, dict):
        raise ResourceConfigError(f"{config_path}: expected a JSON object")
    try:
        num_gpus = int(env.get("SM_NUM_GPUS") or 0)
    except ValueError:
        raise ResourceConfigError(f"SM_NUM_GPUS must be an integer, got {env.get('SM_NUM_GPUS')!r}") from None
    hyperparameters = read_hyperparameters(root, env)
    port = int(env.get(MASTER_PORT_ENV) or DEFAULT_MASTER_PORT)
    args = torchrun_args(
        resource_config,
        num_gpus=num_gpus,
        num_cpu_workers=_cpu_workers(hyperparameters, env),
        master_port=port,
    )
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(CODE_DIR), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    if num_gpus == 0:
        env.setdefault("OMP_NUM_THREADS", "1")
    elif resource_config.get("network_interface_name"):
        env.setdefault("NCCL_SOCKET_IFNAME", str(resource_config["network_interface_name"]))
    command = [sys.executable, "-m", "torch.distributed.run", *args, "-m", TRAIN_MODULE]
    return command, env


def _write_failure(root: Path, message: str) -> None:
    try:
        (root / "output").mkdir(parents=True, exist_ok=True)
        with open(root / "output" / "failure", "a", encoding="utf-8") as fh:
            fh.write(message.rstrip() + "\n")
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.launcher", description=__doc__.split("\n\n")[0])
    parser.add_argument("--local", action="store_true", help="run locally in a temporary /opt/ml-like folder")
    parser.add_argument("--data", type=Path, help="(--local) a Parquet file or folder of Parquet files")
    parser.add_argument("--output", type=Path, help="(--local) where the artifact folder is written")
    parser.add_argument("--contract", type=Path, help="(--local) the contract YAML")
    parser.add_argument("--workers", type=int, default=2, help="(--local) CPU worker processes (default 2)")
    parser.add_argument(
        "--checkpoints", type=Path, help="(--local) a checkpoint folder to keep / resume from"
    )
    parser.add_argument(
        "--hp",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="(--local) a hyperparameter; repeatable",
    )
    # SageMaker's toolkit passes the hyperparameters as `--key value`; they are read from the layout instead.
    args, _unknown = parser.parse_known_args(argv)
    if args.local:
        missing = [name for name in ("data", "output", "contract") if getattr(args, name) is None]
        if missing:
            parser.error("--local needs " + ", ".join(f"--{m}" for m in missing))
        hps: dict[str, Any] = {}
        for item in args.hp:
            key, sep, value = item.partition("=")
            if not sep:
                parser.error(f"--hp expects KEY=VALUE, got {item!r}")
            try:
                hps[key] = json.loads(value)
            except ValueError:
                hps[key] = value
        try:
            out = run_local(
                args.data,
                args.output,
                contract_path=args.contract,
                workers=args.workers,
                hyperparameters=hps,
                checkpoint_dir=args.checkpoints,
            )
        except TrainingFailed as exc:
            print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)  # the log was echoed above
            return 1
        except (FileExistsError, FileNotFoundError, ResourceConfigError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"artifact written to {out}")
        return 0

    root = opt_ml_root()
    try:
        command, env = torchrun_command()
    except (ResourceConfigError, ValueError) as exc:
        _write_failure(root, f"launcher: {exc}")
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("launcher: " + " ".join(command), flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    # Replace this process, so that SageMaker's stop signal (spot interruption) reaches torchrun.
    os.execve(command[0], command, env)
    return 0  # pragma: no cover - execve does not return


# --- local runs -------------------------------------------------------------------------------------


def _stage_data(data: Path, channel: Path) -> None:
    """Make `channel` show the data: a link to the folder, or a folder holding a link to the file."""
    data = data.resolve()
    if data.is_dir():
        channel.symlink_to(data, target_is_directory=True)
    elif data.is_file():
        channel.mkdir(parents=True)
        (channel / data.name).symlink_to(data)
    else:
        raise FileNotFoundError(f"training data not found: {data}")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop the launcher's process group (torchrun and its workers), which only this call started."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_local(
    data: Path,
    output_dir: Path,
    *,
    contract_path: Path,
    workers: int = 2,
    hyperparameters: Mapping[str, Any] | None = None,
    checkpoint_dir: Path | None = None,
    timeout_s: float | None = None,
    log_path: Path | None = None,
    echo: bool = True,
) -> Path:
    """Train locally through the SageMaker code path, with `workers` gloo processes on this host.

    Lays out a temporary folder like `/opt/ml` (the data linked into `input/data/train`, a
    one-host `resourceconfig.json`, `hyperparameters.json`, `model/`, `checkpoints/` -- a link to
    `checkpoint_dir` when given, so a second run resumes -- and `output/`), sets the SM_* variables,
    runs `python -m training.launcher` in a subprocess and moves the artifact to `output_dir`.
    `output_dir` appears only if training succeeded; a failure raises `TrainingFailed` with the tail
    of the log. The log is echoed to stdout (`echo`) and kept in `log_path` when given.
    """
    data, output_dir, contract_path = Path(data), Path(output_dir), Path(contract_path)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise FileExistsError(f"the output folder already exists and is not empty: {output_dir}")
    if not contract_path.is_file():
        raise FileNotFoundError(f"contract not found: {contract_path}")
    hps: dict[str, Any] = dict(hyperparameters or {})
    hps["contract"] = str(contract_path.resolve())
    hps["cpu_workers"] = workers

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="shipml-opt-ml-") as tmp:
        root = Path(tmp)
        config = root / "input" / "config"
        config.mkdir(parents=True)
        (root / "input" / "data").mkdir(parents=True)
        _stage_data(data, root / "input" / "data" / "train")
        for sub in ("model", "output/data"):
            (root / sub).mkdir(parents=True)
        if checkpoint_dir is not None:
            checkpoint_dir = Path(checkpoint_dir).resolve()
            checkpoint_dir.mkdir(parents=True, exist_ok=True)
            (root / "checkpoints").symlink_to(checkpoint_dir, target_is_directory=True)
        else:
            (root / "checkpoints").mkdir()
        resource_config = {
            "current_host": "algo-1",
            "current_instance_type": "local",
            "current_group_name": "homogeneousCluster",
            "hosts": ["algo-1"],
            "instance_groups": [
                {"instance_group_name": "homogeneousCluster", "instance_type": "local", "hosts": ["algo-1"]}
            ],
            "network_interface_name": "lo",
        }
        (config / "resourceconfig.json").write_text(json.dumps(resource_config), encoding="utf-8")
        # As SageMaker does: every value a string.
        hp_strings = {k: v if isinstance(v, str) else json.dumps(v) for k, v in hps.items()}
        (config / "hyperparameters.json").write_text(json.dumps(hp_strings), encoding="utf-8")
        (config / "inputdataconfig.json").write_text(
            json.dumps({"train": {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"}}),
            encoding="utf-8",
        )

        env = dict(os.environ)
        env.update(
            {
                ROOT_ENV: str(root),
                "SM_MODEL_DIR": str(root / "model"),
                "SM_CHANNEL_TRAIN": str(root / "input" / "data" / "train"),
                "SM_CHANNELS": json.dumps(["train"]),
                "SM_INPUT_DIR": str(root / "input"),
                "SM_INPUT_CONFIG_DIR": str(config),
                "SM_OUTPUT_DIR": str(root / "output"),
                "SM_OUTPUT_DATA_DIR": str(root / "output" / "data"),
                "SM_HPS": json.dumps(hps),
                "SM_HOSTS": json.dumps(resource_config["hosts"]),
                "SM_CURRENT_HOST": "algo-1",
                "SM_NUM_GPUS": "0",
                "SM_NUM_CPUS": str(os.cpu_count() or 1),
                "SM_NETWORK_INTERFACE_NAME": "lo",
                "SM_RESOURCE_CONFIG": json.dumps(resource_config),
                "PYTHONPATH": os.pathsep.join(
                    p for p in (str(CODE_DIR), os.environ.get("PYTHONPATH", "")) if p
                ),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.pop(CPU_WORKERS_ENV, None)  # the hyperparameter decides, as it would on SageMaker
        for key, value in hps.items():
            env[f"SM_HP_{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)

        tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        log_file = open(log_path, "w", encoding="utf-8") if log_path else None  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "training.launcher"],
            cwd=str(root),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def pump() -> None:
            assert proc.stdout is not None
            for raw in iter(proc.stdout.readline, b""):
                line = raw.decode("utf-8", "replace")
                tail.append(line.rstrip("\n"))
                if log_file:
                    log_file.write(line)
                if echo:
                    sys.stdout.write(line)
                    sys.stdout.flush()

        reader = threading.Thread(target=pump, daemon=True)
        started = time.monotonic()
        reader.start()
        try:
            try:
                rc = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                reader.join(timeout=5)
                raise TrainingFailed(
                    f"local training timed out after {timeout_s:.0f} s and was stopped", "\n".join(tail)
                ) from None
            except BaseException:
                _kill_group(proc)
                raise
            reader.join(timeout=10)
        finally:
            if log_file:
                log_file.close()
        elapsed = time.monotonic() - started

        failure = root / "output" / "failure"
        if rc != 0:
            reason = (
                failure.read_text(encoding="utf-8", errors="replace").strip() if failure.is_file() else ""
            )
            first = reason.splitlines()[0] if reason else f"exit status {rc}"
            raise TrainingFailed(f"local training failed ({first})", "\n".join(tail))
        model_dir = root / "model"
        missing = [n for n in ("model.onnx", "card.json") if not (model_dir / n).is_file()]
        if missing:
            raise TrainingFailed(
                f"training exited 0 but the model folder lacks {', '.join(missing)}", "\n".join(tail)
            )

        # Atomic hand-over: copy beside the destination, then rename into place.
        staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
        try:
            shutil.copytree(model_dir, staging, dirs_exist_ok=True)
            if output_dir.is_dir():
                output_dir.rmdir()  # checked empty above
            os.replace(staging, output_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    if echo:
        print(f"local training finished in {elapsed:.1f} s; artifact at {output_dir}", flush=True)
    return output_dir


if __name__ == "__main__":
    sys.exit(main())
