"""infra/accelerate/*.yaml load with accelerate's own config class and pass `accelerate
launch`'s validation; the CPU config really starts two processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from accelerate.commands.config.config_args import ClusterConfig
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DistributedType

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "infra" / "accelerate"
EXPECTED = {  # file -> (distributed_type, launcher flag that accelerate launch derives)
    "single-gpu.yaml": (DistributedType.NO, None),
    "multi-gpu-ddp.yaml": (DistributedType.MULTI_GPU, "multi_gpu"),
    "fsdp.yaml": (DistributedType.FSDP, "use_fsdp"),
    "deepspeed-zero2.yaml": (DistributedType.DEEPSPEED, "use_deepspeed"),
    "deepspeed-zero3.yaml": (DistributedType.DEEPSPEED, "use_deepspeed"),
    "multi-node.yaml": (DistributedType.MULTI_GPU, "multi_gpu"),
    "cpu-2proc.yaml": (DistributedType.MULTI_GPU, "multi_gpu"),
    "fsdp-cpu-2proc.yaml": (DistributedType.FSDP, "use_fsdp"),
}


def test_every_config_is_listed():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads_and_validates(name):
    path = CONFIGS / name
    config = ClusterConfig.from_yaml_file(str(path))  # raises on unknown top-level keys
    kind, flag = EXPECTED[name]
    assert config.distributed_type == kind
    parser = launch_command_parser()
    dests = {a.dest for a in parser._actions}
    for key in config.fsdp_config or {}:
        assert key in dests or f"fsdp_{key}" in dests, f"{name}: fsdp_config.{key}"
    for key in config.deepspeed_config or {}:
        assert key in dests, f"{name}: deepspeed_config.{key}"
    args, _, _ = _validate_launch_command(parser.parse_args(["--config_file", str(path), "x.py"]))
    assert args.num_processes == config.num_processes
    if flag:
        assert getattr(args, flag) is True
    assert not args.cpu  # --cpu / use_cpu would fall back to accelerate's ONE-process launcher


def test_fsdp_is_full_shard_bf16():
    config = ClusterConfig.from_yaml_file(str(CONFIGS / "fsdp.yaml"))
    assert config.mixed_precision == "bf16"
    assert config.fsdp_config["fsdp_version"] == 2
    assert config.fsdp_config["fsdp_reshard_after_forward"] is True


@pytest.mark.parametrize("name,stage", [("deepspeed-zero2.yaml", 2), ("deepspeed-zero3.yaml", 3)])
def test_deepspeed_zero_stage(name, stage):
    assert ClusterConfig.from_yaml_file(str(CONFIGS / name)).deepspeed_config["zero_stage"] == stage


def test_multi_node_names_main_address_and_machine_rank():
    config = ClusterConfig.from_yaml_file(str(CONFIGS / "multi-node.yaml"))
    assert config.num_machines == 2 and config.machine_rank == 0
    assert config.main_process_ip and config.main_process_ip != "127.0.0.1"
    assert config.main_process_port and config.num_processes % config.num_machines == 0


def test_single_machine_configs_stay_on_loopback():
    for name in EXPECTED:
        config = ClusterConfig.from_yaml_file(str(CONFIGS / name))
        if config.num_machines == 1 and config.main_process_ip is not None:
            assert config.main_process_ip == "127.0.0.1", name


def test_cpu_config_starts_two_processes(tmp_path):
    from components.training.distributed import launch_command

    script = tmp_path / "who.py"
    script.write_text("import os, pathlib, sys\n"
                      "pathlib.Path(sys.argv[1], 'rank' + os.environ['RANK']).write_text(os.environ['WORLD_SIZE'])\n")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = str(ROOT)
    cmd = launch_command([str(script), str(tmp_path)], 2,
                         config_file=str(CONFIGS / "cpu-2proc.yaml"), cpu=True)
    assert cmd[:3] == [sys.executable, "-m", "components.training.distributed"]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert {p.name: p.read_text() for p in tmp_path.glob("rank*")} == {"rank0": "2", "rank1": "2"}
