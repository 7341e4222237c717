"""`accelerate launch` with a rendezvous that stays on this machine's loopback.

`python -m components.training.distributed [accelerate launch options] script|-m module ...`
takes exactly `accelerate launch`'s options and runs accelerate's own launcher (which
runs `torch.distributed.run`'s elastic agent) with two differences on one machine:

- The agent's rendezvous `TCPStore` listens on 127.0.0.1 only. torch's TCPStore server
  binds every interface (`*:port`) whatever `host_name` says (checked with `ss -ltnp`
  on torch 2.13); given `master_listen_fd`, a socket we bound to 127.0.0.1, it listens
  there instead. Workers only connect to the agent's store
  (`TORCHELASTIC_USE_AGENT_STORE=True` with the static rendezvous), so no other store
  server starts.
- gloo's pair sockets use the loopback interface (`GLOO_SOCKET_IFNAME=lo`) unless the
  caller set an interface.

With several machines (`--num_machines` > 1 or a non-loopback `--main_process_ip`)
nothing is patched: the store must be reachable from the other nodes.

On CPU, `accelerate launch --cpu --num_processes 2` runs ONE process (accelerate's
simple launcher ignores `--num_processes` without mpirun); `cpu_args` asks for the
torchrun launcher (`--multi_gpu`), and the workers pick gloo because CUDA is absent.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Iterator
from datetime import timedelta

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
MODULE = "components.training.distributed"


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_rank() -> int:
    """Global rank of this process under torchrun/accelerate (RANK), 0 when not launched."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return process_rank() == 0


def _loopback_store_class(base: type) -> type:
    """A TCPStore whose server, on a loopback host, listens on a socket bound to 127.0.0.1."""
    names = ("host_name", "port", "world_size", "is_master", "timeout", "wait_for_workers",
             "multi_tenant", "master_listen_fd", "use_libuv")

    class LoopbackTCPStore(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs):
            kwargs.update(zip(names, args, strict=False))
            host, port = kwargs.get("host_name"), int(kwargs.get("port", 0))
            sock = None
            if (kwargs.get("is_master") and host in LOOPBACK_HOSTS
                    and kwargs.get("master_listen_fd") is None):
                family = socket.AF_INET6 if host == "::1" else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("::1" if host == "::1" else "127.0.0.1", port))
                sock.listen(128)
                kwargs["port"] = sock.getsockname()[1]
                kwargs["master_listen_fd"] = sock.fileno()
            kwargs.setdefault("timeout", timedelta(seconds=300))
            super().__init__(**kwargs)
            self._loopback_socket = sock  # the server listens on this fd: keep it open

    LoopbackTCPStore.__name__ = LoopbackTCPStore.__qualname__ = "LoopbackTCPStore"
    return LoopbackTCPStore


@contextlib.contextmanager
def loopback_rendezvous() -> Iterator[None]:
    """While active, every TCPStore server created on a loopback host listens on loopback only."""
    import torch.distributed as dist
    from torch.distributed.elastic.rendezvous import c10d_rendezvous_backend, static_tcp_rendezvous

    original = dist.TCPStore
    patched = _loopback_store_class(original)
    targets = [(dist, "TCPStore"), (static_tcp_rendezvous, "TCPStore"),
               (c10d_rendezvous_backend, "TCPStore")]
    saved = [(mod, name, getattr(mod, name)) for mod, name in targets if hasattr(mod, name)]
    for mod, name, _ in saved:
        setattr(mod, name, patched)
    try:
        yield
    finally:
        for mod, name, value in saved:
            setattr(mod, name, value)


def cpu_args(num_processes: int, port: int | None = None) -> list[str]:
    """`accelerate launch` options for N gloo processes on this machine's CPU."""
    if num_processes < 2:
        return ["--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
                "--dynamo_backend", "no", "--cpu"]
    return ["--multi_gpu", "--num_processes", str(num_processes), "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_ip", "127.0.0.1",
            "--main_process_port", str(port or free_loopback_port())]


def launch_command(target: list[str], num_processes: int, config_file: str | None = None,
                   cpu: bool | None = None, port: int | None = None) -> list[str]:
    """The command that launches `target` (`['-m', module, ...]` or `[script, ...]`) on N processes.

    With `config_file`, the yaml decides the distribution (GPU, FSDP, DeepSpeed, nodes);
    `--num_processes` still overrides its count. Without it, CPU runs use `cpu_args`
    and GPU runs plain multi-GPU DDP.
    """
    if cpu is None:
        import torch

        cpu = not torch.cuda.is_available()
    cmd = [sys.executable, "-m", MODULE]
    if config_file:
        cmd += ["--config_file", str(config_file), "--num_processes", str(num_processes)]
    elif cpu:
        cmd += cpu_args(num_processes, port)
    else:
        cmd += ["--num_processes", str(num_processes), "--num_machines", "1",
                "--dynamo_backend", "no"]
        if num_processes > 1:
            cmd += ["--multi_gpu", "--main_process_ip", "127.0.0.1",
                    "--main_process_port", str(port or free_loopback_port())]
    return cmd + list(target)


def _single_machine(args) -> bool:
    """No other node takes part: flags first, then the accelerate config file."""
    config: dict = {}
    if getattr(args, "config_file", None):
        import yaml

        with open(args.config_file, encoding="utf-8") as f:
            config = yaml.safe_load(f) or {}
    machines = int(getattr(args, "num_machines", None) or config.get("num_machines") or 1)
    ip = getattr(args, "main_process_ip", None) or config.get("main_process_ip")
    return machines <= 1 and (ip is None or ip in LOOPBACK_HOSTS)


def main(argv: list[str] | None = None) -> None:
    from accelerate.commands.launch import launch_command as accelerate_launch
    from accelerate.commands.launch import launch_command_parser

    args = launch_command_parser().parse_args(argv)
    if not _single_machine(args):
        accelerate_launch(args)
        return
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if getattr(args, "main_process_ip", None) is None:
        args.main_process_ip = "127.0.0.1"
    with loopback_rendezvous():
        accelerate_launch(args)


if __name__ == "__main__":
    main()
