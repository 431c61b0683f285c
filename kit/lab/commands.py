"""The ``kit`` commands: one argument parser and one function per subcommand, shared by the
command line (:mod:`kit.cli`: argv -> here -> print) and the ``%kit`` magic (:mod:`.magics`).

A command takes the parsed arguments and returns an :class:`Outcome`: the exit status, the
lines to print and the value a Python caller wants (a ``SimResult``, a report's path, ...).
A bad argument raises :class:`ArgError` before any work, a run that fails raises
:class:`RunFailed`; both carry one line of text. ``say`` receives a line to show at once,
before long work starts.

The error rule (docs/cli-errors.md), one for the command line and ``%kit``: :func:`dispatch`
reads argv (UTF-8 text only) with the one parser and runs the command. Every expected error
becomes one line naming the input: :class:`ArgError` (status 2; a :class:`~kit.errors.KvmError`
the model raises for the input counts as one), :class:`RunFailed` (status 1; a file the
system refuses to read or write, or the modelled machine stopping, counts as one). Any other
exception is a bug in the kit: its full traceback is saved to a crash report
(:func:`save_crash`) and :class:`Crashed` (status :data:`CRASH_STATUS`) carries the one line
saying where it is and how to report it.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..errors import KernelError, KitError
from ..explore.params import EXPLORE_PARAMS, check_schedule
from ..sim.api import scenario
from ..sim.scenario import SCENARIO_PARAMS
from ..sim.api import simulate as run_simulation
from ..sim.params import DEFAULT_PATH, CostParams
from ..host.limits import HOST_CORES, HOST_MEM, HOST_SEED
from ..units import BAND_MEANING, PAGE_2M, SIZE_UNITS, Param, band_text, format_size, parse_int, parse_size, rate_text
from .limits import CELL_TIMEOUT, SWEEP_CONFIRM, SWEEP_SEEDS, SWEEP_WORKERS

#: Deferred loading (docs/architecture.md): what only some subcommands need -- the notebook
#: pipeline, the calibration and its error bars, tqdm, the explorer's catalog, the host demo --
#: is imported when one of them runs, so that ``kit simulate`` starts in about the time of
#: ``import numpy``. Each name here is a function that imports ``module`` and calls
#: ``module.function``, or (no ``:function``) the module itself, imported on first attribute
#: access; tests/test_layers.py checks the table.
DEFERRED = {"tqdm": "tqdm:tqdm", "catalog": "kit.explore.catalog", "host_demo_model": "kit.lab.demo",
            "prepare": "kit.lab.batch:prepare", "run_checked": "kit.lab.batch:run_checked",
            "run_sweep": "kit.lab.batch:sweep", "inspect": "kit.lab.notebook:inspect",
            "lab_parameters": "kit.lab.parameters", "parse_pairs": "kit.lab.parameters:parse_pairs",
            "parameter_rows": "kit.lab.parameters:parameter_rows", "lab_rules": "kit.lab.validate",
            "check": "kit.lab.validate:check", "_rule": "kit.lab.validate:rule",
            "build_report": "kit.lab.report:report", "calibration": "kit.sim.calibrate",
            "fit": "kit.sim.calibrate:calibrate", "leave_one_out": "kit.sim.calibrate:leave_one_out",
            "loo_chance_text": "kit.sim.calibrate:loo_chance_text",
            "load_measurements": "kit.sim.calibrate:load_measurements",
            "sensitivities": "kit.sim.calibrate:sensitivities", "held_back": "kit.sim.calibrate:held_back",
            "check_measurements": "kit.sim.measurements:check_measurements",
            "validate": "kit.sim.validation:validate",
            # the explorer's step table, and what only a crash report or a sweep's command line use
            "traces": "kit.viz.traces", "platform": "platform", "shlex": "shlex", "tempfile": "tempfile",
            "traceback": "traceback", "writable_file": "kit.lab.paths:writable_file",
            "writable_folder": "kit.lab.paths:writable_folder"}


class _Module:
    """A module imported on first attribute access (setting an attribute sets the module's)."""

    def __init__(self, name: str):
        object.__setattr__(self, "_name", name)

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(self._name), attr)

    def __setattr__(self, attr: str, value) -> None:
        setattr(importlib.import_module(self._name), attr, value)

    def __repr__(self) -> str:
        return f"<module {self._name!r}, imported on first use>"


def _deferred(name: str):
    module, _, function = DEFERRED[name].partition(":")
    if not function:
        return _Module(module)

    def call(*args, **kw):
        return getattr(importlib.import_module(module), function)(*args, **kw)
    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"``{module}.{function}``, imported on first call."
    return call


(tqdm, catalog, host_demo_model, prepare, run_checked, run_sweep, inspect, lab_parameters, parse_pairs,
 parameter_rows, lab_rules, check, _rule, build_report, calibration, fit, leave_one_out, loo_chance_text,
 load_measurements, sensitivities, held_back, check_measurements, validate, traces, platform, shlex, tempfile,
 traceback, writable_file, writable_folder) = (_deferred(name) for name in DEFERRED)


class ArgError(ValueError):
    """A bad argument: one line, exit status 2 (``UsageError`` under ``%kit``)."""


class RunFailed(RuntimeError):
    """A run that started and failed: one line, exit status 1."""


class HelpShown(Exception):
    """``--help`` or ``--version`` printed what was asked (``%kit``: nothing more to do)."""


#: The exit status of a command that met a bug in the kit (``EX_SOFTWARE``, sysexits.h).
CRASH_STATUS = 70


class Crashed(Exception):
    """An unexpected exception (a bug in the kit): one line saying what it was, where its
    traceback was saved (``path``, None if nothing could be written) and how to report it."""

    status = CRASH_STATUS

    def __init__(self, line: str, path):
        super().__init__(line)
        self.path = path


def crash_folder() -> Path:
    """Where crash reports go: ``$XDG_CACHE_HOME/kit/crashes``, else ``~/.cache/kit/crashes``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kit" / "crashes"


def save_crash(exc: BaseException, argv) -> Path | None:
    """Write ``exc``'s full traceback, with the kit's version, Python's, the platform and the
    arguments, to a new file in :func:`crash_folder` (else the system's temporary folder);
    returns its path, or None when neither can be written."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    text = (f"kit {__version__}\npython {sys.version.split()[0]} on {platform.platform()}\n"
            f"argv: {list(argv)!r}\ntime: {stamp}Z\n\n" + "".join(traceback.format_exception(exc)))
    for folder in (crash_folder(), Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=folder, prefix=f"kit-crash-{stamp}-", suffix=".txt")
            with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as f:
                f.write(text)
            return Path(name)
        except OSError:
            continue
    return None


def crashed(exc: BaseException, argv) -> Crashed:
    """The :class:`Crashed` of an unexpected exception, its traceback saved (:func:`save_crash`)."""
    path = save_crash(exc, argv)
    what = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")[:200]
    where = (f"the full traceback is in {path}" if path is not None
             else "no crash report could be written (cache and temporary folders refused it)")
    return Crashed(f"internal error ({what}): a bug in the kit, not in your input; {where}; "
                   "please report it with that file and the command (docs/cli-errors.md)", path)


def check_argv(argv) -> list[str]:
    """argv as a list of text: an argument the system passed as bytes that are not UTF-8 (a
    string with surrogate escapes), a NUL character or a non-string is an :class:`ArgError`
    naming its position."""
    out = []
    for i, a in enumerate(argv, 1):
        if not isinstance(a, str):
            raise ArgError(f"argument {i}: expected text, got {type(a).__name__} {a!r}")
        try:
            a.encode("utf-8")
        except UnicodeEncodeError:
            try:
                raw = os.fsencode(a)                 # the bytes the system passed
            except UnicodeEncodeError:
                raw = a.encode("utf-8", "backslashreplace")
            raise ArgError(f"argument {i}: not UTF-8 text ({raw[:60]!r}); the kit takes UTF-8 names and values") \
                from None
        if "\0" in a:
            raise ArgError(f"argument {i}: holds a NUL character")
        out.append(a)
    return out


def command_name(argv) -> str:
    """The subcommand argv names, or "" (for the prefix of a one-line error)."""
    return argv[0] if argv and isinstance(argv[0], str) and argv[0] in SUBCOMMANDS else ""


def call(args, argv=(), say=None) -> Outcome:
    """Run parsed arguments' command under the error rule: :class:`ArgError`, :class:`RunFailed`
    and :class:`HelpShown` pass; a :class:`~kit.errors.KvmError` (any ``KernelError``) becomes an
    :class:`ArgError`, another :class:`~kit.errors.KitError` (the modelled machine stopped) a
    :class:`RunFailed`,
    an ``OSError`` on a named file a :class:`RunFailed`, ``KeyboardInterrupt`` a
    :class:`RunFailed`; anything else a :class:`Crashed` with its traceback saved."""
    try:
        return args.command(args, say=say or _quiet)
    except (ArgError, RunFailed, HelpShown, Crashed):
        raise
    except KernelError as e:                # KVM or the host kernel failing the input with its errno
        raise ArgError(f"the model refused the input: {e}") from None
    except KitError as e:                   # the modelled machine stopped (an oops, a livelock, SIGBUS)
        raise RunFailed(f"the modelled machine stopped: {type(e).__name__}: {e}") from None
    except OSError as e:
        if e.filename is None or isinstance(e, TimeoutError):
            raise crashed(e, argv) from None
        raise RunFailed(f"{e.filename}: {e.strerror or e}") from None
    except KeyboardInterrupt:
        raise RunFailed("interrupted") from None
    except Exception as e:
        raise crashed(e, argv) from None


def dispatch(argv, *, say=None, raise_errors: bool = True) -> Outcome:
    """argv -> :func:`check_argv` -> the one parser -> :func:`call`. Raises :class:`ArgError`,
    :class:`RunFailed`, :class:`Crashed` (never another exception) or :class:`HelpShown`
    (``raise_errors``; else argparse exits as the command line does). When argv starts with a
    subcommand the parser holds only that one's arguments (:func:`build_parser`'s ``command``;
    what it parses is the same, and options before a subcommand get the whole parser)."""
    argv = list(argv)
    try:
        argv = check_argv(argv)
        args = build_parser(raise_errors, command_name(argv) or None).parse_args(argv)
    except (ArgError, HelpShown):
        raise
    except Exception as e:
        raise crashed(e, argv) from None
    return call(args, argv, say)


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


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (``%kit`` in a notebook, or a papermill run)."""
    shell = sys.modules.get("IPython")
    ip = shell.get_ipython() if shell is not None and hasattr(shell, "get_ipython") else None
    return getattr(ip, "kernel", None) is not None


def progress_bar(total, desc: str, *, unit: str = "it", quiet: bool = False):
    """A tqdm bar for work longer than a couple of seconds: a widget in a notebook
    (``tqdm.auto``), on stderr in a terminal (stdout stays the result's), and silent when stderr
    is not a terminal (a pipe, a log, a test) or with ``--quiet``."""
    if not quiet and in_notebook():
        from tqdm.auto import tqdm as auto
        return auto(total=total, desc=desc, unit=unit, leave=False)
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True,
                disable=quiet or not sys.stderr.isatty())


def show_progress(args) -> bool:
    """Whether a command's progress is shown at all (papermill's own bar, for ``kit run``)."""
    return not getattr(args, "quiet", False) and (in_notebook() or sys.stderr.isatty())


def text_table(rows: list[dict], cols: list[str]) -> str:
    """Rows as aligned text columns under a header line."""
    widths = {c: max([len(c), *(len(str(r.get(c, ""))) for r in rows)]) for c in cols}
    out = ["  ".join(c.ljust(widths[c]) for c in cols)]
    out += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(out)


# ------------------------------------------------------------------ demo, host-demo
def demo(args, say=_quiet) -> Outcome:
    """The main job: the directmap-policies notebook on the measured configurations, its
    report, and a short modelled-vs-measured table. The run folder (``directmap-policies/``
    beside the report) is written as ``kit run`` writes its own: whole or not at all
    (:func:`kit.lab.batch.run_checked`)."""
    try:
        policies = [p for p in args.policies.split(",") if p] if args.policies else None
        params = check(**({"policies": policies} if policies is not None else {}), steps=args.steps, seed=args.seed)
        out = writable_file(args.out, "out", suffix=".html")
        rundir = out.parent / "directmap-policies"
        writable_folder(rundir, "out")
        nb, params = prepare("directmap-policies", params)
    except ValueError as e:
        raise ArgError(str(e)) from None
    t0 = time.time()
    say(f"kit {__version__}: running notebooks/directmap-policies.ipynb "
        f"({'all policies' if policies is None else ', '.join(params['policies'])}, every measured configuration) ...")
    done = _pipeline(nb, params, rundir, 900, progress=show_progress(args))
    docs = done["results"]
    if not docs:
        raise RunFailed(f"{nb.name} recorded no result in {done['notebook']}")
    rows = [r for r in docs[-1]["results"]["policy_table"] if r["measured_gbps"] is not None]
    again = " ".join(["kit", "demo", *(["--policies", ",".join(params["policies"])] if policies is not None else []),
                      "--steps", str(args.steps), "--seed", str(args.seed), "--out", shlex.quote(str(args.out))])
    path = build_report([done["notebook"]], out, title="Direct-map policies on SEV-SNP hosts: modelled vs measured", command=again)
    lines = [text_table([{"configuration": r["config"], "policy": r["policy"],
                          "measured GB/s": f"{r['measured_gbps']:.2f}", "+-": f"{r['spread']:.2f}",
                          "model GB/s": f"{r['model_gbps']:.2f}", f"model band ({BAND_MEANING})": band_text(r.get("model_band_gbps")),
                          "error %": f"{r['error_pct']:+.1f}",
                          "within": "yes" if r["within"] else "NO"} for r in rows],
                        ["configuration", "policy", "measured GB/s", "+-", "model GB/s", f"model band ({BAND_MEANING})",
                         "error %", "within"]),
             (f"{sum(r['within'] for r in rows)}/{len(rows)} measured rows reproduced within their spread"
              if rows else f"no measured row for {', '.join(params['policies'])}: data/measurements.csv "
                           "measures other policies (the report has the model's figures)")
             + f"; {time.time() - t0:.0f} s",
             f"executed notebook: {done['notebook'].resolve()}",
             f"report: {path.resolve()}"]
    return Outcome(0, lines, path)


#: the columns of ``kit host-demo``'s table and report
HOST_DEMO_COLUMNS = ["policy", "DirectMap4k", "DirectMap2M", "DirectMap1G", "DirectMap4k_after_exit",
                     "splits", "collapses", "flush_tlb_all", "cpa_lock", "rmpupdate", "psmash", "host_write",
                     "state_mib", "wall_s"]


def host_demo_guest_mem() -> Param:
    """``kit host-demo --guest-mem``: the SNP guest's memory, 2M folios (whole 2MiB, not rounded);
    its default is the demo's (:mod:`.demo`, loaded with it). Also ``HOST_DEMO_GUEST_MEM``."""
    return Param("guest_mem", "size", PAGE_2M, HOST_MEM.max, multiple=PAGE_2M, unit="bytes",
                 default=host_demo_model.GUEST_MEM, help="SNP guest memory, on 2M folios",
                 why="the host's bound (kit.host.limits)")


def __getattr__(name: str):
    # HOST_DEMO_GUEST_MEM: built with the demo module (deferred loading, DEFERRED above)
    if name == "HOST_DEMO_GUEST_MEM":
        return host_demo_guest_mem()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def host_demo(args, say=_quiet) -> Outcome:
    """The host-model demonstration on every direct-map policy -> table and HTML report."""
    try:
        mem = HOST_MEM.check(args.mem, "mem")
        guest = host_demo_guest_mem().check(args.guest_mem, "guest_mem")
        HOST_CORES.check(args.cores, "cores")
        out = writable_file(args.out, "out")
        need = guest + host_demo_model.EXTRA_MEMORY
        if need > mem:
            raise ValueError(f"guest_mem: {args.guest_mem} plus the demo's {host_demo_model.SMALL_GUEST_MEM} guest "
                             f"and {host_demo_model.KERNEL_MEM} of kernel pages do not fit in mem {args.mem}")
    except (ValueError, TypeError) as e:
        raise ArgError(str(e)) from None
    t0 = time.time()
    say(f"kit {__version__}: host {args.mem}, {args.cores} cores; one SNP guest of {args.guest_mem} "
        f"on 2M folios, one of {host_demo_model.SMALL_GUEST_MEM} on 4K folios, host kernel writes to its own pages")
    policies = list(host_demo_model.DIRECTMAP_POLICIES)
    bar = progress_bar(len(policies), "host-demo", unit=" policies", quiet=args.quiet)
    rows = []
    try:
        for policy in policies:
            bar.set_postfix_str(policy)
            rows.append(host_demo_model.run_policy(policy, mem=args.mem, cores=args.cores,
                                                   guest_mem=args.guest_mem, seed=args.seed))
            bar.update(1)
    finally:
        bar.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    params = {"kit_version": __version__, "mem": args.mem, "cores": args.cores,
              "guest_mem": args.guest_mem, "seed": args.seed,
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0))}
    with open(out, "w") as f:
        f.write(host_demo_model.html_report(rows, HOST_DEMO_COLUMNS, params))
    return Outcome(0, [text_table(rows, HOST_DEMO_COLUMNS), f"report: {out.resolve()}"], rows)


# ------------------------------------------------------------------ simulate, calibrate
def simulate_args(args):
    """Keyword arguments for ``simulate`` and the cost parameters from parsed arguments;
    every argument checked (``ValueError`` naming it) before any work."""
    kw = dict(workload=args.workload, guests=args.guests, vcpus=args.vcpus, guest_mem=args.guest_mem,
              host_cores=args.host_cores, host_mem=args.host_mem, policy=args.policy,
              engine=args.engine, seed=args.seed, vmm=args.vmm)
    if args.guest:
        specs = []
        for g in args.guest:
            v, sep, m = g.partition(":")
            if not sep or not v.isascii() or not v.isdigit() or len(v) > 40:
                raise ValueError(f"--guest: expected VCPUS:MEM (e.g. 64:32GiB), got {g!r}")
            specs.append((parse_int(v, name="--guest"), m))
        kw["guest_specs"] = specs
    scenario(**kw)
    params = CostParams.load(args.params) if args.params is not None else CostParams.load()
    return kw, params


def simulate(args, say=_quiet) -> Outcome:
    """Time a workload on the model; the lines are its summary (or JSON)."""
    try:
        kw, params = simulate_args(args)
    except (ValueError, TypeError) as e:
        raise ArgError(str(e)) from None
    if kw["engine"] == "des":
        bar = progress_bar(100, "simulate (des)", unit="%", quiet=args.quiet)
        try:
            r = run_simulation(**kw, params=params, progress=lambda f: bar.update(round(100 * f) - bar.n))
        finally:
            bar.close()
    else:
        r = run_simulation(**kw, params=params)
    if args.json:
        out = r.to_json()
        if not args.series:
            out.pop("series", None)
        lines = [json.dumps(out, sort_keys=True)]
    else:
        busy = "utilisation (busy share of simulated time)"
        lines = [scenario_line(r.scenario),
                 text_table([{"what": k, "value": v} for k, v in r.summary().items()], ["what", "value"]),
                 text_table([{"resource": k, busy: f"{v:.3f}"} for k, v in
                             sorted(r.utilisation.items(), key=lambda kv: -kv[1])], ["resource", busy]),
                 time_table(r)]
    return Outcome(0, lines, r, display=True)


def scenario_line(s) -> str:
    """A scenario in one line: guests x vCPUs x memory, host, policy, engine, workload (sizes
    in binary units: :data:`kit.units.SIZE_UNITS`)."""
    guests = (" + ".join(f"1 x {v} vCPUs x {format_size(m)}" for v, m in s.specs) if s.mixed
              else f"{s.guests} guest{'s' if s.guests != 1 else ''} x {s.vcpus} vCPUs x {format_size(s.guest_mem)}")
    return (f"simulated {s.workload}: {guests} on a host of {s.host_cores} cores / {format_size(s.host_mem)}, "
            f"direct-map policy {s.policy}, {s.engine} engine, seed {s.seed}"
            + (f", VMM {s.vmm}" if s.vmm != "default" else ""))


def _counted_evaluator(targets, bar):
    """The calibration's evaluator (:class:`kit.sim.calibrate.Evaluator`, loaded with the
    calibration), moving a progress bar at each evaluation of the model."""

    class _CountedEvaluator(calibration.Evaluator):
        def predict(self, params, rows=None):
            bar.update(1)
            return super().predict(params, rows)
    return _CountedEvaluator(targets)


def time_table(r) -> str:
    """Where one vCPU's time per unit of work goes (:attr:`kit.sim.SimResult.time_per_chunk`),
    largest first, in microseconds and as a share of the total."""
    total = sum(r.time_per_chunk.values()) or 1.0
    us, share = f"us per {r.unit}", "share %"
    rows = [{"part": k, us: f"{v:,.1f}", share: f"{100 * v / total:.1f}"}
            for k, v in sorted(r.time_per_chunk.items(), key=lambda kv: -kv[1]) if v > 0]
    return text_table(rows, ["part", us, share])


def calibrate(args, say=_quiet) -> Outcome:
    """Fit the free cost parameters to the measurements (``--data``, checked first: one line
    naming the file, row and column of a bad cell); status 1 unless every measured row is
    within its spread. The fitted set is written only where asked: ``-o FILE``, or ``--write``
    for the kit's own ``data/cost_params.json``."""
    try:
        base = CostParams.load(args.start) if args.start is not None else CostParams()
        data = Path(args.data) if args.data else calibration.MEASUREMENTS
        check_measurements(data)
        if args.write and args.out:
            raise ValueError("--write and -o/--out: give one (--write is -o data/cost_params.json)")
        if args.out is not None:
            writable_file(args.out, "out")
        if args.residuals is not None:
            writable_file(args.residuals, "residuals")
    except (ValueError, OSError) as e:
        raise ArgError(str(e)) from None
    out = str(DEFAULT_PATH) if args.write else args.out
    targets = load_measurements(data)
    bar = progress_bar(None, "calibrate: model evaluations", unit=" evaluations", quiet=args.quiet)
    try:
        fitted, rows, info = fit(base, targets=targets, evaluator=_counted_evaluator(targets, bar))
    finally:
        bar.close()
    ev = calibration.Evaluator(targets)
    lines = [text_table(rows, ["config", "measured", "spread", "model", "error_pct", "residual", "within"]),
             f"free parameters: {info['free_parameters']} ({', '.join(info['names'])}); "
             f"{info['measured_configurations']} measured configurations of {data}; {info['status']}",
             "fitted: " + ", ".join(f"{n}={fitted[n]:.4g}" for n in info["names"])]
    # leave-one-out first: the set is written with the model error it finds (every band carries it)
    loo, li = leave_one_out(base, targets=targets, evaluator=ev)
    fitted, capped = calibration.with_model_error(fitted, li)
    if fitted.model_error > 0 or capped:
        lines.append(f"model error recorded with the set: {100 * fitted.model_error:g}% of a rate (1 sd, from the "
                     "leave-one-out below" + (f"; capped: the estimate is {li['extra_pct']:g}%" if capped else "")
                     + f"), added to the fit's uncertainty in every rate's band ({BAND_MEANING})")
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        fitted.save(out)
        lines.append(f"parameter set: {os.path.abspath(out)}")
    else:
        lines.append("parameter set: not written (-o FILE writes it; --write replaces data/cost_params.json)")
    if args.residuals is not None:
        Path(args.residuals).parent.mkdir(parents=True, exist_ok=True)
        with open(args.residuals, "w") as f:
            json.dump({"rows": rows, "info": info, "params": fitted.to_json()}, f, indent=1)
        lines.append(f"residual table: {os.path.abspath(args.residuals)}")
    lines += _error_bars(fitted, info, targets, ev, loo, li)
    return Outcome(0 if all(r["within"] for r in rows) else 1, lines, fitted)


def _error_bars(fitted, info, targets, ev, loo, li) -> list[str]:
    """``kit calibrate``'s honest part: the parameters' uncertainty, leave-one-out (``loo``,
    ``li``: :func:`kit.sim.calibrate.leave_one_out`), the sensitivities and the validation
    rows (docs/sim-model.md, "Error bars and validation")."""
    names = info["names"]
    lines = ["parameter uncertainty (1 sd, from the fit's Jacobian): " + ", ".join(
        f"{n} {fitted[n]:.4g} (x{math.exp(-info['log_sd'][n]):.2f} to x{math.exp(info['log_sd'][n]):.2f})"
        for n in names)
        + (f"; undetermined by the rows: {', '.join(info['undetermined'])}" if info["undetermined"] else "")]
    lines += [f"leave-one-out: each row predicted by a fit of the other {li['rows'] - 1} ({li['fits']} fits, "
              f"{li['seconds']:.1f} s):",
              text_table([{**r, "within": "yes" if r["within"] else "NO",
                           "band": band_text(r["band"]), "overlaps": "yes" if r["overlaps"] else "NO"} for r in loo],
                         ["config", "measured", "spread", "predicted", "band", "error_pct", "residual", "within",
                          "overlaps", "z", "p_within", "undetermined"]),
              f"leave-one-out: {li['within']}/{li['rows']} rows within their spread; {li['overlaps']}/{li['rows']} "
              "within their spread of the prediction's band (from the left-out fit's covariance, "
              "fit only, 1 sd; a weaker test); the left-out fits' "
              "jackknife 1 sd: " + ", ".join(f"{n} x{math.exp(v):.2f}" for n, v in li["jackknife_log_sd"].items()),
              loo_chance_text(li)]
    sens = sensitivities(fitted, ev)
    lines += ["sensitivity of each row's rate, d ln(rate) / d ln(param), fitted parameters:",
              text_table(sens["rows"], ["config", *names]),
              "other parameters, largest |d ln(rate) / d ln(param)| over the rows: " + ", ".join(
                  f"{n} ({sens['kinds'][n]}) {sens['max_abs'][n]:g}" for n in sens["names"] if n not in names),
              "counts and switches, the rows' rate change at the next whole value: " + ", ".join(
                  f"{n} {c['from']:g} -> {c['to']:g} {c['unit']} {100 * min(c['change']):+.1f}% to "
                  f"{100 * max(c['change']):+.1f}%" for n, c in sens["counts"].items())]
    val = validate(fitted)
    lines += ["validation rows (data/validation.csv, never fitted):",
              text_table([{**r, "allowed": f"{r['low']:g} - {r['high']:g}",
                           "measured": "" if r["measured"] is None else f"{r['measured']:g}",
                           "model": "" if r["model"] is None else f"{r['model']:g}"} for r in val],
                         ["id", "config", "measured", "allowed", "model", "status"]),
              f"validation: {sum(r['within'] for r in val)}/{len(val)} rows within"]
    h = calibration.HELD_BACK
    lines.append(f"held back ({h['guests']} x {h['vcpus']} vCPUs x {h['guest_mem_gib']} GiB, measured, not fitted), "
                 f"predicted with its band ({BAND_MEANING}): " + ", ".join(
                     f"{r['policy']} {rate_text(r['model_gbps'], r['model_band_gbps'])}" for r in held_back(fitted)))
    return lines


# ------------------------------------------------------------------ report, run, sweep
def report(args, say=_quiet) -> Outcome:
    """One self-contained HTML report from recorded results."""
    try:
        writable_file(args.out, "out")
        path = build_report(args.results, args.out, title=args.title)
    except (ValueError, OSError) as e:
        raise ArgError(str(e)) from None
    return Outcome(0, [f"report: {path.resolve()}"], path)


def _pipeline(nb, params: dict, out, timeout: int, progress: bool = False) -> dict:
    """:func:`kit.lab.batch.run_checked` with its failures as the commands report them: an
    output folder refused before a kernel starts is an :class:`ArgError`; a cell that raised,
    timed out, or a kernel that died or does not exist is a :class:`RunFailed` naming the
    notebook (the executed notebook and the failure are kept: docs/lab.md)."""
    # papermill's and nbclient's error classes: loaded with the run itself (about a second)
    import papermill
    from jupyter_client.kernelspec import NoSuchKernel
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    notes = lambda e: "".join(f"; {n}" for n in getattr(e, "__notes__", []))   # noqa: E731
    try:
        return run_checked(nb, params, out, timeout=timeout, progress=progress)
    except ValueError as e:                 # the output folder, refused before a kernel starts
        raise ArgError(str(e)) from None
    except papermill.PapermillExecutionError as e:
        raise RunFailed(f"{nb.name} failed in cell {e.exec_count}: {e.ename}: {e.evalue}" + notes(e)) from None
    except CellTimeoutError as e:
        raise RunFailed(f"{nb.name}: a cell ran longer than {timeout} s (--timeout)" + notes(e)) from None
    except DeadKernelError as e:
        raise RunFailed(f"{nb.name}: the kernel died ({str(e).splitlines()[0] if str(e) else 'no reason given'})"
                        + notes(e)) from None
    except NoSuchKernel as e:
        raise ArgError(f"notebook: {nb.name} needs the kernel {e.name!r}, which is not installed") from None


def run(args, say=_quiet) -> Outcome:
    """``kit run NOTEBOOK [-p NAME VALUE]... [-o OUTDIR]``: the pipeline once (inspect, check,
    execute, record and report)."""
    try:
        if args.out is not None:
            writable_folder(args.out, "out")
        nb = inspect(args.notebook)
        nb, params = prepare(nb, parse_pairs(nb, args.param))
    except ValueError as e:
        raise ArgError(str(e)) from None
    out = _pipeline(nb, params, args.out, args.timeout, progress=show_progress(args))
    lines = [f"executed notebook: {out['notebook'].resolve()}"]
    lines += [f"result: {doc.get('name')} ({len(json.dumps(doc))} bytes)" for doc in out["results"]]
    if out["report"]:
        lines.append(f"report: {out['report'].resolve()}")
    return Outcome(0, lines, out)


#: the columns of ``kit params``
PARAMS_COLUMNS = ["name", "type", "default", "allowed", "help"]


def params(args, say=_quiet) -> Outcome:
    """``kit params NOTEBOOK``: the notebook's parameters with their types, defaults, allowed
    values (the rule each is checked by) and help."""
    try:
        nb = inspect(args.notebook)
    except ValueError as e:
        raise ArgError(str(e)) from None
    rows = parameter_rows(nb, lambda name, notebook: _rule(name, notebook if notebook in lab_rules.NOTEBOOKS else None))
    if args.json:
        return Outcome(0, [json.dumps(rows)], rows)
    return Outcome(0, [f"{nb.name} ({nb.path.name}): {len(rows)} parameters; lists: {lab_parameters.LIST_SYNTAX}",
                       text_table(rows, PARAMS_COLUMNS)], rows)


def sweep(args, say=_quiet) -> Outcome:
    """``kit sweep NOTEBOOK --grid NAME=V1,V2 ... [--seeds N] [-o OUTDIR] [--scheduler ADDR]
    [--workers N]``: every combination as one run; status 1 if any run failed."""
    try:
        writable_folder(args.out, "out")
        df = run_sweep(args.notebook, args.grid, seeds=args.seeds, outdir=args.out, scheduler=args.scheduler,
                       workers=args.workers, timeout=args.timeout, yes=args.yes)
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
        if not isinstance(text, str) or not text.isascii():     # int() and float() read other scripts' digits
            raise ValueError
        value = parse_int(text) if kind is int else float(text)
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
            lines.append(text_table(traces.step_rows(ex), traces.STEP_COLUMNS))
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
def terminal_columns() -> int:
    """The terminal's width as ``shutil.get_terminal_size`` reads it (``COLUMNS``, else the
    terminal of standard output, else 80), without loading ``shutil`` and the compression
    modules it brings at every start."""
    try:
        cols = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        cols = 0
    if cols <= 0:
        try:
            cols = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            cols = 0
    return cols if cols > 0 else 80


class DefaultsHelp(argparse.HelpFormatter):
    """Help that shows every option's default (unless its help already says it)."""

    def __init__(self, prog, indent_increment=2, max_help_position=24, width=None):
        super().__init__(prog, indent_increment, max_help_position,
                         terminal_columns() - 2 if width is None else width)

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("default" in text or default in (None, False, [], argparse.SUPPRESS)
                or action.option_strings == [] or isinstance(action, argparse._VersionAction)):
            return text
        return f"{text} (default {default})" if text else f"default {default}"


_NAMED = re.compile(r"^argument ([^:\s]+): (?=[A-Za-z_][\w-]*: )")


class Parser(argparse.ArgumentParser):
    """One line for a bad argument and exit status 2, or :class:`ArgError` with
    ``raise_errors`` (``%kit``: a kernel must not exit)."""

    def __init__(self, *args, raise_errors: bool = False, **kw):
        kw.setdefault("formatter_class", DefaultsHelp)
        super().__init__(*args, **kw)
        self.raise_errors = raise_errors

    def error(self, message):
        # "argument --cores: cores: expected ..." (the value's own message names it) ->
        # "cores: expected ... (option --cores)"
        m = _NAMED.match(message)
        if m:
            message = f"{message[m.end():]} (option {m.group(1)})"
        if self.raise_errors:
            raise ArgError(message)
        self.exit(2, f"{self.prog}: {message}\n")

    def exit(self, status=0, message=None):
        if self.raise_errors and status == 0 and not message:
            raise HelpShown()
        super().exit(status, message)


def int_option(param: Param, name: str | None = None):
    """The argparse ``type`` of every integer option: ASCII digits only (:func:`kit.units.parse_int`;
    argparse's ``int`` would take '١٢'), then ``param``'s bounds; a bad value is one line."""
    name = name or param.name

    def integer(text):
        try:
            return param.check(parse_int(text, name=name), name)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return integer


def build_parser(raise_errors: bool = False, command: str | None = None) -> argparse.ArgumentParser:
    """The ``kit`` argument parser; each subcommand's ``command`` default is its function here.
    ``command``: the subcommand the arguments name (:func:`dispatch` looks first), whose
    arguments are then the only ones that need their modules: ``demo``'s, ``host-demo``'s,
    ``run``'s, ``sweep``'s and ``explore``'s arguments (bounds, defaults and help from
    :mod:`.validate`, :mod:`.demo`, :mod:`.parameters` and :mod:`kit.explore.catalog`) are added
    only when ``command`` is theirs or None (docs/architecture.md, "Deferred loading"); so is
    every other subcommand (argparse makes a help formatter for each argument it adds)."""
    p = Parser(prog="kit", description="confidential-VM memory research kit", raise_errors=raise_errors)
    p.add_argument("--version", action="version", version=f"kit {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)

    def add(name, **kw):
        return sub.add_parser(name, raise_errors=raise_errors, **kw)

    def quiet(parser) -> None:
        parser.add_argument("-q", "--quiet", action="store_true",
                            help="no progress bar (it is shown on stderr only when that is a terminal)")

    if command in (None, "demo"):
        d = add("demo", help="the main job: directmap-policies on the measured configurations -> HTML report")
        d.add_argument("--policies", default=None, help="comma-separated direct-map policies (default: all)")
        d.add_argument("--steps", type=int_option(lab_rules.RULES["steps"]), default=2000,
                       help="conversions in the fragmentation workload")
        d.add_argument("--seed", type=int_option(lab_rules.RULES["seed"]), default=0,
                       help="seed of every random choice")
        d.add_argument("--out", default="reports/index.html", help="HTML report path")
        quiet(d)
        d.set_defaults(command=demo)
    if command in (None, "host-demo"):
        h = add("host-demo", help="the host-model demonstration on every direct-map policy (no timing)",
                epilog=SIZE_UNITS[0].upper() + SIZE_UNITS[1:] + ".")
        h.add_argument("--mem", default=host_demo_model.HOST_MEM, help="host memory, a size (e.g. 1.5TiB)")
        h.add_argument("--cores", type=int_option(HOST_CORES), default=host_demo_model.HOST_CORES,
                       help="host cores")
        h.add_argument("--guest-mem", dest="guest_mem", default=host_demo_model.GUEST_MEM,
                       help="SNP guest memory, a size (e.g. 160GiB)")
        h.add_argument("--seed", type=int_option(HOST_SEED), default=0, help="seed of every random choice")
        h.add_argument("--out", default="reports/host-demo.html", help="HTML report path")
        quiet(h)
        h.set_defaults(command=host_demo)
    if command in (None, "simulate"):
        m = add("simulate", help="time a workload on the model (fault-in rate, where the time goes)",
                description="Time a workload on the model. With no option: the default scenario, said in the "
                            "first line of the output.",
                epilog=SIZE_UNITS[0].upper() + SIZE_UNITS[1:] + ".")
        # defaults, bounds, units and help: the scenario table (kit.sim.scenario.SCENARIO_PARAMS)
        for name in ("workload", "guests", "vcpus", "guest_mem", "host_cores", "host_mem", "policy", "engine", "seed",
                     "vmm"):
            sp = SCENARIO_PARAMS[name]
            m.add_argument("--" + name.replace("_", "-"), dest=name, default=sp.default, help=sp.describe(),
                           **({"type": int_option(sp)} if sp.kind == "int" else {}))
            if name == "vcpus":
                m.add_argument("--guest", action="append", default=[], metavar="VCPUS:MEM",
                               help="one guest of its own size (repeat for guests of different sizes; "
                                    "replaces --guests/--vcpus/--guest-mem)")
        m.add_argument("--params", default=None, help="cost-parameter file (default data/cost_params.json)")
        m.add_argument("--json", action="store_true", help="one JSON object instead of tables")
        m.add_argument("--series", action="store_true", help="with --json: include the time series")
        quiet(m)
        m.set_defaults(command=simulate)
    if command in (None, "calibrate"):
        c = add("calibrate", help="fit the free cost parameters to data/measurements.csv (or --data FILE)",
                description="Fit the free cost parameters to measured fault-in rates and print the residuals. "
                            "The fitted set is written only where asked (-o FILE, or --write).",
                epilog="The measurements' CSV schema: docs/data.md.")
        c.add_argument("--data", default=None, metavar="FILE",
                       help="your own measurements, a CSV file of the schema in docs/data.md (default data/measurements.csv)")
        c.add_argument("--start", default=None, help="parameter file to start from (default: the base set)")
        c.add_argument("-o", "--out", default=None, help="write the fitted set to this file (default: not written)")
        c.add_argument("--write", action="store_true", help="replace the kit's own data/cost_params.json with the fitted set")
        c.add_argument("--residuals", default=None, help="also write the residual table as JSON here")
        quiet(c)
        c.set_defaults(command=calibrate)
    if command in (None, "report"):
        r = add("report", help="one self-contained HTML report from recorded results")
        r.add_argument("results", nargs="+", help="result files (*.json), executed notebooks or folders; "
                       "two results: also side by side with their differences highlighted (policy A vs B, "
                       "before vs after a change)")
        r.add_argument("-o", "--out", required=True, help="the HTML file to write")
        r.add_argument("--title", default="cvm-memkit report", help="the report's title")
        r.set_defaults(command=report)
    if command in (None, "run"):
        n = add("run", help="run one notebook (parameters checked first) -> executed notebook, result, report")
        n.add_argument("notebook", help="a notebook in notebooks/ (e.g. directmap-policies) or a path")
        n.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                       help=f"a parameter (repeat; kit params NOTEBOOK lists them); {lab_parameters.LIST_SYNTAX}")
        n.add_argument("-o", "--out", default=None, help="output folder (default runs/NOTEBOOK)")
        n.add_argument("--timeout", type=int_option(CELL_TIMEOUT), default=900, help=CELL_TIMEOUT.describe())
        quiet(n)
        n.set_defaults(command=run)
    if command in (None, "params"):
        q = add("params", help="a notebook's parameters: types, defaults, allowed values and help")
        q.add_argument("notebook", help="a notebook in notebooks/ (e.g. directmap-policies) or a path")
        q.add_argument("--json", action="store_true", help="a JSON list of rows instead of a table")
        q.set_defaults(command=params)
    if command in (None, "sweep"):
        w = add("sweep", help="every combination of a grid as one run each, on dask.distributed")
        w.add_argument("notebook", help="a notebook in notebooks/ (e.g. lazy-acceptance-scaling) or a path")
        w.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2,...",
                       help=f"one axis of the grid (repeat); {lab_parameters.LIST_SYNTAX}")
        w.add_argument("--seeds", type=int_option(SWEEP_SEEDS), default=None,
                       help="also run each combination with seed 0..N-1")
        w.add_argument("-o", "--out", default="sweeps", help="result store and outputs (default sweeps/)")
        w.add_argument("--scheduler", default=None, help="an existing dask scheduler (tcp://HOST:PORT)")
        w.add_argument("--workers", type=int_option(SWEEP_WORKERS), default=2, help=SWEEP_WORKERS.describe())
        w.add_argument("--timeout", type=int_option(CELL_TIMEOUT), default=900, help=CELL_TIMEOUT.describe())
        w.add_argument("--yes", action="store_true",
                       help=f"run a grid of more than {SWEEP_CONFIRM.max} runs (docs/lab.md, Bounds)")
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
SUBCOMMANDS = ("demo", "host-demo", "simulate", "calibrate", "report", "run", "params", "sweep", "explore")
