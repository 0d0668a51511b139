"""The launcher's torchrun arguments, derived from SageMaker's resourceconfig.json."""

from __future__ import annotations

import json

import pytest

from training.launcher import (
    ResourceConfigError,
    backend_for,
    read_hyperparameters,
    torchrun_args,
    torchrun_command,
)


def config(current: str, *hosts: str) -> dict:
    return {
        "current_host": current,
        "current_instance_type": "ml.g5.12xlarge",
        "hosts": list(hosts),
        "network_interface_name": "eth0",
    }


def test_one_host_one_gpu():
    args = torchrun_args(config("algo-1", "algo-1"), num_gpus=1, num_cpu_workers=2)
    assert args == ["--nnodes=1", "--node_rank=0", "--nproc_per_node=1", "--standalone"]
    assert backend_for(1) == "nccl"


def test_one_host_two_cpu_workers_use_gloo():
    args = torchrun_args(config("algo-1", "algo-1"), num_gpus=0, num_cpu_workers=2)
    assert args == ["--nnodes=1", "--node_rank=0", "--nproc_per_node=2", "--standalone"]
    assert backend_for(0) == "gloo"


@pytest.mark.parametrize(("current", "rank"), [("algo-1", 0), ("algo-2", 1)])
def test_two_hosts_four_gpus_each(current, rank):
    # SageMaker does not promise the hosts' order in the file; the ranks follow the sorted names.
    args = torchrun_args(
        config(current, "algo-2", "algo-1"), num_gpus=4, num_cpu_workers=2, master_port=29511
    )
    assert args == [
        "--nnodes=2",
        f"--node_rank={rank}",
        "--nproc_per_node=4",
        "--master_addr=algo-1",
        "--master_port=29511",
    ]
    assert "--standalone" not in args
    assert backend_for(4) == "nccl"


def test_default_master_port():
    args = torchrun_args(config("algo-2", "algo-1", "algo-2"), num_gpus=4, num_cpu_workers=1)
    assert "--master_port=29500" in args


def test_current_host_not_among_hosts_is_a_clear_error():
    with pytest.raises(ResourceConfigError, match="current_host 'algo-3' is not one of the hosts"):
        torchrun_args(config("algo-3", "algo-1", "algo-2"), num_gpus=4, num_cpu_workers=1)


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"current_host": "algo-1"}, "'hosts' must be a non-empty list"),
        ({"current_host": "algo-1", "hosts": []}, "'hosts' must be a non-empty list"),
        ({"current_host": "algo-1", "hosts": ["algo-1", "algo-1"]}, "duplicates"),
    ],
)
def test_bad_resource_configs(cfg, message):
    with pytest.raises(ResourceConfigError, match=message):
        torchrun_args(cfg, num_gpus=0, num_cpu_workers=1)


def test_no_cpu_workers_is_an_error():
    with pytest.raises(ResourceConfigError, match="CPU workers"):
        torchrun_args(config("algo-1", "algo-1"), num_gpus=0, num_cpu_workers=0)


def _layout(tmp_path, resource_config, hyperparameters):
    cfg = tmp_path / "input" / "config"
    cfg.mkdir(parents=True)
    (cfg / "resourceconfig.json").write_text(json.dumps(resource_config))
    (cfg / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    return {"SHIPML_OPT_ML": str(tmp_path), "PATH": "/usr/bin"}


def test_command_from_the_opt_ml_layout(tmp_path):
    env = _layout(tmp_path, config("algo-2", "algo-1", "algo-2"), {"epochs": "3"})
    env["SM_NUM_GPUS"] = "4"
    command, child_env = torchrun_command(env)
    assert command[1:3] == ["-m", "torch.distributed.run"]
    assert command[-2:] == ["-m", "training.train"]
    assert "--node_rank=1" in command and "--nproc_per_node=4" in command
    assert "--master_addr=algo-1" in command
    assert child_env["NCCL_SOCKET_IFNAME"] == "eth0"


def test_cpu_workers_come_from_the_hyperparameters(tmp_path):
    env = _layout(
        tmp_path, config("algo-1", "algo-1"), {"cpu_workers": "2", "hidden": "[64, 32]", "name": "x"}
    )
    env["SM_NUM_GPUS"] = "0"
    command, child_env = torchrun_command(env)
    assert "--nproc_per_node=2" in command and "--standalone" in command
    assert child_env["OMP_NUM_THREADS"] == "1"
    # SageMaker stores hyperparameters as strings; JSON values are decoded, others kept.
    assert read_hyperparameters(tmp_path, env) == {"cpu_workers": 2, "hidden": [64, 32], "name": "x"}


def test_bad_resourceconfig_file_is_a_clear_error(tmp_path):
    env = _layout(tmp_path, config("algo-9", "algo-1"), {})
    with pytest.raises(ResourceConfigError, match="algo-9"):
        torchrun_command(env)
