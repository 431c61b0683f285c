"""The lab: what notebooks, the CLI, ``%kit`` and sweeps share.

One linear pipeline runs a notebook: :mod:`.notebook` resolves and inspects it once,
:mod:`.parameters` checks the parameters once, :mod:`.execute` runs it through one papermill
call, and the results are recorded (:func:`record`, in the notebook) and stored
(:mod:`.store`); :func:`run` and :func:`sweep` (:mod:`.batch`) drive it. Also here: parameter
rules (:func:`check`), reports (:func:`report`), the command parser the CLI and ``%kit`` share
(:mod:`.commands`) and the ``%kit`` magic (:mod:`.magics`).

The public names load their module on first use (:data:`DEFERRED`, PEP 562 ``__getattr__``),
so that ``kit simulate``, which imports :mod:`.commands`, does not load the notebook pipeline
(docs/architecture.md, "Deferred loading").
"""
from __future__ import annotations

import importlib
import sys
import types

#: public names loaded on first use, and the submodule each comes from
DEFERRED = {"MIME": "record", "read_notebook_results": "record", "record": "record", "timestamp": "record",
            "report": "report", "run": "batch", "run_notebook": "batch", "sweep": "batch",
            "NOTEBOOKS": "notebook", "Notebook": "notebook", "inspect": "notebook", "check": "validate"}


class _Lab(types.ModuleType):
    """The package's module type: importing a submodule binds its name on the package
    (``importlib._bootstrap._find_and_load``), and ``record`` and ``report`` name both a
    submodule and its function; the function keeps the name, as when both were imported here
    at once."""

    def __setattr__(self, name, value):
        if not (isinstance(value, types.ModuleType) and DEFERRED.get(name) == name):
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Lab


def __getattr__(name: str):
    if name in DEFERRED:
        value = getattr(importlib.import_module(f".{DEFERRED[name]}", __name__), name)
        globals()[name] = value
        return value
    if not name.startswith("_"):                  # a submodule, as when all were imported here
        try:
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(DEFERRED))


__all__ = ["MIME", "NOTEBOOKS", "Notebook", "check", "inspect", "read_notebook_results", "record", "report",
           "run", "run_notebook", "sweep", "timestamp"]
