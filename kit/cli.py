"""The ``kit`` command line."""
from __future__ import annotations

import argparse
import html
import json
import os
import sys
import time
from pathlib import Path

from . import __version__


def _table(rows: list[dict], cols: list[str]) -> str:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    out = ["  ".join(c.ljust(widths[c]) for c in cols)]
    out += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(out)


def _html_report(rows: list[dict], cols: list[str], params: dict) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{esc(str(r.get(c, '')))}</td>" for c in cols) + "</tr>" for r in rows)
    prov = "".join(f"<li>{esc(k)}: {esc(str(v))}</li>" for k, v in params.items())
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>kit demo</title>"
            f"<style>body{{font-family:sans-serif}}td,th{{padding:2px 8px;border-bottom:1px solid #ddd}}</style>"
            f"</head><body><h1>Direct-map policies on one SNP host</h1>"
            f"<table><tr>{head}</tr>{body}</table><h2>Provenance</h2><ul>{prov}</ul></body></html>")


def cmd_host_demo(args) -> int:
    from .lab.demo import run_all
    from .units import parse_size
    try:
        mem, guest = (parse_size(getattr(args, n), name=n) for n in ("mem", "guest_mem"))
        if args.cores < 1:
            raise ValueError(f"cores: must be at least 1, got {args.cores}")
        # the demo also runs a 2GiB guest on 4K pages and 128MiB of host kernel pages
        need = guest + 2 * 2**30 + 2**27
        if need > mem:
            raise ValueError(f"guest_mem: {args.guest_mem} plus the demo's 2GiB guest and 128MiB of "
                             f"kernel pages do not fit in mem {args.mem}")
    except (ValueError, TypeError) as e:
        print(f"kit host-demo: {e}", file=sys.stderr)
        return 2
    t0 = time.time()
    print(f"kit {__version__}: host {args.mem}, {args.cores} cores; one SNP guest of {args.guest_mem} "
          f"on 2M folios, one of 2GiB on 4K folios, host kernel writes to its own pages")
    rows = run_all(mem=args.mem, cores=args.cores, guest_mem=args.guest_mem, seed=args.seed)
    cols = ["policy", "DirectMap4k", "DirectMap2M", "DirectMap1G", "DirectMap4k_after_exit",
            "splits", "collapses", "flush_tlb_all", "cpa_lock", "rmpupdate", "psmash", "host_write",
            "state_mib", "wall_s"]
    print(_table(rows, cols))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    params = {"kit_version": __version__, "mem": args.mem, "cores": args.cores,
              "guest_mem": args.guest_mem, "seed": args.seed,
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0))}
    with open(args.out, "w") as f:
        f.write(_html_report(rows, cols, params))
    print(f"report: {os.path.abspath(args.out)}")
    return 0


def cmd_demo(args) -> int:
    """The main job: the directmap-policies notebook on the measured configurations, its
    report, and a short modelled-vs-measured table."""
    from pathlib import Path

    from .lab.report import report
    from .lab.runner import run_notebook
    from .lab.validate import check
    try:
        policies = [p for p in args.policies.split(",") if p] if args.policies else None
        params = check(**({"policies": policies} if policies is not None else {}), steps=args.steps, seed=args.seed)
        out = Path(args.out)
        if out.suffix != ".html":
            raise ValueError(f"out: expected an .html path, got {args.out!r}")
    except ValueError as e:
        print(f"kit demo: {e}", file=sys.stderr)
        return 2
    t0 = time.time()
    rundir = out.parent / "directmap-policies"
    print(f"kit {__version__}: running notebooks/directmap-policies.ipynb "
          f"({'all policies' if policies is None else ', '.join(params['policies'])}, every measured configuration) ...",
          flush=True)
    nb, docs = run_notebook("directmap-policies", rundir, **params)
    rows = [r for r in docs[-1]["results"]["policy_table"] if r["measured_gbps"] is not None]
    print(_table([{"configuration": r["config"], "policy": r["policy"], "measured GB/s": f"{r['measured_gbps']:.2f}",
                   "+-": f"{r['spread']:.2f}", "model GB/s": f"{r['model_gbps']:.2f}",
                   "error %": f"{r['error_pct']:+.1f}", "within": "yes" if r["within"] else "NO"} for r in rows],
                 ["configuration", "policy", "measured GB/s", "+-", "model GB/s", "error %", "within"]))
    path = report([nb], out, title="Direct-map policies on SEV-SNP hosts: modelled vs measured")
    print(f"{sum(r['within'] for r in rows)}/{len(rows)} measured rows reproduced within their spread; "
          f"{time.time() - t0:.0f} s")
    print(f"executed notebook: {nb.resolve()}")
    print(f"report: {path.resolve()}")
    return 0


class ArgError(ValueError):
    """A bad command-line argument (raised instead of exiting for ``%kit``)."""


class _Parser(argparse.ArgumentParser):
    """One line for a bad argument, exit status 2 (or :class:`ArgError` with ``raise_errors``)."""

    raise_errors = False

    def error(self, message):
        if self.raise_errors:
            raise ArgError(message)
        self.exit(2, f"{self.prog}: {message}\n")


def simulate_args(args):
    """Keyword arguments for ``simulate`` and the cost parameters from parsed arguments;
    every argument checked (``ValueError`` naming it) before any work."""
    from .sim.api import scenario
    from .sim.params import CostParams
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


def cmd_simulate(args) -> int:
    import json
    from .sim.api import simulate
    try:
        kw, params = simulate_args(args)
    except (ValueError, TypeError) as e:
        print(f"kit simulate: {e}", file=sys.stderr)
        return 2
    r = simulate(**kw, params=params)
    if args.json:
        out = r.to_json()
        out.pop("series", None) if not args.series else None
        print(json.dumps(out, sort_keys=True))
    else:
        print(_table([{"what": k, "value": v} for k, v in r.summary().items()], ["what", "value"]))
        print(_table([{"resource": k, "utilisation": f"{v:.3f}"} for k, v in
                      sorted(r.utilisation.items(), key=lambda kv: -kv[1])], ["resource", "utilisation"]))
    return 0


def cmd_calibrate(args) -> int:
    import json
    from .sim.calibrate import calibrate
    from .sim.params import DEFAULT_PATH, CostParams
    try:
        base = CostParams.load(args.start) if args.start else CostParams()
    except (ValueError, OSError) as e:
        print(f"kit calibrate: {e}", file=sys.stderr)
        return 2
    fitted, rows, info = calibrate(base)
    out = args.out or str(DEFAULT_PATH)
    fitted.save(out)
    cols = ["config", "measured", "spread", "model", "error_pct", "residual", "within"]
    print(_table(rows, cols))
    print(f"free parameters: {info['free_parameters']} ({', '.join(info['names'])}); "
          f"{info['measured_configurations']} measured configurations; {info['status']}")
    print("fitted: " + ", ".join(f"{n}={fitted[n]:.4g}" for n in info["names"]))
    print(f"parameter set: {os.path.abspath(out)}")
    if args.residuals:
        with open(args.residuals, "w") as f:
            json.dump({"rows": rows, "info": info, "params": fitted.to_json()}, f, indent=1)
        print(f"residual table: {os.path.abspath(args.residuals)}")
    return 0 if all(r["within"] for r in rows) else 1


def cmd_report(args) -> int:
    from .lab.report import report
    try:
        path = report(args.results, args.out, title=args.title)
    except (ValueError, OSError) as e:
        print(f"kit report: {e}", file=sys.stderr)
        return 2
    print(f"report: {path.resolve()}")
    return 0


def cmd_run(args) -> int:
    """``kit run NOTEBOOK [-p NAME VALUE]... [-o OUTDIR]``."""
    from .lab.runner import notebook_path, parameter_names
    from .lab.batch import parse_value, run, validate
    try:
        src = notebook_path(args.notebook)
        info = parameter_names(src)
        params = {}
        for name, value in args.param:
            if name not in info:
                raise ValueError(f"parameters: unknown {name} for {src.stem}; allowed: {', '.join(info)}")
            params[name] = parse_value(name, value, info[name])
        validate(src, params, info=info)
    except ValueError as e:
        print(f"kit run: {e}", file=sys.stderr)
        return 2
    import papermill
    try:
        out = run(src, params, args.out, timeout=args.timeout)
    except papermill.PapermillExecutionError as e:
        print(f"kit run: {src.stem} failed in cell {e.exec_count}: {e.ename}: {e.evalue}", file=sys.stderr)
        return 1
    print(f"executed notebook: {out['notebook'].resolve()}")
    for doc in out["results"]:
        print(f"result: {doc.get('name')} ({len(json.dumps(doc))} bytes)")
    if out["report"]:
        print(f"report: {out['report'].resolve()}")
    return 0


def cmd_sweep(args) -> int:
    """``kit sweep NOTEBOOK --grid NAME=V1,V2 ... [--seeds N] [-o OUTDIR] [--scheduler ADDR] [--workers N]``."""
    from .lab.batch import sweep
    try:
        df = sweep(args.notebook, args.grid, seeds=args.seeds, outdir=args.out, scheduler=args.scheduler,
                   workers=args.workers, timeout=args.timeout)
    except ValueError as e:
        print(f"kit sweep: {e}", file=sys.stderr)
        return 2
    cols = [c for c in df.columns if c.startswith("p.")] + ["state", "seconds", "error"]
    print(_table(df[cols].fillna("").to_dict("records"), cols))
    failed = int((df["state"] != "complete").sum())
    print(f"{len(df)} runs: {len(df) - failed} complete, {failed} failed or missing")
    print(f"table: {(Path(args.out) / 'table.csv').resolve()}")
    if (Path(args.out) / "report.html").exists():
        print(f"report: {(Path(args.out) / 'report.html').resolve()}")
    return 0 if failed == 0 else 1


def parser(raise_errors: bool = False) -> argparse.ArgumentParser:
    """The ``kit`` argument parser (``%kit`` uses it with ``raise_errors``)."""
    from .sim.scenario import SCENARIO_PARAMS
    _Parser.raise_errors = raise_errors
    p = _Parser(prog="kit", description="confidential-VM memory research kit")
    p.add_argument("--version", action="version", version=f"kit {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="the main job: directmap-policies on the measured configurations -> HTML report")
    d.add_argument("--policies", default=None, help="comma-separated direct-map policies (default: all)")
    d.add_argument("--steps", type=int, default=2000, help="conversions in the fragmentation workload")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", default="reports/index.html", help="HTML report path")
    d.set_defaults(func=cmd_demo)
    h = sub.add_parser("host-demo", help="the host-model demonstration on every direct-map policy (no timing)")
    h.add_argument("--mem", default="1.5TiB", help="host memory (default 1.5TiB)")
    h.add_argument("--cores", type=int, default=512, help="host cores (default 512)")
    h.add_argument("--guest-mem", dest="guest_mem", default="160GiB", help="SNP guest memory (default 160GiB)")
    h.add_argument("--seed", type=int, default=0)
    h.add_argument("--out", default="reports/host-demo.html", help="HTML report path")
    h.set_defaults(func=cmd_host_demo)
    m = sub.add_parser("simulate", help="time a workload on the model (fault-in rate, where the time goes)")
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
    m.set_defaults(func=cmd_simulate)
    c = sub.add_parser("calibrate", help="fit the free cost parameters to data/measurements.csv")
    c.add_argument("--start", default=None, help="parameter file to start from (default: the base set)")
    c.add_argument("-o", "--out", default=None, help="where to write the fitted set (default data/cost_params.json)")
    c.add_argument("--residuals", default=None, help="also write the residual table as JSON here")
    c.set_defaults(func=cmd_calibrate)
    r = sub.add_parser("report", help="one self-contained HTML report from recorded results")
    r.add_argument("results", nargs="+", help="result files (*.json), executed notebooks or folders")
    r.add_argument("-o", "--out", required=True, help="the HTML file to write")
    r.add_argument("--title", default="cvm-memkit report")
    r.set_defaults(func=cmd_report)
    n = sub.add_parser("run", help="run one notebook (parameters checked first) -> executed notebook, result, report")
    n.add_argument("notebook", help="a notebook in notebooks/ (e.g. directmap-policies) or a path")
    n.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    n.add_argument("-o", "--out", default=None, help="output folder (default runs/NOTEBOOK)")
    n.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    n.set_defaults(func=cmd_run)
    w = sub.add_parser("sweep", help="every combination of a grid as one run each, on dask.distributed")
    w.add_argument("notebook")
    w.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2,...",
                   help="one axis of the grid (repeat); list values: items separated by ';'")
    w.add_argument("--seeds", type=int, default=None, help="also run each combination with seed 0..N-1")
    w.add_argument("-o", "--out", default="sweeps", help="result store and outputs (default sweeps/)")
    w.add_argument("--scheduler", default=None, help="an existing dask scheduler (tcp://HOST:PORT)")
    w.add_argument("--workers", type=int, default=2, help="local workers, one kernel each (default 2)")
    w.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    w.set_defaults(func=cmd_sweep)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)
