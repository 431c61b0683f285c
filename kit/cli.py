"""The ``kit`` command line: argv -> :mod:`kit.lab.commands` -> print.

The parser and the commands live in the lab, shared with the ``%kit`` magic; here a bad
argument becomes one line on stderr and exit status 2, a failed run exit status 1.
"""
from __future__ import annotations

import sys

from .lab.commands import ArgError, Outcome, RunFailed, build_parser, simulate_args

__all__ = ["ArgError", "main", "parser", "run_command", "simulate_args"]


def parser(raise_errors: bool = False):
    """The ``kit`` argument parser (:func:`kit.lab.commands.build_parser`)."""
    return build_parser(raise_errors)


def _say(line: str) -> None:
    print(line, flush=True)


def main(argv=None) -> int:
    return run_command(build_parser().parse_args(argv))


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
