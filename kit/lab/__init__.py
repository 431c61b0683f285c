"""The lab: what notebooks, the CLI, ``%kit`` and sweeps share.

One linear pipeline runs a notebook: :mod:`.notebook` resolves and inspects it once,
:mod:`.parameters` checks the parameters once, :mod:`.execute` runs it through one papermill
call, and the results are recorded (:func:`record`, in the notebook) and stored
(:mod:`.store`); :func:`run` and :func:`sweep` (:mod:`.batch`) drive it. Also here: parameter
rules (:func:`check`), reports (:func:`report`), the command parser the CLI and ``%kit`` share
(:mod:`.commands`) and the ``%kit`` magic (:mod:`.magics`).
"""
from __future__ import annotations

from .batch import run, run_notebook, sweep
from .notebook import NOTEBOOKS, Notebook, inspect
from .record import MIME, read_notebook_results, record, timestamp
from .report import report
from .validate import check

__all__ = ["MIME", "NOTEBOOKS", "Notebook", "check", "inspect", "read_notebook_results", "record", "report",
           "run", "run_notebook", "sweep", "timestamp"]
