"""``neuavatar stack up|status|down``: the local stack from the command line (see :mod:`neuavatar.stack.local`)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Literal

import tyro

from neuavatar.stack.local import (
    StackError,
    StackOptions,
    default_stack_dir,
    format_table,
    load_state,
    parse_ports,
    stack_down,
    stack_status,
    stack_up,
)
from neuavatar.subcommands import run_subcommand

__all__ = ["StackUpArgs", "StackStatusArgs", "StackDownArgs", "main"]


@dataclasses.dataclass
class StackUpArgs:
    """Start the local stack: RabbitMQ, SeaweedFS (S3), Prometheus and the four services, on 127.0.0.1."""

    dir: Path = dataclasses.field(default_factory=default_stack_dir)
    """The stack's directory (state, data, logs, credentials) ($NEUAVATAR_STACK_DIR when set)."""
    preset: str = "cpu-smoke"
    """The services' default run preset: 'cpu-smoke' (small and quick) or 'gpu' (full quality, for a GPU host)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """The services' torch device: 'auto', 'cpu' or 'cuda'."""
    ports: tuple[str, ...] = ()
    """Fixed ports as NAME=PORT pairs (the others are chosen free); NAME: amqp, s3, prometheus, a service
    (preprocess, tracker, trainer, renderer: its API port) or SERVICE-metrics (its metrics port)."""
    services: bool = True
    """Start the four services (--no-services: only the broker, S3 and Prometheus)."""
    timeout_seconds: float = 180.0
    """How long each service may take to report SERVING."""


@dataclasses.dataclass
class StackStatusArgs:
    """Show each part of the local stack: process, address and health; exits 1 if a part is down."""

    dir: Path = dataclasses.field(default_factory=default_stack_dir)
    """The stack's directory ($NEUAVATAR_STACK_DIR when set)."""


@dataclasses.dataclass
class StackDownArgs:
    """Stop the local stack: exactly the processes that `stack up` started there (data stay)."""

    dir: Path = dataclasses.field(default_factory=default_stack_dir)
    """The stack's directory ($NEUAVATAR_STACK_DIR when set)."""


def _up(argv: list[str]) -> int:
    args = tyro.cli(StackUpArgs, args=argv, prog="neuavatar stack up")
    directory = args.dir
    options = StackOptions(dir=directory, preset=args.preset, device=args.device, services=args.services,
                           ports=parse_ports(args.ports), service_timeout_seconds=args.timeout_seconds)
    from neuavatar.presets import PRESETS

    if args.preset not in PRESETS:
        raise StackError(f"unknown preset {args.preset!r}; choose one of {', '.join(PRESETS)}")
    print(f"starting the NeuAvatar stack in {Path(directory).expanduser().resolve()} ...", file=sys.stderr)
    try:
        state = stack_up(options, report=lambda line: print(f"  {line}", file=sys.stderr))
    except KeyboardInterrupt:
        print("\ninterrupted: what had started was stopped again", file=sys.stderr)
        return 130
    _print_status(state)
    print(f"\nstate: {state.dir / 'stack.json'}; S3 keys: {state.dir / 'credentials.json'} (mode 0600)")
    if state.api_address:
        print("try: neuavatar client avatars   (stop with: neuavatar stack down)")
    else:
        print("services not started (--no-services); stop with: neuavatar stack down")
    return 0


def _status(argv: list[str]) -> int:
    args = tyro.cli(StackStatusArgs, args=argv, prog="neuavatar stack status")
    directory = args.dir
    state = load_state(Path(directory).expanduser().resolve())
    if state is None:
        print(f"no stack in {directory}; start one with `neuavatar stack up`", file=sys.stderr)
        return 1
    ok = _print_status(state)
    if not ok and state.state == "down":
        print(f"\nthe stack in {state.dir} is stopped; `neuavatar stack up` starts it again", file=sys.stderr)
    elif not ok:
        print("\nsome parts are down: see their logs; `neuavatar stack down` then `up` restarts the stack",
              file=sys.stderr)
    return 0 if ok else 1


def _print_status(state) -> bool:
    parts = stack_status(state)
    rows = [(p.name, str(p.pid) if p.pid is not None else "-", p.address, p.health, str(p.log)) for p in parts]
    print(format_table(rows, ("part", "pid", "address", "health", "log")))
    return all(p.ok for p in parts)


def _down(argv: list[str]) -> int:
    args = tyro.cli(StackDownArgs, args=argv, prog="neuavatar stack down")
    directory = Path(args.dir).expanduser().resolve()
    stopped = stack_down(directory)
    if stopped:
        print(f"stopped: {', '.join(stopped)} (data kept in {directory})")
    else:
        print(f"nothing was running in {directory}")
    return 0


_SUBCOMMANDS = {"up": (StackUpArgs, _up), "status": (StackStatusArgs, _status), "down": (StackDownArgs, _down)}


def main(argv: list[str]) -> int:
    """``neuavatar stack ...``; the exit status. Raises StackError (a NeuAvatarError) for the CLI to print."""
    return run_subcommand("neuavatar stack", _SUBCOMMANDS, argv)
