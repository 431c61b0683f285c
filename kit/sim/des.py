"""The discrete-event engine: every vCPU thread of every guest takes the next chunk of its guest's
unaccepted memory and works through it, stage by stage, against the shared resources
(:mod:`kit.sim.demands`). It gives time series and percentiles.

Stages of one chunk, each with the demand of the trace batch the chunk belongs to:
``guest_lock`` (the guest's spinlock: the waiter spins) -> ``vm_lock`` (the VMM's lock: a share
``accept_spin_share`` of its waiters spin in the guest, the others sleep) -> zeroing (rate fixed
at its start from the threads already zeroing, the DRAM bandwidth and the CPU share) ->
``cpa_lock`` (spinlock: the waiter stays runnable) -> ``pgd_lock`` -> core time. A chunk's
``cpa_lock`` acquisitions are served as one hold of their summed length (the lock's utilisation
is unchanged; individual hand-overs are not modelled).

vCPU scheduling (:func:`kit.sim.demands.schedule`): the runnable threads are counted as the run
goes (every live vCPU thread but the sleeping waiters, plus the flush IPIs' load so far); work
and the holds of the guest and VM locks are stretched by SMT sharing and time slices when each
starts; a guest or VM lock handed to a waiter whose vCPU thread is off its CPU (drawn, with
probability ``1 - cores/runnable``) stays unused until the waiter's turn comes (drawn uniformly
over the ``runnable/cores - 1`` slices it waits for): lock-holder and lock-waiter preemption.
The draws come from a ``numpy.random.Generator`` seeded by ``seed``.

Identical guests (``copies``): a guest given with ``copies = k`` stands for ``k`` guests of the
same trace that move in step. Its vCPU threads count ``k`` times among the runnable threads
(and its sleeping waiters), its zeroing ``k`` times among the threads zeroing, its flushes'
IPI load ``k`` times; its guest and VM locks are each copy's own (their holds count ``k``
times in the totals); a ``cpa_lock`` or ``pgd_lock`` it takes is held for the ``k`` copies'
holds back to back. :func:`expand` turns the result into one row per copy. A replicated DES
run (:func:`kit.sim.scenario.des_groups`) times a few guests of each kind this way; a test
compares it with timing every guest.

The engine is one loop over a heap of ``(time, push order, vCPU, stage)`` tuples, each chunk's
demand terms plain floats (docs/sim-model.md, "Scenario parameters and their bounds", gives
its speed); ``benchmarks/des_simpy.py`` is the same model in SimPy, checked to give the same
result bit for bit.
"""
from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np

from .demands import ChunkDemand, dram_gbps, schedule, slice_us

GUEST, VM, ZERO, CPA, PGD, CPU, START = range(7)


@dataclass
class DesResult:
    """What a discrete-event run (:func:`run`) returns: every chunk's completion time and guest,
    lock waits and holds, and the run's time series."""

    sim_us: float
    completions: np.ndarray      # completion time of each chunk (us), in completion order
    guest: np.ndarray            # guest of each completed chunk
    nbytes: np.ndarray           # bytes faulted in by each completed chunk
    latency: np.ndarray          # acceptance latency of each chunk (us)
    waits: dict                  # lock -> array of (end time, wait us)
    holds: dict                  # lock -> total hold time (us)
    stopped: bool
    events: int
    handoffs: dict = field(default_factory=dict)   # lock -> (hand-offs delayed, total delay us)
    runnable_mean: float = 0.0   # time-averaged runnable threads (IPI load included)
    #: lock -> total wait (us) of each guest's vCPUs, per guest (the waits above, by guest)
    guest_waits: dict = field(default_factory=dict)
    #: lock -> total hand-off delay (us) of each guest's lock, per guest (guest and VM locks)
    guest_handoffs: dict = field(default_factory=dict)
    #: per guest, how many identical guests it stood for (``run(copies=...)``; :func:`expand`)
    copies: list = field(default_factory=list)
    #: lock -> per row of ``waits``, the copies of the waiting guest (None: one each)
    wait_copies: dict | None = None


class _Lock:
    __slots__ = ("busy", "queue", "hold", "waits", "wc", "delayed", "delay", "by_guest")

    def __init__(self):
        self.busy, self.queue, self.hold, self.waits = False, deque(), 0.0, []
        self.wc = []             # copies of each wait's guest (only when some guest stands for several)
        self.delayed, self.delay = 0, 0.0
        self.by_guest = {}       # guest -> total wait (us) of one of its copies


def run(guests: list[tuple[int, list[tuple[int, ChunkDemand, float]]]], cores: int, p, *,
        progress=None, should_stop=None, snapshot=None, snapshot_every_s: float = 0.25,
        seed: int = 0, copies=None) -> DesResult:
    """``guests``: per guest (vcpus, [(chunks, demand, bytes per chunk), ...] in order).
    ``snapshot``: called with the partial :class:`DesResult` at most every ``snapshot_every_s``
    seconds of wall time (live plots). ``seed``: the scheduling draws. ``copies``: per guest,
    how many identical guests it stands for (default one each; see the module doc): its
    threads, zeroing and flush load count that many times, and its holds of the global locks
    are that many holds back to back. The result is per guest given (:func:`expand` gives one
    row per copy)."""
    import time as _time
    last_snap = _time.perf_counter()
    G = len(guests)
    copies = [1] * G if copies is None else [int(c) for c in copies]
    if len(copies) != G or min(copies, default=1) < 1:
        raise ValueError(f"copies: one count >= 1 per guest, got {copies!r}")
    # per guest: each chunk's engine terms (the demand of its batch, as plain floats)
    seqs = []
    for _, batches in guests:
        terms = [(float(d.guest_lock_us), float(d.vm_hold_us), float(d.zero_bytes), float(d.cpa_hold_us),
                  float(d.pgd_hold_us), float(d.core_us), float(d.ipi_load_us), float(b))
                 for _, d, b in batches]
        seqs.append([terms[k] for k, (n, _, _) in enumerate(batches) for _ in range(int(n))])
    total = int(sum(len(sq) for sq in seqs))
    next_chunk = [0] * G
    vm_locks = [_Lock() for _ in range(G)]
    guest_locks = [_Lock() for _ in range(G)]
    cpa, pgd = _Lock(), _Lock()
    weighted = any(c > 1 for c in copies)
    heap: list = []
    heappush, heappop = heapq.heappush, heapq.heappop
    seq = 0
    state = {}            # vcpu -> (guest, start time, terms)
    alive = sum(n * c for (n, _), c in zip(guests, copies))
    sleeping = 0          # waiting on a vm_lock, asleep in the VMM
    zeroing = 0
    ipi_total = 0.0
    sleep_share = 1.0 - min(max(p["accept_spin_share"], 0.0), 1.0)
    sleep_acc = 0.0
    bw = dram_gbps(p, cores)
    zero_core = p["zero_gbps_core"]
    turn = slice_us(p, cores)
    rng = np.random.default_rng(seed)
    draws = rng.random(4096).tolist()
    di = 0
    cache: dict = {}
    run_area = 0.0        # integral of runnable threads over time
    last_t = 0.0
    done_t = np.zeros(total)
    done_g = np.zeros(total, dtype=np.int32)
    done_b = np.zeros(total)
    lat = np.zeros(total)
    ndone = 0
    now = 0.0
    events = 0
    stopped = False

    def sched_of(key):
        if len(cache) > 4096:
            cache.clear()
        sc = cache[key] = schedule(key[0], cores, p, key[1])
        return sc

    def release(lk, t, stage):
        """The lock is free at ``t`` and has a waiter: hand it over."""
        nonlocal sleeping, seq, di, draws
        w, since, slept = lk.queue.popleft()
        lk.waits.append((t, t - since))
        gw, _, d = state[w]
        c = copies[gw]
        if weighted:
            lk.wc.append(c)
        lk.by_guest[gw] = lk.by_guest.get(gw, 0.0) + (t - since)
        if slept:
            sleeping -= slept
        key = (alive - sleeping, round(ipi_total / now, 2) if ipi_total and now > 0 else 0.0)
        sc = cache.get(key) or sched_of(key)
        if stage == VM or stage == GUEST:
            hold = (d[1] if stage == VM else d[0]) * sc.stretch
            if sc.share < 1.0:
                if di >= 4096:
                    draws, di = rng.random(4096).tolist(), 0
                di += 1
                if draws[di - 1] < 1.0 - sc.share:
                    # the waiter's vCPU thread is off its CPU: the lock waits for its turn
                    if di >= 4096:
                        draws, di = rng.random(4096).tolist(), 0
                    di += 1
                    late = draws[di - 1] * (1.0 / sc.share - 1.0) * turn
                    lk.delayed += c
                    lk.delay += late * c
                    hold += late
            lk.hold += hold * c
        else:
            hold = (d[3] if stage == CPA else d[4]) * sc.irq
            if c > 1:
                hold *= c
            lk.hold += hold
        seq += 1
        heappush(heap, (t + hold, seq, w, stage))

    # every vCPU thread starts its first chunk at 0, in order (START events, not counted)
    v = 0
    for g, (n, _) in enumerate(guests):
        for _ in range(n):
            seq += 1
            heappush(heap, (0.0, seq, v, START))
            state[v] = (g, 0.0, None)
            v += 1
    report = max(total // 100, 1)
    while heap:
        now, _, v, stage = heappop(heap)
        g, t0, d = state[v]
        c = copies[g]
        # the stage that ended; then ``stage`` becomes the next one to enter
        if stage != START:
            run_area += (alive - sleeping) * (now - last_t)
            last_t = now
            events += 1
        if stage <= PGD:                 # GUEST, VM, ZERO, CPA, PGD: on to the next stage
            if stage == ZERO:
                zeroing -= c
            else:
                lk = (guest_locks[g] if stage == GUEST else vm_locks[g] if stage == VM
                      else cpa if stage == CPA else pgd)
                if lk.queue:
                    release(lk, now, stage)
                else:
                    lk.busy = False
            stage += 1
        else:
            if stage == CPU:
                ipi_total += d[6] * c
                done_t[ndone], done_g[ndone], done_b[ndone], lat[ndone] = now, g, d[7], now - t0
                ndone += 1
                if ndone % report == 0:
                    if progress:
                        progress(ndone / total)
                    if should_stop and should_stop():
                        stopped = True
                        break
                    if snapshot and _time.perf_counter() - last_snap >= snapshot_every_s:
                        snapshot(_result(now, ndone, done_t, done_g, done_b, lat, guest_locks, vm_locks, cpa,
                                         pgd, False, events, run_area, ipi_total, copies))
                        last_snap = _time.perf_counter()
            # the next chunk of the guest, if it has one
            i = next_chunk[g]
            sq = seqs[g]
            if i >= len(sq):
                alive -= c
                continue
            next_chunk[g] = i + 1
            d = sq[i]
            state[v] = (g, now, d)
            stage = GUEST
        # enter ``stage`` at ``now`` (acquiring its lock if it has one)
        while True:
            if stage == GUEST or stage == VM:
                # the guest's lock (its waiters spin), then the VM's (a share of them sleep)
                i = stage - GUEST
                if d[i] <= 0:
                    stage += 1
                    continue
                lk = (guest_locks if stage == GUEST else vm_locks)[g]
                if lk.busy:
                    slept = 0
                    if stage == VM:
                        sleep_acc += sleep_share * c
                        slept = int(sleep_acc)
                        if slept:
                            sleep_acc -= slept
                            sleeping += slept
                    lk.queue.append((v, now, slept))
                    break
                lk.busy = True
                key = (alive - sleeping, round(ipi_total / now, 2) if ipi_total and now > 0 else 0.0)
                hold = d[i] * (cache.get(key) or sched_of(key)).stretch
                lk.hold += hold * c
                seq += 1
                heappush(heap, (now + hold, seq, v, stage))
                break
            if stage == ZERO:
                if d[2] <= 0:
                    stage = CPA
                    continue
                zeroing += c
                key = (alive - sleeping, round(ipi_total / now, 2) if ipi_total and now > 0 else 0.0)
                # zero_us, inline: each thread at most zero_gbps_core, together at most bw
                rate = zero_core / (cache.get(key) or sched_of(key)).stretch
                if bw > 0:
                    rate = min(rate, bw / max(zeroing, 1.0))
                seq += 1
                heappush(heap, (now + d[2] / (rate * 1e3), seq, v, ZERO))
                break
            if stage == CPA or stage == PGD:
                lk, hold = (cpa, d[3]) if stage == CPA else (pgd, d[4])
                if hold <= 0:
                    stage += 1
                    continue
                if lk.busy:
                    lk.queue.append((v, now, 0))
                    break
                lk.busy = True
                key = (alive - sleeping, round(ipi_total / now, 2) if ipi_total and now > 0 else 0.0)
                hold *= (cache.get(key) or sched_of(key)).irq
                if c > 1:
                    hold *= c
                lk.hold += hold
                seq += 1
                heappush(heap, (now + hold, seq, v, stage))
                break
            key = (alive - sleeping, round(ipi_total / now, 2) if ipi_total and now > 0 else 0.0)
            seq += 1
            heappush(heap, (now + d[5] * (cache.get(key) or sched_of(key)).stretch, seq, v, CPU))
            break
    return _result(now, ndone, done_t, done_g, done_b, lat, guest_locks, vm_locks, cpa, pgd, stopped, events,
                   run_area, ipi_total, copies)


def _result(now, ndone, done_t, done_g, done_b, lat, guest_locks, vm_locks, cpa, pgd, stopped, events,
            run_area=0.0, ipi_total=0.0, copies=None) -> DesResult:
    G = len(guest_locks)
    copies = [1] * G if copies is None else copies
    waits = {"guest_lock": np.asarray([w for lk in guest_locks for w in lk.waits]).reshape(-1, 2),
             "vm_lock": np.asarray([w for lk in vm_locks for w in lk.waits]).reshape(-1, 2),
             "cpa_lock": np.asarray(cpa.waits).reshape(-1, 2),
             "pgd_lock": np.asarray(pgd.waits).reshape(-1, 2)}
    wait_copies = None
    if any(c > 1 for c in copies):
        wait_copies = {"guest_lock": np.repeat(copies, [len(lk.waits) for lk in guest_locks]),
                       "vm_lock": np.repeat(copies, [len(lk.waits) for lk in vm_locks]),
                       "cpa_lock": np.asarray(cpa.wc, dtype=np.int64), "pgd_lock": np.asarray(pgd.wc, dtype=np.int64)}
    holds = {"guest_lock": sum(lk.hold for lk in guest_locks), "vm_lock": sum(lk.hold for lk in vm_locks),
             "cpa_lock": cpa.hold, "pgd_lock": pgd.hold}
    handoffs = {"guest_lock": (sum(lk.delayed for lk in guest_locks), sum(lk.delay for lk in guest_locks)),
                "vm_lock": (sum(lk.delayed for lk in vm_locks), sum(lk.delay for lk in vm_locks))}
    mean_run = (run_area + ipi_total) / now if now > 0 else 0.0
    by_guest = {"guest_lock": [lk.by_guest.get(g, 0.0) for g, lk in enumerate(guest_locks)],
                "vm_lock": [lk.by_guest.get(g, 0.0) for g, lk in enumerate(vm_locks)],
                "cpa_lock": [cpa.by_guest.get(g, 0.0) for g in range(G)],
                "pgd_lock": [pgd.by_guest.get(g, 0.0) for g in range(G)]}
    return DesResult(now, done_t[:ndone], done_g[:ndone], done_b[:ndone], lat[:ndone], waits,
                     holds, stopped, events, handoffs, mean_run, by_guest,
                     {"guest_lock": [lk.delay / c for lk, c in zip(guest_locks, copies)],
                      "vm_lock": [lk.delay / c for lk, c in zip(vm_locks, copies)]},
                     copies=list(copies), wait_copies=wait_copies)


def expand(r: DesResult, groups: list[list[int]]) -> DesResult:
    """The result of a run whose guest ``i`` stood for the guests ``groups[i]`` (``copies`` of
    :func:`run`: ``len(groups[i])`` each), one row per guest: each copy completes its chunks
    when the guest it copies does (completions merged in time order), waits as long, and
    carries that guest's per-guest waits and hand-off delays. Totals (holds, hand-offs,
    events, runnable threads) already count every copy."""
    sizes = np.asarray([len(m) for m in groups], dtype=np.int64)
    if len(sizes) != len(r.copies) or np.any(sizes != np.asarray(r.copies)):
        raise ValueError(f"expand: groups of sizes {sizes.tolist()} for copies {r.copies}")
    if np.all(sizes == 1):
        ids = np.asarray([m[0] for m in groups], dtype=np.int32)
        return replace(r, guest=ids[r.guest], copies=[1] * len(groups))
    members = np.concatenate([np.asarray(m, dtype=np.int32) for m in groups])
    first = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    k = sizes[r.guest]
    rows = np.repeat(np.arange(len(r.guest)), k)
    # the j-th copy of each row: members[first[guest] + j]
    j = np.arange(len(rows)) - np.repeat(np.cumsum(k) - k, k)
    guest = members[first[r.guest[rows]] + j]      # rows stay in completion order
    waits = {lock: np.repeat(w, r.wait_copies[lock], axis=0) if r.wait_copies else w
             for lock, w in r.waits.items()}
    n = int(members.max()) + 1

    def per_guest(values):
        out = [0.0] * n
        for i, m in enumerate(groups):
            for g in m:
                out[g] = values[i] if i < len(values) else 0.0
        return out
    return replace(r, completions=r.completions[rows], guest=guest, nbytes=r.nbytes[rows], latency=r.latency[rows],
                   waits=waits, guest_waits={k: per_guest(v) for k, v in r.guest_waits.items()},
                   guest_handoffs={k: per_guest(v) for k, v in r.guest_handoffs.items()},
                   copies=[1] * n, wait_copies=None)
