"""The discrete-event model of :mod:`kit.sim.des`, written with SimPy: the benchmark's reference.

The same model, stage for stage: every vCPU of every guest is a SimPy process that takes its
guest's next chunk and goes ``guest_lock`` -> ``vm_lock`` -> zeroing -> ``cpa_lock`` ->
``pgd_lock`` -> core time, with the holds and durations of :mod:`kit.sim.demands` and the
same over-subscription factor (``sigma``). :func:`run` takes the engine's input and returns
its result (:class:`kit.sim.des.DesResult`), so that ``benchmarks/sim.py`` can check the two
give the same simulated result before it compares their speed.

Keeping the mirror exact: each ``push`` of the engine is one ``env.timeout`` here, created at
the same point of the same handler, so events at equal times come out in the same order (the
engine breaks ties by push order, SimPy by creation order). A lock hands over as the engine's
``release`` does: the releasing process computes the waiter's hold, at the release time,
and creates the waiter's timeout before its own next one. ``Model.stage`` holds the stages
in the engine's order, one branch each, beside the engine's ``request``: a change to the
engine's stages (vCPU scheduling, say) is made in the same branch here.

SimPy is a benchmark-only dependency (the ``bench`` extra: ``pip install -e .[bench]``).
"""
from __future__ import annotations

from collections import deque

import numpy as np
import simpy

from kit.sim.des import DesResult
from kit.sim.demands import zero_us


class Lock:
    """The engine's ``_Lock``: FIFO, handed over by the releaser (no SimPy resource: its
    grant would be computed when the waiter resumes, not when the lock is released)."""

    __slots__ = ("busy", "queue", "hold", "waits")

    def __init__(self):
        self.busy, self.queue, self.hold, self.waits = False, deque(), 0.0, []


class Model:
    def __init__(self, env: simpy.Environment, guests, cores: int, p):
        self.env, self.cores, self.p = env, cores, p
        self.plan = []
        for _, batches in guests:
            counts = np.asarray([b[0] for b in batches], dtype=np.int64)
            self.plan.append((np.repeat(np.arange(len(batches)), counts), batches))
        total = int(sum(len(pl[0]) for pl in self.plan))
        self.next_chunk = [0] * len(guests)
        self.vm_locks = [Lock() for _ in guests]
        self.guest_locks = [Lock() for _ in guests]
        self.cpa, self.pgd = Lock(), Lock()
        self.alive = sum(n for n, _ in guests)
        self.sleeping = self.zeroing = 0
        self.ipi_total = 0.0
        self.done_t, self.done_b, self.lat = np.zeros(total), np.zeros(total), np.zeros(total)
        self.done_g = np.zeros(total, dtype=np.int32)
        self.ndone = self.events = 0

    def sigma(self) -> float:
        now = self.env.now
        ipi = self.ipi_total / now if now > 0 else 0.0
        return max(1.0, (self.alive - self.sleeping + ipi) / self.cores)

    def acquire(self, lk: Lock, hold_of, sleeps: bool = False):
        """The engine's lock stage: the timeout of the hold, now if the lock is free, else an
        event the releaser succeeds with the timeout it creates for this waiter."""
        if lk.busy:
            grant = self.env.event()
            lk.queue.append((grant, self.env.now, hold_of))
            if sleeps:
                self.sleeping += 1
            return grant, True
        lk.busy = True
        hold = hold_of()
        lk.hold += hold
        return self.env.timeout(hold), False

    def release(self, lk: Lock, sleeps: bool = False) -> None:
        if not lk.queue:
            lk.busy = False
            return
        grant, since, hold_of = lk.queue.popleft()
        now = self.env.now
        lk.waits.append((now, now - since))
        if sleeps:
            self.sleeping -= 1
        hold = hold_of()
        lk.hold += hold
        grant.succeed(self.env.timeout(hold))

    def vcpu(self, g: int):
        """One vCPU thread: chunk after chunk of guest ``g``, stage by stage."""
        env = self.env
        while True:
            i = self.next_chunk[g]
            if i >= len(self.plan[g][0]):
                self.alive -= 1
                return
            self.next_chunk[g] = i + 1
            _, d, b = self.plan[g][1][self.plan[g][0][i]]
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
                self.leave(stage, g, d)
            self.ipi_total += d.ipi_core_us
            n = self.ndone
            self.done_t[n], self.done_g[n], self.done_b[n], self.lat[n] = env.now, g, b, env.now - t0
            self.ndone = n + 1

    def stage(self, stage: str, g: int, d):
        """Enter a stage (the engine's ``request``): None if it has no work, else (event, whether
        it is a grant to wait for first)."""
        if stage == "guest":
            if d.guest_lock_us <= 0:
                return None
            return self.acquire(self.guest_locks[g], lambda: d.guest_lock_us * self.sigma())
        if stage == "vm":
            if d.vm_lock_us <= 0:
                return None
            return self.acquire(self.vm_locks[g], lambda: d.vm_lock_us * self.sigma(), sleeps=True)
        if stage == "zero":
            if d.zero_bytes <= 0:
                return None
            self.zeroing += 1
            return self.env.timeout(zero_us(d.zero_bytes, self.p, self.zeroing)), False
        if stage == "cpa":
            return None if d.cpa_us <= 0 else self.acquire(self.cpa, lambda: d.cpa_us)
        if stage == "pgd":
            return None if d.pgd_us <= 0 else self.acquire(self.pgd, lambda: d.pgd_us)
        return self.env.timeout(d.cpu_us * self.sigma()), False

    def leave(self, stage: str, g: int, d) -> None:
        """A stage's end (the engine's event handler, before the next ``request``)."""
        if stage == "guest":
            self.release(self.guest_locks[g])
        elif stage == "vm":
            self.release(self.vm_locks[g], sleeps=True)
        elif stage == "zero":
            self.zeroing -= 1
        elif stage == "cpa":
            self.release(self.cpa)
        elif stage == "pgd":
            self.release(self.pgd)


def run(guests, cores: int, p) -> DesResult:
    """:func:`kit.sim.des.run` in SimPy: same input, same result."""
    env = simpy.Environment()
    m = Model(env, guests, cores, p)
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
    k = m.ndone
    return DesResult(env.now, m.done_t[:k], m.done_g[:k], m.done_b[:k], m.lat[:k], waits, holds, False, m.events)
