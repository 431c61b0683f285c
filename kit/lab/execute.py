"""Step 3 of a run: the one call that executes a notebook (papermill, one kernel over IPC).

:func:`execute` is the only place the kit calls ``papermill.execute_notebook``: ``kit run``,
``kit demo``, the result store (``kit sweep``'s workers) and ``%kit run`` all go through it.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from .notebook import Notebook


def ipc_kernel_manager():
    """A ``KernelManager`` class whose kernels talk over IPC sockets (no TCP ports to
    collide on when many kernels start at once) in a short private folder (a socket path must
    stay under 107 bytes), removed when the kernel is cleaned up. Given to papermill as
    ``kernel_manager_class``, so nbclient creates, times and shuts down the kernel itself
    (a manager passed in as ``km`` is neither shut down nor given the cell timeout)."""
    # jupyter_client loads with papermill, about a second: only a run pays it
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class IpcKernelManager(AsyncKernelManager):     # async: nbclient enforces cell timeouts only then
        @default("transport")
        def _default_transport(self):
            return "ipc"

        @default("ip")
        def _default_ip(self):
            self._kit_sockdir = tempfile.mkdtemp(prefix="kit-k-")
            return str(Path(self._kit_sockdir) / "k")

        async def _async_cleanup_resources(self, restart: bool = False) -> None:
            await super()._async_cleanup_resources(restart=restart)
            if not restart and getattr(self, "_kit_sockdir", None):
                shutil.rmtree(self._kit_sockdir, ignore_errors=True)

    return IpcKernelManager


def execute(nb: Notebook, params: dict, folder, *, timeout: int = 900, kernel_name: str = "python3") -> Path:
    """Execute ``nb`` with ``params`` in ``folder`` (created if missing; the kernel's working
    directory) and write the executed notebook there; returns its path. A notebook with an
    ``outdir`` parameter that ``params`` does not set writes its results to ``folder``.
    ``timeout``: seconds per cell. A failing cell, a dead kernel or a timeout raises
    papermill's or nbclient's error; the executed notebook is written first."""
    import papermill        # about a second to import: only a run pays it

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if "outdir" in nb.parameters:
        params = {"outdir": str(folder.resolve()), **params}
    out = folder / nb.path.name
    papermill.execute_notebook(str(nb.path), str(out), parameters=params, kernel_name=kernel_name,
                               progress_bar=False, cwd=str(folder), execution_timeout=timeout,
                               kernel_manager_class=ipc_kernel_manager())
    return out
