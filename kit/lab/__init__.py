"""The lab: what notebooks, the CLI and sweeps share: parameter rules (:func:`check`),
recording results (:func:`record`), reports (:func:`report`), running notebooks
(:func:`run_notebook`) and the ``%kit`` magic (:mod:`.magics`)."""
from __future__ import annotations

from .record import MIME, read_notebook_results, record, timestamp
from .report import report
from .runner import NOTEBOOKS, run_notebook
from .validate import check


def sweep(notebook, grid, **kw):
    """Every combination of ``grid`` as one run on dask.distributed; the table (see
    :func:`kit.lab.batch.sweep`)."""
    from .batch import sweep as _sweep
    return _sweep(notebook, grid, **kw)

__all__ = ["MIME", "check", "record", "read_notebook_results", "report", "run_notebook", "NOTEBOOKS", "timestamp", "sweep"]
