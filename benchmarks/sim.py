"""Speed of the simulation engine, printed as figures and ratios measured side by side.

- analytic engine per configuration: the solve alone (warm: trace cached), and cold (the
  sampled semantic trace included), on every measured configuration; target <= 50 ms;
- discrete-event engine at full semantic fidelity, 1 guest x 128 vCPUs x 1 TiB on 512 cores,
  one policy: wall time (trace + engine), peak memory of the process, and simulated/wall
  time; target <= 30 s and <= 2 GiB (the real experiment takes about 70 s);
- the discrete-event engine on ``--guests`` x 128 vCPUs x ``--guest-mem`` (default 64 x 160
  GiB, each faulting in all of it: a replicated run, kit.sim.scenario.des_groups) on 512
  cores: ``simulate()`` as a whole, wall time and peak memory of its process (targets: within
  10 s and 2 GiB); then beside the same model in SimPy (benchmarks/des_simpy.py), each in a
  process of its own, from the same trace and the same timed guests: both results must be the
  same (every completion time), then the wall times, the events per second and their ratio
  (target: >= 3x the SimPy model's events/s). The SimPy part needs SimPy
  (``pip install -e .[bench]``); skipped with a note without it.

Run: python benchmarks/sim.py [--policy split-on-demand] [--guests 64 --guest-mem 160GiB] [--skip-des1]
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
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


def touched_per_guest(guests: int, guest_mem: str) -> int:
    """What each guest faults in: its stress workers' 128 x 5 GiB, at most its memory (a run
    past a DES run's bounds, :func:`kit.sim.scenario.des_groups`, is refused by the scenario)."""
    from kit.sim.trace import ACCEPT_CHUNK, STRESS_BYTES
    from kit.units import parse_size
    most = min(128 * STRESS_BYTES, parse_size(guest_mem))
    return most // ACCEPT_CHUNK * ACCEPT_CHUNK


def bench_scenario(guests: int, guest_mem: str, policy: str):
    from kit.sim import api
    from kit.units import GiB, parse_size
    host_mem = guests * parse_size(guest_mem) + 512 * GiB        # the guests and room for the host
    return api.scenario(guests=guests, vcpus=128, guest_mem=guest_mem, host_cores=512, host_mem=host_mem,
                        policy=policy, engine="des", touched=touched_per_guest(guests, guest_mem))


def engine_child(engine: str, guests: int, guest_mem: str, policy: str) -> None:
    """One engine on the scenario's DES trace (:func:`kit.sim.api.des_trace`; the guests it
    times, each for its copies: :func:`kit.sim.scenario.des_groups`): timings, events, peak
    memory and a digest of the result (every completion time, latency and lock wait), as JSON."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from kit.sim import api, des
    from kit.sim.params import CostParams
    run = des.run
    if engine == "simpy":
        import des_simpy
        run = des_simpy.run
    p = CostParams.load()
    t0 = time.perf_counter()
    s = bench_scenario(guests, guest_mem, policy)
    tr = api.des_trace(s)
    per, _ = api._batch_demands(tr, s, p)
    groups = api.des_groups(s) or [[g] for g in range(s.guests)]
    t1 = time.perf_counter()
    r = run([(s.specs[m[0]][0], per[m[0]]) for m in groups], s.host_cores, p, seed=s.seed,
            copies=[len(m) for m in groups])
    t2 = time.perf_counter()
    h = hashlib.sha256()
    for a in (r.completions, r.latency, r.guest, *(r.waits[k] for k in sorted(r.waits))):
        h.update(a.tobytes())
    print(json.dumps({"trace_s": t1 - t0, "engine_s": t2 - t1, "wall_s": t2 - t0, "events": r.events,
                      "sim_us": r.sim_us, "digest": h.hexdigest(), "timed": len(groups),
                      "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def simulate_child(guests: int, guest_mem: str, policy: str) -> None:
    """``kit.sim.api.simulate`` with the DES engine on the scenario, from parameters to the
    result (semantic trace, engine, summary, breakdown, band), as JSON."""
    from kit.sim import api
    t0 = time.perf_counter()
    s = bench_scenario(guests, guest_mem, policy)
    r = api.simulate(**{k: getattr(s, k) for k in ("guests", "vcpus", "guest_mem", "host_cores", "host_mem",
                                                   "policy", "engine", "touched")})
    print(json.dumps({"wall_s": time.perf_counter() - t0, "gbps": r.fault_in_gbps, "sim_s": r.sim_seconds,
                      "trace": r.trace, "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def compare_simpy(guests: int, guest_mem: str, policy: str) -> None:
    from kit.units import format_size
    print(f"discrete-event engine vs the same model in SimPy, {guests} x 128 vCPUs x {guest_mem}, each faulting "
          f"in {format_size(touched_per_guest(guests, guest_mem))}, 512 cores, {policy} "
          f"(targets: simulate() <= 10 s and <= 2048 MiB, >= 3x SimPy's events/s)")
    done = subprocess.run([sys.executable, __file__, "--simulate-child", "--guests", str(guests),
                           "--guest-mem", guest_mem, "--policy", policy], capture_output=True, text=True, check=True)
    e2e = json.loads(done.stdout)
    print(f"  kit.sim.api.simulate(engine='des'), whole: wall {e2e['wall_s']:.1f} s "
          f"(target <= 10 s: {'met' if e2e['wall_s'] <= 10 else 'MISSED'}), peak {e2e['maxrss_mib']:.0f} MiB "
          f"(target <= 2048: {'met' if e2e['maxrss_mib'] <= 2048 else 'MISSED'}); {e2e['gbps']:.2f} GB/s, "
          f"{e2e['sim_s']:.1f} simulated s; {e2e['trace']}")
    if importlib.util.find_spec("simpy") is None:
        print("  SimPy comparison skipped: SimPy is not installed (pip install -e .[bench])")
        return
    out = {}
    for engine in ("kit", "simpy"):
        done = subprocess.run([sys.executable, __file__, "--engine-child", engine, "--guests", str(guests),
                               "--guest-mem", guest_mem, "--policy", policy],
                              capture_output=True, text=True, check=True)
        out[engine] = json.loads(done.stdout)
    k, m = out["kit"], out["simpy"]
    same = k["digest"] == m["digest"] and k["sim_us"] == m["sim_us"] and k["events"] == m["events"]
    print(f"  same simulated result: {'yes' if same else 'NO'} ({k['events']:,} events of {k['timed']} timed "
          f"guests, {k['sim_us'] / 1e6:.2f} simulated s)")
    for name, d in (("kit des", k), ("SimPy", m)):
        print(f"  {name:8s} engine {d['engine_s']:6.1f} s ({d['events'] / d['engine_s']:>10,.0f} events/s), "
              f"trace {d['trace_s']:5.1f} s, wall {d['wall_s']:6.1f} s, peak {d['maxrss_mib']:6.0f} MiB")
    ratio = (k["events"] / k["engine_s"]) / (m["events"] / m["engine_s"])
    print(f"  events/s kit / SimPy: {ratio:.2f}x (target >= 3: {'met' if ratio >= 3 else 'MISSED'})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", default="split-on-demand")
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--engine-child", choices=("kit", "simpy"), default=None)
    ap.add_argument("--simulate-child", action="store_true")
    ap.add_argument("--guests", type=int, default=64, help="guests of the SimPy comparison (default 64)")
    ap.add_argument("--guest-mem", default="160GiB", help="memory of each (default 160GiB)")
    ap.add_argument("--skip-des1", action="store_true", help="only the SimPy comparison")
    a = ap.parse_args()
    if a.child:
        des_child(a.policy)
        return
    if a.engine_child:
        engine_child(a.engine_child, a.guests, a.guest_mem, a.policy)
        return
    if a.simulate_child:
        simulate_child(a.guests, a.guest_mem, a.policy)
        return
    if a.skip_des1:
        compare_simpy(a.guests, a.guest_mem, a.policy)
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
    print()
    compare_simpy(a.guests, a.guest_mem, a.policy)


if __name__ == "__main__":
    main()
