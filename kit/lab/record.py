"""Recording results: a side file in the run's output folder and a custom MIME output.

A notebook records what it found with :func:`record`: the results go to
``<outdir>/<name>.json`` (written to a temporary file and renamed, so a reader never sees half
a file) and are displayed as ``application/vnd.cvm-memkit.result+json``, which
:func:`read_notebook_results` reads back from an executed notebook with nbformat. Both carry
the same provenance (:func:`provenance`): kit version, git commit, parameters, seed,
cost-parameter set and timestamps.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from .. import __version__
from ..sim.calibrate import MEASUREMENTS
from ..sim.params import DEFAULT_PATH, CostParams

MIME = "application/vnd.cvm-memkit.result+json"
SCHEMA = 1
_ROOT = Path(__file__).resolve().parents[2]


def git_commit(path: Path = _ROOT) -> str:
    """The commit the kit runs from (``-dirty`` when its tree has changes), or "unknown"."""
    try:
        out = subprocess.run(["git", "-C", str(path), "describe", "--always", "--dirty", "--abbrev=12"],
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def timestamp() -> str:
    """UTC now, ISO 8601 (what provenance records)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


_now = timestamp


#: the data files every notebook may read, whose digests are part of each run's key and provenance
DATA_FILES = (DEFAULT_PATH, MEASUREMENTS)
#: the packages whose versions a result's provenance names
KEY_PACKAGES = ("numpy", "scipy", "pandas", "bokeh", "papermill", "nbformat", "ipywidgets")


@functools.lru_cache(maxsize=64)
def _file_digest(path: str, mtime_ns: int, size: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def data_digests(files=DATA_FILES) -> dict:
    """``{file name: SHA-256}`` of ``files`` (default :data:`DATA_FILES`; ``"missing"`` for one
    that is not there); read again only when a file's modification time or size changed."""
    out = {}
    for p in files:
        try:
            st = os.stat(p)
            out[Path(p).name] = _file_digest(str(p), st.st_mtime_ns, st.st_size)
        except OSError:
            out[Path(p).name] = "missing"
    return out


@functools.cache
def versions() -> dict:
    """Python's version and the installed versions of :data:`KEY_PACKAGES` ("not installed")."""
    from importlib.metadata import PackageNotFoundError, version
    out = {"python": platform.python_version()}
    for name in KEY_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def cost_parameters(params: CostParams | None = None) -> dict:
    """``{name: {"value", "unit", "kind"}}`` of a cost-parameter set (default: the set
    ``kit simulate`` loads): what a result's timing rests on."""
    if params is None:
        try:
            params = CostParams.load()
        except (OSError, ValueError):
            params = CostParams()
    return {p.name: {"value": p.value, "unit": p.unit, "kind": p.kind} for p in params}


def provenance(params: dict | None = None, *, seed=None, cost_params: str | None = None,
               started: str | None = None) -> dict:
    """Where a result comes from: enough to re-run it (kit version and commit, parameters,
    seed, the cost-parameter set with every value and its kind, the data files' digests,
    Python's and the key packages' versions, times)."""
    try:
        loaded = CostParams.load()
    except (OSError, ValueError):
        loaded = CostParams()
    if cost_params is None:
        cost_params = loaded.name
    return {"kit_version": __version__, "git_commit": git_commit(), "parameters": dict(params or {}),
            "seed": seed, "cost_params": cost_params, "cost_parameters": cost_parameters(loaded),
            "data_files": data_digests(), "versions": versions(),
            "started": started or _now(), "finished": _now()}


def jsonable(x):
    """Plain JSON types from numpy scalars/arrays, dataclasses and result objects."""
    if hasattr(x, "to_json"):
        return jsonable(x.to_json())
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return jsonable(dataclasses.asdict(x))
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, float) and x != x:
        return None
    return x


def write_atomic(path, text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def record(name: str, results, *, params: dict | None = None, outdir=None, seed=None,
           started: str | None = None, display: bool = True) -> dict:
    """Record ``results`` (JSON-able, or objects with ``to_json``) under ``name``.

    Writes ``<outdir>/<name>.json`` when ``outdir`` is given and displays the custom MIME
    output when ``display`` is true (inside a kernel). Returns the recorded document."""
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ValueError(f"name: expected a plain file name, got {name!r}")
    doc = {"schema": SCHEMA, "name": name,
           "provenance": provenance(params, seed=seed, started=started),
           "results": jsonable(results)}
    text = json.dumps(doc, sort_keys=True, allow_nan=False)
    if outdir is not None and str(outdir) != "":
        write_atomic(Path(outdir) / f"{name}.json", text)
    if display:
        try:                    # outside a kernel IPython may be missing: the side file is enough
            from IPython import get_ipython
            from IPython.display import display as _display
        except ImportError:
            return doc
        if get_ipython() is not None:
            _display({MIME: doc, "text/plain": f"<kit result {name!r}: {len(text)} bytes>"}, raw=True)
    return doc


def load_result(path) -> dict:
    """Read one recorded result file; a truncated or foreign file raises ``ValueError``."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a kit result file ({e})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or "results" not in doc or "provenance" not in doc:
        raise ValueError(f"{path}: not a kit result file (no schema {SCHEMA} document)")
    return doc


def read_notebook_results(nb) -> list[dict]:
    """Every recorded result in an executed notebook (a path or a ``NotebookNode``)."""
    import nbformat             # about a second to import: only reading a notebook pays it
    if not hasattr(nb, "cells"):
        nb = nbformat.read(str(nb), as_version=4)
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []) if cell.cell_type == "code" else []:
            data = o.get("data", {})
            if MIME in data:
                doc = data[MIME]
                out.append(json.loads(doc) if isinstance(doc, str) else dict(doc))
    return out
