"""The IPython extension: ``%load_ext kit`` registers the ``%kit`` line magic.

- ``%kit simulate [kit simulate's arguments]``: runs and displays a :class:`SimResult`
  (the same parser as the command line; a bad argument is a one-line ``UsageError``).
- ``%kit dashboard NAME [key=value ...]``: displays a dashboard (``kit.viz.dashboards``);
  values are Python literals (``%kit dashboard policy-explorer guests=4``).
- ``%kit report RESULTS... -o FILE``: builds a report (as ``kit report``).
- ``%kit`` or ``%kit help``: this text.
"""
from __future__ import annotations

import ast
import shlex

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class

SUBCOMMANDS = ("simulate", "dashboard", "report", "help")


@magics_class
class KitMagics(Magics):
    @line_magic
    def kit(self, line: str):
        """%kit simulate ARGS | dashboard NAME [k=v ...] | report RESULTS -o FILE | help"""
        try:
            argv = shlex.split(line)
        except ValueError as e:
            raise UsageError(f"%kit: {e}") from None
        if not argv or argv[0] == "help":
            print(__doc__)
            return None
        cmd, rest = argv[0], argv[1:]
        if cmd == "simulate":
            return _simulate(rest)
        if cmd == "dashboard":       # values are Python literals: keep their quotes
            return _dashboard(shlex.split(line, posix=False)[1:])
        if cmd == "report":
            return _report(rest)
        raise UsageError(f"%kit: unknown subcommand {cmd!r}; allowed: {', '.join(SUBCOMMANDS)}")


def _parse(sub: str, argv: list[str]):
    from ..cli import ArgError, parser
    try:
        return parser(raise_errors=True).parse_args([sub, *argv])
    except ArgError as e:
        raise UsageError(f"%kit {sub}: {e}") from None


def _simulate(argv):
    from ..cli import simulate_args
    args = _parse("simulate", argv)
    try:
        kw, params = simulate_args(args)
    except ValueError as e:
        raise UsageError(f"%kit simulate: {e}") from None
    from ..sim.api import simulate
    return simulate(**kw, params=params)


def _dashboard(argv):
    from ..viz.dashboards import DASHBOARDS, dashboard
    if not argv:
        raise UsageError(f"%kit dashboard: name required; allowed: {', '.join(DASHBOARDS)}")
    name, kw = argv[0], {}
    for item in argv[1:]:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"%kit dashboard: expected key=value, got {item!r}")
        try:
            kw[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            kw[key] = value            # a bare word: a string
    try:
        return dashboard(name, **kw)
    except (ValueError, TypeError) as e:
        raise UsageError(f"%kit dashboard: {e}") from None


def _report(argv):
    from ..lab.report import report
    args = _parse("report", argv)
    try:
        path = report(args.results, args.out, title=args.title)
    except ValueError as e:
        raise UsageError(f"%kit report: {e}") from None
    print(f"report: {path.resolve()}")
    return None


def load_ipython_extension(ipython) -> None:
    ipython.register_magics(KitMagics)


def unload_ipython_extension(ipython) -> None:    # magics stay registered, as with most extensions
    pass
