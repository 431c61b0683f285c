"""Hostile and careless command lines, each run as its own ``kit`` process, counted.

A fixed table of the inputs of issue 15 ("Hostile and unlucky input": output paths, parameter
names that collide with the pipeline, policies without measurements, malformed cost-parameter
files, sizes past their bounds, malformed or missing notebooks, a scheduler that does not
answer, argv that is not UTF-8, other scripts' digits, part units, large sweeps), then a sample
of the fuzzer's families (tests/hostile.py: subcommands, options and hostile values). Each runs
as ``python -m kit ARGS`` in a scratch folder (its own home, cache and temporary folder), the
real work included. Printed: inputs tried, clean rejections (status 2, one line), successful
runs (status 0), failed runs (status 1, one line), tracebacks (a traceback or an internal
error on stderr, or more than a few lines), runs lost (killed, or past the time limit), and
each traceback's input.

Run: python benchmarks/hostile_cli.py [--sample 60] [--seed 0] [--jobs 2] [--timeout 300] [--kit TREE]
"""
from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.hostile import (CLI_GRIDS, CLI_JUNK, CLI_NOTEBOOKS, CLI_PARAMS, CLI_PATHS, NOT_UTF8,  # noqa: E402
                           cli_fixtures, cli_value)

PROBE_GRID_99 = "x=" + ",".join(map(str, range(99)))

#: the issue's inputs (section 4 and the bounds of section 3), as argv lists
TABLE = [
    # output paths: a folder, below a file, missing folders, empty, where nobody can write
    ["demo", "--out", "FOLDER.html"], ["demo", "--out", ""], ["demo", "--out", "FILE/sub/index.html"],
    ["host-demo", "--out", "FOLDER", "--mem", "8GiB", "--guest-mem", "4GiB"],
    ["host-demo", "--out", "", "--mem", "8GiB", "--guest-mem", "4GiB"],
    ["host-demo", "--out", "/proc/kit-hostile.html", "--mem", "8GiB", "--guest-mem", "4GiB"],
    ["host-demo", "--out", "missing/sub/r.html", "--mem", "8GiB", "--guest-mem", "4GiB", "--cores", "8"],
    ["calibrate", "-o", "FOLDER"], ["calibrate", "-o", "fit.json", "--residuals", "FOLDER"], ["calibrate", "-o", ""],
    ["report", "FILE", "-o", "FOLDER"], ["report", "FILE", "-o", ""],
    ["run", "probe.ipynb", "-o", "FILE"], ["run", "probe.ipynb", "-o", ""],
    ["sweep", "probe.ipynb", "--grid", "x=1", "-o", "FILE"],
    # parameter names that collide with the pipeline's keywords
    ["run", "probe.ipynb", "-p", "outdir", "X"], ["run", "probe.ipynb", "-p", "timeout", "5"],
    # policies without measurements
    ["demo", "--policies", "none", "--steps", "10", "--out", "d1/index.html"],
    ["demo", "--policies", "invalidate-4k-flush", "--steps", "10", "--out", "d2/index.html"],
    ["demo", "--policies", "split-on-demand-collapse", "--steps", "10", "--out", "d3/index.html"],
    # cost-parameter files
    *[["simulate", "--params", f] for f in ("p_str.json", "p_nan.json", "p_zero.json", "p_neg.json",
                                             "p_missing.json", "FOLDER", "nonkit.json", "notutf8.json",
                                             "empty.json", "bad.ipynb", "gone.json", "")],
    ["calibrate", "--start", "p_str.json", "-o", "fit.json"], ["calibrate", "--start", "nonkit.json", "-o", "fit.json"],
    # sizes and counts past their bounds, part units
    ["simulate", "--guest-mem", "8TiB", "--host-mem", "9TiB"], ["simulate", "--host-mem", "1024TiB"],
    ["simulate", "--vcpus", "10000000"], ["simulate", "--host-cores", "10000000"], ["simulate", "--guests", "10000000"],
    ["host-demo", "--mem", "65536TiB"], ["host-demo", "--cores", "10000000"],
    ["host-demo", "--guest-mem", "3.5MiB", "--mem", "64GiB"],
    ["run", "tour", "-p", "host_mem", "1024TiB"],
    # notebooks, schedulers, argv
    ["run", "bad.ipynb"], ["run", "dir.ipynb"], ["run", "missing.ipynb"], ["sweep", "bad.ipynb", "--grid", "x=1"],
    ["sweep", "probe.ipynb", "--grid", "x=1", "-o", "s1", "--scheduler", "tcp://127.0.0.1:1"],
    ["sweep", "probe.ipynb", "--grid", "x=1", "-o", "s1", "--scheduler", "nonsense"],
    ["simulate", "--policy", NOT_UTF8], ["run", NOT_UTF8 + ".ipynb"],
    ["simulate", "--vcpus", "١٢"], ["host-demo", "--cores", "١٢"], ["demo", "--steps", "１２"],
    ["sweep", "probe.ipynb", "--grid", "x=1", "--workers", "٢"],
    # sweeps
    ["sweep", "probe.ipynb", "--grid", PROBE_GRID_99, "-o", "s2"],
    ["sweep", "probe.ipynb", "--grid", "x=1", "--workers", "10000000", "-o", "s3"],
    ["sweep", "probe.ipynb", "--grid", "x=1,1,01", "-o", "s4", "--workers", "1"],
    # parameter values that must never become code
    ["run", "probe.ipynb", "-p", "text", "('\", __import__(\"os\").system(\"exit 3\"), \"',)"],
    ["sweep", "probe.ipynb", "--grid", "text=('\",)", "-o", "s5"],
]


def sample(n: int, seed: int) -> list[list[str]]:
    """``n`` command lines drawn from the fuzzer's families (no ``--scheduler``: each waits 5 s)."""
    from kit.lab.commands import SUBCOMMANDS, build_parser
    rng = random.Random(seed)
    p = build_parser(raise_errors=True)
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    out = []
    for _ in range(n):
        cmd = rng.choice(SUBCOMMANDS)
        sp = sub.choices[cmd]
        argv = [cmd]
        if cmd in ("run", "sweep"):
            argv.append(rng.choice(CLI_NOTEBOOKS))
        elif cmd == "report":
            argv.append(rng.choice(CLI_PATHS))
        elif cmd == "explore":
            argv.append(rng.choice(("host-write-vs-conversion", "mirror-setup", "x")))
        opts = [a for a in sp._actions if a.option_strings and a.dest not in ("help", "scheduler")]
        for a in rng.sample(opts, k=min(len(opts), rng.randint(0, 3))):
            opt = a.option_strings[-1]
            argv.append(opt)
            if opt == "--param":
                argv += list(rng.choice(CLI_PARAMS))
            elif opt == "--grid":
                argv.append(rng.choice(CLI_GRIDS))
            elif a.nargs != 0:
                argv.append(cli_value(opt, rng.choice))
        if cmd == "host-demo" and "--mem" not in argv:      # not the default 1.5 TiB host: minutes a policy
            argv += ["--mem", "16GiB"] + (["--guest-mem", "4GiB"] if "--guest-mem" not in argv else [])
        if cmd in ("demo", "host-demo", "report", "calibrate") and "--out" not in argv and "-o" not in argv:
            argv += ["--out", f"o{len(out)}" + (".json" if cmd == "calibrate" else ".html")]
        if rng.random() < 0.1:
            argv.insert(rng.randint(1, len(argv)), rng.choice(CLI_JUNK))
        out.append(argv)
    return out


def run_one(argv: list[str], work: Path, env: dict, timeout: int) -> dict:
    t = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-m", "kit", *[os.fsencode(a) for a in argv]], cwd=work, env=env,
                           capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"argv": argv, "kind": "lost", "why": f"past {timeout} s", "s": time.perf_counter() - t}
    err = p.stderr.decode("utf-8", "backslashreplace")
    lines = [ln for ln in err.replace("\r", "\n").split("\n") if ln.strip() and "|" not in ln]
    if p.returncode < 0:
        kind, why = "lost", f"killed by signal {-p.returncode}"
    elif "Traceback" in err or "internal error" in err or p.returncode not in (0, 1, 2) or len(lines) > 4:
        kind, why = "traceback", (lines[-1] if lines else f"status {p.returncode}")
    else:
        kind, why = {0: "ok", 1: "failed", 2: "rejected"}[p.returncode], (lines[-1] if lines else "")
    return {"argv": argv, "kind": kind, "why": why[:200], "s": time.perf_counter() - t}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sample", type=int, default=60, help="command lines drawn from the fuzzer's families")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=int, default=300, help="seconds per command line")
    ap.add_argument("--kit", default=str(ROOT), help="the source tree whose kit runs (e.g. an earlier version's)")
    a = ap.parse_args()
    inputs = TABLE + sample(a.sample, a.seed)
    with tempfile.TemporaryDirectory(prefix="kit-hostile-") as d:
        work, home = Path(d) / "work", Path(d) / "home"
        work.mkdir()
        (home / "tmp").mkdir(parents=True)
        cli_fixtures(work)
        env = {**os.environ, "PYTHONPATH": str(Path(a.kit).resolve()), "HOME": str(home),
               "XDG_CACHE_HOME": str(home / "cache"), "TMPDIR": str(home / "tmp")}
        t0 = time.perf_counter()
        with ThreadPoolExecutor(a.jobs) as pool:
            results = list(pool.map(lambda argv: run_one(argv, work, env, a.timeout), inputs))
        wall = time.perf_counter() - t0
    count = {k: sum(r["kind"] == k for r in results) for k in ("rejected", "ok", "failed", "traceback", "lost")}
    print(f"inputs tried:      {len(results)} ({len(TABLE)} from the issue's table, {a.sample} from the fuzzer's "
          f"families, seed {a.seed})")
    print(f"clean rejections:  {count['rejected']} (status 2, one line)")
    print(f"successful runs:   {count['ok']} (status 0)")
    print(f"failed runs:       {count['failed']} (status 1, one line)")
    print(f"tracebacks:        {count['traceback']}")
    print(f"runs lost:         {count['lost']}")
    print(f"wall time:         {wall:.0f} s ({a.jobs} at a time)")
    for r in results:
        if r["kind"] in ("traceback", "lost"):
            print(f"  {r['kind']}: kit {' '.join(map(repr, r['argv']))}: {r['why']}")


if __name__ == "__main__":
    main()
