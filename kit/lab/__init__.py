"""The lab: what notebooks, the CLI and sweeps share: parameter rules (:func:`check`),
recording results (:func:`record`), reports (:func:`report`), running notebooks
(:func:`run_notebook`) and the ``%kit`` magic (:mod:`.magics`)."""
from __future__ import annotations

from .record import MIME, read_notebook_results, record, timestamp
from .report import report
from .runner import NOTEBOOKS, run_notebook
from .validate import check

__all__ = ["MIME", "check", "record", "read_notebook_results", "report", "run_notebook", "NOTEBOOKS", "timestamp"]
