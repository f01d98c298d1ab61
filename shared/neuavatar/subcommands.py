"""Commands with subcommands (``neuavatar stack up``, ``neuavatar client render``): their usage text
and dispatch, so each command module only lists its subcommands."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence

__all__ = ["Subcommands", "run_subcommand", "usage"]

Subcommands = Mapping[str, tuple[type, Callable[[list[str]], int]]]
"""name -> (the argument dataclass, whose docstring's first line describes it; the function to run)."""


def usage(prog: str, subcommands: Subcommands, notes: Sequence[str] = ()) -> str:
    width = max(map(len, subcommands)) + 2
    lines = [f"usage: {prog} {{{','.join(subcommands)}}} [options]", ""]
    lines += [f"  {name:<{width}}{(cls.__doc__ or '').strip().splitlines()[0]}" for name, (cls, _) in subcommands.items()]
    return "\n".join([*lines, "", *notes, f"`{prog} SUBCOMMAND --help` lists its options."])


def run_subcommand(prog: str, subcommands: Subcommands, argv: list[str], notes: Sequence[str] = ()) -> int:
    """Run the subcommand ``argv[0]`` with the rest of ``argv``; its exit status (2 for a missing
    or unknown subcommand, with the usage text)."""
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(prog, subcommands, notes))
        return 0 if argv else 2
    if argv[0] not in subcommands:
        print(f"{prog}: unknown subcommand {argv[0]!r}\n\n{usage(prog, subcommands, notes)}", file=sys.stderr)
        return 2
    return subcommands[argv[0]][1](argv[1:])
