"""``kit run`` and ``kit sweep`` (``kit.lab.run``, ``kit.lab.sweep``): notebooks as experiments,
one papermill run per parameter set, through one linear pipeline:

1. resolve and inspect the notebook once (:func:`kit.lab.notebook.inspect`);
2. read and check the parameters once, before any kernel (:mod:`kit.lab.parameters`: names
   against the ``parameters`` cell, types papermill writes as literals, values by the
   notebook's own validation cell);
3. execute through one call (:func:`kit.lab.execute.execute`);
4. record and store: the results the notebook recorded, read back from the executed notebook,
   and a report (``kit run``); a run folder in the result store (:mod:`kit.lab.store`, each run
   of a sweep).

``kit run -o DIR`` writes its folder as a whole: the run is executed in a temporary folder
beside ``DIR`` and renamed into place only when it is complete, so a failed or killed run
never destroys the previous result. A failed run is kept as ``DIR/failed-<time>-<token>/``
(executed notebook and ``kit-run.json`` with the error) beside a previous complete result, or
becomes ``DIR`` when there is none. Two runs into one ``DIR`` take turns (a lease on it).

A sweep runs every combination of its grid (times ``seeds`` when given; repeated values run
once) on ``dask.distributed``: a ``LocalCluster`` (one worker process per kernel, one thread
each) or an existing scheduler. Workers receive the inspected notebook and checked
parameters, and go straight to step 3. Runs already complete in the store are skipped;
missing, failed or corrupted ones are executed; one another sweep is executing is waited for
at the end and its result taken (docs/lab.md). The result is one tidy table: a row per run with
its parameters, state, time, error and the scalar results it recorded, written for this
invocation (``<outdir>/sweeps/<time>-<pid>/``) and merged with every other run in the store
(``<outdir>/table.csv``, ``table.json``, ``report.html``).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sys
import time
import uuid
from pathlib import Path

from ..viz.narrative import headline_numbers
from .execute import execute
from .limits import CELL_TIMEOUT, SCHEDULER_CONNECT_TIMEOUT, SWEEP_CONFIRM, SWEEP_WORKERS
from .notebook import Notebook, inspect, validation_source
from .paths import writable_folder
from .parameters import check_names, check_params, grid_specs, parse_grid, parse_value, validate
from .record import load_result, read_notebook_results, timestamp, write_atomic
from .report import report as build_report
from .store import COMPLETE, LEASE_POLL, LEASED, Lease, Store, environment, replace_folder, run_key

__all__ = ["RUN_RECORD", "csv_safe", "merge_tables", "prepare", "run", "run_checked", "run_notebook", "sweep",
           "table", "parse_grid", "parse_value", "validate", "validation_source"]

#: the file ``kit run`` writes into its folder: the run's state, notebook, parameters and error
RUN_RECORD = "kit-run.json"


# ------------------------------------------------------------------ one run
def prepare(notebook, params: dict | None = None) -> tuple[Notebook, dict]:
    """Steps 1 and 2: the notebook inspected once, the parameters checked once. ``ValueError``
    names a bad parameter; nothing has started."""
    nb = inspect(notebook)
    return nb, validate(nb, params)


def run(notebook, params: dict | None = None, outdir=None, *, timeout: int = 900) -> dict:
    """``kit run``: check (:func:`prepare`), execute into ``outdir`` (executed notebook, result
    side file, ``report.html``), atomically. Returns {"notebook", "results", "report"}; a failing
    notebook raises ``papermill.PapermillExecutionError`` (the executed notebook is kept, see
    :func:`run_checked`)."""
    nb, params = prepare(notebook, params)
    return run_checked(nb, params, outdir, timeout=timeout)


def _folder_state(folder: Path, nb: Notebook) -> str:
    """What ``folder`` holds: "missing", "empty", the state of the kit run in it ("complete",
    "failed"), or "complete" for a folder an earlier version of ``kit run`` wrote in place
    (only this notebook, kit result files and ``report.html``). Anything else is not ours to
    replace: ``ValueError``."""
    if not folder.exists() and not folder.is_symlink():
        return "missing"
    if not folder.is_dir():
        raise ValueError(f"out: {folder} exists and is not a folder")
    entries = list(folder.iterdir())
    if not entries:
        return "empty"
    try:
        rec = json.loads((folder / RUN_RECORD).read_text())
        if isinstance(rec, dict) and rec.get("state") in ("complete", "failed"):
            return rec["state"]
    except (OSError, ValueError):
        pass

    def earlier_output(p: Path) -> bool:
        if not p.is_file() or p.is_symlink():
            return False
        if p.name in (nb.path.name, "report.html"):
            return True
        if p.suffix == ".json":
            try:
                load_result(p)
                return True
            except ValueError:
                return False
        return False
    if all(earlier_output(p) for p in entries):
        return "complete"
    names = ", ".join(sorted(p.name for p in entries)[:5])
    raise ValueError(f"out: {folder} holds files that are not a kit run ({names}{', ...' if len(entries) > 5 else ''}); "
                     "kit run replaces its output folder as a whole: give a new or empty folder")


def _swap_in(tmp: Path, final: Path, token: str) -> None:
    """``tmp`` becomes ``final``; a previous ``final`` goes (its ``failed-*`` records move along)."""
    if final.exists():
        for old in final.glob("failed-*"):
            if old.is_dir() and not (tmp / old.name).exists():
                os.rename(old, tmp / old.name)
    replace_folder(tmp, final, final.parent / f".{final.name}.old-{token}")


def run_checked(nb: Notebook, params: dict, outdir=None, *, timeout: int = 900, progress: bool = False) -> dict:
    """Steps 3 and 4 of :func:`run` for parameters :func:`prepare` checked. The run's folder is
    ``outdir``, else the ``outdir`` parameter, else ``runs/<notebook>``; the notebook's
    ``outdir`` parameter is always that folder. A folder holding anything but a kit run is
    refused (``ValueError``) before a kernel starts. ``progress``: papermill's cell-by-cell bar."""
    params = dict(params)
    final = Path(outdir or params.get("outdir") or Path("runs") / nb.name)
    params.pop("outdir", None)
    check_params(params)
    CELL_TIMEOUT.check(timeout)
    writable_folder(final, "out")
    _folder_state(final, nb)                     # refused before any kernel
    final.parent.mkdir(parents=True, exist_ok=True)
    with Lease.acquire(final.parent / f".{final.name}.lease", wait=True, folder=str(final)) as lease:
        before = _folder_state(final, nb)        # another run may have finished meanwhile
        left = re.compile(rf"^\.{re.escape(final.name)}\.(tmp|old)-([0-9a-f]+)$")
        for p in final.parent.glob(f".{final.name}.*"):     # left by killed runs into this folder
            m = left.match(p.name)
            if m and p.is_dir() and m.group(2) != lease.token:
                shutil.rmtree(p, ignore_errors=True)
        tmp = final.parent / f".{final.name}.tmp-{lease.token}"
        started = timestamp()
        record = {"notebook": nb.path.name, "notebook_path": str(nb.path), "params": params,
                  "started": started, "host": socket.gethostname(), "pid": os.getpid()}
        try:
            out = execute(nb, params, tmp, timeout=timeout, final=final, progress=progress)
        except Exception as e:
            record.update(state="failed", finished=timestamp(), error=f"{type(e).__name__}: {e}")
            write_atomic(tmp / RUN_RECORD, json.dumps(record, indent=1, sort_keys=True, default=str))
            if before == "complete":
                kept = final / f"failed-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{lease.token[:6]}"
                os.rename(tmp, kept)
                e.add_note(f"the previous result in {final} is kept; this run is in {kept}")
            else:
                _swap_in(tmp, final, lease.token)
            raise
        docs = read_notebook_results(out)
        rep = build_report([out], tmp / "report.html", title=nb.name) if docs else None
        record.update(state="complete", finished=timestamp())
        write_atomic(tmp / RUN_RECORD, json.dumps(record, indent=1, sort_keys=True, default=str))
        _swap_in(tmp, final, lease.token)
    return {"notebook": final / out.name, "results": docs, "report": final / rep.name if rep else None}


def run_notebook(name, outdir=None, /, *, timeout: int = 900, **params):
    """Execute a notebook with ``params`` into ``outdir`` (else the ``outdir`` parameter, else
    ``runs/<notebook>``); returns (executed notebook path, recorded results). Names and value
    types are checked first; values are left to the notebook's own validation cell in the
    kernel (a bad one fails there, with the cell in the error). ``outdir`` is positional only,
    so a notebook parameter of that name can be given too; the folder wins."""
    nb = inspect(name)
    check_names(nb, params)
    check_params(params)
    folder = outdir or params.get("outdir") or Path("runs") / nb.name
    if "outdir" in params:
        params = {**params, "outdir": str(Path(folder).resolve())}
    out = execute(nb, params, folder, timeout=timeout)
    return out, read_notebook_results(out)


# ------------------------------------------------------------------ sweeps
def _execute(root: str, nb: Notebook, params: dict, timeout: int, env: dict | None = None) -> dict:
    """One run on a worker, steps 3 and 4 (module-level so workers can import it). A run
    another writer holds is not waited for here: the sweep collects those at its end."""
    return Store(root).execute(nb, params, timeout=timeout, wait=False, env=env)


def _scalars(doc: dict) -> dict:
    """Scalar results a run recorded: top-level scalars and those of a ``summary`` dict, and
    the headline results (:func:`kit.viz.narrative.headline_numbers`: each policy's rate at
    the headline or held-back configuration, ...)."""
    out = {}
    res = doc.get("results", {})
    if isinstance(res, dict):
        for k, v in res.items():
            if isinstance(v, (int, float, str, bool)) or v is None:
                out[k] = v
        for k, v in (res.get("summary") or {}).items() if isinstance(res.get("summary"), dict) else []:
            if isinstance(v, (int, float, str, bool)):
                out[f"summary.{k}"] = v
        for k, v in headline_numbers(res).items():
            out.setdefault(k, v)
    return out


def _row(store: Store, key: str, params: dict, st: dict | None, env: dict) -> dict:
    row = {"key": key, **{f"p.{k}": (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in params.items()},
           "state": st["state"] if st else "missing", "seconds": st["seconds"] if st else None,
           "error": st["error"] if st else None, "stale": bool(st) and store.stale(st, env)}
    for doc in store.results(key) if st else []:
        row.update({f"{doc.get('name', 'r')}.{k}": v for k, v in _scalars(doc).items()})
    return row


def table(store: Store, nb_hash: str, combos: list[dict], env: dict | None = None) -> list[dict]:
    """One row per combination, in grid order (``stale``: made by other code or data than
    ``env``, this process's :func:`~kit.lab.store.environment` unless given)."""
    env = environment() if env is None else env
    rows = []
    for params in combos:
        key = run_key(nb_hash, params, env)
        rows.append(_row(store, key, params, store.status(key), env))
    return rows


#: first characters that make a spreadsheet read a cell as a formula (OWASP, CSV injection)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(v):
    if isinstance(v, str) and v.startswith(FORMULA_START):
        return "'" + v
    return v


def csv_safe(df):
    """``df`` as CSV text a spreadsheet shows as it is: a text cell (or header) that starts
    with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading ``'`` (the OWASP
    rule against CSV formula injection). Numbers are left alone; ``table.json`` keeps the text.
    Lines end in CRLF (RFC 4180), so a cell holding a line break is quoted."""
    out = df.rename(columns=_csv_cell)
    out = out.map(_csv_cell) if hasattr(out, "map") else out.applymap(_csv_cell)
    return out.to_csv(index=False, lineterminator="\r\n")


def _write_tables(folder: Path, rows: list[dict], store: Store, *, report: bool, title: str,
                  same_as: tuple | None = None):
    """``table.csv``, ``table.json`` and (``report``) ``report.html`` of complete, current runs
    in ``folder``; ``same_as``: a report already built from the same runs, copied."""
    import pandas as pd
    df = pd.DataFrame(rows)
    write_atomic(folder / "table.csv", csv_safe(df))
    write_atomic(folder / "table.json", json.dumps(rows, indent=1, default=str))
    complete = [store.path(r["key"]) for r in rows if r["state"] == COMPLETE and not r.get("stale")]
    if report and complete:
        if same_as is not None and same_as[0] == complete and same_as[1].exists():
            write_atomic(folder / "report.html", same_as[1].read_text())
        else:
            try:
                build_report(complete, folder / "report.html", title=title)
            except ValueError:
                pass
    return df, complete


def merge_tables(root, *, report: bool = True, same_as=None) -> list[dict]:
    """Rewrite ``<root>/table.csv``, ``table.json`` and ``report.html`` from every sweep
    invocation's table under ``<root>/sweeps/`` and every run in the store, each run once:
    the invocations' rows in their order (state read again from the store), then runs no
    invocation table lists (a sweep killed before its table). Rows of runs made by other code
    or data are marked ``stale`` and left out of the report. Done under a lease on the store,
    so sweeps finishing together do not overwrite each other's rows."""
    root = Path(root)
    store = Store(root)
    env = environment()
    with Lease.acquire(root / ".tables.lease", wait=True, purpose="merge tables"):
        rows, seen, names = [], set(), set()
        for f in sorted((root / "sweeps").glob("*/table.json")):
            try:
                listed = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            for r in listed if isinstance(listed, list) else []:
                key = r.get("key") if isinstance(r, dict) else None
                if not isinstance(key, str) or key in seen:
                    continue
                seen.add(key)
                st = store.status(key)
                rows.append(_row(store, key, st["params"], st, env) if st else {**r, "state": "missing"})
                if st and st["state"] == COMPLETE:
                    names.add(str(st.get("notebook", "?")).removesuffix(".ipynb"))
        for d in sorted(store.runs.iterdir()):
            if d.name.startswith(".") or d.name in seen:
                continue
            st = store.status(d.name)
            if st is not None:
                seen.add(d.name)
                rows.append(_row(store, d.name, st.get("params", {}), st, env))
                if st["state"] == COMPLETE:
                    names.add(str(st.get("notebook", "?")).removesuffix(".ipynb"))
        _write_tables(root, rows, store, report=report, title=f"sweep of {', '.join(sorted(names))}",
                      same_as=same_as)
    return rows


def _wait_for(store: Store, keys: list[str], progress: bool) -> list[str]:
    """Wait until no other writer holds the runs ``keys``; returns those it left without a
    result (it died): this sweep runs them."""
    left, orphans = list(keys), []
    if progress and left:
        h = store.leased(left[0]) or {}
        print(f"\nwaiting for {len(left)} run(s) another writer is executing "
              f"(e.g. pid {h.get('pid')} on {h.get('host')})", file=sys.stderr)
    while left:
        for k in list(left):
            if store.leased(k) is None:
                left.remove(k)
                if store.status(k) is None:
                    orphans.append(k)
        if left:
            time.sleep(max(LEASE_POLL, 0.5))
    return orphans


def _execute_all(store: Store, nb: Notebook, runs: dict, todo: list, *, env: dict, client, workers: int,
                 timeout: int, progress: bool) -> list[str]:
    """Execute ``todo`` (keys of ``runs``) on dask (``client``: connected to a scheduler, else a
    local cluster of ``workers``); returns lines about runs lost or refused."""
    from distributed import Client, LocalCluster, as_completed
    cluster = None
    if client is None:
        # no dashboard; the scheduler's small HTTP server (health checks) on a free loopback
        # port, so two sweeps on one machine do not compete for 8787
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None,
                               scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
        client = Client(cluster)
    problems: list[str] = []
    root = str(store.root.resolve())
    try:
        pending, n, total = list(todo), 0, len(todo)
        while pending:
            tag = uuid.uuid4().hex[:6]
            futs = {client.submit(_execute, root, nb, runs[k], timeout, env, key=f"kit-run-{k}-{tag}", pure=False): k
                    for k in pending}
            leased = []
            for fut in as_completed(list(futs)):
                try:
                    st = fut.result()
                    state = st["state"]
                except ValueError as e:       # a worker running other code refused the run
                    state = "refused"
                    problems.append(f"{futs[fut]}: {e}")
                except Exception as e:        # the worker died more often than dask retries
                    state = f"lost ({type(e).__name__})"
                    problems.append(f"{futs[fut]}: {state}")
                if state == LEASED:
                    leased.append(futs[fut])
                    continue
                n += 1
                if progress:
                    _bar(n, total, state)
            pending = _wait_for(store, leased, progress)
            n += len(leased) - len(pending)
            if progress and leased:
                _bar(n, total, "taken from the other writer")
        if progress:
            print(file=sys.stderr)
    finally:
        if cluster is not None:             # a scheduler's client is closed by sweep()
            client.close()
            cluster.close()
    return problems


def connect(scheduler: str):
    """A dask client of the scheduler at ``scheduler`` ("tcp://HOST:PORT"), or a ``ValueError``
    naming it when it does not answer within :data:`~kit.lab.limits.SCHEDULER_CONNECT_TIMEOUT`
    seconds or the address cannot be read."""
    from distributed import Client
    try:
        return Client(scheduler, timeout=SCHEDULER_CONNECT_TIMEOUT)
    except (OSError, ValueError, TypeError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"scheduler: cannot reach a dask scheduler at {scheduler!r} within "
                         f"{SCHEDULER_CONNECT_TIMEOUT} s: {why}") from None


def sweep(notebook, grid, *, seeds: int | None = None, outdir="sweeps", scheduler: str | None = None,
          workers: int = 2, timeout: int = 900, progress: bool = True, report: bool = True, yes: bool = False):
    """Run every combination of ``grid`` (a list of "NAME=V1,V2" or a dict NAME -> values) on
    dask.distributed; returns this invocation's table as a ``pandas.DataFrame`` (also written
    as ``<outdir>/sweeps/<time>-<pid>/table.csv`` and ``table.json``, with ``report.html`` from
    its complete runs), and rewrites the merged ``<outdir>/table.csv``, ``table.json`` and
    ``report.html`` (:func:`merge_tables`). Several sweeps may share one ``outdir`` at once:
    each run is executed once (:mod:`kit.lab.store`). ``df.attrs["notes"]`` holds what was said
    about the grid (repeated values run once). More runs than
    :data:`~kit.lab.limits.SWEEP_CONFIRM` start only with ``yes=True`` (``kit sweep --yes``);
    ``workers`` and ``timeout`` are bounded (:mod:`kit.lab.limits`); ``outdir`` must be a folder
    this process can write; all checked before any run (``ValueError``)."""
    # pandas and dask.distributed take about a second and a half to import: only a sweep pays it
    import pandas as pd  # noqa: F401

    nb = inspect(notebook)
    notes: list[str] = []
    combos = parse_grid([grid] if isinstance(grid, str) else grid, nb.parameters, seeds, notes)
    for params in combos:                       # every value checked before any run starts
        validate(nb, params)
    SWEEP_WORKERS.check(workers)
    CELL_TIMEOUT.check(timeout)
    if len(combos) > SWEEP_CONFIRM.max and yes is not True:
        raise ValueError(f"grid: {len(combos)} runs; more than {SWEEP_CONFIRM.max} start only when confirmed "
                         "(kit sweep --yes, sweep(..., yes=True))")
    if scheduler is not None and (not isinstance(scheduler, str) or not scheduler.strip()):
        raise ValueError(f"scheduler: expected an address such as tcp://HOST:PORT, got {scheduler!r}")
    outdir = writable_folder(outdir, "outdir")
    client = connect(scheduler) if scheduler is not None else None      # before any change to the store
    try:
        return _sweep(nb, combos, notes, outdir, client, workers=workers, timeout=timeout, progress=progress,
                      report=report)
    finally:
        if client is not None:
            client.close()


def _sweep(nb: Notebook, combos: list, notes: list, outdir: Path, client, *, workers: int, timeout: int,
           progress: bool, report: bool):
    store = Store(outdir)
    store.clean()
    env = environment()
    nb_hash = nb.cells_hash
    runs = {run_key(nb_hash, p, env): p for p in combos}
    todo = [k for k in runs if not store.complete(k)]
    done = len(combos) - len(todo)
    if progress:
        for line in notes:
            print(f"{nb.name}: {line}", file=sys.stderr)
        print(f"{nb.name}: {len(combos)} runs, {done} already complete, {len(todo)} to run", file=sys.stderr)
    problems = []
    if todo:
        problems = _execute_all(store, nb, runs, todo, env=env, client=client, workers=workers,
                                timeout=timeout, progress=progress)
    if progress:
        for line in problems:
            print(f"{nb.name}: {line}", file=sys.stderr)
    rows = table(store, nb_hash, combos, env)
    mine = outdir / "sweeps" / f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}-{uuid.uuid4().hex[:4]}"
    mine.mkdir(parents=True, exist_ok=True)
    df, complete = _write_tables(mine, rows, store, report=report, title=f"sweep of {nb.name}")
    merge_tables(outdir, report=report, same_as=(complete, mine / "report.html"))
    df.attrs["notes"] = notes
    df.attrs["problems"] = problems
    df.attrs["tables"] = str(mine)
    return df


def _bar(n: int, total: int, state: str) -> None:
    width = 30
    fill = int(width * n / max(total, 1))
    print(f"\r[{'#' * fill}{'.' * (width - fill)}] {n}/{total} runs  last: {state:10}", end="", file=sys.stderr, flush=True)
