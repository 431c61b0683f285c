"""The analytic engine: approximate mean value analysis of the closed network in which every
vCPU cycles through the work of one chunk. Each guest's class is solved on its own with the
other classes' queues held fixed, iterated to a fixed point: by the MVA recursion over its own
population when it has at most :data:`EXACT_MAX` vCPUs, by Schweitzer's approximation above
that.

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

from dataclasses import dataclass, field

from .demands import ChunkDemand, Sched, dram_gbps, schedule, zero_us


@dataclass
class MvaResult:
    """The analytic engine's fixed point (:func:`solve`): per-guest throughput and residence per
    station, utilisations, waits, the schedule it ended on and the iterations it took."""

    throughput: list          # chunks per microsecond, per guest
    residence: list           # per guest: dict station -> microseconds per chunk
    utilisation: dict         # station -> utilisation (per-VM locks as "vm_lock[g]")
    waits: dict               # lock -> mean wait per acquisition (us), per chunk
    sigma: float              # stretch of a thread's own work (scheduling)
    iterations: int
    sched: Sched | None = None    # the host's scheduling state at the fixed point
    #: per guest: the mean hand-off delay per chunk (us) in the service of its preemptible
    #: locks, {"guest": ..., "vm": ...} (a lock handed to a descheduled waiter)
    handoff: list = field(default_factory=list)


def solve(classes: list[tuple[int, ChunkDemand]], cores: int, p, *, iters: int = 2000,
          tol: float = 1e-12, start: "MvaResult | None" = None) -> MvaResult:
    """The fixed point of the classes' throughputs. ``start``: a solution of the same classes
    under nearby parameters to begin from (a band's parameter sets: a few iterations instead
    of a few dozen); the fixed point is the same."""
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
    warm = start is not None and len(start.throughput) == G
    if warm:
        X = [float(x) for x in start.throughput]
        R = [dict(r) for r in start.residence]
        for g in range(G):
            for k in q:
                q[k][g] = X[g] * R[g].get(k, 0.0)
        hv = [float(h.get("vm", 0.0)) for h in start.handoff] if len(start.handoff) == G else hv
        hg = [float(h.get("guest", 0.0)) for h in start.handoff] if len(start.handoff) == G else hg
    alpha, last_delta = 0.5, float("inf")
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
        memo: dict = {}
        for g in range(G):
            service = (d[g].guest_lock_us * sc.stretch + hg[g], d[g].vm_hold_us * sc.stretch + hv[g],
                       d[g].cpa_hold_us * sc.irq, d[g].pgd_hold_us * sc.irq)
            others = (0.0, 0.0, cpa_all - q["cpa"][g], pgd_all - q["pgd"][g])
            delay = zero_us(d[g].zero_bytes, p, n_zero, sc.stretch, bw) + d[g].core_us * sc.stretch
            q_prev = tuple(q[k][g] for k in ("guest", "vm", "cpa", "pgd"))
            key = (n[g], service, others, delay, q_prev)
            if key not in memo:         # identical guests: solved once
                memo[key] = _one_class(n[g], service, others, delay, q_prev)
            x, res = memo[key]
            r = dict(zip(("guest", "vm", "cpa", "pgd"), res))
            r["zero"] = zero_us(d[g].zero_bytes, p, n_zero, sc.stretch, bw)
            r["cpu"] = d[g].core_us * sc.stretch
            R[g] = r
            X_new.append(x)
        # a global lock serves one hold at a time: scale down the classes that would ask more
        for hold in ("cpa_hold_us", "pgd_hold_us"):
            u = sum(X_new[g] * getattr(d[g], hold) * sc.irq for g in range(G))
            if u > 1.0:
                X_new = [x / u if getattr(d[g], hold) > 0 else x for g, x in enumerate(X_new)]
        delta = max(abs(a - b) / max(b, 1e-30) for a, b in zip(X, X_new)) if it > 1 or warm else 1.0
        if delta > last_delta:
            # the fixed point is overshot (e.g. flush interrupts that grow with the rate slow
            # the lock that sets the rate): smaller steps
            alpha = max(alpha * 0.5, 1e-3)
        else:
            alpha = min(alpha * 1.2, 0.5)     # steady progress: longer steps again
        last_delta = delta
        X = [(1.0 - alpha) * a + alpha * b for a, b in zip(X, X_new)] if it > 1 or warm else X_new
        for g in range(G):
            for k in q:
                q[k][g] = X[g] * R[g][k]
            # Little's law: a class never has more customers queued than it has vCPUs
            total_q = sum(q[k][g] for k in q)
            if total_q > n[g]:
                for k in q:
                    q[k][g] *= n[g] / total_q
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
    return MvaResult(X, R, util, waits, sc.stretch, it, sc, [{"guest": hg[g], "vm": hv[g]} for g in range(G)])


#: A class of at most this many vCPUs is solved by the MVA recursion over its own population
#: (the other classes' queues held fixed); a larger one by Schweitzer's approximation, which is
#: close for large populations and costs nothing per customer.
EXACT_MAX = 1024


def _one_class(n: int, service, others, delay: float, q_prev) -> tuple[float, list]:
    """Throughput and residence per FCFS station of one class of ``n`` customers that visit
    stations with mean ``service`` times (where ``others`` customers of other classes queue)
    and a delay ``delay``: the MVA recursion over the class's own population up to
    :data:`EXACT_MAX`, else Schweitzer's estimate from the last queue lengths ``q_prev``. No
    station serves the class more than one hold at a time."""
    sg, sv, sc, sp = service
    og, ov, oc, op = others
    cap = min([1.0 / s for s in service if s > 0] or [float("inf")])
    if n > EXACT_MAX:
        shrink = (n - 1) / n
        res = [s * (1 + o + qp * shrink) for s, o, qp in zip(service, others, q_prev)]
        return min(n / max(sum(res) + delay, 1e-12), cap), res
    qg = qv = qc = qp = 0.0
    x = 0.0
    rg, rv, rc, rp = sg, sv, sc, sp
    for k in range(1, n + 1):
        rg, rv, rc, rp = sg * (1 + og + qg), sv * (1 + ov + qv), sc * (1 + oc + qc), sp * (1 + op + qp)
        x = min(k / max(rg + rv + rc + rp + delay, 1e-12), cap)
        qg, qv, qc, qp = x * rg, x * rv, x * rc, x * rp
    return x, [rg, rv, rc, rp]
