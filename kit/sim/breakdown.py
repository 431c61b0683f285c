"""Where the time goes, in time: microseconds of one vCPU per 4 MiB chunk it accepts.

The engines give a rate and each resource's utilisation; a reader also wants the chunk's time
itemised: how much of a vCPU's cycle through one chunk (:data:`kit.sim.trace.ACCEPT_CHUNK`,
one ``try_to_accept_memory_one`` in mm/page_alloc.c) is zeroing, RMPUPDATE, PVALIDATE, the
``cpa_lock``, the VMM's conversion, TLB shootdowns, vCPU scheduling, and so on.
:func:`time_per_chunk` computes it from the same pieces the engines use: the fields of
:class:`kit.sim.demands.ChunkDemand` as :func:`kit.sim.demands.demand` builds them from the
recorded events and the cost parameters (:mod:`kit.sim.params`), and what the engine adds: lock
waits per chunk, the scheduling stretch of core time and of the preemptible locks' holds, the
hand-off delay of a lock to a descheduled waiter and the interrupt stretch of ``cpa_lock`` /
``pgd_lock`` holds (:func:`kit.sim.demands.schedule`), zeroing under the DRAM bandwidth
(:func:`kit.sim.demands.dram_gbps`). The parts add up to the mean time one vCPU spends per
chunk, so ``vcpus / sum(parts)`` is the guest's chunk rate. docs/sim-model.md ("Where the time
goes, in time") describes each part.
"""
from __future__ import annotations

import numpy as np

from ..host.ledger import EVENTS
from .demands import E, ChunkDemand, demand, dm4k_fraction, schedule, zero_us

#: every part of :func:`time_per_chunk`, in stacking order, with what it is (all in
#: microseconds of one vCPU per accepted chunk)
PARTS = {
    "zeroing": "clearing the chunk's guest_memfd folios (bytes_zeroed at zero_gbps_core on one core; "
               "slower when the zeroing threads together reach the DRAM bandwidth, dram_gbps_per_socket "
               "per socket of cpus_per_socket CPUs: it includes waiting for bandwidth)",
    "rmpupdate": "RMPUPDATE instructions (rmp_make_private) x instr_us",
    "pvalidate": "PVALIDATE instructions in the guest x instr_us",
    "psmash_rmpadjust": "PSMASH and RMPADJUST instructions x instr_us",
    "exits": "guest exits handled inside KVM (#NPF, VMGEXIT) x exit_us",
    "prefault": "mappings installed by KVM_PRE_FAULT_MEMORY when the VMM pre-faults each converted range "
                "(vmm=prefault) x map_us; their clearing is zeroing",
    "guest_write": "the stress worker writing the memory it was given (guest_write_gbps_core)",
    "dm4k_walks": "page walks through a 4K direct map (dm4k_walk_ns per 4K page of the share mapped 4K): "
                  "clearing the folios, and the conversion exit visiting the chunk's gfns under the "
                  "VM's conversion lock",
    "guest_lock_hold": "hold of the guest's unaccepted_memory_lock (guest_lock_us)",
    "guest_lock_wait": "waiting for the guest's unaccepted_memory_lock",
    "vmm_conversion": "the VMM's conversion: user exits x convert_us, under the VM's conversion lock "
                      "(its 4K direct-map walks are dm4k_walks)",
    "vmm_conversion_wait": "waiting for the VM's conversion lock (another vCPU's conversion)",
    "cpa_lock_hold": "cpa_lock acquisitions x cpa_hold_us (__change_page_attr; a split's flush is "
                     "tlb_flush_wait)",
    "cpa_lock_wait": "spinning for cpa_lock",
    "pgd_lock_hold": "direct-map splits and collapses under pgd_lock x split_us (their flush is tlb_flush_wait)",
    "pgd_lock_wait": "spinning for pgd_lock",
    "tlb_flush_wait": "the initiator of a TLB shootdown waiting for it: flush_ack_us plus ipi_send_ns per "
                      "CPU reached plus exit_us when vCPUs run (tlbsync_us with invlpgb); cpa_flush and "
                      "ranged flushes outside any lock, a split's flush_tlb_all inside both cpa_lock's "
                      "and pgd_lock's hold (counted in each)",
    "tlb_flush_ipis": "flush IPIs landing on the CPUs (ipi_us + tlb_refill_us, invlpg_us per page, exit_us "
                      "of the interrupted vCPUs): their share of the scheduling stretch, and the stretch "
                      "of cpa_lock/pgd_lock holds by the interrupts they take",
    "lock_handoff": "lock-waiter preemption: a guest or VM lock handed to a waiter whose vCPU thread is "
                    "off its CPU stays unused until it runs again (sched_slice_us)",
    "core_contention": "vCPU scheduling: the stretch of core time, core-bound zeroing and the holds of "
                       "the preemptible locks (a preempted holder keeps its lock) by SMT sharing "
                       "(smt_yield), time slices and context switches (ctx_switch_us), less the flush "
                       "IPIs' share (discrete-event engine: the measured latency the other parts do not "
                       "explain, unless memory bandwidth is saturated: then zeroing)",
    "other_cpu": "core time of the demand not itemised above",
}
#: memory-bandwidth utilisation from which a discrete-event run's unexplained latency is
#: waiting for bandwidth to zero folios
SATURATED = 0.95
#: the locks whose waits an engine reports, and the part each goes to
WAIT_PARTS = {"guest_lock": "guest_lock_wait", "vm_lock": "vmm_conversion_wait", "cpa_lock": "cpa_lock_wait",
              "pgd_lock": "pgd_lock_wait"}
#: the analytic engine's station (:func:`kit.sim.mva.solve` residence keys) of each lock
STATIONS = {"guest_lock": "guest", "vm_lock": "vm", "cpa_lock": "cpa", "pgd_lock": "pgd"}


def _per_chunk(events, chunks: int) -> np.ndarray:
    if isinstance(events, dict):
        events = [events.get(k, 0) for k in EVENTS]
    return np.asarray(events, dtype=float) / max(chunks, 1)


def time_per_chunk(events, chunks: int, params, cores: int, dm4k: float, work_bytes: float, *,
                   accept: bool = True, vcpus: int = 0, waits: dict | None = None, sigma: float = 1.0,
                   ipi_share: float = 0.0, irq: float = 1.0, handoffs: dict | None = None,
                   zeroing_us: float | None = None, total_us: float | None = None,
                   rest: str = "core_contention") -> dict[str, float]:
    """The parts (:data:`PARTS`, microseconds) of one vCPU's time per chunk, from the event
    totals ``events`` (a vector over :data:`kit.host.ledger.EVENTS` or a dict) recorded over
    ``chunks`` chunks (``vcpus``: all guests' vCPUs, as :func:`kit.sim.demands.demand` takes
    them), and what the engine found: ``waits`` (lock -> wait per chunk, us), ``sigma`` (the
    scheduling stretch, :attr:`kit.sim.demands.Sched.stretch`), ``ipi_share`` (the share of the
    runnable load that is flush IPIs), ``irq`` (:attr:`kit.sim.demands.Sched.irq`),
    ``handoffs`` (lock -> hand-off delay per chunk, us), ``zeroing_us`` (the zeroing time per
    chunk as the engine served it; default one core alone). ``total_us``: the engine's measured
    time per chunk; what the parts do not explain is added to the part ``rest`` (a surplus is
    taken from ``core_contention``)."""
    e = _per_chunk(events, chunks)
    d = demand(e * max(chunks, 1), chunks, params, cores, dm4k, work_bytes, accept, vcpus)
    return parts_of(d, e, params, waits=waits, sigma=sigma, ipi_share=ipi_share, irq=irq, handoffs=handoffs,
                    zeroing_us=zeroing_us, total_us=total_us, rest=rest)


def parts_of(d: ChunkDemand, e: np.ndarray, params, *, waits: dict | None = None, sigma: float = 1.0,
             ipi_share: float = 0.0, irq: float = 1.0, handoffs: dict | None = None,
             zeroing_us: float | None = None, total_us: float | None = None,
             rest: str = "core_contention") -> dict[str, float]:
    """:func:`time_per_chunk` of a demand ``d`` as an engine uses it, with ``e`` the events per
    chunk it came from (to tell the instructions and exits in ``d.cpu_us`` apart)."""
    instr = params["instr_us"]
    out = dict.fromkeys(PARTS, 0.0)
    sigma, irq = max(float(sigma), 1.0), max(float(irq), 1.0)
    # zeroing: one core alone, stretched by scheduling while core-bound, slower under DRAM bandwidth
    alone = zero_us(d.zero_bytes, params, 1.0)
    zero = alone if zeroing_us is None else float(zeroing_us)
    zero_stretch = min(max(zero - alone, 0.0), (sigma - 1.0) * alone) if zero <= alone * sigma * (1 + 1e-9) else 0.0
    out["zeroing"] = zero - zero_stretch
    out["rmpupdate"] = e[E["rmpupdate"]] * instr
    out["pvalidate"] = e[E["pvalidate"]] * instr
    out["psmash_rmpadjust"] = (e[E["psmash"]] + e[E["rmpadjust"]]) * instr
    out["exits"] = e[E["vm_exit"]] * params["exit_us"]
    out["prefault"] = e[E["pre_fault"]] * params["map_us"]
    out["guest_write"] = d.write_bytes / (params["guest_write_gbps_core"] * 1e3)
    itemised = (out["rmpupdate"] + out["pvalidate"] + out["psmash_rmpadjust"] + out["exits"] + out["prefault"]
                + out["guest_write"])
    out["other_cpu"] = max(d.cpu_us - itemised, 0.0)
    out["dm4k_walks"] = d.dm4k_zero_us + d.dm4k_convert_us
    out["guest_lock_hold"] = d.guest_lock_us
    out["vmm_conversion"] = d.vm_lock_us
    out["cpa_lock_hold"] = d.cpa_us
    out["pgd_lock_hold"] = d.pgd_us
    # the initiator's waits: cpa_flush outside locks; a split's flush inside both holds
    out["tlb_flush_wait"] = d.flush_wait_us + 2.0 * d.split_flush_us
    for lock, w in (waits or {}).items():
        if lock in WAIT_PARTS:
            out[WAIT_PARTS[lock]] = max(float(w), 0.0)
    out["lock_handoff"] = sum(max(float(v), 0.0) for k, v in (handoffs or {}).items() if k in ("guest_lock", "vm_lock"))
    # scheduling (demands.schedule): core time and preemptible holds stretched; its IPI share
    stretch = (sigma - 1.0) * (d.core_us + d.guest_lock_us + d.vm_hold_us) + zero_stretch
    share = min(max(ipi_share, 0.0), 1.0)
    # cpa_lock/pgd_lock holds are never descheduled but take the flush IPIs (Sched.irq)
    out["tlb_flush_ipis"] = share * stretch + (irq - 1.0) * (d.cpa_hold_us + d.pgd_hold_us)
    out["core_contention"] = (1.0 - share) * stretch
    if total_us is not None:
        left = float(total_us) - sum(out.values())
        if left >= 0:
            out[rest] += left
        else:
            out["core_contention"] = max(out["core_contention"] + left, 0.0)
    return {k: float(v) for k, v in out.items()}


def guest_events(trace, trace_guest: int, batches=None):
    """(event vector, chunks, mean DirectMap4k share, bytes per chunk) of one guest of a trace
    (:class:`kit.sim.trace.Trace`), over all its batches (``batches``: that guest's, if the
    caller has them grouped already)."""
    tot, n, frac, nbytes = np.zeros(len(EVENTS)), 0, 0.0, 0
    for b in (trace.batches if batches is None else batches):
        if b.guest != trace_guest:
            continue
        tot += np.asarray([b.events.get(k, 0) for k in EVENTS], dtype=float)
        n += b.chunks
        frac += dm4k_fraction(b.directmap) * b.chunks
        nbytes += b.bytes
    return tot, n, frac / max(n, 1), nbytes / max(n, 1)


def mean_parts(parts: list[dict], weights) -> dict[str, float]:
    """The weighted mean of several guests' parts (weights: their chunk rates)."""
    w = np.asarray(weights, dtype=float)
    if not len(parts) or w.sum() <= 0:
        return dict.fromkeys(PARTS, 0.0) if not parts else dict(parts[0])
    return {k: float(sum(wi * p[k] for wi, p in zip(w, parts)) / w.sum()) for k in PARTS}


def from_mva(trace, index: list[int], m, demands: list[ChunkDemand], params, cores: int,
             accept: bool, vcpus: list[int] | None = None) -> dict[str, float]:
    """:func:`time_per_chunk` of an analytic run (:class:`kit.sim.mva.MvaResult`): each
    guest's demand as the engine used it (``demands``), its residence times for the lock waits
    and the zeroing, the fixed point's scheduling (``m.sched``: stretch, interrupt stretch, the
    flush IPIs' share of the runnable load) and hand-off delays (``m.handoff``). ``index``: the
    trace guest standing for each scenario guest; ``vcpus``: each guest's vCPUs (then the parts
    add up to ``vcpus / throughput`` even where a lock caps a guest's rate: the rest is that
    lock's wait)."""
    sc = m.sched if m.sched is not None else schedule(0.0, cores, params)
    ipi = sum(x * d.ipi_load_us for x, d in zip(m.throughput, demands))
    share = ipi / sc.runnable if sc.stretch > 1.0 and sc.runnable > 0 else 0.0
    parts = []
    for g, (d, R) in enumerate(zip(demands, m.residence)):
        ev, n, _, _ = guest_events(trace, index[g])
        h = m.handoff[g] if g < len(m.handoff) else {"guest": 0.0, "vm": 0.0}
        svc = {"guest_lock": d.guest_lock_us * sc.stretch + h["guest"], "vm_lock": d.vm_hold_us * sc.stretch + h["vm"],
               "cpa_lock": d.cpa_hold_us * sc.irq, "pgd_lock": d.pgd_hold_us * sc.irq}
        waits = {k: R[STATIONS[k]] - svc[k] for k in svc}
        x = m.throughput[g]
        total = vcpus[g] / x if vcpus is not None and x > 0 else None
        # a capped class waits for the lock it spends longest at (mva._one_class's cap, the
        # global locks' scaling)
        busiest = max(svc, key=lambda k: R[STATIONS[k]])
        parts.append(parts_of(d, _per_chunk(ev, n), params, waits=waits, sigma=sc.stretch, ipi_share=share,
                              irq=sc.irq, handoffs={"guest_lock": h["guest"], "vm_lock": h["vm"]},
                              zeroing_us=R["zero"], total_us=total, rest=WAIT_PARTS[busiest]))
    return mean_parts(parts, m.throughput)


def from_des(trace, index: list[int], r, params, cores: int, accept: bool, membw_util: float,
             vcpus: int = 0) -> dict[str, float]:
    """:func:`time_per_chunk` of a discrete-event run (:class:`kit.sim.des.DesResult`): each
    guest's lock waits and hand-off delays over the run per chunk it completed
    (``r.guest_waits``, ``r.guest_handoffs``); the scheduling of the run's mean runnable threads
    (``r.runnable_mean``, of which the flush IPIs' load is what the completed chunks' demands put
    on the CPUs over the run) for the stretch and the interrupt stretch; zeroing core-bound; and
    the rest of the guest's measured mean latency, over the chunks completed while every guest
    still had work (the window the run's rate is measured over, kit.sim.api), as waiting for
    memory bandwidth (``zeroing``) when the run saturated it (``membw_util`` at least
    :data:`SATURATED`), else as ``core_contention``. ``vcpus``: all guests' vCPUs."""
    G = len(index)
    done = np.bincount(r.guest, minlength=G)[:G]
    last = np.full(G, -np.inf)
    np.maximum.at(last, r.guest, r.completions)
    ends = last[done > 0]
    t_all = ends.min() if len(ends) else r.sim_us
    window = r.completions <= t_all
    in_window = np.bincount(r.guest[window], minlength=G)[:G]
    lat_sum = np.bincount(r.guest[window], weights=r.latency[window], minlength=G)[:G]
    by_guest: dict = {}
    for b in trace.batches:
        by_guest.setdefault(b.guest, []).append(b)
    rows, memo = [], {}
    for g in range(G):
        if index[g] not in memo:     # guests of the same trace guest share its events
            memo[index[g]] = guest_events(trace, index[g], by_guest.get(index[g], ()))
        ev, n, frac, nbytes = memo[index[g]]
        d = demand(ev, n, params, cores, frac, nbytes if accept else 0.0, accept, vcpus)
        rows.append((ev, n, d, int(done[g])))
    ipi = sum(k * d.ipi_load_us for _, _, d, k in rows) / r.sim_us if r.sim_us > 0 else 0.0
    sc = schedule(max(r.runnable_mean - ipi, 0.0), cores, params, ipi)
    share = ipi / sc.runnable if sc.stretch > 1.0 and sc.runnable > 0 else 0.0
    parts, weights = [], []
    for g, (ev, n, d, k) in enumerate(rows):
        per = 1.0 / max(k, 1)
        waits = {lock: v[g] * per for lock, v in r.guest_waits.items() if g < len(v)}
        handoffs = {lock: v[g] * per for lock, v in r.guest_handoffs.items() if g < len(v)}
        lat = float(lat_sum[g] / in_window[g]) if in_window[g] else None
        parts.append(parts_of(d, _per_chunk(ev, n), params, waits=waits, sigma=sc.stretch, ipi_share=share,
                              irq=sc.irq, handoffs=handoffs,
                              zeroing_us=zero_us(d.zero_bytes, params, 1.0, sc.stretch), total_us=lat,
                              rest="zeroing" if membw_util >= SATURATED else "core_contention"))
        weights.append(int(in_window[g]))
    return mean_parts(parts, weights)
