"""The IPython extension: ``%load_ext kit`` registers the ``%kit`` line magic.

- ``%kit simulate|run|params|sweep|report|demo|host-demo|calibrate|explore ARGS``: the command line's
  commands, with its parser (:mod:`kit.lab.commands`); a bad argument is a one-line
  ``UsageError``. ``%kit simulate`` returns and displays its :class:`SimResult`; the others
  print what ``kit`` prints (``%kit run NOTEBOOK -p NAME VALUE`` runs the same pipeline as
  ``kit run``; ``%kit explore SCENARIO --scheme S`` the same search as ``kit explore``).
- ``%kit dashboard NAME [key=value ...]``: displays a dashboard (``kit.viz.dashboards``);
  values are Python literals (``%kit dashboard policy-explorer guests=4``: guest memory made to
  fit; ``export view`` saves what it shows as an HTML section and CSV in ``exports/``).
- ``%kit`` or ``%kit help``: this text.
"""
from __future__ import annotations

import ast
import shlex

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class

from .commands import SUBCOMMANDS as COMMANDS
from .commands import ArgError, Crashed, HelpShown, RunFailed, crashed, dispatch

SUBCOMMANDS = (*COMMANDS, "dashboard", "help")


@magics_class
class KitMagics(Magics):
    @line_magic
    def kit(self, line: str):
        """%kit simulate|run|params|sweep|report|demo|host-demo|calibrate|explore ARGS | dashboard NAME [k=v ...] | help"""
        try:
            argv = shlex.split(line, comments=True)       # a trailing "# ..." is a comment
        except ValueError as e:
            raise UsageError(f"%kit: {e}") from None
        if not argv or argv[0] == "help":
            print(__doc__)
            return None
        cmd = argv[0]
        if cmd == "dashboard":       # values are Python literals: keep their quotes
            return _dashboard(shlex.split(line, comments=True, posix=False)[1:])
        if cmd in COMMANDS:
            return _command(argv)
        raise UsageError(f"%kit: unknown subcommand {cmd!r}; allowed: {', '.join(SUBCOMMANDS)}")


def _command(argv: list[str]):
    """One of the command line's commands: the same parser, the same function, the same error
    rule (:func:`kit.lab.commands.dispatch`): every error is a one-line ``UsageError`` (a bug's
    traceback is saved to a crash report the line names), never a traceback in the notebook."""
    cmd = argv[0]
    try:
        done = dispatch(argv, say=print, raise_errors=True)
    except (ArgError, RunFailed, Crashed) as e:
        raise UsageError(f"%kit {cmd}: {e}") from None
    except HelpShown:
        return None
    if done.display:
        return done.value
    for text in done.lines:
        print(text)
    return None


def _dashboard(argv):
    # ipywidgets, Bokeh and jupyter_bokeh load with the first dashboard (most of a second)
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
    except Exception as e:
        raise UsageError(f"%kit dashboard: {crashed(e, ['dashboard', *argv])}") from None


def load_ipython_extension(ipython) -> None:
    ipython.register_magics(KitMagics)


def unload_ipython_extension(ipython) -> None:    # magics stay registered, as with most extensions
    pass
