"""One execution of a scenario: fresh state from ``setup()``, threads stepped on demand.

:class:`Execution` is the only place that drives the generators. It keeps, per thread, the step
it will run next (``pending``; None once it has finished), how many steps it has run, and its
*history*: an interned id of the sequence of (label, result) of the steps it ran. Threads are
deterministic given what their yields returned (the rule in :mod:`kit.explore.step`), so the
history stands for the thread's local state: the state key of an execution is the scenario's
``state_key()`` plus the histories.

Backtracking: a generator cannot be copied or rewound, so an earlier state is rebuilt, either by
replaying its schedule on a fresh ``setup()`` (:func:`replay`), or, when the scenario has
``snapshot()``/``restore()``, by fast-forwarding fresh generators with the recorded results
(without running the actions) and restoring the snapshot into the fresh objects
(:func:`restore`).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .step import Step


class Opaque:
    """Stands for a result that cannot be compared by value: equal only to itself, so two
    histories holding one never merge (less reduction, never a wrong one)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<opaque>"


_PLAIN = frozenset((int, str))


def freeze(value: Any):
    """A hashable value equal for equal results of the same type (``True`` and ``1`` differ):
    containers become tuples and frozensets, numpy arrays their bytes, dataclasses their fields;
    other hashable values are tagged with their type; objects hashed by identity become
    :class:`Opaque` (an identity would never match across rebuilds, and would keep the object
    alive)."""
    if value is None or type(value) in _PLAIN:
        return value
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, tuple(freeze(v) for v in value))
    if isinstance(value, (set, frozenset)):
        return ("set", frozenset(freeze(v) for v in value))
    if isinstance(value, dict):
        return ("dict", frozenset((freeze(k), freeze(v)) for k, v in value.items()))
    if isinstance(value, np.ndarray):
        return ("ndarray", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, np.generic):
        return freeze(value.item())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__qualname__,
                tuple(freeze(getattr(value, f.name)) for f in dataclasses.fields(value)))
    if type(value).__hash__ is object.__hash__ or type(value).__hash__ is None:
        return Opaque()
    return (type(value).__qualname__, value)


def raised(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class Execution:
    """The threads of one fresh ``setup()`` and their progress.

    ``interner`` maps (history id, label, frozen result) to a small int shared by every execution
    of a search, so equal histories get equal ids. With ``record=True`` the results each thread
    received are kept (a linked list per thread), for :func:`snapshot` fast-forwarding. With
    ``collect=True`` the primitives the steps name (``Step.on``) are kept for the lock graph.
    """

    __slots__ = ("scenario", "names", "gens", "pending", "count", "hist", "errors", "interner",
                 "record", "results", "collect", "primitives", "nerrors")

    def __init__(self, scenario, interner: dict, *, names: tuple | None = None, record: bool = False,
                 collect: bool = False, prime: bool = True, threads=None):
        if threads is None:
            threads = scenario.setup()
        if not hasattr(threads, "items"):
            raise TypeError(f"{scenario!r}.setup() must return {{thread name: generator}}, got {threads!r}")
        got = tuple(threads)
        if names is not None and got != names:
            raise ValueError(f"{scenario!r}.setup() returned threads {list(got)}, "
                             f"but {list(names)} the first time: names and order must not change")
        if not got:
            raise ValueError(f"{scenario!r}.setup() returned no threads")
        for name, gen in threads.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"{scenario!r}.setup(): thread names must be non-empty strings, got {name!r}")
            if not hasattr(gen, "send"):
                raise TypeError(f"{scenario!r}.setup(): thread {name!r} is not a generator: {gen!r}")
        n = len(got)
        self.scenario = scenario
        self.names = got
        self.gens = list(threads.values())
        self.pending: list[Step | None] = [None] * n
        self.count = [0] * n
        self.hist = [0] * n
        self.errors: list[BaseException | None] = [None] * n
        self.nerrors = 0
        self.interner = interner
        self.record = record
        self.results: list = [None] * n
        self.collect = collect
        self.primitives: dict = {}
        if prime:
            for i in range(n):
                self._resume(i, None, None)

    # ------------------------------------------------------------------ driving the generators
    def _resume(self, i: int, value, exc: BaseException | None) -> None:
        gen = self.gens[i]
        try:
            step = gen.throw(exc) if exc is not None else gen.send(value)
        except StopIteration:
            self.pending[i] = None
            return
        except Exception as e:  # the thread did not catch it: it ends, and the explorer reports it
            self.pending[i] = None
            self.errors[i] = e
            self.nerrors += 1
            return
        if type(step) is not Step and not isinstance(step, Step):
            raise TypeError(f"thread {self.names[i]!r} yielded {step!r}: a thread yields Step objects "
                            f"(use 'yield from' for a primitive's multi-step operation)")
        self.pending[i] = step
        if self.collect and step.on is not None:
            self.primitives[id(step.on)] = step.on

    def enabled(self, i: int) -> bool:
        step = self.pending[i]
        return step is not None and (step.guard is None or bool(step.guard()))

    def run(self, i: int) -> None:
        """Run thread ``i``'s pending step: its action, then the thread up to its next yield."""
        step = self.pending[i]
        value = exc = None
        action = step.action
        if action is not None:
            try:
                value = action(self.names[i])
            except Exception as e:
                exc = e
        self.count[i] += 1
        if exc is not None:
            seen = ("raised", type(exc).__name__, str(exc))
        else:
            seen = value if value is None or type(value) in _PLAIN else freeze(value)
        key = (self.hist[i], step.label, seen)
        hist = self.interner.get(key)
        if hist is None:
            hist = self.interner[key] = len(self.interner) + 1
        self.hist[i] = hist
        if self.record:
            self.results[i] = (self.results[i], value, exc)
        self._resume(i, value, exc)

    # ------------------------------------------------------------------ state
    def key(self):
        """The state key: the scenario's ``state_key()`` and every thread's history."""
        return self.scenario.state_key(), tuple(self.hist)

    def live(self) -> list[int]:
        return [i for i, s in enumerate(self.pending) if s is not None]


def replay(scenario, interner: dict, names: tuple, schedule, **kw) -> Execution:
    """A fresh execution with ``schedule`` (thread indices) run, unchecked."""
    ex = Execution(scenario, interner, names=names, **kw)
    run = ex.run
    for i in schedule:
        run(i)
    return ex


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """An execution's state at one node: the scenario's ``snapshot()`` and the threads'
    progress."""

    state: Any
    results: tuple
    count: tuple
    hist: tuple
    errors: tuple


def snapshot(ex: Execution) -> Snapshot:
    return Snapshot(ex.scenario.snapshot(), tuple(ex.results), tuple(ex.count), tuple(ex.hist),
                    tuple(ex.errors))


def restore(scenario, interner: dict, names: tuple, snap: Snapshot) -> Execution:
    """A fresh execution brought to ``snap``: new generators fast-forwarded with the results they
    received (no action runs), then the shared state restored. The generators come from the
    scenario's ``threads()`` when it has one (over the objects it already holds: the model is not
    built again), else from a new ``setup()``."""
    threads = scenario.threads() if callable(getattr(scenario, "threads", None)) else None
    ex = Execution(scenario, interner, names=names, record=True, prime=False, threads=threads)
    for i in range(len(names)):
        chain = []
        node = snap.results[i]
        while node is not None:
            node, value, exc = node
            chain.append((value, exc))
        ex._resume(i, None, None)
        for value, exc in reversed(chain):
            ex._resume(i, value, exc)
        ex.results[i] = snap.results[i]
        ex.count[i] = snap.count[i]
        ex.hist[i] = snap.hist[i]
        if snap.errors[i] is not None:
            ex.pending[i] = None
            ex.errors[i] = snap.errors[i]
    ex.nerrors = sum(e is not None for e in snap.errors)
    scenario.restore(snap.state)
    return ex
