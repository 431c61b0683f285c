"""``kit run`` and ``kit sweep`` (``kit.lab.sweep``): notebooks as experiments, one papermill run per parameter set.

Parameters are checked before any kernel starts: names against the notebook's ``parameters``
cell (``papermill.inspect_notebook``), values by executing the notebook's own validation cell
(the code cell tagged ``validation``, right after the parameters) on the defaults overridden
by the given values, in this process. Values given as text (``-p NAME VALUE``, ``--grid
NAME=V1,V2``) are read by the type of the parameter's default.

A sweep runs every combination of its grid (times ``seeds`` when given) on
``dask.distributed``: a ``LocalCluster`` (one worker process per kernel, one thread each) or
an existing scheduler. Runs already complete in the store are skipped; missing, failed or
corrupted ones are executed (:mod:`kit.lab.store`). The result is one tidy table: a row per
run with its parameters, state, time, error and the scalar results it recorded.
"""
from __future__ import annotations

import ast
import itertools
import json
import sys
from pathlib import Path

from .runner import notebook_path, parameter_names
from .store import COMPLETE, Store, notebook_hash, run_key


# ------------------------------------------------------------------ parameters
def parse_value(name: str, text: str, info: dict):
    """A parameter value from text, by the type of the notebook's default."""
    kind = info.get("inferred_type_name", "None")
    default = info.get("default")
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "bool":
            if text.lower() in ("true", "1", "yes"):
                return True
            if text.lower() in ("false", "0", "no"):
                return False
            raise ValueError
        if kind in ("list", "dict", "tuple"):
            v = ast.literal_eval(text)
            if kind == "list" and not isinstance(v, list):
                raise ValueError
            return v
        if kind == "str":
            return text
        # untyped: the default's literal type, or a literal, or text
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
    except (ValueError, SyntaxError):
        raise ValueError(f"{name}: cannot read {text!r} as {kind} (default {default})") from None


def validation_source(nb_path) -> str | None:
    import nbformat
    nb = nbformat.read(str(nb_path), as_version=4)
    for c in nb.cells:
        if c.cell_type == "code" and "validation" in c.metadata.get("tags", []):
            return c.source
    return None


def validate(nb_path, params: dict, *, info: dict | None = None) -> None:
    """Names against the parameters cell, values through the notebook's validation cell.
    Raises ``ValueError`` naming the parameter."""
    info = info if info is not None else parameter_names(nb_path)
    bad = sorted(set(params) - set(info))
    if bad:
        raise ValueError(f"parameters: unknown {', '.join(bad)} for {Path(nb_path).stem}; allowed: {', '.join(info)}")
    src = validation_source(nb_path)
    if src is None:
        return
    ns: dict = {}
    for name, i in info.items():
        try:
            ns[name] = ast.literal_eval(i["default"])
        except (ValueError, SyntaxError):
            pass
    ns.update(params)
    try:
        exec(compile(src, f"<{Path(nb_path).stem} validation cell>", "exec"), ns)
    except ValueError:
        raise
    except Exception as e:
        raise ValueError(f"parameters: the validation cell of {Path(nb_path).stem} failed: {type(e).__name__}: {e}") from None


def parse_grid(specs, info: dict, seeds: int | None = None) -> list[dict]:
    """``["NAME=V1,V2", ...]`` (a list value is written as a literal: ``policies=['a'],['b']``
    is not supported; use ``policies=a;b`` for lists of strings) -> every combination."""
    axes: dict[str, list] = {}
    for spec in specs or []:
        name, sep, values = spec.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"grid: expected NAME=V1,V2,..., got {spec!r}")
        if name not in info:
            raise ValueError(f"grid: unknown parameter {name!r}; allowed: {', '.join(info)}")
        if name in axes:
            raise ValueError(f"grid: {name} given twice")
        texts = [v for v in values.split(",")]
        if not values or any(not t.strip() for t in texts):
            raise ValueError(f"grid: {name} has an empty value in {spec!r}")
        if info[name].get("inferred_type_name") == "list":
            vals = [[x for x in t.split(";") if x] if not t.strip().startswith("[") else parse_value(name, t, info[name])
                    for t in texts]
        else:
            vals = [parse_value(name, t.strip(), info[name]) for t in texts]
        axes[name] = vals
    if seeds is not None:
        if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
            raise ValueError(f"seeds: expected an integer >= 1, got {seeds!r}")
        if "seed" not in info:
            raise ValueError("seeds: the notebook has no 'seed' parameter")
        if "seed" in axes:
            raise ValueError("seeds: seed is already a grid axis")
        axes["seed"] = list(range(seeds))
    if not axes:
        raise ValueError("grid: empty; give at least one --grid NAME=V1,V2,... or --seeds N")
    names = list(axes)
    return [dict(zip(names, combo)) for combo in itertools.product(*(axes[n] for n in names))]


# ------------------------------------------------------------------ one run
def run(notebook, params: dict | None = None, outdir=None, *, timeout: int = 900) -> dict:
    """``kit run``: validate, execute into ``outdir`` (executed notebook, result side file,
    ``report.html``). Returns {"notebook", "results", "report"}; a failing notebook raises
    ``papermill.PapermillExecutionError`` (the executed notebook is still written)."""
    from .report import report
    from .runner import run_notebook
    src = notebook_path(notebook)
    params = dict(params or {})
    validate(src, params)
    outdir = Path(outdir or Path("runs") / src.stem)
    out, docs = run_notebook(src, outdir, timeout=timeout, **params)
    rep = report([out], outdir / "report.html", title=f"{src.stem}") if docs else None
    return {"notebook": out, "results": docs, "report": rep}


# ------------------------------------------------------------------ sweeps
def _execute(root: str, notebook: str, params: dict, nb_hash: str, timeout: int) -> dict:
    """One run on a worker (module-level so workers can import it)."""
    return Store(root).execute(notebook, params, nb_hash=nb_hash, timeout=timeout)


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
    import pandas as pd
    from distributed import Client, LocalCluster, as_completed

    src = notebook_path(notebook)
    info = parameter_names(src)
    if isinstance(grid, dict):
        grid = [f"{k}={','.join(_text(x) for x in v)}" for k, v in grid.items()]
    combos = parse_grid(grid, info, seeds)
    for params in combos:                       # every value checked before any run starts
        validate(src, params, info=info)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers: expected an integer >= 1, got {workers!r}")
    outdir = Path(outdir)
    store = Store(outdir)
    store.clean()
    nb_hash = notebook_hash(src)
    todo = [p for p in combos if not store.complete(run_key(nb_hash, p))]
    done = len(combos) - len(todo)
    if progress:
        print(f"{src.stem}: {len(combos)} runs, {done} already complete, {len(todo)} to run", file=sys.stderr)
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
            futs = [client.submit(_execute, str(outdir.resolve()), str(src.resolve()), p, nb_hash, timeout,
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
    from .record import write_atomic
    write_atomic(outdir / "table.csv", df.to_csv(index=False))
    write_atomic(outdir / "table.json", json.dumps(rows, indent=1, default=str))
    complete = [store.path(r["key"]) for r in rows if r["state"] == COMPLETE]
    if report and complete:
        from .report import report as build_report
        try:
            build_report(complete, outdir / "report.html", title=f"sweep of {src.stem}")
        except ValueError:
            pass
    return df


def _text(v) -> str:
    if isinstance(v, list):
        return ";".join(map(str, v))
    return str(v)


def _bar(n: int, total: int, state: str) -> None:
    width = 30
    fill = int(width * n / max(total, 1))
    print(f"\r[{'#' * fill}{'.' * (width - fill)}] {n}/{total} runs  last: {state:10}", end="", file=sys.stderr, flush=True)
