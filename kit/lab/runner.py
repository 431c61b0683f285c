"""Running the kit's notebooks with papermill (one kernel, IPC transport)."""
from __future__ import annotations

import tempfile
from pathlib import Path

from .record import read_notebook_results

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def ipc_kernel_manager():
    """A ``KernelManager`` class whose kernels talk over IPC sockets (no TCP ports to
    collide on when many kernels start at once) in a short private folder (a socket path must
    stay under 107 bytes), removed when the kernel is cleaned up. Given to papermill as
    ``kernel_manager_class``, so nbclient creates, times and shuts down the kernel itself
    (a manager passed in as ``km`` is neither shut down nor given the cell timeout)."""
    import shutil

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


def notebook_path(name) -> Path:
    """``name`` is a notebook in ``notebooks/`` (without ``.ipynb``) or a path."""
    p = Path(name)
    if p.suffix == ".ipynb" and p.exists():
        return p
    p = NOTEBOOKS / f"{name}.ipynb"
    if not p.exists():
        known = sorted(q.stem for q in NOTEBOOKS.glob("*.ipynb"))
        raise ValueError(f"notebook: unknown {name!r}; allowed: {', '.join(known)}")
    return p


def parameter_names(nb_path) -> dict:
    """The notebook's parameters (papermill inspection): name -> inferred type and default."""
    import papermill
    return papermill.inspect_notebook(str(nb_path))


def run_notebook(name, outdir, *, timeout: int = 900, **params):
    """Execute a notebook with ``params`` (names checked against its parameters cell first)
    into ``outdir``; returns (executed notebook path, recorded results)."""
    import papermill
    src = notebook_path(name)
    known = parameter_names(src)
    bad = sorted(set(params) - set(known))
    if bad:
        raise ValueError(f"parameters: unknown {', '.join(bad)} for {src.stem}; allowed: {', '.join(known)}")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    params = {"outdir": str(outdir.resolve()), **params} if "outdir" in known else params
    out = outdir / src.name
    papermill.execute_notebook(str(src), str(out), parameters=params, kernel_name="python3",
                               progress_bar=False, cwd=str(outdir), execution_timeout=timeout,
                               kernel_manager_class=ipc_kernel_manager())
    return out, read_notebook_results(out)
