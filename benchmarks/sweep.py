"""Sweep throughput and the kit's per-run overhead, measured side by side in one run.

- runs per minute for a 16-run grid of a small notebook on 1 and on 2 local dask workers
  (LocalCluster, one kernel per worker), and their ratio;
- the kit's overhead per run over a bare ``papermill.execute_notebook`` call: the same
  notebook and parameters executed N times each way, one after the other (the kit adds the
  parameter checks, the store, digests and the atomic run folder).

Run: python benchmarks/sweep.py [--runs 16] [--overhead-runs 6]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
PROBE = Path(__file__).resolve().parents[1] / "tests" / "notebooks" / "data" / "probe.ipynb"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=16)
    ap.add_argument("--overhead-runs", type=int, default=6)
    a = ap.parse_args()
    import papermill

    from kit.lab.batch import sweep
    from kit.lab.execute import ipc_kernel_manager
    from kit.lab.store import Store
    rates = {}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            df = sweep(PROBE, {"x": list(range(a.runs))}, outdir=d, workers=workers, progress=False, report=False)
            dt = time.perf_counter() - t0
            assert set(df["state"]) == {"complete"}, df
            rates[workers] = a.runs / dt * 60
            print(f"{a.runs}-run sweep on {workers} worker{'s' if workers > 1 else ''}: {dt:.1f} s, "
                  f"{rates[workers]:.1f} runs/min (cluster start included)")
    print(f"2 workers / 1 worker: {rates[2] / rates[1]:.2f}x")
    bare, bare_ipc, kit = [], [], []
    with tempfile.TemporaryDirectory() as d:
        for i in range(a.overhead_runs):
            t0 = time.perf_counter()
            papermill.execute_notebook(str(PROBE), f"{d}/bare-{i}.ipynb", parameters={"x": 100 + i, "outdir": d},
                                       kernel_name="python3", progress_bar=False, cwd=d)
            bare.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            papermill.execute_notebook(str(PROBE), f"{d}/ipc-{i}.ipynb", parameters={"x": 100 + i, "outdir": d},
                                       kernel_name="python3", progress_bar=False, cwd=d,
                                       kernel_manager_class=ipc_kernel_manager())
            bare_ipc.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            st = Store(Path(d) / "store").execute(PROBE, {"x": 100 + i})
            kit.append(time.perf_counter() - t0)
            assert st["state"] == "complete", st
    b, bi, k = statistics.median(bare), statistics.median(bare_ipc), statistics.median(kit)
    print(f"one run, median of {a.overhead_runs}: bare papermill {b * 1e3:.0f} ms (TCP kernel), "
          f"{bi * 1e3:.0f} ms (the kit's IPC kernel manager), kit store {k * 1e3:.0f} ms")
    print(f"kit overhead per run: {(k - b) * 1e3:+.0f} ms over the bare call ({k / b:.2f}x), "
          f"{(k - bi) * 1e3:+.0f} ms over the same call on IPC ({k / bi:.2f}x: checks, store, digests, rename)")


if __name__ == "__main__":
    main()
