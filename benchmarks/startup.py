"""Start-up: ``kit simulate`` (analytic engine) as a whole process, beside ``import numpy``.

Both commands run in turn (A B A B ...) with the same interpreter, after one warm-up each;
for every pair the ratio kit/numpy is taken, and the medians are printed: wall time
(``time.perf_counter`` around the child) and CPU time of the child (user + system,
from ``os.wait4``; steadier than wall time on a shared machine). Target: kit simulate within
1.5x of ``python -c "import numpy"``. The kit's bytecode is compiled in the warm-up into a
temporary cache (``PYTHONPYCACHEPREFIX``), as an installed package has it: without it every
run would compile the kit's sources and time the compiler.

``--command`` times another command line of the kit instead of ``simulate`` (e.g.
``--command "simulate --engine analytic --guests 8"``); ``--modules`` also prints what each
top-level package adds to ``import kit.cli`` (``python -X importtime``).

Run: python benchmarks/startup.py [-n 15] [--command "simulate"] [--modules]
"""
from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_once(argv: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, child CPU seconds) of one run of ``argv``, its output discarded."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"{shlex.join(argv)} exited with status {p.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


def paired(a: list[str], b: list[str], runs: int, env: dict) -> dict:
    """Medians of A, B and of the pairwise ratios A/B, wall and CPU."""
    run_once(a, env)
    run_once(b, env)
    rows = []
    for _ in range(runs):
        rows.append(run_once(a, env) + run_once(b, env))
    wa, ca, wb, cb = (list(col) for col in zip(*rows))
    med = statistics.median
    return {"a_wall": med(wa), "a_cpu": med(ca), "b_wall": med(wb), "b_cpu": med(cb),
            "wall_ratio": med(x / y for x, y in zip(wa, wb)), "cpu_ratio": med(x / y for x, y in zip(ca, cb))}


def modules(env: dict, command: list[str]) -> list[tuple[str, int]]:
    """Microseconds each top-level package (``kit.*`` by subpackage) adds, from -X importtime."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "kit", *command], env=env,
                         capture_output=True, text=True).stderr
    own: dict[str, int] = {}
    for line in out.splitlines():
        fields = line.removeprefix("import time:").split("|")
        if not line.startswith("import time:") or len(fields) != 3 or not fields[0].strip().isdigit():
            continue
        parts = fields[2].strip().split(".")
        key = ".".join(parts[:2]) if parts[0] == "kit" else parts[0]
        own[key] = own.get(key, 0) + int(fields[0])
    return sorted(own.items(), key=lambda kv: -kv[1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--runs", type=int, default=15, help="counted pairs (default 15)")
    ap.add_argument("--command", default="simulate", help="the kit command line to time (default: simulate)")
    ap.add_argument("--modules", action="store_true", help="also print import time by package")
    a = ap.parse_args()
    cache = tempfile.TemporaryDirectory(prefix="kit-bytecode-")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
               PYTHONPYCACHEPREFIX=cache.name)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    command = shlex.split(a.command)
    kit = [sys.executable, "-m", "kit", *command]
    numpy = [sys.executable, "-c", "import numpy"]
    bare = [sys.executable, "-c", "pass"]
    r = paired(kit, numpy, a.runs, env)
    z = paired(bare, numpy, max(3, a.runs // 3), env)
    print(f"kit {a.command} vs python -c 'import numpy', {a.runs} pairs, medians")
    print(f"  wall: kit {r['a_wall'] * 1e3:.0f} ms, numpy {r['b_wall'] * 1e3:.0f} ms, "
          f"ratio {r['wall_ratio']:.2f} (target <= 1.5: {'met' if r['wall_ratio'] <= 1.5 else 'MISSED'})")
    print(f"  cpu:  kit {r['a_cpu'] * 1e3:.0f} ms, numpy {r['b_cpu'] * 1e3:.0f} ms, "
          f"ratio {r['cpu_ratio']:.2f} (target <= 1.5: {'met' if r['cpu_ratio'] <= 1.5 else 'MISSED'})")
    print(f"  (a bare interpreter, python -c pass: {z['a_cpu'] * 1e3:.0f} ms cpu, "
          f"{z['cpu_ratio']:.2f} of import numpy)")
    if a.modules:
        print("import time by package (self time, -X importtime, one run):")
        for name, us in modules(env, command)[:15]:
            print(f"  {name:28s} {us / 1e3:7.1f} ms")
    cache.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
