"""The ``kit`` command line: argv -> :mod:`kit.lab.commands` -> print.

The parser and the commands live in the lab, shared with the ``%kit`` magic, and so does the
error rule (:func:`kit.lab.commands.dispatch`, docs/cli-errors.md): a bad argument is one
line on stderr and exit status 2, a failed run one line and status 1, a bug in the kit one
line saying where its traceback was saved and status 70. No traceback reaches the terminal.
"""
from __future__ import annotations

import gc
import sys

from .lab.commands import (CRASH_STATUS, ArgError, Crashed, HelpShown, Outcome, RunFailed, build_parser, call,
                           command_name, crashed, dispatch, simulate_args)

__all__ = ["ArgError", "entry", "main", "parser", "run_command", "simulate_args"]


def parser(raise_errors: bool = False):
    """The ``kit`` argument parser (:func:`kit.lab.commands.build_parser`)."""
    return build_parser(raise_errors)


def _say(line: str) -> None:
    print(line, flush=True)


def _quiet_streams() -> None:
    """Text the terminal cannot encode is escaped, never an error."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError):
            pass


def entry() -> int:
    """The process's entry point (the ``kit`` console script, ``python -m kit``): :func:`main`
    on ``sys.argv``, after ``gc.freeze()``. What is alive by then (modules, classes, parameter
    tables) lives until the process exits, so the cyclic collector need not walk it again, in
    the run's collections or at exit (Python's ``gc.freeze`` documentation): a shorter
    start-up for every command (benchmarks/startup.py). Not for :func:`main` called inside a
    longer-lived process (a notebook, the tests), where it would keep garbage forever."""
    gc.freeze()
    return main()


def main(argv=None) -> int:
    """``kit ARGS``: the exit status (0 done, 1 a run failed, 2 a bad argument, 70 a bug)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    _quiet_streams()
    prefix = " ".join(["kit", command_name(argv)]).strip()
    return _status(lambda: dispatch(argv, say=_say), prefix, argv)


def _status(work, prefix: str, argv) -> int:
    """Run ``work`` (a command) and turn what happened into the exit status, printing the
    output or one line (docs/cli-errors.md)."""
    try:
        done: Outcome = work()
    except HelpShown:                       # --help, --version: printed
        return 0
    except ArgError as e:
        return _fail(prefix, e, 2)
    except RunFailed as e:
        return _fail(prefix, e, 1)
    except Crashed as e:
        return _fail(prefix, e, CRASH_STATUS)
    return _show(done, prefix, argv)


def _fail(prefix: str, e: Exception, status: int) -> int:
    print(f"{prefix}: {e}", file=sys.stderr, flush=True)
    return status


def _show(done: Outcome, prefix: str, argv) -> int:
    try:
        for line in done.lines:
            print(line)
        sys.stdout.flush()
    except BrokenPipeError:                 # kit ... | head: the reader has what it wanted
        return done.status
    except Exception as e:
        return _fail(prefix, crashed(e, argv), CRASH_STATUS)
    return done.status


def run_command(args) -> int:
    """Run parsed arguments' command and print what it did; returns the exit status."""
    return _status(lambda: call(args, [args.cmd], say=_say), f"kit {args.cmd}", [args.cmd])


# the former per-command entry points (kit.lab.commands has the commands), for one release
cmd_demo = cmd_host_demo = cmd_simulate = cmd_calibrate = cmd_report = cmd_run = cmd_sweep = run_command
