"""The discrete-event engine: every vCPU thread of every guest takes the next chunk of its guest's
unaccepted memory and works through it, stage by stage, against the shared resources
(:mod:`kit.sim.demands`). It gives time series and percentiles.

Stages of one chunk, each with the demand of the trace batch the chunk belongs to:
``guest_lock`` (the guest's spinlock: the waiter spins, the hold is stretched by
over-subscription) -> ``vm_lock`` (mutex: the waiter sleeps; the hold is stretched by CPU over-subscription at the
time it starts) -> zeroing (rate fixed at its start from the cores already zeroing) ->
``cpa_lock`` (spinlock: the waiter stays runnable) -> ``pgd_lock`` -> core time (stretched by
over-subscription). A chunk's ``cpa_lock`` acquisitions are served as one hold of their summed
length (the lock's utilisation is unchanged; individual hand-overs are not modelled).
"""
from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass

import numpy as np

from .demands import ChunkDemand, zero_us

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


class _Lock:
    __slots__ = ("busy", "queue", "hold", "waits")

    def __init__(self):
        self.busy, self.queue, self.hold, self.waits = False, deque(), 0.0, []


def run(guests: list[tuple[int, list[tuple[int, ChunkDemand, float]]]], cores: int, p, *,
        progress=None, should_stop=None, snapshot=None, snapshot_every_s: float = 0.25) -> DesResult:
    """``guests``: per guest (vcpus, [(chunks, demand, bytes per chunk), ...] in order).
    ``snapshot``: called with the partial :class:`DesResult` at most every ``snapshot_every_s``
    seconds of wall time (live plots)."""
    import time as _time
    last_snap = _time.perf_counter()
    G = len(guests)
    # per guest: flat per-chunk batch index
    plan = []
    for _, batches in guests:
        counts = np.asarray([b[0] for b in batches], dtype=np.int64)
        plan.append((np.repeat(np.arange(len(batches)), counts), batches))
    total = int(sum(len(pl[0]) for pl in plan))
    next_chunk = [0] * G
    vm_locks = [_Lock() for _ in range(G)]
    guest_locks = [_Lock() for _ in range(G)]
    cpa, pgd = _Lock(), _Lock()
    heap: list = []
    seq = 0
    state = {}            # vcpu -> (guest, chunk index, start time, demand, bytes)
    alive = sum(n for n, _ in guests)
    sleeping = 0          # waiting on a vm_lock
    zeroing = 0
    ipi_total = 0.0
    done_t = np.zeros(total)
    done_g = np.zeros(total, dtype=np.int32)
    done_b = np.zeros(total)
    lat = np.zeros(total)
    ndone = 0
    now = 0.0
    events = 0
    stopped = False

    def sigma():
        ipi = ipi_total / now if now > 0 else 0.0
        return max(1.0, (alive - sleeping + ipi) / cores)

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
        _, d, b = plan[g][1][plan[g][0][i]]
        state[v] = (g, i, t, d, b)
        request(v, GUEST, t)

    def request(v, stage, t):
        """Enter ``stage`` at time ``t`` (acquiring its lock if it has one)."""
        nonlocal sleeping, zeroing
        g, i, t0, d, b = state[v]
        while stage != DONE:
            if stage == GUEST:
                if d.guest_lock_us <= 0:
                    stage = VM
                    continue
                lk = guest_locks[g]
                if lk.busy:
                    lk.queue.append((v, t))
                    return
                lk.busy = True
                hold = d.guest_lock_us * sigma()
                lk.hold += hold
                push(t + hold, v, GUEST)
                return
            if stage == VM:
                if d.vm_lock_us <= 0:
                    stage = ZERO
                    continue
                lk = vm_locks[g]
                if lk.busy:
                    lk.queue.append((v, t))
                    sleeping += 1
                    return
                lk.busy = True
                hold = d.vm_lock_us * sigma()
                lk.hold += hold
                push(t + hold, v, VM)
                return
            if stage == ZERO:
                if d.zero_bytes <= 0:
                    stage = CPA
                    continue
                zeroing += 1
                push(t + zero_us(d.zero_bytes, p, zeroing), v, ZERO)
                return
            if stage in (CPA, PGD):
                lk, hold = (cpa, d.cpa_us) if stage == CPA else (pgd, d.pgd_us)
                if hold <= 0:
                    stage += 1
                    continue
                if lk.busy:
                    lk.queue.append((v, t))
                    return
                lk.busy = True
                lk.hold += hold
                push(t + hold, v, stage)
                return
            if stage == CPU:
                push(t + d.cpu_us * sigma(), v, CPU)
                return

    def release(lk, t, stage):
        """The lock is free at ``t``: hand it to the first waiter."""
        nonlocal sleeping
        if not lk.queue:
            lk.busy = False
            return
        w, since = lk.queue.popleft()
        lk.waits.append((t, t - since))
        if stage == VM:
            sleeping -= 1
        g, i, t0, d, b = state[w]
        hold = (d.vm_lock_us * sigma() if stage == VM else d.guest_lock_us * sigma() if stage == GUEST
                else d.cpa_us if stage == CPA else d.pgd_us)
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
        events += 1
        g, i, t0, d, b = state[v]
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
            ipi_total += d.ipi_core_us
            done_t[ndone], done_g[ndone], done_b[ndone], lat[ndone] = now, g, b, now - t0
            ndone += 1
            if progress and ndone % report == 0:
                progress(ndone / total)
            if should_stop and ndone % report == 0 and should_stop():
                stopped = True
                break
            if snapshot and ndone % report == 0 and _time.perf_counter() - last_snap >= snapshot_every_s:
                snapshot(_result(now, ndone, done_t, done_g, done_b, lat, guest_locks, vm_locks, cpa, pgd, False, events))
                last_snap = _time.perf_counter()
            start_chunk(v, g, now)
    return _result(now, ndone, done_t, done_g, done_b, lat, guest_locks, vm_locks, cpa, pgd, stopped, events)


def _result(now, ndone, done_t, done_g, done_b, lat, guest_locks, vm_locks, cpa, pgd, stopped, events) -> DesResult:
    waits = {"guest_lock": np.asarray([w for lk in guest_locks for w in lk.waits]).reshape(-1, 2),
             "vm_lock": np.asarray([w for lk in vm_locks for w in lk.waits]).reshape(-1, 2),
             "cpa_lock": np.asarray(cpa.waits).reshape(-1, 2),
             "pgd_lock": np.asarray(pgd.waits).reshape(-1, 2)}
    holds = {"guest_lock": sum(lk.hold for lk in guest_locks), "vm_lock": sum(lk.hold for lk in vm_locks),
             "cpa_lock": cpa.hold, "pgd_lock": pgd.hold}
    return DesResult(now, done_t[:ndone], done_g[:ndone], done_b[:ndone], lat[:ndone], waits,
                     holds, stopped, events)
