"""Step 3 of a run: the one call that executes a notebook (papermill, one kernel over IPC).

:func:`execute` is the only place the kit calls ``papermill.execute_notebook``: ``kit run``,
``kit demo``, the result store (``kit sweep``'s workers) and ``%kit run`` all go through it.
It refuses a parameter value papermill would not write as a literal
(:func:`kit.lab.parameters.check_params`) before anything starts.

Each kernel gets a private folder ``<tmp>/kit-k-*`` for its IPC sockets and its connection
file, with an ``owner`` file the running process holds an exclusive ``flock(2)`` on. The
folder goes when the kernel is cleaned up; a process killed with ``kill -9`` leaves it, and
the next :func:`execute` on the machine removes every such folder whose owner's lock is free
(:func:`clean_kernel_dirs`): the kernel drops the lock when its holder exits.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

from .notebook import Notebook
from .parameters import check_params
from .record import load_result, write_atomic

#: the prefix of the kernels' private folders in the temporary directory
KERNEL_DIR_PREFIX = "kit-k-"
OWNER = "owner"
#: a kernel folder without an owner file (being created, or an older version's) is left
#: alone until it is this many seconds old
KERNEL_DIR_GRACE = 3600.0


def _kernel_dir() -> tuple[str, int]:
    """A new private kernel folder and the fd of its ``owner`` file, locked."""
    d = tempfile.mkdtemp(prefix=KERNEL_DIR_PREFIX)
    fd = os.open(os.path.join(d, OWNER), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
    return d, fd


def clean_kernel_dirs(tmpdir=None) -> int:
    """Remove kernel folders (``<tmpdir>/kit-k-*``) whose owner process is gone: its lock on
    the ``owner`` file is free. Returns how many went. Another user's folders, and a folder
    still being set up, are left alone."""
    n = 0
    for d in Path(tmpdir or tempfile.gettempdir()).glob(f"{KERNEL_DIR_PREFIX}*"):
        try:
            if not d.is_dir() or d.is_symlink() or d.stat().st_uid != os.getuid():
                continue
            try:
                fd = os.open(d / OWNER, os.O_RDWR)
            except FileNotFoundError:
                if time.time() - d.stat().st_mtime > KERNEL_DIR_GRACE:
                    shutil.rmtree(d, ignore_errors=True)
                    n += 1
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue                        # its owner is alive
            finally:
                os.close(fd)
            shutil.rmtree(d, ignore_errors=True)
            n += 1
        except OSError:
            continue
    return n


def ipc_kernel_manager():
    """A ``KernelManager`` class whose kernels talk over IPC sockets (no TCP ports to
    collide on when many kernels start at once) in a short private folder (a socket path must
    stay under 107 bytes) that also holds the connection file, removed when the kernel is
    cleaned up. Given to papermill as ``kernel_manager_class``, so nbclient creates, times and
    shuts down the kernel itself (a manager passed in as ``km`` is neither shut down nor given
    the cell timeout)."""
    # jupyter_client loads with papermill, about a second: only a run pays it
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class IpcKernelManager(AsyncKernelManager):     # async: nbclient enforces cell timeouts only then
        def _kit_dir(self) -> str:
            if getattr(self, "_kit_sockdir", None) is None:
                self._kit_sockdir, self._kit_owner = _kernel_dir()
            return self._kit_sockdir

        @default("transport")
        def _default_transport(self):
            return "ipc"

        @default("ip")
        def _default_ip(self):
            return str(Path(self._kit_dir()) / "k")

        @default("connection_file")
        def _default_connection_file(self):
            return str(Path(self._kit_dir()) / "kernel.json")

        async def _async_cleanup_resources(self, restart: bool = False) -> None:
            await super()._async_cleanup_resources(restart=restart)
            if not restart and getattr(self, "_kit_sockdir", None):
                shutil.rmtree(self._kit_sockdir, ignore_errors=True)
                os.close(self._kit_owner)
                self._kit_sockdir = None

    return IpcKernelManager


def _relocate_value(x, pairs):
    if isinstance(x, str):
        for old, new in pairs:
            if old in x:
                x = x.replace(old, new)
        return x
    if isinstance(x, list):
        return [_relocate_value(v, pairs) for v in x]
    if isinstance(x, dict):
        return type(x)((k, _relocate_value(v, pairs)) for k, v in x.items())
    return x


def relocate(folder, moves) -> None:
    """The executed notebook and the result side files in ``folder`` name ``new`` wherever
    they name ``old``, for each ``(old, new)`` of ``moves`` in turn (the temporary folder a run
    was executed in, and the folder it goes to): parameters, provenance, outputs. ``old`` is a
    unique temporary path, so no other text matches it."""
    import nbformat
    from papermill.translators import PythonTranslator

    pairs = []
    for old, new in moves:
        old, new = str(old), str(new)
        # as written: plain, inside papermill's Python literal (the parameters cell), in JSON
        pairs.append((old, new))
        for f in (lambda s: PythonTranslator.translate_str(s)[1:-1], lambda s: json.dumps(s)[1:-1]):
            if f(old) != old:
                pairs.append((f(old), f(new)))
    for p in Path(folder).glob("*.ipynb"):
        try:
            nb = nbformat.read(str(p), as_version=4)
        except (OSError, ValueError):
            continue
        nbformat.write(nbformat.from_dict(_relocate_value(nb, pairs)), str(p))
    for p in Path(folder).glob("*.json"):
        try:
            doc = load_result(p)
        except ValueError:
            continue
        write_atomic(p, json.dumps(_relocate_value(doc, pairs), sort_keys=True, allow_nan=False))


#: the MIME types of BokehJS's load output (``output_notebook``) and of its plots
BOKEHJS_LOAD = "application/vnd.bokehjs_load.v0+json"
JS = "application/javascript"
#: how a stored notebook keeps BokehJS: "inline" (once, only the bundles its plots need: opens
#: in JupyterLab with its plots), "none" (a note instead: a sweep's runs, whose report
#: embeds BokehJS once for all of them)
BOKEHJS_MODES = ("inline", "none")
BOKEHJS_NOTE = ("BokehJS is not stored in this notebook (kept small); its plots are in the report "
                "built from it (kit report), or run the notebook again to see them here")


def slim(nb, bokehjs: str = "inline"):
    """Keep a notebook small (a ``NotebookNode``, changed in place and returned): each BokehJS
    load output keeps one copy of the library (``application/vnd.bokehjs_load.v0+json``, which
    JupyterLab's jupyter_bokeh renders; the ``application/javascript`` copy for the classic
    notebook goes) or, with ``bokehjs="none"``, a note instead. Plots (their
    ``bokehjs_exec`` outputs) are left as they are."""
    if bokehjs not in BOKEHJS_MODES:
        raise ValueError(f"bokehjs: expected one of {', '.join(BOKEHJS_MODES)}, got {bokehjs!r}")
    for cell in nb.cells:
        for o in cell.get("outputs", []) if cell.cell_type == "code" else []:
            data = o.get("data", {})
            if BOKEHJS_LOAD not in data:
                continue
            data.pop(JS, None)
            if bokehjs == "none":
                data.pop(BOKEHJS_LOAD)
                data["text/plain"] = BOKEHJS_NOTE
    return nb


def sign(nb) -> None:
    """Sign a notebook with nbformat's notary (``nbformat.sign.NotebookNotary``: an HMAC in
    this user's Jupyter data folder), so JupyterLab trusts the outputs the kit's own run
    produced and shows its plots; a notebook edited afterwards loses the trust."""
    from nbformat.sign import NotebookNotary
    NotebookNotary().sign(nb)


def finish(path, *, bokehjs: str = "inline") -> Path:
    """An executed notebook made small (:func:`slim`) and signed (:func:`sign`), rewritten atomically."""
    import nbformat
    path = Path(path)
    nb = slim(nbformat.read(str(path), as_version=4), bokehjs)
    sign(nb)
    write_atomic(path, nbformat.writes(nb))
    return path


def execute(nb: Notebook, params: dict, folder, *, timeout: int = 900, kernel_name: str = "python3",
            final=None, progress: bool = False, bokehjs: str = "inline") -> Path:
    """Execute ``nb`` with ``params`` in ``folder`` (created if missing; the kernel's working
    directory) and write the executed notebook there; returns its path. A notebook with an
    ``outdir`` parameter that ``params`` does not set writes its results to ``folder``.
    ``timeout``: seconds per cell. ``final``: where ``folder`` will be moved once the run is
    done; the executed notebook and the results then name that folder (:func:`relocate`).
    A value papermill would not write as a literal raises ``ValueError`` first; a failing
    cell, a dead kernel or a timeout raises papermill's or nbclient's error; the executed
    notebook is written first. ``progress``: papermill's cell-by-cell progress bar (tqdm, on
    stderr or as a notebook widget).
    The executed notebook is kept small and signed (:func:`finish`;
    ``bokehjs``: "inline" or "none", :data:`BOKEHJS_MODES`)."""
    check_params(params)
    if bokehjs not in BOKEHJS_MODES:
        raise ValueError(f"bokehjs: expected one of {', '.join(BOKEHJS_MODES)}, got {bokehjs!r}")
    import papermill        # about a second to import: only a run pays it

    clean_kernel_dirs()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if "outdir" in nb.parameters:
        params = {"outdir": str(folder.resolve()), **params}
    out = folder / nb.path.name
    try:
        papermill.execute_notebook(str(nb.path), str(out), parameters=params, kernel_name=kernel_name,
                                   progress_bar=progress, cwd=str(folder), execution_timeout=timeout,
                                   kernel_manager_class=ipc_kernel_manager())
    finally:
        if final is not None:
            try:
                relocate(folder, [(folder.resolve(), Path(final).resolve()), (folder, Path(final))])
            except (OSError, ValueError):
                pass                # the run's own error, if any, is the one to report
        try:
            finish(out, bokehjs=bokehjs)
        except (OSError, ValueError):
            pass                    # as above: a failed run's notebook is kept as written
    return out
