"""What a thread yields: one :class:`Step` at each point another thread could observe.

A thread is a generator function. Each ``yield`` hands the explorer a :class:`Step` that
describes the thread's *next* atomic step; the explorer decides when it runs. Running it means:
call its ``action`` (if any) with the thread's name, then resume the generator with the action's
return value (``value = yield step``), which runs the thread's own code up to its next ``yield``.
If the action raises, the exception is thrown into the generator at the ``yield``, where the
thread may catch it as the kernel code it follows would handle an error.

The rule that keeps state hashing and snapshots sound (docs/explore.md, "Writing threads"):
*what a step reads from or does to the shared state happens in its action; the generator body
decides, from the values its yields returned, what to do next.* A body that reads the shared
state directly works with ``hashing=False`` and replay rebuilds only.
"""
from __future__ import annotations

from typing import Any, Callable, Hashable, Iterable


def footprint(keys: Iterable[Hashable] | str | bytes) -> frozenset:
    """A set of shared-object keys; a lone string is one key, not its characters."""
    if type(keys) is frozenset:
        return keys
    if isinstance(keys, (str, bytes)):
        return frozenset((keys,))
    return frozenset(keys)


_NONE = frozenset()


class Step:
    """One atomic step of a thread.

    - ``label``: a short text for traces ("lock kvm->lock", "load counter", "RMPUPDATE pfn 0x200").
    - ``reads``, ``writes``: the keys of the shared objects the step reads and writes (values that
      compare equal across rebuilds of the scenario: strings or tuples such as ``("rmp", pfn)``,
      never model objects). They drive the partial-order reduction: two steps of different
      threads commute unless one writes what the other reads or writes. A key the ``guard``
      reads belongs in ``reads``.
    - ``action(thread)``: what the step does, called with the running thread's name; its return
      value is sent back into the generator.
    - ``guard()``: the step can run only while this returns True; otherwise the thread is
      blocked (a lock acquire while another thread holds the lock).
    - ``on``: the primitive the step may block on or changes (a :class:`~kit.explore.Lock`), for
      the lock graph of a deadlock report.
    """

    __slots__ = ("label", "reads", "writes", "action", "guard", "on")

    def __init__(self, label: str, reads: Iterable[Hashable] = _NONE, writes: Iterable[Hashable] = _NONE, *,
                 action: Callable[[str], Any] | None = None, guard: Callable[[], bool] | None = None,
                 on: Any = None):
        if type(label) is not str and not isinstance(label, str):
            raise TypeError(f"label: expected a string, got {label!r}")
        if action is not None and not callable(action):
            raise TypeError(f"action: expected a callable taking the thread's name, got {action!r}")
        if guard is not None and not callable(guard):
            raise TypeError(f"guard: expected a callable returning a bool, got {guard!r}")
        self.label = label
        self.reads = reads if type(reads) is frozenset else footprint(reads)
        self.writes = writes if type(writes) is frozenset else footprint(writes)
        self.action = action
        self.guard = guard
        self.on = on

    def conflicts(self, other: "Step") -> bool:
        """True when the two steps do not commute: one writes a key the other reads or writes."""
        w = self.writes
        return not (w.isdisjoint(other.reads) and w.isdisjoint(other.writes)
                    and other.writes.isdisjoint(self.reads))

    def enabled(self) -> bool:
        """Whether the step can run now (no guard, or the guard holds)."""
        return self.guard is None or bool(self.guard())

    def __repr__(self) -> str:
        parts = [repr(self.label)]
        if self.reads:
            parts.append(f"reads={sorted(map(repr, self.reads))}")
        if self.writes:
            parts.append(f"writes={sorted(map(repr, self.writes))}")
        if self.guard is not None:
            parts.append("guarded")
        return f"Step({', '.join(parts)})"
