"""The discrete-event model of :mod:`kit.sim.des`, written with SimPy: the benchmark's reference.

The same model, stage for stage: every vCPU of every guest is a SimPy process that takes its
guest's next chunk and goes ``guest_lock`` -> ``vm_lock`` -> zeroing -> ``cpa_lock`` ->
``pgd_lock`` -> core time, with the holds and durations of :mod:`kit.sim.demands`, the vCPU
scheduling of :func:`kit.sim.demands.schedule` (stretch of work and of the guest and VM locks'
holds, interrupt stretch of the global locks' holds, the flush IPIs' load), the VM lock's
sleeping waiters (``accept_spin_share``), the hand-off of a guest or VM lock to a descheduled
waiter drawn from the same ``numpy.random.Generator`` stream, and guests standing for several
identical ones (``copies``). :func:`run` takes the engine's input and returns its result
(:class:`kit.sim.des.DesResult`), so that ``benchmarks/sim.py`` can check the two give the same
simulated result before it compares their speed.

Keeping the mirror exact: each ``push`` of the engine is one ``env.timeout`` here, created at
the same point of the same handler, so events at equal times come out in the same order (the
engine breaks ties by push order, SimPy by creation order), and the scheduling draws are taken
in the same order. A lock hands over as the engine's ``release`` does: the releasing process
computes the waiter's hold, at the release time, and creates the waiter's timeout before its
own next one. ``Model.stage`` holds the stages in the engine's order, one branch each, beside
the engine's ``request``: a change to the engine's stages is made in the same branch here.

SimPy is a benchmark-only dependency (the ``bench`` extra: ``pip install -e .[bench]``).
"""
from __future__ import annotations

from collections import deque

import numpy as np
import simpy

from kit.sim.demands import dram_gbps, schedule, slice_us, zero_us
from kit.sim.des import DesResult


class Lock:
    """The engine's ``_Lock``: FIFO, handed over by the releaser (no SimPy resource: its
    grant would be computed when the waiter resumes, not when the lock is released)."""

    __slots__ = ("busy", "queue", "hold", "waits", "wc", "delayed", "delay")

    def __init__(self):
        self.busy, self.queue, self.hold, self.waits, self.wc = False, deque(), 0.0, [], []
        self.delayed, self.delay = 0, 0.0


class Model:
    def __init__(self, env: simpy.Environment, guests, cores: int, p, seed: int, copies):
        self.env, self.cores, self.p = env, cores, p
        self.copies = list(copies)
        self.weighted = any(c > 1 for c in self.copies)
        self.plan = []
        for _, batches in guests:
            terms = [(float(d.guest_lock_us), float(d.vm_hold_us), float(d.zero_bytes), float(d.cpa_hold_us),
                      float(d.pgd_hold_us), float(d.core_us), float(d.ipi_load_us), float(b))
                     for _, d, b in batches]
            counts = np.asarray([b[0] for b in batches], dtype=np.int64)
            self.plan.append((np.repeat(np.arange(len(batches)), counts), terms))
        total = int(sum(len(pl[0]) for pl in self.plan))
        self.next_chunk = [0] * len(guests)
        self.vm_locks = [Lock() for _ in guests]
        self.guest_locks = [Lock() for _ in guests]
        self.cpa, self.pgd = Lock(), Lock()
        self.alive = sum(n * c for (n, _), c in zip(guests, self.copies))
        self.sleeping = self.zeroing = 0
        self.ipi_total = 0.0
        self.sleep_share = 1.0 - min(max(p["accept_spin_share"], 0.0), 1.0)
        self.sleep_acc = 0.0
        self.bw, self.turn = dram_gbps(p, cores), slice_us(p, cores)
        self.rng = np.random.default_rng(seed)
        self.draws, self.di = self.rng.random(4096).tolist(), 0
        self.done_t, self.done_b, self.lat = np.zeros(total), np.zeros(total), np.zeros(total)
        self.done_g = np.zeros(total, dtype=np.int32)
        self.ndone = self.events = 0

    def sched(self):
        """The scheduling of the threads runnable now (the engine's ``sched``)."""
        now = self.env.now
        ipi = round(self.ipi_total / now, 2) if self.ipi_total and now > 0 else 0.0
        return schedule(self.alive - self.sleeping, self.cores, self.p, ipi)

    def draw(self) -> float:
        if self.di >= 4096:
            self.draws, self.di = self.rng.random(4096).tolist(), 0
        self.di += 1
        return self.draws[self.di - 1]

    def acquire(self, lk: Lock, g: int, d, hold_of, sleeps: bool = False):
        """The engine's lock stage: the timeout of the hold, now if the lock is free, else an
        event the releaser succeeds with the timeout it creates for this waiter."""
        if lk.busy:
            grant = self.env.event()
            slept = 0
            if sleeps:
                self.sleep_acc += self.sleep_share * self.copies[g]
                slept = int(self.sleep_acc)
                if slept:
                    self.sleep_acc -= slept
                    self.sleeping += slept
            lk.queue.append((grant, self.env.now, g, d, slept))
            return grant, True
        lk.busy = True
        return self.env.timeout(hold_of()), False

    def release(self, lk: Lock, stage: str) -> None:
        """The lock is free now: hand it to the first waiter (the engine's ``release``)."""
        if not lk.queue:
            lk.busy = False
            return
        grant, since, g, d, slept = lk.queue.popleft()
        now = self.env.now
        lk.waits.append((now, now - since))
        c = self.copies[g]
        if self.weighted:
            lk.wc.append(c)
        if slept:
            self.sleeping -= slept
        sc = self.sched()
        if stage in ("guest", "vm"):
            hold = (d[1] if stage == "vm" else d[0]) * sc.stretch
            if sc.share < 1.0 and self.draw() < 1.0 - sc.share:
                # the waiter's vCPU thread is off its CPU: the lock waits for its turn
                late = self.draw() * (1.0 / sc.share - 1.0) * self.turn
                lk.delayed += c
                lk.delay += late * c
                hold += late
            lk.hold += hold * c
        else:
            hold = (d[3] if stage == "cpa" else d[4]) * sc.irq
            if c > 1:
                hold *= c
            lk.hold += hold
        grant.succeed(self.env.timeout(hold))

    def vcpu(self, g: int):
        """One vCPU thread: chunk after chunk of guest ``g``, stage by stage."""
        env = self.env
        c = self.copies[g]
        while True:
            i = self.next_chunk[g]
            if i >= len(self.plan[g][0]):
                self.alive -= c
                return
            self.next_chunk[g] = i + 1
            d = self.plan[g][1][self.plan[g][0][i]]
            t0 = env.now
            for stage in ("guest", "vm", "zero", "cpa", "pgd", "cpu"):
                ev = self.stage(stage, g, d)
                if ev is None:
                    continue
                ev, waited = ev
                if waited:
                    ev = yield ev                       # the releaser's timeout for this hold
                yield ev
                self.events += 1
                self.leave(stage, g)
            self.ipi_total += d[6] * c
            n = self.ndone
            self.done_t[n], self.done_g[n], self.done_b[n], self.lat[n] = env.now, g, d[7], env.now - t0
            self.ndone = n + 1

    def stage(self, stage: str, g: int, d):
        """Enter a stage (the engine's ``request``): None if it has no work, else (event, whether
        it is a grant to wait for first)."""
        c = self.copies[g]
        if stage == "guest":
            if d[0] <= 0:
                return None
            lk = self.guest_locks[g]
            return self.acquire(lk, g, d, lambda: self._lock_hold(lk, d[0], c))
        if stage == "vm":
            if d[1] <= 0:
                return None
            lk = self.vm_locks[g]
            return self.acquire(lk, g, d, lambda: self._lock_hold(lk, d[1], c), sleeps=True)
        if stage == "zero":
            if d[2] <= 0:
                return None
            self.zeroing += c
            return self.env.timeout(zero_us(d[2], self.p, self.zeroing, self.sched().stretch, self.bw)), False
        if stage in ("cpa", "pgd"):
            lk, work = (self.cpa, d[3]) if stage == "cpa" else (self.pgd, d[4])
            if work <= 0:
                return None
            return self.acquire(lk, g, d, lambda: self._global_hold(lk, work, c))
        return self.env.timeout(d[5] * self.sched().stretch), False

    def _lock_hold(self, lk: Lock, work: float, c: int) -> float:
        """A guest or VM lock taken free: its hold, stretched by the scheduling now."""
        hold = work * self.sched().stretch
        lk.hold += hold * c
        return hold

    def _global_hold(self, lk: Lock, work: float, c: int) -> float:
        """``cpa_lock`` or ``pgd_lock`` taken free: interrupts stretch it; copies back to back."""
        hold = work * self.sched().irq
        if c > 1:
            hold *= c
        lk.hold += hold
        return hold

    def leave(self, stage: str, g: int) -> None:
        """A stage's end (the engine's event handler, before the next ``request``)."""
        if stage == "guest":
            self.release(self.guest_locks[g], "guest")
        elif stage == "vm":
            self.release(self.vm_locks[g], "vm")
        elif stage == "zero":
            self.zeroing -= self.copies[g]
        elif stage == "cpa":
            self.release(self.cpa, "cpa")
        elif stage == "pgd":
            self.release(self.pgd, "pgd")


def run(guests, cores: int, p, *, seed: int = 0, copies=None) -> DesResult:
    """:func:`kit.sim.des.run` in SimPy: same input, same result."""
    env = simpy.Environment()
    copies = [1] * len(guests) if copies is None else list(copies)
    m = Model(env, guests, cores, p, seed, copies)
    for g, (n, _) in enumerate(guests):
        for _ in range(n):
            env.process(m.vcpu(g))
    env.run()
    waits = {"guest_lock": np.asarray([w for lk in m.guest_locks for w in lk.waits]).reshape(-1, 2),
             "vm_lock": np.asarray([w for lk in m.vm_locks for w in lk.waits]).reshape(-1, 2),
             "cpa_lock": np.asarray(m.cpa.waits).reshape(-1, 2),
             "pgd_lock": np.asarray(m.pgd.waits).reshape(-1, 2)}
    holds = {"guest_lock": sum(lk.hold for lk in m.guest_locks), "vm_lock": sum(lk.hold for lk in m.vm_locks),
             "cpa_lock": m.cpa.hold, "pgd_lock": m.pgd.hold}
    handoffs = {"guest_lock": (sum(lk.delayed for lk in m.guest_locks), sum(lk.delay for lk in m.guest_locks)),
                "vm_lock": (sum(lk.delayed for lk in m.vm_locks), sum(lk.delay for lk in m.vm_locks))}
    k = m.ndone
    return DesResult(env.now, m.done_t[:k], m.done_g[:k], m.done_b[:k], m.lat[:k], waits, holds, False, m.events,
                     handoffs, copies=copies)
