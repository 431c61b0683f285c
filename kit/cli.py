"""The ``kit`` command line: argv -> :mod:`kit.lab.commands` -> print.

The parser and the commands live in the lab, shared with the ``%kit`` magic; here a bad
argument becomes one line on stderr and exit status 2, a failed run exit status 1.
"""
from __future__ import annotations

import sys

from .lab.commands import SUBCOMMANDS, ArgError, Outcome, RunFailed, build_parser, simulate_args

__all__ = ["ArgError", "main", "parser", "run_command", "simulate_args"]


def parser(raise_errors: bool = False):
    """The ``kit`` argument parser (:func:`kit.lab.commands.build_parser`)."""
    return build_parser(raise_errors)


def _say(line: str) -> None:
    print(line, flush=True)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # the parser of the subcommand named (the first word that is not an option) needs only
    # that subcommand's modules (docs/architecture.md, "Deferred loading")
    named = next((a for a in argv if not a.startswith("-")), None)
    return run_command(build_parser(command=named if named in SUBCOMMANDS else None).parse_args(argv))


def run_command(args) -> int:
    """Run parsed arguments' command and print what it did; returns the exit status."""
    try:
        done: Outcome = args.command(args, say=_say)
    except ArgError as e:
        print(f"kit {args.cmd}: {e}", file=sys.stderr)
        return 2
    except RunFailed as e:
        print(f"kit {args.cmd}: {e}", file=sys.stderr)
        return 1
    for line in done.lines:
        print(line)
    return done.status


# the former per-command entry points (kit.lab.commands has the commands), for one release
cmd_demo = cmd_host_demo = cmd_simulate = cmd_calibrate = cmd_report = cmd_run = cmd_sweep = run_command
