"""Former home of running notebooks; the pipeline's steps now have a module each:
:mod:`kit.lab.notebook` (resolve, inspect), :mod:`kit.lab.parameters` (check),
:mod:`kit.lab.execute` (the papermill call) and :mod:`kit.lab.batch` (``run_notebook``, runs
and sweeps). These names stay importable from here for one release (CHANGELOG.md)."""
from __future__ import annotations

from .batch import run_notebook
from .execute import ipc_kernel_manager
from .notebook import NOTEBOOKS, notebook_path, parameter_names
from .record import read_notebook_results

__all__ = ["NOTEBOOKS", "ipc_kernel_manager", "notebook_path", "parameter_names", "read_notebook_results",
           "run_notebook"]
