"""Synchronisation primitives whose operations are steps: :class:`Lock`, :class:`Srcu`,
:class:`Counter`.

Each operation returns a :class:`~kit.explore.Step` (or, for an operation made of several steps,
a generator to ``yield from``). Every primitive also has ``state()`` (a hashable value: a part of a
scenario's ``state_key()`` and of its ``snapshot()``), ``set_state(s)`` (for ``restore()``),
``view()`` (for traces) and ``holders()`` (the threads holding it, for the lock graph).
"""
from __future__ import annotations

from typing import Generator

from .step import Step


class LockUsageError(RuntimeError):
    """A thread used a primitive in a way the kernel forbids (unlocking a lock it does not hold,
    leaving an SRCU read-side section it is not in). Raised inside the step; a thread that does
    not catch it ends, and the explorer reports it under the ``no-exception`` invariant."""


class Lock:
    """A sleeping lock, such as a ``struct mutex`` (kernel/locking/mutex.c ``mutex_lock``,
    ``mutex_unlock``): ``yield lock.acquire()`` blocks while another thread holds it;
    ``yield lock.release()`` lets it go. Not recursive: a thread that acquires a lock it holds
    waits for itself, and the explorer reports the deadlock."""

    def __init__(self, name: str):
        self.name = name
        self.key = ("lock", name)
        self.keys = frozenset((self.key,))
        self.holder: str | None = None

    def acquire(self) -> Step:
        return Step(f"lock {self.name}", writes=self.keys, guard=self._free, action=self._take, on=self)

    def release(self) -> Step:
        return Step(f"unlock {self.name}", writes=self.keys, action=self._drop, on=self)

    def _free(self) -> bool:
        return self.holder is None

    def _take(self, thread: str) -> None:
        self.holder = thread

    def _drop(self, thread: str) -> None:
        if self.holder != thread:
            held = f"held by {self.holder}" if self.holder else "not held"
            raise LockUsageError(f"{thread} unlocks {self.name}, {held}")
        self.holder = None

    def holders(self) -> list[str]:
        return [self.holder] if self.holder is not None else []

    def state(self):
        return self.holder

    def set_state(self, state) -> None:
        self.holder = state

    def view(self) -> str | None:
        return self.holder

    def __repr__(self) -> str:
        return f"Lock({self.name!r}, holder={self.holder!r})"


class _GracePeriod:
    """What a ``synchronize_srcu`` caller waits for: the read-side sections that were open when
    it started (shown as the resource in the lock graph)."""

    def __init__(self, srcu: "Srcu", sections: frozenset):
        self.srcu = srcu
        self.sections = sections
        self.name = f"{srcu.name} grace period"

    def over(self) -> bool:
        return self.sections.isdisjoint(self.srcu.sections)

    def holders(self) -> list[str]:
        return sorted({t for t, _ in self.sections & self.srcu.sections})


class Srcu:
    """Sleepable RCU (include/linux/srcu.h ``srcu_read_lock``, ``srcu_read_unlock``;
    kernel/rcu/srcutree.c ``synchronize_srcu``, ``synchronize_srcu_expedited``).

    ``token = yield srcu.read_lock()`` opens a read-side section, ``yield srcu.read_unlock(token)``
    closes it (the kernel's ``idx``). ``yield from srcu.synchronize()`` is two steps: the start,
    which notes the sections open at that moment, and the wait, blocked until every one of them
    has closed. Sections opened after the start are not waited for: SRCU guarantees only that
    readers that began before ``synchronize_srcu`` have finished when it returns
    (Documentation/RCU/whatisRCU.rst, "synchronize_rcu()"). A token is ``(thread, n)``: the
    thread's n-th section, the same whatever the interleaving.
    """

    def __init__(self, name: str):
        self.name = name
        self.key = ("srcu", name)
        self.keys = frozenset((self.key,))
        self.sections: set[tuple[str, int]] = set()
        self.opened: dict[str, int] = {}

    def read_lock(self) -> Step:
        return Step(f"srcu_read_lock {self.name}", writes=self.keys, action=self._enter, on=self)

    def read_unlock(self, token: tuple[str, int]) -> Step:
        return Step(f"srcu_read_unlock {self.name}", writes=self.keys,
                    action=lambda thread: self._leave(thread, token), on=self)

    def synchronize(self, expedited: bool = False) -> Generator[Step, object, frozenset]:
        """``waited = yield from srcu.synchronize()``: start, then wait for the sections open at
        the start; returns those sections' tokens."""
        fn = "synchronize_srcu_expedited" if expedited else "synchronize_srcu"
        waiting = yield Step(f"{fn} {self.name}: start", reads=self.keys, action=self._grace_start, on=self)
        period = _GracePeriod(self, waiting)
        yield Step(f"{fn} {self.name}: wait", reads=self.keys, guard=period.over, on=period)
        return waiting

    def _enter(self, thread: str) -> tuple[str, int]:
        n = self.opened.get(thread, 0)
        self.opened[thread] = n + 1
        token = (thread, n)
        self.sections.add(token)
        return token

    def _leave(self, thread: str, token) -> None:
        if token not in self.sections or token[0] != thread:
            raise LockUsageError(f"{thread} leaves a read-side section of {self.name} it is not in: {token!r}")
        self.sections.discard(token)

    def _grace_start(self, thread: str) -> frozenset:
        return frozenset(self.sections)

    def holders(self) -> list[str]:
        return sorted({t for t, _ in self.sections})

    def state(self):
        return frozenset(self.sections), tuple(sorted(self.opened.items()))

    def set_state(self, state) -> None:
        sections, opened = state
        self.sections = set(sections)
        self.opened = dict(opened)

    def view(self) -> str:
        return ", ".join(f"{t}#{n}" for t, n in sorted(self.sections)) or "-"

    def __repr__(self) -> str:
        return f"Srcu({self.name!r}, readers={self.holders()!r})"


class Counter:
    """A shared integer whose load and store are separate steps, as a plain ``x++`` on shared
    memory compiles to: two threads that both load before either stores lose an update.
    ``yield from counter.increment()`` is that pair; ``yield counter.add(n)`` is one atomic step
    (``atomic_add``, include/linux/atomic/atomic-instrumented.h)."""

    def __init__(self, name: str, value: int = 0):
        self.name = name
        self.key = ("counter", name)
        self.keys = frozenset((self.key,))
        self.value = value

    def load(self) -> Step:
        return Step(f"load {self.name}", reads=self.keys, action=self._load)

    def store(self, value: int) -> Step:
        return Step(f"store {self.name} = {value}", writes=self.keys, action=lambda thread: self._store(value))

    def add(self, delta: int = 1) -> Step:
        return Step(f"atomic add {self.name} {delta:+d}", writes=self.keys, action=lambda thread: self._add(delta))

    def increment(self, delta: int = 1) -> Generator[Step, object, int]:
        """``yield from counter.increment()``: load, then store the loaded value plus ``delta``
        (two steps; the new value is returned)."""
        value = yield self.load()
        yield self.store(value + delta)
        return value + delta

    def _load(self, thread: str) -> int:
        return self.value

    def _store(self, value: int) -> None:
        self.value = value

    def _add(self, delta: int) -> int:
        self.value += delta
        return self.value

    def holders(self) -> list[str]:
        return []

    def state(self) -> int:
        return self.value

    def set_state(self, state: int) -> None:
        self.value = state

    def view(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return f"Counter({self.name!r}, {self.value})"
