"""Scenarios (the shared state and its threads) and invariants (named predicates over the state).

A :class:`Scenario` is a factory: the explorer calls :meth:`Scenario.setup` once per schedule (or
per rebuild), because a generator cannot be copied or rewound; ``setup`` builds fresh shared
state on ``self`` and returns the threads by name. Invariants take the scenario itself.
"""
from __future__ import annotations

import abc
from typing import Callable, Hashable, Iterator, Mapping

from .primitives import Counter, Lock, Srcu
from .step import Step

Thread = Iterator[Step]

DEADLOCK = "no-deadlock"
STEP_BOUND = "bounded-steps"
EXCEPTION = "no-exception"
BUILTIN_INVARIANTS = (DEADLOCK, STEP_BOUND, EXCEPTION)
"""The explorer's own invariants, after the scenario's: no state where every live thread is
blocked (reported with the lock graph); every thread completes within ``max_thread_steps`` of its
own steps (no livelock); no thread ends with an exception it did not catch."""


class Scenario(abc.ABC):
    """Shared state plus named threads, rebuilt from scratch for every schedule.

    Subclass it and write :meth:`setup`; optionally:

    - ``invariants``: a sequence of invariants (see :class:`Invariant`) checked on every state;
    - :meth:`state_key`: a hashable value equal for equal shared states. It turns on state
      hashing (a state reached again along another path is not explored twice) and must cover
      everything the threads' steps and the invariants read;
    - :meth:`state_view`: ``{name: value}`` for traces (a step's before/after diff);
    - ``snapshot()`` returning an opaque copy of the shared state, and ``restore(snapshot)``
      putting it back *into the objects the latest* ``setup()`` *built* (the threads hold
      references to them). With both, backtracking restores a snapshot instead of replaying the
      whole prefix (``rebuild="snapshot"``; docs/explore.md says what each costs);
    - ``threads()`` returning fresh generators over the objects ``self`` already holds (then
      ``setup()`` builds the state and returns ``self.threads()``): a restore then needs no new
      model, only new generators.

    Example::

        class LostUpdate(Scenario):
            name = "lost-update"
            invariants = [Invariant("no lost update", lambda s: s.c.value == 2, final=True)]

            def setup(self):
                self.c = Counter("c")
                return {"A": self.c.increment(), "B": self.c.increment()}

            def state_key(self):
                return self.c.state()
    """

    name: str = "scenario"
    invariants: tuple = ()

    @abc.abstractmethod
    def setup(self) -> Mapping[str, Thread]:
        """Build fresh shared state on ``self`` and return ``{thread name: generator}``; the names
        and their order must be the same at every call (the order is the exploration order)."""

    def state_key(self) -> Hashable | None:
        """A hashable summary of the shared state, or None (the default): no state hashing."""
        return None

    def state_view(self) -> dict:
        """``{name: value}`` of the shared state for traces. The default lists the primitives
        (:class:`Lock`, :class:`Srcu`, :class:`Counter`) and plain values among the attributes."""
        view = {}
        for attr, value in vars(self).items():
            if isinstance(value, (Lock, Srcu, Counter)):
                view[value.name] = value.view()
            elif isinstance(value, (int, float, str, bool, tuple, frozenset)) and not attr.startswith("_"):
                view[attr] = value
        return view

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class Invariant:
    """A named predicate over the scenario's state: ``holds(scenario) -> bool``.

    Checked after every step and on the initial state; with ``final=True`` only when every
    thread has finished (a property of the outcome, such as "the counter is 2").

    Two ways to write one in a notebook cell::

        Invariant("counter never negative", lambda s: s.c.value >= 0)

        class NoDoubleMap(Invariant):
            name = "no page mapped twice"
            def holds(self, s):
                return s.maps.value <= 1

    A plain function is accepted too (its name is the function's name; ``final`` an attribute).
    """

    name: str = ""
    final: bool = False
    check: Callable[[object], bool] | None = None

    def __init__(self, name: str | None = None, check: Callable[[object], bool] | None = None, *,
                 final: bool | None = None):
        if name is not None:
            self.name = name
        if check is not None:
            if not callable(check):
                raise TypeError(f"invariant {self.name!r}: check must be callable, got {check!r}")
            self.check = check
        if final is not None:
            self.final = bool(final)
        if not self.name and type(self) is not Invariant:
            self.name = type(self).__name__
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"invariant: a name is required, got {self.name!r}")
        if check is None and type(self).holds is Invariant.holds:
            raise TypeError(f"invariant {self.name!r}: give a check function or override holds()")

    def holds(self, state) -> bool:
        """True when the invariant holds in ``state`` (the scenario)."""
        return bool(self.check(state))

    def __repr__(self) -> str:
        return f"Invariant({self.name!r}{', final=True' if self.final else ''})"


def invariant(fn: Callable | None = None, *, name: str | None = None, final: bool = False):
    """Decorator: ``@invariant`` or ``@invariant(final=True, name="...")`` on a predicate."""
    def wrap(f):
        return Invariant(name or f.__name__, f, final=final)
    return wrap(fn) if fn is not None else wrap


def as_invariant(obj) -> Invariant:
    """An :class:`Invariant` from an instance, an Invariant subclass, or a plain predicate."""
    if isinstance(obj, Invariant):
        return obj
    if isinstance(obj, type) and issubclass(obj, Invariant):
        return obj()
    if callable(obj):
        name = getattr(obj, "name", None) or getattr(obj, "__name__", None)
        if not name or name == "<lambda>":
            raise ValueError(f"invariant {obj!r}: a lambda needs a name: Invariant('name', fn)")
        return Invariant(name, obj, final=bool(getattr(obj, "final", False)))
    raise TypeError(f"invariant: expected an Invariant or a predicate, got {obj!r}")
