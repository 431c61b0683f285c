"""Speed of the simulation engine, printed as figures and ratios measured side by side.

- analytic engine per configuration: the solve alone (warm: trace cached), and cold (the
  sampled semantic trace included), on every measured configuration; target <= 50 ms;
- discrete-event engine at full semantic fidelity, 1 guest x 128 vCPUs x 1 TiB on 512 cores,
  one policy: wall time (trace + engine), peak memory of the process, and simulated/wall
  time; target <= 30 s and <= 2 GiB (the real experiment takes about 70 s).

Run: python benchmarks/sim.py [--policy split-on-demand]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def des_child(policy: str) -> None:
    from kit.sim import api
    t0 = time.perf_counter()
    s = api.scenario(guests=1, vcpus=128, guest_mem="1TiB", host_cores=512, host_mem="1536GiB",
                     policy=policy, engine="des")
    tr = api.run_trace(s)
    t1 = time.perf_counter()
    r = api.simulate(**{k: getattr(s, k) for k in ("guests", "vcpus", "guest_mem", "host_cores",
                                                   "host_mem", "policy", "engine")}, trace=tr)
    t2 = time.perf_counter()
    print(json.dumps({"trace_s": t1 - t0, "engine_s": t2 - t1, "wall_s": t2 - t0,
                      "sim_s": r.sim_seconds, "gbps": r.fault_in_gbps,
                      "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", default="split-on-demand")
    ap.add_argument("--child", action="store_true")
    a = ap.parse_args()
    if a.child:
        des_child(a.policy)
        return
    from kit.sim import api, mva
    from kit.sim.calibrate import load_measurements
    from kit.sim.params import CostParams
    p = CostParams.load()
    print("analytic engine, per measured configuration (target <= 50 ms)")
    print(f"{'configuration':62s} {'cold ms':>8s} {'warm ms':>8s} {'solve ms':>9s} {'GB/s':>6s}")
    for t in load_measurements():
        kw = t.config.sim_kwargs()
        api._TRACE_CACHE.clear()
        t0 = time.perf_counter()
        api.simulate(**kw, params=p)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        r = api.simulate(**kw, params=p)
        warm = time.perf_counter() - t0
        s = api.scenario(**kw)
        _, means = api._batch_demands(api.analytic_trace(s), s, p)
        t0 = time.perf_counter()
        mva.solve([(s.vcpus, d) for _, d, _ in means], s.host_cores, p)
        solve = time.perf_counter() - t0
        print(f"{t.config.label:62s} {cold * 1e3:8.0f} {warm * 1e3:8.1f} {solve * 1e3:9.1f} {r.fault_in_gbps:6.2f}")
    print()
    print(f"discrete-event engine, 1 x 128 vCPUs x 1 TiB, 512 cores, {a.policy} (targets <= 30 s, <= 2048 MiB)")
    out = subprocess.run([sys.executable, __file__, "--child", "--policy", a.policy],
                         capture_output=True, text=True, check=True)
    d = json.loads(out.stdout)
    print(f"  semantic trace {d['trace_s']:.1f} s + engine {d['engine_s']:.1f} s = wall {d['wall_s']:.1f} s "
          f"(target ratio {d['wall_s'] / 30:.2f} of 30 s)")
    print(f"  peak memory {d['maxrss_mib']:.0f} MiB ({d['maxrss_mib'] / 2048:.2f} of 2 GiB)")
    print(f"  simulated {d['sim_s']:.1f} s at {d['gbps']:.2f} GB/s; simulated/wall = {d['sim_s'] / d['wall_s']:.2f}")
    print(f"  vs the real experiment (about 70 s): wall/real = {d['wall_s'] / 70:.2f}")


if __name__ == "__main__":
    main()
