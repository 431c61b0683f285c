"""Step 4 of a sweep's run: the result store, one folder per run, keyed by the notebook's
content and its parameters.

``<root>/runs/<key>/`` holds the executed notebook, the recorded result(s) (``<name>.json``
side files the notebook wrote) and ``status.json``. A run is executed in a private temporary
folder (``<root>/runs/.tmp-<key>-<random>``) and appears under its key by one directory
rename, so a reader never sees half a run, two workers racing on one key leave one run, and a
sweep killed part-way leaves only complete runs and temporary folders (removed on the next
start). ``status.json`` is written last and holds a SHA-256 of every file of the run: a
truncated or altered file makes the run read as missing, and it is executed again.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import traceback
import uuid
from pathlib import Path

from .execute import execute
from .notebook import canonical, inspect, notebook_hash
from .record import load_result, timestamp, write_atomic

STATUS = "status.json"
COMPLETE, FAILED = "complete", "failed"

__all__ = ["COMPLETE", "FAILED", "STATUS", "Store", "canonical", "notebook_hash", "run_key"]


def run_key(nb_hash: str, params: dict) -> str:
    """A run's folder name: the notebook's cells hash and the parameters, hashed."""
    return hashlib.sha256(f"{nb_hash}\n{canonical(params)}".encode()).hexdigest()[:20]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Store:
    """Runs under ``root`` (created if missing)."""

    def __init__(self, root):
        self.root = Path(root)
        self.runs = self.root / "runs"
        self.runs.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.runs / key

    def status(self, key: str) -> dict | None:
        """The run's status if it is present and intact, else None (missing, half-written,
        corrupted: all mean "run it")."""
        d = self.path(key)
        try:
            st = json.loads((d / STATUS).read_text())
            files = st["files"]
            for name, digest in files.items():
                if _digest(d / name) != digest:
                    return None
            if set(files) | {STATUS} != {p.name for p in d.iterdir()}:
                return None
            return st
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def complete(self, key: str) -> bool:
        st = self.status(key)
        return st is not None and st["state"] == COMPLETE

    def clean(self) -> int:
        """Remove temporary folders left by killed runs; returns how many."""
        n = 0
        for p in self.runs.glob(".tmp-*"):
            shutil.rmtree(p, ignore_errors=True)
            n += 1
        return n

    def execute(self, notebook, params: dict, *, nb_hash: str | None = None, timeout: int = 900,
                kernel_name: str = "python3") -> dict:
        """Execute ``notebook`` (a :class:`~kit.lab.notebook.Notebook`, or a name or path,
        inspected here) with ``params`` unless the store holds an intact complete run.
        A failing run (error in a cell, dead kernel, timeout) is stored as failed with its
        error, traceback and executed notebook. Returns the run's status."""
        nb = inspect(notebook)
        nb_hash = nb_hash or nb.cells_hash
        key = run_key(nb_hash, params)
        st = self.status(key)
        if st is not None and st["state"] == COMPLETE:
            return {**st, "skipped": True}
        tmp = self.runs / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        started, t0 = timestamp(), time.perf_counter()
        state, error, tb = COMPLETE, None, None
        # the run's side files go to its own folder, whatever outdir the parameters name
        run_params = {k: v for k, v in params.items() if k != "outdir"}
        try:
            execute(nb, run_params, tmp, timeout=timeout, kernel_name=kernel_name)
        except Exception as e:       # the run failed; the sweep goes on
            state, error, tb = FAILED, f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}", traceback.format_exc()
        # papermill points the executed notebook's outdir at the temporary folder: the results
        # are read from the side files here, not through that path
        files = {p.name: _digest(p) for p in tmp.iterdir() if p.is_file()}
        status = {"key": key, "state": state, "notebook": nb.path.name, "notebook_hash": nb_hash,
                  "params": params, "error": error, "traceback": tb, "started": started,
                  "finished": timestamp(), "seconds": round(time.perf_counter() - t0, 3),
                  "host": os.uname().nodename, "files": files}
        write_atomic(tmp / STATUS, json.dumps(status, sort_keys=True, default=str))
        final = self.path(key)
        if final.exists():                    # a failed or corrupted earlier run: replace it
            if self.complete(key):            # another worker finished it meanwhile
                shutil.rmtree(tmp, ignore_errors=True)
                return {**self.status(key), "skipped": True}
            trash = self.runs / f".tmp-old-{key}-{uuid.uuid4().hex[:8]}"
            os.rename(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:                        # lost a race to another worker: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
            return {**(self.status(key) or status), "skipped": True}
        return {**status, "skipped": False}

    def results(self, key: str) -> list[dict]:
        """The recorded result documents of a run (its side files)."""
        d = self.path(key)
        out = []
        for p in sorted(d.glob("*.json")):
            if p.name != STATUS:
                try:
                    out.append(load_result(p))
                except ValueError:
                    pass
        return out
