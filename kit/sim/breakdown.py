"""Where the time goes, in time: microseconds of one vCPU per 4 MiB chunk it accepts.

The engines give a rate and each resource's utilisation; a reader also wants the chunk's time
itemised: how much of a vCPU's cycle through one chunk (:data:`kit.sim.trace.ACCEPT_CHUNK`,
one ``try_to_accept_memory_one`` in mm/page_alloc.c) is zeroing, RMPUPDATE, PVALIDATE, the
``cpa_lock``, the VMM's conversion, and so on. :func:`time_per_chunk` computes it from the
same pieces the engines use: the recorded events per chunk, the cost parameters
(:mod:`kit.sim.params`), the demand of :func:`kit.sim.demands.demand`, and what the engine adds
(lock waits per chunk, CPU over-subscription, zeroing under shared bandwidth). The parts add up
to the mean time one vCPU spends per chunk, so ``vcpus / sum(parts)`` is the guest's chunk
rate. docs/sim-model.md ("Where the time goes") describes each part.
"""
from __future__ import annotations

import numpy as np

from ..host.ledger import EVENTS
from .demands import E, ChunkDemand, demand, dm4k_fraction, zero_us

#: every part of :func:`time_per_chunk`, in stacking order, with what it is (all in
#: microseconds of one vCPU per accepted chunk)
PARTS = {
    "zeroing": "clearing the chunk's guest_memfd folios (bytes_zeroed; each core at most zero_gbps_core, "
               "all cores together at most zero_bw_gbps)",
    "rmpupdate": "RMPUPDATE instructions (rmp_make_private) x instr_us",
    "pvalidate": "PVALIDATE instructions in the guest x instr_us",
    "psmash_rmpadjust": "PSMASH and RMPADJUST instructions x instr_us",
    "exits": "guest exits handled inside KVM (#NPF, VMGEXIT) x exit_us",
    "guest_write": "the stress worker writing the memory it was given (guest_write_gbps_core)",
    "guest_lock_hold": "hold of the guest's unaccepted_memory_lock (guest_lock_us)",
    "guest_lock_wait": "waiting for the guest's unaccepted_memory_lock",
    "vmm_conversion": "the VMM's conversion: user exits x convert_us, slowed by a 4K direct map "
                      "(dm4k_slowdown), under the VM's conversion lock",
    "vmm_conversion_wait": "waiting for the VM's conversion lock (another vCPU's conversion)",
    "cpa_lock_hold": "cpa_lock acquisitions x cpa_hold_us (__change_page_attr)",
    "cpa_lock_wait": "spinning for cpa_lock",
    "pgd_lock_hold": "direct-map splits and collapses under pgd_lock, with their flush_tlb_all",
    "pgd_lock_wait": "spinning for pgd_lock",
    "tlb_flush_ipis": "TLB flushes outside pgd_lock (the initiator waits flush_wait_us each) and the "
                      "share of CPU over-subscription caused by flush IPIs on every core (ipi_us, invlpg_us)",
    "core_contention": "more runnable threads than host cores: the stretch of core time and of "
                       "preemptible lock holds (discrete-event engine: the measured latency the other "
                       "parts do not explain, unless memory bandwidth is saturated: then zeroing)",
    "other_cpu": "core time of the demand not itemised above",
}
#: memory-bandwidth utilisation from which a discrete-event run's unexplained latency is
#: waiting for bandwidth to zero folios
SATURATED = 0.95
#: the locks whose waits an engine reports, and the part each goes to
WAIT_PARTS = {"guest_lock": "guest_lock_wait", "vm_lock": "vmm_conversion_wait", "cpa_lock": "cpa_lock_wait",
              "pgd_lock": "pgd_lock_wait"}


def _per_chunk(events, chunks: int) -> np.ndarray:
    if isinstance(events, dict):
        events = [events.get(k, 0) for k in EVENTS]
    return np.asarray(events, dtype=float) / max(chunks, 1)


def time_per_chunk(events, chunks: int, params, cores: int, dm4k: float, work_bytes: float, *,
                   accept: bool = True, waits: dict | None = None, sigma: float = 1.0, ipi_share: float = 0.0,
                   zeroing_us: float | None = None, total_us: float | None = None,
                   rest: str = "core_contention") -> dict[str, float]:
    """The parts (:data:`PARTS`, microseconds) of one vCPU's time per chunk, from the event
    totals ``events`` (a vector over :data:`kit.host.ledger.EVENTS` or a dict) recorded over
    ``chunks`` chunks, and what the engine found: ``waits`` (lock -> wait per chunk, us),
    ``sigma`` (runnable threads per core, at least 1), ``ipi_share`` (the share of the runnable
    load that is flush IPIs), ``zeroing_us`` (the zeroing time per chunk under the engine's
    bandwidth sharing; default one core alone). ``total_us``: the engine's measured time per
    chunk; what the parts do not explain is added to the part ``rest``."""
    e = _per_chunk(events, chunks)
    d: ChunkDemand = demand(e * max(chunks, 1), chunks, params, cores, dm4k, work_bytes, accept)
    instr = params["instr_us"]
    splits = e[E["split_1g"]] + e[E["split_2m"]] + e[E["collapse_2m"]] + e[E["collapse_1g"]]
    other_flushes = max(e[E["flush_tlb_all"]] - splits, 0.0) + e[E["flush_tlb_range"]]
    out = dict.fromkeys(PARTS, 0.0)
    out["zeroing"] = zero_us(d.zero_bytes, params, 1.0) if zeroing_us is None else float(zeroing_us)
    out["rmpupdate"] = e[E["rmpupdate"]] * instr
    out["pvalidate"] = e[E["pvalidate"]] * instr
    out["psmash_rmpadjust"] = (e[E["psmash"]] + e[E["rmpadjust"]]) * instr
    out["exits"] = e[E["vm_exit"]] * params["exit_us"]
    out["guest_write"] = work_bytes / (params["guest_write_gbps_core"] * 1e3)
    flush_wait = other_flushes * params["flush_wait_us"]
    itemised = out["rmpupdate"] + out["pvalidate"] + out["psmash_rmpadjust"] + out["exits"] + out["guest_write"] + flush_wait
    out["other_cpu"] = max(d.cpu_us - itemised, 0.0)
    out["guest_lock_hold"] = d.guest_lock_us
    out["vmm_conversion"] = d.vm_lock_us
    out["cpa_lock_hold"] = d.cpa_us
    out["pgd_lock_hold"] = d.pgd_us
    for lock, w in (waits or {}).items():
        if lock in WAIT_PARTS:
            out[WAIT_PARTS[lock]] = max(float(w), 0.0)
    # over-subscription stretches core time and the preemptible holds (demands.py, mva.py)
    stretch = max(sigma - 1.0, 0.0) * (d.cpu_us + d.guest_lock_us + d.vm_lock_us)
    share = min(max(ipi_share, 0.0), 1.0)
    out["tlb_flush_ipis"] = flush_wait + share * stretch
    out["core_contention"] = (1.0 - share) * stretch
    if total_us is not None:
        out[rest] += max(float(total_us) - sum(out.values()), 0.0)
    return {k: float(v) for k, v in out.items()}


def guest_events(trace, trace_guest: int):
    """(event vector, chunks, mean DirectMap4k share, bytes per chunk) of one guest of a trace
    (:class:`kit.sim.trace.Trace`), over all its batches."""
    tot, n, frac, nbytes = np.zeros(len(EVENTS)), 0, 0.0, 0
    for b in trace.batches:
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
             accept: bool) -> dict[str, float]:
    """:func:`time_per_chunk` of an analytic run: each guest's residence times
    (:class:`kit.sim.mva.MvaResult`) give its lock waits and zeroing; over-subscription from
    ``m.sigma``, its IPI share from the flush IPIs' core time. ``index``: the trace guest
    standing for each scenario guest; ``demands``: each scenario guest's mean demand."""
    ipi = sum(x * d.ipi_core_us for x, d in zip(m.throughput, demands))
    share = ipi / (m.sigma * cores) if m.sigma > 1.0 else 0.0
    parts = []
    for g, (d, R) in enumerate(zip(demands, m.residence)):
        ev, n, frac, nbytes = guest_events(trace, index[g])
        waits = {"guest_lock": R["guest"] - d.guest_lock_us * m.sigma, "vm_lock": R["vm"] - d.vm_lock_us * m.sigma,
                 "cpa_lock": R["cpa"] - d.cpa_us, "pgd_lock": R["pgd"] - d.pgd_us}
        parts.append(time_per_chunk(ev, n, params, cores, frac, nbytes if accept else 0.0, accept=accept,
                                    waits=waits, sigma=m.sigma, ipi_share=share, zeroing_us=R["zero"]))
    return mean_parts(parts, m.throughput)


def from_des(trace, index: list[int], r, params, cores: int, accept: bool, membw_util: float) -> dict[str, float]:
    """:func:`time_per_chunk` of a discrete-event run (:class:`kit.sim.des.DesResult`): lock
    waits summed over the run per completed chunk, zeroing at the concurrency the achieved
    bandwidth implies, and the rest of the measured mean latency as waiting for memory
    bandwidth (``zeroing``) when zeroing saturated it (``membw_util`` at least
    :data:`SATURATED`), else as ``core_contention``."""
    done = max(len(r.completions), 1)
    waits = {k: float(v[:, 1].sum()) / done if len(v) else 0.0 for k, v in r.waits.items()}
    concurrent = max(1.0, membw_util * params["zero_bw_gbps"] / max(params["zero_gbps_core"], 1e-12))
    parts, weights = [], []
    for g in range(len(index)):
        ev, n, frac, nbytes = guest_events(trace, index[g])
        mine = r.guest == g
        lat = float(r.latency[mine].mean()) if np.any(mine) else None
        zero = zero_us(ev[E["bytes_zeroed"]] / max(n, 1), params, concurrent)
        parts.append(time_per_chunk(ev, n, params, cores, frac, nbytes if accept else 0.0, accept=accept,
                                    waits=waits, zeroing_us=zero, total_us=lat,
                                    rest="zeroing" if membw_util >= SATURATED else "core_contention"))
        weights.append(int(mine.sum()))
    return mean_parts(parts, weights)
