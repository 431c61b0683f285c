"""``kit run`` and ``kit sweep`` (``kit.lab.run``, ``kit.lab.sweep``): notebooks as experiments,
one papermill run per parameter set, through one linear pipeline:

1. resolve and inspect the notebook once (:func:`kit.lab.notebook.inspect`);
2. read and check the parameters once, before any kernel (:mod:`kit.lab.parameters`: names
   against the ``parameters`` cell, values by the notebook's own validation cell);
3. execute through one call (:func:`kit.lab.execute.execute`);
4. record and store: the results the notebook recorded, read back from the executed notebook,
   and a report (``kit run``); a run folder in the result store (:mod:`kit.lab.store`, each run
   of a sweep).

A sweep runs every combination of its grid (times ``seeds`` when given) on
``dask.distributed``: a ``LocalCluster`` (one worker process per kernel, one thread each) or
an existing scheduler. Workers receive the inspected notebook and checked parameters, and go
straight to step 3. Runs already complete in the store are skipped; missing, failed or
corrupted ones are executed. The result is one tidy table: a row per run with its parameters,
state, time, error and the scalar results it recorded.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .execute import execute
from .notebook import Notebook, inspect, validation_source
from .parameters import check_names, grid_specs, parse_grid, parse_value, validate
from .record import read_notebook_results, write_atomic
from .report import report as build_report
from .store import COMPLETE, Store, run_key

__all__ = ["prepare", "run", "run_checked", "run_notebook", "sweep", "table",
           "parse_grid", "parse_value", "validate", "validation_source"]


# ------------------------------------------------------------------ one run
def prepare(notebook, params: dict | None = None) -> tuple[Notebook, dict]:
    """Steps 1 and 2: the notebook inspected once, the parameters checked once. ``ValueError``
    names a bad parameter; nothing has started."""
    nb = inspect(notebook)
    return nb, validate(nb, params)


def run(notebook, params: dict | None = None, outdir=None, *, timeout: int = 900) -> dict:
    """``kit run``: check (:func:`prepare`), execute into ``outdir`` (executed notebook, result
    side file, ``report.html``). Returns {"notebook", "results", "report"}; a failing notebook
    raises ``papermill.PapermillExecutionError`` (the executed notebook is still written)."""
    nb, params = prepare(notebook, params)
    return run_checked(nb, params, outdir, timeout=timeout)


def run_checked(nb: Notebook, params: dict, outdir=None, *, timeout: int = 900) -> dict:
    """Steps 3 and 4 of :func:`run` for parameters :func:`prepare` checked."""
    outdir = Path(outdir or Path("runs") / nb.name)
    out = execute(nb, params, outdir, timeout=timeout)
    docs = read_notebook_results(out)
    rep = build_report([out], outdir / "report.html", title=nb.name) if docs else None
    return {"notebook": out, "results": docs, "report": rep}


def run_notebook(name, outdir, *, timeout: int = 900, **params):
    """Execute a notebook with ``params`` into ``outdir``; returns (executed notebook path,
    recorded results). Names are checked first; values are left to the notebook's own
    validation cell in the kernel (a bad one fails there, with the cell in the error)."""
    nb = inspect(name)
    check_names(nb, params)
    out = execute(nb, params, outdir, timeout=timeout)
    return out, read_notebook_results(out)


# ------------------------------------------------------------------ sweeps
def _execute(root: str, nb: Notebook, params: dict, timeout: int) -> dict:
    """One run on a worker, steps 3 and 4 (module-level so workers can import it)."""
    return Store(root).execute(nb, params, timeout=timeout)


def _scalars(doc: dict) -> dict:
    """Scalar results a run recorded: top-level scalars and those of a ``summary`` dict."""
    out = {}
    res = doc.get("results", {})
    if isinstance(res, dict):
        for k, v in res.items():
            if isinstance(v, (int, float, str, bool)) or v is None:
                out[k] = v
        for k, v in (res.get("summary") or {}).items() if isinstance(res.get("summary"), dict) else []:
            if isinstance(v, (int, float, str, bool)):
                out[f"summary.{k}"] = v
    return out


def table(store: Store, nb_hash: str, combos: list[dict]) -> list[dict]:
    """One row per combination, in grid order."""
    rows = []
    for params in combos:
        key = run_key(nb_hash, params)
        st = store.status(key)
        row = {"key": key, **{f"p.{k}": (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in params.items()},
               "state": st["state"] if st else "missing", "seconds": st["seconds"] if st else None,
               "error": st["error"] if st else None}
        for doc in store.results(key) if st else []:
            row.update({f"{doc.get('name', 'r')}.{k}": v for k, v in _scalars(doc).items()})
        rows.append(row)
    return rows


def sweep(notebook, grid, *, seeds: int | None = None, outdir="sweeps", scheduler: str | None = None,
          workers: int = 2, timeout: int = 900, progress: bool = True, report: bool = True):
    """Run every combination of ``grid`` (a list of "NAME=V1,V2" or a dict NAME -> values) on
    dask.distributed; returns the table as a ``pandas.DataFrame`` (also written as
    ``<outdir>/table.csv`` and ``table.json``; ``<outdir>/report.html`` from complete runs)."""
    # pandas and dask.distributed take about a second and a half to import: only a sweep pays it
    import pandas as pd
    from distributed import Client, LocalCluster, as_completed

    nb = inspect(notebook)
    combos = parse_grid(grid_specs(grid), nb.parameters, seeds)
    for params in combos:                       # every value checked before any run starts
        validate(nb, params)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers: expected an integer >= 1, got {workers!r}")
    outdir = Path(outdir)
    store = Store(outdir)
    store.clean()
    nb_hash = nb.cells_hash
    todo = [p for p in combos if not store.complete(run_key(nb_hash, p))]
    done = len(combos) - len(todo)
    if progress:
        print(f"{nb.name}: {len(combos)} runs, {done} already complete, {len(todo)} to run", file=sys.stderr)
    if todo:
        cluster = None
        if scheduler:
            client = Client(scheduler, timeout=30)
        else:
            # no dashboard; the scheduler's small HTTP server (health checks) on a free loopback
            # port, so two sweeps on one machine do not compete for 8787
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   host="127.0.0.1", dashboard_address=None,
                                   scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
            client = Client(cluster)
        try:
            futs = [client.submit(_execute, str(outdir.resolve()), nb, p, timeout,
                                  key=f"kit-run-{run_key(nb_hash, p)}", pure=False) for p in todo]
            n = 0
            for fut in as_completed(futs):
                n += 1
                try:
                    st = fut.result()
                    state = st["state"]
                except Exception as e:        # the worker died more often than dask retries
                    state = f"lost ({type(e).__name__})"
                if progress:
                    _bar(n, len(todo), state)
            if progress:
                print(file=sys.stderr)
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    rows = table(store, nb_hash, combos)
    df = pd.DataFrame(rows)
    write_atomic(outdir / "table.csv", df.to_csv(index=False))
    write_atomic(outdir / "table.json", json.dumps(rows, indent=1, default=str))
    complete = [store.path(r["key"]) for r in rows if r["state"] == COMPLETE]
    if report and complete:
        try:
            build_report(complete, outdir / "report.html", title=f"sweep of {nb.name}")
        except ValueError:
            pass
    return df


def _bar(n: int, total: int, state: str) -> None:
    width = 30
    fill = int(width * n / max(total, 1))
    print(f"\r[{'#' * fill}{'.' * (width - fill)}] {n}/{total} runs  last: {state:10}", end="", file=sys.stderr, flush=True)
