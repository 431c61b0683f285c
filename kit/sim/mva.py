"""The analytic engine: approximate mean value analysis (Schweitzer's fixed point) of the closed
network in which every vCPU cycles through the work of one chunk.

One customer class per guest (its vCPUs). Stations: the guest's own ``guest_lock`` (a guest
spinlock: its waiters stay runnable, its holder is stretched by over-subscription), its ``vm_lock`` (FCFS, its holder
stretched by CPU over-subscription), the global ``cpa_lock`` and ``pgd_lock`` (FCFS spinlocks:
their waiters stay runnable), zeroing (each core at most ``zero_gbps_core``, all together at
most ``zero_bw_gbps``), and core time (a delay stretched by ``sigma`` = runnable threads per
core when above 1, flush IPIs included). Milliseconds per configuration.
"""
from __future__ import annotations

from dataclasses import dataclass

from .demands import ChunkDemand, zero_us


@dataclass
class MvaResult:
    throughput: list          # chunks per microsecond, per guest
    residence: list           # per guest: dict station -> microseconds per chunk
    utilisation: dict         # station -> utilisation (per-VM locks as "vm_lock[g]")
    waits: dict               # lock -> mean wait per acquisition (us), per chunk
    sigma: float              # CPU over-subscription factor
    iterations: int


def solve(classes: list[tuple[int, ChunkDemand]], cores: int, p, *, iters: int = 2000,
          tol: float = 1e-9) -> MvaResult:
    n = [c[0] for c in classes]
    d = [c[1] for c in classes]
    G = len(classes)
    q = {k: [0.0] * G for k in ("guest", "vm", "cpa", "pgd", "zero", "cpu")}
    X = [0.0] * G
    R = [dict() for _ in range(G)]
    sigma = 1.0
    it = 0
    for it in range(1, iters + 1):
        n_zero = sum(q["zero"])
        wait_vm = sum(max(q["vm"][g] - X[g] * d[g].vm_lock_us * sigma, 0.0) for g in range(G))
        ipi = sum(X[g] * d[g].ipi_core_us for g in range(G))
        runnable = sum(n) - wait_vm
        sigma_new = max(1.0, (runnable + ipi) / cores)
        sigma = 0.5 * sigma + 0.5 * sigma_new
        cpa_all, pgd_all = sum(q["cpa"]), sum(q["pgd"])
        X_new = []
        for g in range(G):
            shrink = (n[g] - 1) / n[g]
            r = {
                "guest": d[g].guest_lock_us * sigma * (1 + q["guest"][g] * shrink),
                "vm": d[g].vm_lock_us * sigma * (1 + q["vm"][g] * shrink),
                "cpa": d[g].cpa_us * (1 + cpa_all - q["cpa"][g] / n[g]),
                "pgd": d[g].pgd_us * (1 + pgd_all - q["pgd"][g] / n[g]),
                "zero": zero_us(d[g].zero_bytes, p, n_zero),
                "cpu": d[g].cpu_us * sigma,
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
    util = {f"vm_lock[{g}]": X[g] * d[g].vm_lock_us * sigma for g in range(G)}
    util.update({f"guest_lock[{g}]": X[g] * d[g].guest_lock_us * sigma for g in range(G)})
    util["cpa_lock"] = sum(X[g] * d[g].cpa_us for g in range(G))
    util["pgd_lock"] = sum(X[g] * d[g].pgd_us for g in range(G))
    util["membw"] = sum(X[g] * d[g].zero_bytes for g in range(G)) / (p["zero_bw_gbps"] * 1e3)
    wait_vm = sum(max(q["vm"][g] - util[f"vm_lock[{g}]"], 0.0) for g in range(G))
    util["cores"] = min(1.0, (sum(n) - wait_vm + sum(X[g] * d[g].ipi_core_us for g in range(G))) / cores)
    waits = {
        "cpa_lock": sum(X[g] * (R[g]["cpa"] - d[g].cpa_us) for g in range(G)) / max(sum(X), 1e-30),
        "pgd_lock": sum(X[g] * (R[g]["pgd"] - d[g].pgd_us) for g in range(G)) / max(sum(X), 1e-30),
        "vm_lock": sum(X[g] * (R[g]["vm"] - d[g].vm_lock_us * sigma) for g in range(G)) / max(sum(X), 1e-30),
        "guest_lock": sum(X[g] * (R[g]["guest"] - d[g].guest_lock_us * sigma) for g in range(G)) / max(sum(X), 1e-30),
    }
    return MvaResult(X, R, util, waits, sigma, it)
