"""The analytic engine: approximate mean value analysis (Schweitzer's fixed point) of the closed
network in which every vCPU cycles through the work of one chunk.

One customer class per guest (its vCPUs). Stations: the guest's own ``guest_lock`` (a guest
spinlock: its waiters stay runnable) and ``vm_lock`` (FCFS; ``accept_spin_share`` of its
waiters spin in the guest, the rest sleep), the global ``cpa_lock`` and ``pgd_lock`` (FCFS
spinlocks: their waiters stay runnable), zeroing (each thread at most ``zero_gbps_core``, all
together at most the host's DRAM bandwidth), and core time (a delay).

vCPU scheduling (:func:`kit.sim.demands.schedule`) from the mean number of runnable threads
(every vCPU thread but the sleeping waiters, plus the flush IPIs' load in CPUs): core time,
zeroing and the holds of the preemptible locks (guest and VM) are stretched by SMT sharing,
time slices and context switches; a preemptible lock's service also carries the mean hand-off
delay to a descheduled waiter; ``cpa_lock``/``pgd_lock`` holds (never descheduled) are stretched
by the interrupts they take. Milliseconds per configuration.
"""
from __future__ import annotations

from dataclasses import dataclass

from .demands import ChunkDemand, Sched, dram_gbps, schedule, zero_us


@dataclass
class MvaResult:
    throughput: list          # chunks per microsecond, per guest
    residence: list           # per guest: dict station -> microseconds per chunk
    utilisation: dict         # station -> utilisation (per-VM locks as "vm_lock[g]")
    waits: dict               # lock -> mean wait per acquisition (us), per chunk
    sigma: float              # stretch of a thread's own work (scheduling)
    iterations: int
    sched: Sched | None = None    # the host's scheduling state at the fixed point


def solve(classes: list[tuple[int, ChunkDemand]], cores: int, p, *, iters: int = 2000,
          tol: float = 1e-9) -> MvaResult:
    n = [c[0] for c in classes]
    d = [c[1] for c in classes]
    G = len(classes)
    spin = min(max(p["accept_spin_share"], 0.0), 1.0)
    bw = dram_gbps(p, cores)
    q = {k: [0.0] * G for k in ("guest", "vm", "cpa", "pgd", "zero", "cpu")}
    X = [0.0] * G
    R = [dict() for _ in range(G)]
    runnable = float(sum(n))
    sc = schedule(runnable, cores, p)
    it = 0
    hv, hg = [0.0] * G, [0.0] * G      # hand-off delay per acquisition (a waiter was there)
    for it in range(1, iters + 1):
        n_zero = sum(q["zero"])
        wv = [max(q["vm"][g] - X[g] * (d[g].vm_hold_us * sc.stretch + hv[g]), 0.0) for g in range(G)]
        wg = [max(q["guest"][g] - X[g] * (d[g].guest_lock_us * sc.stretch + hg[g]), 0.0) for g in range(G)]
        ipi = sum(X[g] * d[g].ipi_load_us for g in range(G))
        runnable = 0.5 * runnable + 0.5 * (sum(n) - (1.0 - spin) * sum(wv))
        sc = schedule(runnable, cores, p, ipi)
        hv = [sc.handoff_us * min(1.0, wv[g]) * (d[g].vm_hold_us > 0) for g in range(G)]
        hg = [sc.handoff_us * min(1.0, wg[g]) * (d[g].guest_lock_us > 0) for g in range(G)]
        cpa_all, pgd_all = sum(q["cpa"]), sum(q["pgd"])
        X_new = []
        for g in range(G):
            shrink = (n[g] - 1) / n[g]
            r = {
                "guest": (d[g].guest_lock_us * sc.stretch + hg[g]) * (1 + q["guest"][g] * shrink),
                "vm": (d[g].vm_hold_us * sc.stretch + hv[g]) * (1 + q["vm"][g] * shrink),
                "cpa": d[g].cpa_hold_us * sc.irq * (1 + cpa_all - q["cpa"][g] / n[g]),
                "pgd": d[g].pgd_hold_us * sc.irq * (1 + pgd_all - q["pgd"][g] / n[g]),
                "zero": zero_us(d[g].zero_bytes, p, n_zero, sc.stretch, bw),
                "cpu": d[g].core_us * sc.stretch,
            }
            R[g] = r
            X_new.append(n[g] / max(sum(r.values()), 1e-12))
        delta = max(abs(a - b) / max(b, 1e-30) for a, b in zip(X, X_new)) if it > 1 else 1.0
        X = [0.5 * a + 0.5 * b for a, b in zip(X, X_new)] if it > 1 else X_new
        for g in range(G):
            for k in q:
                q[k][g] = X[g] * R[g][k]
        if delta < tol:
            break
    vm_svc = [d[g].vm_hold_us * sc.stretch + hv[g] for g in range(G)]
    gl_svc = [d[g].guest_lock_us * sc.stretch + hg[g] for g in range(G)]
    util = {f"vm_lock[{g}]": X[g] * vm_svc[g] for g in range(G)}
    util.update({f"guest_lock[{g}]": X[g] * gl_svc[g] for g in range(G)})
    util["cpa_lock"] = sum(X[g] * d[g].cpa_hold_us * sc.irq for g in range(G))
    util["pgd_lock"] = sum(X[g] * d[g].pgd_hold_us * sc.irq for g in range(G))
    util["membw"] = sum(X[g] * (d[g].zero_bytes + d[g].write_bytes) for g in range(G)) / (bw * 1e3)
    util["cores"] = min(1.0, sc.runnable / cores)
    tot = max(sum(X), 1e-30)
    waits = {
        "cpa_lock": sum(X[g] * (R[g]["cpa"] - d[g].cpa_hold_us * sc.irq) for g in range(G)) / tot,
        "pgd_lock": sum(X[g] * (R[g]["pgd"] - d[g].pgd_hold_us * sc.irq) for g in range(G)) / tot,
        "vm_lock": sum(X[g] * (R[g]["vm"] - vm_svc[g]) for g in range(G)) / tot,
        "guest_lock": sum(X[g] * (R[g]["guest"] - gl_svc[g]) for g in range(G)) / tot,
    }
    return MvaResult(X, R, util, waits, sc.stretch, it, sc)
