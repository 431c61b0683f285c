"""The ``kit`` commands: one argument parser and one function per subcommand, shared by the
command line (:mod:`kit.cli`: argv -> here -> print) and the ``%kit`` magic (:mod:`.magics`).

A command takes the parsed arguments and returns an :class:`Outcome`: the exit status, the
lines to print and the value a Python caller wants (a ``SimResult``, a report's path, ...).
A bad argument raises :class:`ArgError` before any work, a run that fails raises
:class:`RunFailed`; both carry one line of text. ``say`` receives a line to show at once,
before long work starts.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..explore.params import EXPLORE_PARAMS, check_schedule
from ..sim.api import scenario
from ..sim.scenario import SCENARIO_PARAMS
from ..sim.api import simulate as run_simulation
from ..sim.params import DEFAULT_PATH, CostParams
from ..units import parse_size
from ..viz.traces import STEP_COLUMNS, step_rows

#: Deferred loading (docs/architecture.md): what only some subcommands need -- the notebook
#: pipeline, the calibration, tqdm -- is imported when one of them runs, so that ``kit
#: simulate`` starts in about the time of ``import numpy``. Each name here is a function that
#: imports ``module`` and calls ``module.function``, or (no ``:function``) the module itself,
#: imported on first attribute access; tests/test_layers.py checks the table.
DEFERRED = {"catalog": "kit.explore.catalog", "host_demo_model": "kit.lab.demo", "check": "kit.lab.validate:check", "run_notebook": "kit.lab.batch:run_notebook",
            "prepare": "kit.lab.batch:prepare", "run_checked": "kit.lab.batch:run_checked",
            "run_sweep": "kit.lab.batch:sweep", "inspect": "kit.lab.notebook:inspect",
            "parse_pairs": "kit.lab.parameters:parse_pairs", "build_report": "kit.lab.report:report",
            "fit": "kit.sim.calibrate:calibrate", "tqdm": "tqdm:tqdm"}


class _Module:
    """A module imported on first attribute access."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(self._name), attr)


def _deferred(name: str):
    module, _, function = DEFERRED[name].partition(":")
    if not function:
        return _Module(module)

    def call(*args, **kw):
        return getattr(importlib.import_module(module), function)(*args, **kw)
    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"``{module}.{function}``, imported on first call."
    return call


(catalog, host_demo_model, check, run_notebook, prepare, run_checked, run_sweep, inspect, parse_pairs,
 build_report, fit, tqdm) = (_deferred(name) for name in DEFERRED)


class ArgError(ValueError):
    """A bad argument: one line, exit status 2 (``UsageError`` under ``%kit``)."""


class RunFailed(RuntimeError):
    """A run that started and failed: one line, exit status 1."""


class HelpShown(Exception):
    """``--help`` or ``--version`` printed what was asked (``%kit``: nothing more to do)."""


@dataclass
class Outcome:
    """What a command did: exit ``status``, ``lines`` to print, and its ``value``. ``display``:
    the lines only render ``value`` as text (``%kit`` shows the value itself instead)."""

    status: int = 0
    lines: list = field(default_factory=list)
    value: object = None
    display: bool = False


def _quiet(_line: str) -> None:
    pass


def text_table(rows: list[dict], cols: list[str]) -> str:
    """Rows as aligned text columns under a header line."""
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    out = ["  ".join(c.ljust(widths[c]) for c in cols)]
    out += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(out)


# ------------------------------------------------------------------ demo, host-demo
def demo(args, say=_quiet) -> Outcome:
    """The main job: the directmap-policies notebook on the measured configurations, its
    report, and a short modelled-vs-measured table."""
    try:
        policies = [p for p in args.policies.split(",") if p] if args.policies else None
        params = check(**({"policies": policies} if policies is not None else {}), steps=args.steps, seed=args.seed)
        out = Path(args.out)
        if out.suffix != ".html":
            raise ValueError(f"out: expected an .html path, got {args.out!r}")
    except ValueError as e:
        raise ArgError(str(e)) from None
    t0 = time.time()
    rundir = out.parent / "directmap-policies"
    say(f"kit {__version__}: running notebooks/directmap-policies.ipynb "
        f"({'all policies' if policies is None else ', '.join(params['policies'])}, every measured configuration) ...")
    nb, docs = run_notebook("directmap-policies", rundir, **params)
    rows = [r for r in docs[-1]["results"]["policy_table"] if r["measured_gbps"] is not None]
    path = build_report([nb], out, title="Direct-map policies on SEV-SNP hosts: modelled vs measured")
    lines = [text_table([{"configuration": r["config"], "policy": r["policy"],
                          "measured GB/s": f"{r['measured_gbps']:.2f}", "+-": f"{r['spread']:.2f}",
                          "model GB/s": f"{r['model_gbps']:.2f}", "error %": f"{r['error_pct']:+.1f}",
                          "within": "yes" if r["within"] else "NO"} for r in rows],
                        ["configuration", "policy", "measured GB/s", "+-", "model GB/s", "error %", "within"]),
             f"{sum(r['within'] for r in rows)}/{len(rows)} measured rows reproduced within their spread; "
             f"{time.time() - t0:.0f} s",
             f"executed notebook: {nb.resolve()}",
             f"report: {path.resolve()}"]
    return Outcome(0, lines, path)


#: the columns of ``kit host-demo``'s table and report
HOST_DEMO_COLUMNS = ["policy", "DirectMap4k", "DirectMap2M", "DirectMap1G", "DirectMap4k_after_exit",
                     "splits", "collapses", "flush_tlb_all", "cpa_lock", "rmpupdate", "psmash", "host_write",
                     "state_mib", "wall_s"]


def host_demo(args, say=_quiet) -> Outcome:
    """The host-model demonstration on every direct-map policy -> table and HTML report."""
    try:
        mem, guest = (parse_size(getattr(args, n), name=n) for n in ("mem", "guest_mem"))
        if args.cores < 1:
            raise ValueError(f"cores: must be at least 1, got {args.cores}")
        need = guest + host_demo_model.EXTRA_MEMORY
        if need > mem:
            raise ValueError(f"guest_mem: {args.guest_mem} plus the demo's {host_demo_model.SMALL_GUEST_MEM} guest "
                             f"and {host_demo_model.KERNEL_MEM} of kernel pages do not fit in mem {args.mem}")
    except (ValueError, TypeError) as e:
        raise ArgError(str(e)) from None
    t0 = time.time()
    say(f"kit {__version__}: host {args.mem}, {args.cores} cores; one SNP guest of {args.guest_mem} "
        f"on 2M folios, one of {host_demo_model.SMALL_GUEST_MEM} on 4K folios, host kernel writes to its own pages")
    rows = host_demo_model.run_all(mem=args.mem, cores=args.cores, guest_mem=args.guest_mem, seed=args.seed)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    params = {"kit_version": __version__, "mem": args.mem, "cores": args.cores,
              "guest_mem": args.guest_mem, "seed": args.seed,
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0))}
    with open(args.out, "w") as f:
        f.write(host_demo_model.html_report(rows, HOST_DEMO_COLUMNS, params))
    return Outcome(0, [text_table(rows, HOST_DEMO_COLUMNS), f"report: {os.path.abspath(args.out)}"], rows)


# ------------------------------------------------------------------ simulate, calibrate
def simulate_args(args):
    """Keyword arguments for ``simulate`` and the cost parameters from parsed arguments;
    every argument checked (``ValueError`` naming it) before any work."""
    kw = dict(workload=args.workload, guests=args.guests, vcpus=args.vcpus, guest_mem=args.guest_mem,
              host_cores=args.host_cores, host_mem=args.host_mem, policy=args.policy,
              engine=args.engine, seed=args.seed)
    if args.guest:
        specs = []
        for g in args.guest:
            v, sep, m = g.partition(":")
            if not sep or not v.isdigit():
                raise ValueError(f"--guest: expected VCPUS:MEM (e.g. 64:32GiB), got {g!r}")
            specs.append((int(v), m))
        kw["guest_specs"] = specs
    scenario(**kw)
    params = CostParams.load(args.params) if args.params else CostParams.load()
    return kw, params


def simulate(args, say=_quiet) -> Outcome:
    """Time a workload on the model; the lines are its summary (or JSON)."""
    try:
        kw, params = simulate_args(args)
    except (ValueError, TypeError) as e:
        raise ArgError(str(e)) from None
    r = run_simulation(**kw, params=params)
    if args.json:
        out = r.to_json()
        if not args.series:
            out.pop("series", None)
        lines = [json.dumps(out, sort_keys=True)]
    else:
        lines = [text_table([{"what": k, "value": v} for k, v in r.summary().items()], ["what", "value"]),
                 text_table([{"resource": k, "utilisation": f"{v:.3f}"} for k, v in
                             sorted(r.utilisation.items(), key=lambda kv: -kv[1])], ["resource", "utilisation"])]
    return Outcome(0, lines, r, display=True)


def calibrate(args, say=_quiet) -> Outcome:
    """Fit the free cost parameters; status 1 unless every measured row is within its spread."""
    try:
        base = CostParams.load(args.start) if args.start else CostParams()
    except (ValueError, OSError) as e:
        raise ArgError(str(e)) from None
    fitted, rows, info = fit(base)
    out = args.out or str(DEFAULT_PATH)
    fitted.save(out)
    lines = [text_table(rows, ["config", "measured", "spread", "model", "error_pct", "residual", "within"]),
             f"free parameters: {info['free_parameters']} ({', '.join(info['names'])}); "
             f"{info['measured_configurations']} measured configurations; {info['status']}",
             "fitted: " + ", ".join(f"{n}={fitted[n]:.4g}" for n in info["names"]),
             f"parameter set: {os.path.abspath(out)}"]
    if args.residuals:
        with open(args.residuals, "w") as f:
            json.dump({"rows": rows, "info": info, "params": fitted.to_json()}, f, indent=1)
        lines.append(f"residual table: {os.path.abspath(args.residuals)}")
    return Outcome(0 if all(r["within"] for r in rows) else 1, lines, fitted)


# ------------------------------------------------------------------ report, run, sweep
def report(args, say=_quiet) -> Outcome:
    """One self-contained HTML report from recorded results."""
    try:
        path = build_report(args.results, args.out, title=args.title)
    except (ValueError, OSError) as e:
        raise ArgError(str(e)) from None
    return Outcome(0, [f"report: {path.resolve()}"], path)


def run(args, say=_quiet) -> Outcome:
    """``kit run NOTEBOOK [-p NAME VALUE]... [-o OUTDIR]``: the pipeline once (inspect, check,
    execute, record and report)."""
    # papermill's error class: loaded with the run itself (about a second)
    import papermill
    try:
        nb = inspect(args.notebook)
        nb, params = prepare(nb, parse_pairs(nb, args.param))
    except ValueError as e:
        raise ArgError(str(e)) from None
    try:
        out = run_checked(nb, params, args.out, timeout=args.timeout)
    except ValueError as e:                 # the output folder, refused before a kernel starts
        raise ArgError(str(e)) from None
    except papermill.PapermillExecutionError as e:
        raise RunFailed(f"{nb.name} failed in cell {e.exec_count}: {e.ename}: {e.evalue}"
                        + "".join(f"; {n}" for n in getattr(e, "__notes__", []))) from None
    lines = [f"executed notebook: {out['notebook'].resolve()}"]
    lines += [f"result: {doc.get('name')} ({len(json.dumps(doc))} bytes)" for doc in out["results"]]
    if out["report"]:
        lines.append(f"report: {out['report'].resolve()}")
    return Outcome(0, lines, out)


def sweep(args, say=_quiet) -> Outcome:
    """``kit sweep NOTEBOOK --grid NAME=V1,V2 ... [--seeds N] [-o OUTDIR] [--scheduler ADDR]
    [--workers N]``: every combination as one run; status 1 if any run failed."""
    try:
        df = run_sweep(args.notebook, args.grid, seeds=args.seeds, outdir=args.out, scheduler=args.scheduler,
                       workers=args.workers, timeout=args.timeout)
    except ValueError as e:
        raise ArgError(str(e)) from None
    cols = [c for c in df.columns if c.startswith("p.")] + ["state", "seconds", "error"]
    failed = int((df["state"] != "complete").sum())
    lines = [text_table(df[cols].fillna("").to_dict("records"), cols),
             f"{len(df)} runs: {len(df) - failed} complete, {failed} failed or missing",
             f"table: {(Path(args.out) / 'table.csv').resolve()}"]
    if (Path(args.out) / "report.html").exists():
        lines.append(f"report: {(Path(args.out) / 'report.html').resolve()}")
    return Outcome(0 if failed == 0 else 1, lines, df)


# ------------------------------------------------------------------ explore
#: what ``--bound`` means in each mode that takes one (:func:`kit.explore.catalog.explore_named`)
BOUNDS = {"bounded": EXPLORE_PARAMS["preemptions"], "random": EXPLORE_PARAMS["runs"]}
#: the columns of ``kit explore``'s table of invariants
EXPLORE_COLUMNS = ["invariant", "schedules", "violations", "complete"]


def _number(text, param, name: str):
    """A command-line number checked by ``param`` (a ``ValueError`` naming ``name``)."""
    kind = int if param.kind == "int" else float
    try:
        value = kind(text)
    except (TypeError, ValueError):
        what = "an integer" if kind is int else "a number"
        raise ValueError(f"{name}: expected {what} {param.bounds_text()}, got {text!r}") from None
    return param.check(value, name)


def _applies(name: str, mode: str, modes) -> None:
    if mode not in modes:
        raise ValueError(f"{name}: applies to mode{'s' if len(modes) > 1 else ''} {', '.join(modes)}, not {mode}")


def explore_args(args) -> dict:
    """``explore_named``'s arguments from parsed arguments, every one checked (a ``ValueError``
    naming it and what is allowed) before any work."""
    if args.scenario not in catalog.SCENARIOS:
        raise ValueError(f"scenario: unknown {args.scenario!r}; allowed: {', '.join(catalog.SCENARIOS)}")
    schemes = list(catalog.schemes_for(args.scenario))
    if args.scheme is None:
        raise ValueError(f"scheme: required (--scheme); allowed for {args.scenario}: {', '.join(schemes)}")
    if args.scheme not in schemes:
        what = (f"{args.scheme!r} is not a scheme of" if args.scheme in catalog.SCHEMES
                else f"unknown {args.scheme!r} for")
        raise ValueError(f"scheme: {what} {args.scenario}; allowed: {', '.join(schemes)}")
    mode = EXPLORE_PARAMS["mode"].check(args.mode)
    kw = dict(scenario=args.scenario, scheme=args.scheme, mode=mode)
    if args.bound is not None:
        _applies("bound", mode, list(BOUNDS))
        kw["bound"] = _number(args.bound, BOUNDS[mode], "bound")
    if args.seed is not None:
        _applies("seed", mode, ["random"])
        kw["seed"] = _number(args.seed, EXPLORE_PARAMS["seed"], "seed")
    if args.schedule is not None:
        _applies("schedule", mode, ["replay"])
        kw["schedule"] = list(check_schedule([t.strip() for t in args.schedule.split(",") if t.strip()]))
    elif mode == "replay":
        raise ValueError("schedule: mode replay needs --schedule T1,T2,... (thread names, one per step)")
    for name in ("max_schedules", "time_budget"):
        value = getattr(args, name)
        if value is not None:
            _applies(name.replace("_", "-"), mode, ["exhaustive", "bounded", "random"])
            kw[name] = _number(value, EXPLORE_PARAMS[name], name.replace("_", "-"))
    return kw


def _progress_bar(kw: dict, show: bool):
    """A tqdm bar on stderr (stdout stays the result's) and the explorer's progress callback
    that moves it: schedules explored, with steps and distinct states."""
    total = kw.get("bound", BOUNDS["random"].default) if kw["mode"] == "random" else kw.get("max_schedules")
    bar = tqdm(total=total, desc=f"{kw['scenario']} / {kw['scheme']} [{kw['mode']}]", unit=" schedules",
               file=sys.stderr, disable=not show or kw["mode"] == "replay", dynamic_ncols=True, leave=True)

    def progress(p) -> None:
        bar.update(p.schedules - bar.n)
        bar.set_postfix_str(f"{p.steps} steps" + (f", {p.states} states" if p.states is not None else ""),
                            refresh=False)
    return bar, progress


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 'es' if what.endswith('ch') else 's'}"


def explore_lines(result, kw: dict) -> list[str]:
    """The table of invariants, then the shortest counterexample of each violated invariant as
    numbered steps (thread, step, what changed) and, for a deadlock, the lock graph."""
    head = (f"{kw['scenario']} / {kw['scheme']} [{result.mode}]: {_count(result.schedules, 'schedule')}, "
            f"{_count(result.steps, 'step')}"
            + (f", {_count(result.states, 'state')}" if result.states is not None else "")
            + f", {result.elapsed:.2f} s, " + ("complete" if result.complete else f"incomplete ({result.stopped_by})"))
    done = "yes" if result.complete else "no"
    rows = [{"invariant": name, "schedules": r.schedules, "violations": r.violations, "complete": done}
            for name, r in result.invariants.items()]
    lines = [head, text_table(rows, EXPLORE_COLUMNS)]
    for name, r in result.invariants.items():
        ex = r.example
        if ex is None:
            continue
        lines.append("")
        lines.append(f"{name}: shortest counterexample, {_count(ex.steps, 'step')}, "
                     f"{_count(ex.switches, 'context switch')}"
                     if ex.steps else f"{name}: broken in the initial state")
        if ex.steps:
            lines.append(text_table(step_rows(ex), STEP_COLUMNS))
        if ex.lock_graph is not None:
            lines.append(str(ex.lock_graph))
    broken = result.violated
    lines.append("")
    lines.append(f"{len(broken)} of {len(rows)} invariants broken" + (f": {', '.join(broken)}" if broken else ""))
    return lines


def explore(args, say=_quiet) -> Outcome:
    """``kit explore SCENARIO --scheme S --mode M [--bound K] [--seed N] [--schedule T1,T2,...]
    [--json]``: the interleavings of a scenario of :mod:`kit.explore.catalog` under a scheme.
    Status 0 whatever the search finds; a bad argument is status 2 before any work. ``--json``:
    exactly ``ExploreResult.to_json()`` on stdout (the progress bar is on stderr)."""
    try:
        kw = explore_args(args)
    except ValueError as e:
        raise ArgError(str(e)) from None
    bar, progress = _progress_bar(kw, args.progress)
    try:
        result = catalog.explore_named(**kw, progress=progress)
    except ValueError as e:                 # a replay's thread that cannot run at its position
        raise ArgError(str(e)) from None
    finally:
        bar.close()
    if args.json:
        return Outcome(0, [json.dumps(result.to_json())], result)
    return Outcome(0, explore_lines(result, kw), result)


# ------------------------------------------------------------------ the parser
class Parser(argparse.ArgumentParser):
    """One line for a bad argument and exit status 2, or :class:`ArgError` with
    ``raise_errors`` (``%kit``: a kernel must not exit)."""

    def __init__(self, *args, raise_errors: bool = False, **kw):
        super().__init__(*args, **kw)
        self.raise_errors = raise_errors

    def error(self, message):
        if self.raise_errors:
            raise ArgError(message)
        self.exit(2, f"{self.prog}: {message}\n")

    def exit(self, status=0, message=None):
        if self.raise_errors and status == 0 and not message:
            raise HelpShown()
        super().exit(status, message)


def build_parser(raise_errors: bool = False, command: str | None = None) -> argparse.ArgumentParser:
    """The ``kit`` argument parser; each subcommand's ``command`` default is its function here.
    ``command``: the subcommand the arguments name (the CLI looks first), whose arguments are
    then the only ones that need their modules: ``host-demo``'s and ``explore``'s arguments
    (defaults and help from :mod:`.demo` and :mod:`kit.explore.catalog`) are added only when
    ``command`` is theirs or None."""
    p = Parser(prog="kit", description="confidential-VM memory research kit", raise_errors=raise_errors)
    p.add_argument("--version", action="version", version=f"kit {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)

    def add(name, **kw):
        return sub.add_parser(name, raise_errors=raise_errors, **kw)

    d = add("demo", help="the main job: directmap-policies on the measured configurations -> HTML report")
    d.add_argument("--policies", default=None, help="comma-separated direct-map policies (default: all)")
    d.add_argument("--steps", type=int, default=2000, help="conversions in the fragmentation workload")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", default="reports/index.html", help="HTML report path")
    d.set_defaults(command=demo)
    if command in (None, "host-demo"):
        h = add("host-demo", help="the host-model demonstration on every direct-map policy (no timing)")
        h.add_argument("--mem", default=host_demo_model.HOST_MEM,
                       help=f"host memory (default {host_demo_model.HOST_MEM})")
        h.add_argument("--cores", type=int, default=host_demo_model.HOST_CORES,
                       help=f"host cores (default {host_demo_model.HOST_CORES})")
        h.add_argument("--guest-mem", dest="guest_mem", default=host_demo_model.GUEST_MEM,
                       help=f"SNP guest memory (default {host_demo_model.GUEST_MEM})")
        h.add_argument("--seed", type=int, default=0)
        h.add_argument("--out", default="reports/host-demo.html", help="HTML report path")
        h.set_defaults(command=host_demo)
    m = add("simulate", help="time a workload on the model (fault-in rate, where the time goes)")
    # defaults, bounds, units and help: the scenario table (kit.sim.scenario.SCENARIO_PARAMS)
    for name in ("workload", "guests", "vcpus", "guest_mem", "host_cores", "host_mem", "policy", "engine", "seed"):
        sp = SCENARIO_PARAMS[name]
        m.add_argument("--" + name.replace("_", "-"), dest=name, default=sp.default, help=sp.describe(),
                       **({"type": int} if sp.kind == "int" else {}))
        if name == "vcpus":
            m.add_argument("--guest", action="append", default=[], metavar="VCPUS:MEM",
                           help="one guest of its own size (repeat for guests of different sizes; "
                                "replaces --guests/--vcpus/--guest-mem)")
    m.add_argument("--params", default=None, help="cost-parameter file (default data/cost_params.json)")
    m.add_argument("--json", action="store_true", help="one JSON object instead of tables")
    m.add_argument("--series", action="store_true", help="with --json: include the time series")
    m.set_defaults(command=simulate)
    c = add("calibrate", help="fit the free cost parameters to data/measurements.csv")
    c.add_argument("--start", default=None, help="parameter file to start from (default: the base set)")
    c.add_argument("-o", "--out", default=None, help="where to write the fitted set (default data/cost_params.json)")
    c.add_argument("--residuals", default=None, help="also write the residual table as JSON here")
    c.set_defaults(command=calibrate)
    r = add("report", help="one self-contained HTML report from recorded results")
    r.add_argument("results", nargs="+", help="result files (*.json), executed notebooks or folders")
    r.add_argument("-o", "--out", required=True, help="the HTML file to write")
    r.add_argument("--title", default="cvm-memkit report")
    r.set_defaults(command=report)
    n = add("run", help="run one notebook (parameters checked first) -> executed notebook, result, report")
    n.add_argument("notebook", help="a notebook in notebooks/ (e.g. directmap-policies) or a path")
    n.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    n.add_argument("-o", "--out", default=None, help="output folder (default runs/NOTEBOOK)")
    n.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    n.set_defaults(command=run)
    w = add("sweep", help="every combination of a grid as one run each, on dask.distributed")
    w.add_argument("notebook")
    w.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2,...",
                   help="one axis of the grid (repeat); list values: items separated by ';'")
    w.add_argument("--seeds", type=int, default=None, help="also run each combination with seed 0..N-1")
    w.add_argument("-o", "--out", default="sweeps", help="result store and outputs (default sweeps/)")
    w.add_argument("--scheduler", default=None, help="an existing dask scheduler (tcp://HOST:PORT)")
    w.add_argument("--workers", type=int, default=2, help="local workers, one kernel each (default 2)")
    w.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    w.set_defaults(command=sweep)
    if command in (None, "explore"):
        e = add("explore", help="every interleaving of a race scenario under a scheme -> invariants, counterexamples")
        e.add_argument("scenario", help=f"{EXPLORE_PARAMS['scenario'].help}: {', '.join(catalog.SCENARIOS)}")
        e.add_argument("--scheme", default=None, help="how the kernel protects the race; "
                       + "; ".join(f"{n}: {', '.join(catalog.schemes_for(n))}" for n in catalog.SCENARIOS))
        e.add_argument("--mode", default=EXPLORE_PARAMS["mode"].default, help=EXPLORE_PARAMS["mode"].describe())
        e.add_argument("--bound", default=None, metavar="K",
                       help=f"{EXPLORE_PARAMS['bound'].help} (bounded: {BOUNDS['bounded'].bounds_text()}, default "
                            f"{BOUNDS['bounded'].default}; random: {BOUNDS['random'].bounds_text()}, default "
                            f"{BOUNDS['random'].default})")
        e.add_argument("--seed", default=None, metavar="N", help=EXPLORE_PARAMS["seed"].describe())
        e.add_argument("--schedule", default=None, metavar="T1,T2,...",
                       help="replay: the thread that runs each step, in order")
        e.add_argument("--max-schedules", dest="max_schedules", default=None, metavar="N",
                       help=EXPLORE_PARAMS["max_schedules"].describe())
        e.add_argument("--time-budget", dest="time_budget", default=None, metavar="SECONDS",
                       help=EXPLORE_PARAMS["time_budget"].describe())
        e.add_argument("--json", action="store_true",
                       help='one JSON object: {"complete", "schedules", '
                            '"invariants": {name: {"violations", "example"}}}')
        e.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar on stderr")
        e.set_defaults(command=explore)
    return p


#: the subcommands, in the parser's order
SUBCOMMANDS = ("demo", "host-demo", "simulate", "calibrate", "report", "run", "sweep", "explore")
