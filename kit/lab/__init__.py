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

import sys
import types

from ..units import deferred_attributes

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


__getattr__, __dir__ = deferred_attributes(globals(), DEFERRED)


__all__ = ["MIME", "NOTEBOOKS", "Notebook", "check", "inspect", "read_notebook_results", "record", "report",
           "run", "run_notebook", "sweep", "timestamp"]
