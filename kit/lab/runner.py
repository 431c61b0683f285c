"""Running the kit's notebooks with papermill (one kernel, IPC transport)."""
from __future__ import annotations

import tempfile
from pathlib import Path

from .record import read_notebook_results

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def shutdown(km) -> None:
    """Stop the kernel of a manager we passed to papermill: nbclient shuts down only kernels
    whose manager it created itself."""
    try:
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    except Exception:             # already gone
        pass
    try:
        km.cleanup_resources()
    except Exception:
        pass


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
    from jupyter_client.manager import KernelManager
    src = notebook_path(name)
    known = parameter_names(src)
    bad = sorted(set(params) - set(known))
    if bad:
        raise ValueError(f"parameters: unknown {', '.join(bad)} for {src.stem}; allowed: {', '.join(known)}")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    params = {"outdir": str(outdir.resolve()), **params} if "outdir" in known else params
    out = outdir / src.name
    # IPC transport: no TCP ports to collide on when many kernels start at once; its socket
    # files live in a private temporary folder
    with tempfile.TemporaryDirectory(prefix="kit-kernel-") as sock:
        km = KernelManager(kernel_name="python3", transport="ipc", ip=str(Path(sock) / "kernel"))
        try:
            papermill.execute_notebook(str(src), str(out), parameters=params, kernel_name="python3",
                                       progress_bar=False, cwd=str(outdir), execution_timeout=timeout, km=km)
        finally:
            shutdown(km)
    return out, read_notebook_results(out)
