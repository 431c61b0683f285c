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
"""
from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .demands import ChunkDemand, dram_gbps, schedule, slice_us, zero_us

GUEST, VM, ZERO, CPA, PGD, CPU, DONE = range(7)


@dataclass
class DesResult:
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


class _Lock:
    __slots__ = ("busy", "queue", "hold", "waits", "delayed", "delay", "by_guest")

    def __init__(self):
        self.busy, self.queue, self.hold, self.waits = False, deque(), 0.0, []
        self.delayed, self.delay = 0, 0.0
        self.by_guest = {}       # guest -> total wait (us)


def run(guests: list[tuple[int, list[tuple[int, ChunkDemand, float]]]], cores: int, p, *,
        progress=None, should_stop=None, snapshot=None, snapshot_every_s: float = 0.25,
        seed: int = 0) -> DesResult:
    """``guests``: per guest (vcpus, [(chunks, demand, bytes per chunk), ...] in order).
    ``snapshot``: called with the partial :class:`DesResult` at most every ``snapshot_every_s``
    seconds of wall time (live plots). ``seed``: the scheduling draws."""
    import time as _time
    last_snap = _time.perf_counter()
    G = len(guests)
    # per guest: flat per-chunk batch index; per batch the demand's engine terms
    plan = []
    for _, batches in guests:
        counts = np.asarray([b[0] for b in batches], dtype=np.int64)
        terms = [(d.guest_lock_us, d.vm_hold_us, d.zero_bytes, d.cpa_hold_us, d.pgd_hold_us,
                  d.core_us, d.ipi_load_us, b) for _, d, b in batches]
        plan.append((np.repeat(np.arange(len(batches)), counts), terms))
    total = int(sum(len(pl[0]) for pl in plan))
    next_chunk = [0] * G
    vm_locks = [_Lock() for _ in range(G)]
    guest_locks = [_Lock() for _ in range(G)]
    cpa, pgd = _Lock(), _Lock()
    heap: list = []
    seq = 0
    state = {}            # vcpu -> (guest, chunk index, start time, terms)
    alive = sum(n for n, _ in guests)
    sleeping = 0          # waiting on a vm_lock, asleep in the VMM
    zeroing = 0
    ipi_total = 0.0
    sleep_share = 1.0 - min(max(p["accept_spin_share"], 0.0), 1.0)
    sleep_acc = 0.0
    bw = dram_gbps(p, cores)
    turn = slice_us(p, cores)
    rng = np.random.default_rng(seed)
    draws = rng.random(4096)
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

    def sched():
        ipi = ipi_total / now if now > 0 else 0.0
        key = (alive - sleeping, round(ipi, 2))
        sc = cache.get(key)
        if sc is None:
            if len(cache) > 4096:
                cache.clear()
            sc = cache[key] = schedule(key[0], cores, p, key[1])
        return sc

    def draw():
        nonlocal di, draws
        if di >= len(draws):
            draws, di = rng.random(4096), 0
        di += 1
        return draws[di - 1]

    def push(t, v, stage):
        nonlocal seq
        seq += 1
        heapq.heappush(heap, (t, seq, v, stage))

    def start_chunk(v, g, t):
        nonlocal alive
        i = next_chunk[g]
        if i >= len(plan[g][0]):
            alive -= 1
            return
        next_chunk[g] = i + 1
        state[v] = (g, i, t, plan[g][1][plan[g][0][i]])
        request(v, GUEST, t)

    def request(v, stage, t):
        """Enter ``stage`` at time ``t`` (acquiring its lock if it has one)."""
        nonlocal sleeping, zeroing, sleep_acc
        g, i, t0, d = state[v]
        while stage != DONE:
            if stage == GUEST:
                if d[0] <= 0:
                    stage = VM
                    continue
                lk = guest_locks[g]
                if lk.busy:
                    lk.queue.append((v, t, False))
                    return
                lk.busy = True
                hold = d[0] * sched().stretch
                lk.hold += hold
                push(t + hold, v, GUEST)
                return
            if stage == VM:
                if d[1] <= 0:
                    stage = ZERO
                    continue
                lk = vm_locks[g]
                if lk.busy:
                    sleep_acc += sleep_share
                    slept = sleep_acc >= 1.0
                    if slept:
                        sleep_acc -= 1.0
                        sleeping += 1
                    lk.queue.append((v, t, slept))
                    return
                lk.busy = True
                hold = d[1] * sched().stretch
                lk.hold += hold
                push(t + hold, v, VM)
                return
            if stage == ZERO:
                if d[2] <= 0:
                    stage = CPA
                    continue
                zeroing += 1
                push(t + zero_us(d[2], p, zeroing, sched().stretch, bw), v, ZERO)
                return
            if stage in (CPA, PGD):
                lk, hold = (cpa, d[3]) if stage == CPA else (pgd, d[4])
                if hold <= 0:
                    stage += 1
                    continue
                if lk.busy:
                    lk.queue.append((v, t, False))
                    return
                lk.busy = True
                hold *= sched().irq
                lk.hold += hold
                push(t + hold, v, stage)
                return
            if stage == CPU:
                push(t + d[5] * sched().stretch, v, CPU)
                return

    def release(lk, t, stage):
        """The lock is free at ``t``: hand it to the first waiter."""
        nonlocal sleeping
        if not lk.queue:
            lk.busy = False
            return
        w, since, slept = lk.queue.popleft()
        lk.waits.append((t, t - since))
        gw = state[w][0]
        lk.by_guest[gw] = lk.by_guest.get(gw, 0.0) + (t - since)
        if slept:
            sleeping -= 1
        d = state[w][3]
        sc = sched()
        if stage == VM or stage == GUEST:
            hold = (d[1] if stage == VM else d[0]) * sc.stretch
            if sc.share < 1.0 and draw() < 1.0 - sc.share:
                # the waiter's vCPU thread is off its CPU: the lock waits for its turn
                late = draw() * (1.0 / sc.share - 1.0) * turn
                lk.delayed += 1
                lk.delay += late
                hold += late
        else:
            hold = (d[3] if stage == CPA else d[4]) * sc.irq
        lk.hold += hold
        push(t + hold, w, stage)

    v = 0
    for g, (n, _) in enumerate(guests):
        for _ in range(n):
            state[v] = None
            start_chunk(v, g, 0.0)
            v += 1
    report = max(total // 100, 1)
    while heap:
        now, _, v, stage = heapq.heappop(heap)
        run_area += (alive - sleeping) * (now - last_t)
        last_t = now
        events += 1
        g, i, t0, d = state[v]
        if stage == GUEST:
            release(guest_locks[g], now, GUEST)
            request(v, VM, now)
        elif stage == VM:
            release(vm_locks[g], now, VM)
            request(v, ZERO, now)
        elif stage == ZERO:
            zeroing -= 1
            request(v, CPA, now)
        elif stage == CPA:
            release(cpa, now, CPA)
            request(v, PGD, now)
        elif stage == PGD:
            release(pgd, now, PGD)
            request(v, CPU, now)
        else:
            ipi_total += d[6]
            done_t[ndone], done_g[ndone], done_b[ndone], lat[ndone] = now, g, d[7], now - t0
            ndone += 1
            if progress and ndone % report == 0:
                progress(ndone / total)
            if should_stop and ndone % report == 0 and should_stop():
                stopped = True
                break
            if snapshot and ndone % report == 0 and _time.perf_counter() - last_snap >= snapshot_every_s:
                snapshot(_result(now, ndone, done_t, done_g, done_b, lat, guest_locks, vm_locks, cpa, pgd,
                                 False, events, run_area, ipi_total))
                last_snap = _time.perf_counter()
            start_chunk(v, g, now)
    return _result(now, ndone, done_t, done_g, done_b, lat, guest_locks, vm_locks, cpa, pgd, stopped, events,
                   run_area, ipi_total)


def _result(now, ndone, done_t, done_g, done_b, lat, guest_locks, vm_locks, cpa, pgd, stopped, events,
            run_area=0.0, ipi_total=0.0) -> DesResult:
    waits = {"guest_lock": np.asarray([w for lk in guest_locks for w in lk.waits]).reshape(-1, 2),
             "vm_lock": np.asarray([w for lk in vm_locks for w in lk.waits]).reshape(-1, 2),
             "cpa_lock": np.asarray(cpa.waits).reshape(-1, 2),
             "pgd_lock": np.asarray(pgd.waits).reshape(-1, 2)}
    holds = {"guest_lock": sum(lk.hold for lk in guest_locks), "vm_lock": sum(lk.hold for lk in vm_locks),
             "cpa_lock": cpa.hold, "pgd_lock": pgd.hold}
    handoffs = {"guest_lock": (sum(lk.delayed for lk in guest_locks), sum(lk.delay for lk in guest_locks)),
                "vm_lock": (sum(lk.delayed for lk in vm_locks), sum(lk.delay for lk in vm_locks))}
    mean_run = (run_area + ipi_total) / now if now > 0 else 0.0
    G = len(guest_locks)
    by_guest = {"guest_lock": [lk.by_guest.get(g, 0.0) for g, lk in enumerate(guest_locks)],
                "vm_lock": [lk.by_guest.get(g, 0.0) for g, lk in enumerate(vm_locks)],
                "cpa_lock": [cpa.by_guest.get(g, 0.0) for g in range(G)],
                "pgd_lock": [pgd.by_guest.get(g, 0.0) for g in range(G)]}
    return DesResult(now, done_t[:ndone], done_g[:ndone], done_b[:ndone], lat[:ndone], waits,
                     holds, stopped, events, handoffs, mean_run, by_guest,
                     {"guest_lock": [lk.delay for lk in guest_locks], "vm_lock": [lk.delay for lk in vm_locks]})
