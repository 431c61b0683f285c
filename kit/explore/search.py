"""The search over interleavings: :func:`explore`.

Modes:

- ``exhaustive``: depth-first over every interleaving, with state hashing (a state reached again
  is not explored again) and sleep sets (a step that commutes with the one just taken is not
  tried again from the next state: P. Godefroid, *Partial-Order Methods for the Verification of
  Concurrent Systems*, LNCS 1032, 1996, ch. 5, sleep sets with state caching: a state reached
  again with a smaller sleep set explores only the steps that slept the first time). Sleep sets
  prune transitions, never states: every reachable state is still visited, so every violated
  invariant is found and the shortest counterexample has the same length as under plain
  enumeration (``reduction=False, hashing=False``); tests/explore/test_reduction.py checks both
  on generated scenarios.
- ``bounded``: depth-first with at most ``preemptions`` preemptions, switches away from a thread
  that could go on (M. Musuvathi, S. Qadeer, "Iterative context bounding for systematic testing
  of multithreaded programs", PLDI 2007). A state is keyed with the last thread and the
  preemptions used, and explored again when reached with fewer; no sleep sets (commuting steps
  can change the preemption count).
- ``random``: ``runs`` seeded schedules; ``strategy="pct"`` gives threads random priorities and
  ``depth - 1`` random priority change points (S. Burckhardt, P. Kothari, M. Musuvathi,
  S. Nagarakatte, "A Randomized Scheduler with Probabilistic Guarantees of Finding Bugs",
  ASPLOS 2010); ``"uniform"`` picks any enabled thread.
- ``replay``: one explicit schedule of thread names.

Counterexamples are the shortest found (fewest steps), then rebuilt with the fewest context
switches among schedules of that length (an iterative search with 0, 1, 2 ... switches). In
random mode the schedule is first shrunk by deleting steps while the invariant still breaks.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from . import engine
from .engine import Execution
from .params import check_options
from .result import (Counterexample, ExploreResult, InvariantResult, LockGraph, Progress, TraceStep,
                     context_switches)
from .scenario import DEADLOCK, EXCEPTION, STEP_BOUND, Invariant, Scenario, as_invariant

END, STUCK, BOUND = "end", "deadlock", "bound"
PROGRESS_EVERY = 0.2
"""Seconds between two calls of the progress callback."""
MINIMIZE_STEPS = 200_000
"""Steps a counterexample's minimisation may run (per invariant) before it keeps the best so far."""

_MISSING = object()


class _Frame:
    """A node of a depth-first search: the schedule to it, what to try from it."""

    __slots__ = ("path", "mask", "todo", "i", "sleep", "steps", "snap", "last", "pre", "en", "tried", "sw")

    def __init__(self, path, mask, todo, *, sleep=frozenset(), steps=None, last=None, pre=0, en=(), sw=0):
        self.path = path
        self.mask = mask
        self.todo = todo
        self.i = 0
        self.sleep = sleep
        self.steps = steps
        self.snap = None
        self.last = last
        self.pre = pre
        self.en = en
        self.tried = 0
        self.sw = sw


class _Stop(Exception):
    """A limit was reached: the search ends with what it has."""


class _Search:
    def __init__(self, scenario: Scenario, mode: str, opts: dict, extra_invariants, progress):
        self.scn = scenario
        self.mode = mode
        self.opts = opts
        invs = [as_invariant(i) for i in (*getattr(scenario, "invariants", ()), *extra_invariants)]
        builtin = [DEADLOCK, STEP_BOUND, EXCEPTION]
        names = [i.name for i in invs] + builtin
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"invariants: names must be unique; repeated: {', '.join(dup)}")
        self.names_inv = names
        self.final_flags = [i.final for i in invs] + [False] * len(builtin)
        self.always = [(1 << k, inv) for k, inv in enumerate(invs) if not inv.final]
        self.final = [(1 << k, inv) for k, inv in enumerate(invs) if inv.final]
        self.bit_deadlock = 1 << len(invs)
        self.bit_bound = 1 << (len(invs) + 1)
        self.bit_exc = 1 << (len(invs) + 2)
        self.viol = [0] * len(names)
        self.best: dict[int, tuple] = {}
        self.interner: dict = {}
        self.schedules = 0
        self.steps = 0
        self.stopped_by: str | None = None
        self.cut = False
        self.cut_reason: str | None = None
        self.max_schedules = opts.get("max_schedules")
        self.max_steps = opts.get("max_steps")
        self.max_thread_steps = opts["max_thread_steps"]
        self.progress = progress
        self.t0 = time.perf_counter()
        budget = opts.get("time_budget")
        self.deadline = None if budget is None else self.t0 + budget
        self.last_tick = self.t0
        rebuild = opts.get("rebuild", "replay")
        can_snap = callable(getattr(scenario, "snapshot", None)) and callable(getattr(scenario, "restore", None))
        if rebuild == "snapshot" and not can_snap:
            raise ValueError(f"rebuild: 'snapshot' needs {scenario!r} to have snapshot() and restore()")
        self.snapshots = rebuild == "snapshot" or (rebuild == "auto" and can_snap)
        self.root: Execution | None = Execution(scenario, self.interner, record=self.snapshots)
        self.names = self.root.names
        self.index = {n: i for i, n in enumerate(self.names)}
        key = scenario.state_key()
        try:
            hash(key)
        except TypeError as e:
            raise TypeError(f"{scenario!r}.state_key() must return a hashable value, got {key!r}") from e
        self.keyed = key is not None
        self.hashing = bool(opts.get("hashing", False)) and self.keyed
        self.states: set | None = set() if self.keyed and mode in ("exhaustive", "bounded") else None

    # ------------------------------------------------------------------ executions
    def fresh(self, **kw) -> Execution:
        if self.root is not None and not kw:
            ex, self.root = self.root, None
            return ex
        return Execution(self.scn, self.interner, names=self.names, record=self.snapshots, **kw)

    def goto(self, frame: _Frame) -> Execution:
        """A fresh execution at ``frame``'s state: its snapshot restored, or its schedule replayed."""
        if frame.snap is not None:
            return engine.restore(self.scn, self.interner, self.names, frame.snap)
        self.steps += len(frame.path)
        return engine.replay(self.scn, self.interner, self.names, frame.path, record=self.snapshots)

    def replay_path(self, path, **kw) -> Execution:
        self.steps += len(path)
        return engine.replay(self.scn, self.interner, self.names, path, **kw)

    # ------------------------------------------------------------------ checking a state
    def _holds(self, inv: Invariant, path_len: int) -> bool:
        try:
            return inv.holds(self.scn)
        except Exception as e:
            e.add_note(f"while checking invariant {inv.name!r} of {self.scn!r} after {path_len} steps")
            raise

    def check(self, ex: Execution, depth: int):
        """(violated bits, terminal kind or None, enabled threads) of the execution's state."""
        mask = 0
        for bit, inv in self.always:
            if not self._holds(inv, depth):
                mask |= bit
        if ex.nerrors:
            mask |= self.bit_exc
        pending = ex.pending
        live = [i for i, s in enumerate(pending) if s is not None]
        if not live:
            for bit, inv in self.final:
                if not self._holds(inv, depth):
                    mask |= bit
            return mask, END, []
        enabled = [i for i in live if pending[i].guard is None or pending[i].guard()]
        if not enabled:
            return mask | self.bit_deadlock, STUCK, []
        count, bound = ex.count, self.max_thread_steps
        for i in live:
            if count[i] >= bound:
                return mask | self.bit_bound, BOUND, enabled
        return mask, None, enabled

    # ------------------------------------------------------------------ bookkeeping
    def saw(self, mask: int, path: tuple) -> None:
        best = self.best
        while mask:
            low = mask & -mask
            k = low.bit_length() - 1
            old = best.get(k)
            if old is None or len(path) < len(old):
                best[k] = path
            mask ^= low

    def leaf(self, pmask: int) -> None:
        self.schedules += 1
        viol = self.viol
        while pmask:
            low = pmask & -pmask
            viol[low.bit_length() - 1] += 1
            pmask ^= low
        if self.progress is not None:
            now = time.perf_counter()
            if now - self.last_tick >= PROGRESS_EVERY:
                self.last_tick = now
                self.tick(now)

    def tick(self, now: float, final: bool = False) -> None:
        p = Progress(self.mode, self.schedules, self.steps, None if self.states is None else len(self.states),
                     now - self.t0, self.max_schedules)
        if self.progress(p) is False and not final:
            self.stop("progress")

    def stop(self, why: str):
        self.stopped_by = why
        raise _Stop

    def before_step(self) -> None:
        """Limits are checked before any work: schedules, then time."""
        if self.max_schedules is not None and self.schedules >= self.max_schedules:
            self.stop("max_schedules")
        if self.deadline is not None and time.perf_counter() >= self.deadline:
            self.stop("time_budget")

    def past_deadline(self) -> bool:
        return self.deadline is not None and time.perf_counter() >= self.deadline

    def note_state(self, ex: Execution):
        key = ex.key()
        if self.states is not None:
            self.states.add(key)
        return key

    def start(self):
        """The initial state of a depth-first search, checked and counted: ``(execution, violated
        mask, enabled threads, state key)``, or None when it already ends the search (a leaf)."""
        ex = self.fresh()
        mask, term, en = self.check(ex, 0)
        self.saw(mask, ())
        key = self.note_state(ex) if self.keyed else None
        if term is not None:
            self.leaf(mask)
            return None
        return ex, mask, en, key

    # ------------------------------------------------------------------ exhaustive
    def exhaustive(self) -> None:
        reduction, hashing = self.opts["reduction"], self.hashing
        start = self.start()
        if start is None:
            return
        ex, mask, en, key = start
        visited = {key: frozenset()} if hashing else None
        root = _Frame((), mask, en, steps=list(ex.pending))
        if self.snapshots and len(en) > 1:
            root.snap = engine.snapshot(ex)
        stack, at, cur = [root], root, ex
        max_steps = self.max_steps
        while stack:
            f = stack[-1]
            if f.i == len(f.todo):
                stack.pop()
                continue
            self.before_step()
            t = f.todo[f.i]
            f.i += 1
            if at is not f:
                cur = self.goto(f)
            step = f.steps[t]
            cur.run(t)
            self.steps += 1
            at = None
            path = f.path + (t,)
            mask, term, en = self.check(cur, len(path))
            if mask:
                self.saw(mask, path)
            pmask = f.mask | mask
            if reduction:
                steps = f.steps
                sleep = frozenset(u for u in f.sleep if not steps[u].conflicts(step))
                f.sleep = f.sleep | {t}
            else:
                sleep = frozenset()
            key = self.note_state(cur) if self.keyed else None
            if term is not None:
                self.leaf(pmask)
                continue
            if max_steps is not None and len(path) >= max_steps:
                self.cut_by("max_steps")
                self.leaf(pmask)
                continue
            if hashing:
                old = visited.get(key)
                if old is not None:
                    if old <= sleep:
                        self.leaf(pmask)
                        continue
                    todo = [u for u in en if u in old and u not in sleep]
                    visited[key] = old & sleep
                else:
                    visited[key] = sleep
                    todo = [u for u in en if u not in sleep]
            else:
                todo = [u for u in en if u not in sleep]
            if not todo:
                self.leaf(pmask)
                continue
            child = _Frame(path, pmask, todo, sleep=sleep, steps=list(cur.pending))
            if self.snapshots and len(todo) > 1:
                child.snap = engine.snapshot(cur)
            stack.append(child)
            at = child

    def cut_by(self, why: str) -> None:
        self.cut = True
        if self.cut_reason is None:
            self.cut_reason = why

    # ------------------------------------------------------------------ bounded
    def bounded(self) -> None:
        k, hashing = self.opts["preemptions"], self.hashing
        start = self.start()
        if start is None:
            return
        ex, mask, en, key = start
        visited = {(key, None): 0} if hashing else None
        root = _Frame((), mask, en, en=frozenset(en))
        if self.snapshots and len(en) > 1:
            root.snap = engine.snapshot(ex)
        stack, at, cur = [root], root, ex
        max_steps = self.max_steps
        while stack:
            f = stack[-1]
            if f.i == len(f.todo):
                stack.pop()
                if not f.tried:
                    self.leaf(f.mask)
                continue
            t = f.todo[f.i]
            f.i += 1
            pre = f.pre + (f.last is not None and t != f.last and f.last in f.en)
            if pre > k:
                self.cut_by("preemptions")
                continue
            self.before_step()
            f.tried += 1
            if at is not f:
                cur = self.goto(f)
            cur.run(t)
            self.steps += 1
            at = None
            path = f.path + (t,)
            mask, term, en = self.check(cur, len(path))
            if mask:
                self.saw(mask, path)
            pmask = f.mask | mask
            key = self.note_state(cur) if self.keyed else None
            if term is not None:
                self.leaf(pmask)
                continue
            if max_steps is not None and len(path) >= max_steps:
                self.cut_by("max_steps")
                self.leaf(pmask)
                continue
            if hashing:
                old = visited.get((key, t))
                if old is not None and old <= pre:
                    self.leaf(pmask)
                    continue
                visited[(key, t)] = pre
            todo = [t, *(u for u in en if u != t)] if t in en else en
            child = _Frame(path, pmask, todo, last=t, pre=pre, en=frozenset(en))
            if self.snapshots and len(todo) > 1:
                child.snap = engine.snapshot(cur)
            stack.append(child)
            at = child

    # ------------------------------------------------------------------ random
    def random(self) -> None:
        o = self.opts
        rng = np.random.default_rng(o["seed"])
        pct, d = o["strategy"] == "pct", o["depth"]
        n = len(self.names)
        horizon = 8 * n
        for _ in range(o["runs"]):
            self.before_step()
            ex = self.fresh()
            mask, term, en = self.check(ex, 0)
            self.saw(mask, ())
            pmask, path = mask, []
            if pct:
                prio = (rng.permutation(n) + d).tolist()
                points = sorted(rng.choice(np.arange(1, horizon + 1), size=min(d - 1, horizon), replace=False).tolist())
                change = {p: j + 1 for j, p in enumerate(points)}
            try:
                while term is None:
                    if self.max_steps is not None and len(path) >= self.max_steps:
                        self.cut_by("max_steps")
                        break
                    self.before_step()
                    if pct:
                        t = max(en, key=prio.__getitem__)
                        low = change.get(len(path) + 1)
                        if low is not None:
                            prio[t] = low
                            t = max(en, key=prio.__getitem__)
                    else:
                        t = en[int(rng.integers(len(en)))]
                    ex.run(t)
                    self.steps += 1
                    path.append(t)
                    mask, term, en = self.check(ex, len(path))
                    if mask:
                        self.saw(mask, tuple(path))
                        pmask |= mask
            finally:
                self.leaf(pmask)
            horizon = max(horizon, len(path))

    # ------------------------------------------------------------------ replay
    def replay(self) -> tuple:
        schedule = self.opts["schedule"]
        for pos, name in enumerate(schedule):
            if name not in self.index:
                raise ValueError(f"schedule[{pos}]: unknown thread {name!r}; threads: {', '.join(self.names)}")
        ex = self.fresh(collect=True)
        mask, term, en = self.check(ex, 0)
        self.saw(mask, ())
        pmask, path, trace = mask, (), []
        view = _view(self.scn)
        for pos, name in enumerate(schedule):
            i = self.index[name]
            step = ex.pending[i]
            if step is None:
                why = f" (it raised {engine.raised(ex.errors[i])})" if ex.errors[i] is not None else ""
                raise ValueError(f"schedule[{pos}]: thread {name!r} has finished{why}")
            if i not in en:
                raise ValueError(f"schedule[{pos}]: thread {name!r} is blocked in '{step.label}'")
            view, ts = self.traced_step(ex, i, pos, view)
            trace.append(ts)
            path += (i,)
            mask, term, en = self.check(ex, len(path))
            self.saw(mask, path)
            pmask |= mask
        self.leaf(pmask)
        self.replay_exec = ex
        return tuple(trace)

    def traced_step(self, ex: Execution, i: int, pos: int, view):
        step = ex.pending[i]
        before_err = ex.errors[i]
        exc = []
        action = step.action
        if action is not None:
            def spy(thread, _action=action):
                try:
                    return _action(thread)
                except Exception as e:
                    exc.append(e)
                    raise
            step.action = spy
        try:
            ex.run(i)
        finally:
            step.action = action
        self.steps += 1
        after = _view(self.scn)
        raised = engine.raised(exc[0]) if exc else None
        if raised is None and ex.errors[i] is not None and before_err is None:
            raised = engine.raised(ex.errors[i])
        return after, TraceStep(pos, self.names[i], step.label, _diff(view, after), raised)

    # ------------------------------------------------------------------ counterexamples
    def first_violation(self, bit: int, schedule) -> int | None:
        """Length of the prefix of ``schedule`` after which ``bit`` is violated, or None (also
        None when the schedule picks a thread that cannot run)."""
        ex = self.fresh()
        mask, term, en = self.check(ex, 0)
        if mask & bit:
            return 0
        for n, t in enumerate(schedule, 1):
            if t not in en:
                return None
            ex.run(t)
            self.steps += 1
            mask, term, en = self.check(ex, n)
            if mask & bit:
                return n
        return None

    def shrink(self, bit: int, path: tuple, budget: list) -> tuple:
        """Delete runs of steps (halving their length) while ``bit`` still breaks."""
        improved = True
        while improved and len(path) > 1:
            improved = False
            size = max(1, len(path) // 2)
            while size >= 1:
                j = 0
                while j + size <= len(path):
                    if self.steps > budget[0] or self.past_deadline():
                        return path
                    cand = path[:j] + path[j + size:]
                    n = self.first_violation(bit, cand)
                    if n is not None and n < len(path):
                        path, improved = cand[:n], True
                    else:
                        j += 1
                size //= 2
        return path

    def fewest_switches(self, bit: int, path: tuple, k: int | None, budget: list) -> tuple:
        """A schedule as short as ``path`` that breaks ``bit`` with the fewest context switches
        (and at most ``k`` preemptions): the first found with 0, 1, 2 ... switches."""
        for c in range(context_switches(path)):
            found = self.switch_search(bit, len(path), c, k, budget)
            if found is _MISSING:
                break
            if found is not None:
                return found
        return path

    def switch_search(self, bit: int, length: int, c: int, k: int | None, budget: list):
        ex = self.fresh()
        mask, term, en = self.check(ex, 0)
        if mask & bit:
            return ()
        if term is not None:
            return None
        visited = {}
        root = _Frame((), 0, en, en=frozenset(en))
        stack, at, cur = [root], root, ex
        while stack:
            f = stack[-1]
            if f.i == len(f.todo):
                stack.pop()
                continue
            t = f.todo[f.i]
            f.i += 1
            switch = f.last is not None and t != f.last
            sw = f.sw + switch
            pre = f.pre + (switch and f.last in f.en)
            if sw > c or (k is not None and pre > k):
                continue
            if self.steps > budget[0] or self.past_deadline():
                return _MISSING
            if at is not f:
                cur = self.replay_path(f.path)
            cur.run(t)
            self.steps += 1
            at = None
            path = f.path + (t,)
            mask, term, en = self.check(cur, len(path))
            if mask & bit:
                return path
            if term is not None or len(path) >= length:
                continue
            if self.hashing:
                key = (cur.key(), t)
                old = visited.get(key)
                if old is not None and old[0] <= sw and old[1] <= pre:
                    continue
                visited[key] = (sw, pre)
            todo = [t, *(u for u in en if u != t)] if t in en else en
            child = _Frame(path, 0, todo, last=t, pre=pre, en=frozenset(en), sw=sw)
            stack.append(child)
            at = child
        return None

    def counterexample(self, k: int, path: tuple) -> Counterexample:
        ex = self.fresh(collect=True)
        view = _view(self.scn)
        trace = []
        for pos, i in enumerate(path):
            view, ts = self.traced_step(ex, i, pos, view)
            trace.append(ts)
        graph = lock_graph(ex) if (1 << k) == self.bit_deadlock else None
        return Counterexample(self.names_inv[k], tuple(self.names[i] for i in path), tuple(trace), graph)

    # ------------------------------------------------------------------ the whole run
    def run(self) -> ExploreResult:
        trace = None
        try:
            if self.mode == "replay":
                trace = self.replay()
            else:
                getattr(self, self.mode)()
        except _Stop:
            pass
        if self.progress is not None and self.stopped_by != "progress":
            self.tick(time.perf_counter(), final=True)
        searched = self.steps
        examples = {}
        bound = self.opts["preemptions"] if self.mode == "bounded" else None
        for k, path in sorted(self.best.items()):
            if self.mode == "replay":
                examples[k] = Counterexample(self.names_inv[k], tuple(self.names[i] for i in path),
                                             trace[:len(path)], lock_graph(self.replay_exec)
                                             if (1 << k) == self.bit_deadlock else None)
                continue
            budget = [self.steps + MINIMIZE_STEPS]
            if self.mode == "random":
                path = self.shrink(1 << k, path, budget)
            path = self.fewest_switches(1 << k, path, bound, budget)
            examples[k] = self.counterexample(k, path)
        complete = self.mode in ("exhaustive", "bounded") and self.stopped_by is None and not self.cut
        stopped = self.stopped_by or self.cut_reason
        if self.mode in ("random", "replay") and stopped is None:
            stopped = "sampled"
        invariants = {name: InvariantResult(name, self.schedules, self.viol[k], examples.get(k), self.final_flags[k])
                      for k, name in enumerate(self.names_inv)}
        options = {name: value for name, value in self.opts.items() if name != "schedule"}
        if "hashing" in options:
            options["hashing"] = self.hashing
        options["rebuild"] = "snapshot" if self.snapshots else "replay"
        return ExploreResult(getattr(self.scn, "name", type(self.scn).__name__), self.mode, complete,
                             self.schedules, searched, None if self.states is None else len(self.states),
                             time.perf_counter() - self.t0, invariants, stopped, trace, options,
                             self.steps - searched)


def _view(scenario) -> dict:
    view = scenario.state_view() if hasattr(scenario, "state_view") else None
    return dict(view) if view else {}


def _same(a, b) -> bool:
    try:
        r = a == b
        if isinstance(r, np.ndarray):
            return a.shape == b.shape and bool(r.all())
        return bool(r)
    except Exception:
        return repr(a) == repr(b)


def _diff(before: dict, after: dict) -> dict:
    out = {}
    for name in dict.fromkeys([*before, *after]):
        a, b = before.get(name, _MISSING), after.get(name, _MISSING)
        if a is _MISSING or b is _MISSING or not _same(a, b):
            out[name] = (None if a is _MISSING else a, None if b is _MISSING else b)
    return out


def lock_graph(ex: Execution) -> LockGraph:
    """Who holds what and who waits for what, in an execution where every live thread is blocked."""
    holds: dict[str, list[str]] = {}
    held_by: dict[str, list[str]] = {}
    for prim in ex.primitives.values():
        name = getattr(prim, "name", repr(prim))
        owners = list(getattr(prim, "holders", lambda: [])())
        if owners:
            held_by[name] = owners
            for t in owners:
                holds.setdefault(t, []).append(name)
    waits = {}
    for i in ex.live():
        step = ex.pending[i]
        on = step.on
        res = getattr(on, "name", repr(on)) if on is not None else step.label
        waits[ex.names[i]] = (res, step.label)
        if on is not None and res not in held_by:
            owners = list(getattr(on, "holders", lambda: [])())
            if owners:
                held_by[res] = owners
    return LockGraph(holds, waits, held_by, _cycle(waits, held_by))


def _cycle(waits: dict, held_by: dict) -> tuple:
    for start in waits:
        seen, chain, t = {}, [], start
        while t in waits and t not in seen:
            seen[t] = len(chain)
            res = waits[t][0]
            chain += [t, res]
            owners = [o for o in held_by.get(res, ()) if o in waits]
            if not owners:
                break
            t = owners[0]
        else:
            if t in seen:
                return tuple(chain[seen[t]:] + [t])
    return ()


def explore(scenario: Scenario, mode: str = "exhaustive", *, invariants=(),
            max_schedules: int | None = None, max_steps: int | None = None, time_budget: float | None = None,
            max_thread_steps: int | None = None, progress: Callable[[Progress], bool | None] | None = None,
            reduction: bool | None = None, hashing: bool | None = None, rebuild: str | None = None,
            preemptions: int | None = None, runs: int | None = None, seed: int | None = None,
            strategy: str | None = None, depth: int | None = None, schedule=None) -> ExploreResult:
    """Explore the interleavings of ``scenario``'s threads and check its invariants on every state.

    ``scenario``: a :class:`~kit.explore.Scenario` (an instance, or a subclass that takes no
    arguments). ``mode``: ``"exhaustive"``, ``"bounded"``, ``"random"`` or ``"replay"`` (see the
    module docstring). ``invariants``: more invariants to check, after the scenario's (an
    :class:`~kit.explore.Invariant`, its subclass, or a named predicate).

    Options (:data:`~kit.explore.EXPLORE_PARAMS` checks each; a bad value or an option the mode
    does not take is a ``ValueError`` naming it, before any work):

    - every mode: ``max_schedules``, ``max_steps`` (per schedule), ``time_budget`` (seconds) cut
      the search (``complete=False``); ``max_thread_steps`` is the bound of the
      ``bounded-steps`` invariant; ``progress(Progress)`` is called a few times a second and
      stops the search by returning False;
    - ``exhaustive``: ``reduction`` (sleep sets), ``hashing`` (state caching), ``rebuild``;
    - ``bounded``: ``preemptions`` (k), ``hashing``, ``rebuild``;
    - ``random``: ``runs``, ``seed``, ``strategy`` (``"pct"``, ``"uniform"``), ``depth``;
    - ``replay``: ``schedule``, a list of thread names, each running that thread's next step. A
      name that is unknown, finished or blocked at its position is a ``ValueError`` naming the
      position.
    """
    if progress is not None and not callable(progress):
        raise ValueError(f"progress: expected a callable taking a Progress, got {progress!r}")
    given = dict(max_schedules=max_schedules, max_steps=max_steps, time_budget=time_budget,
                 max_thread_steps=max_thread_steps, reduction=reduction, hashing=hashing, rebuild=rebuild,
                 preemptions=preemptions, runs=runs, seed=seed, strategy=strategy, depth=depth, schedule=schedule)
    opts = check_options(mode, given)
    if isinstance(scenario, type) and issubclass(scenario, Scenario):
        scenario = scenario()
    if not callable(getattr(scenario, "setup", None)):
        raise TypeError(f"scenario: expected a Scenario (with setup()), got {scenario!r}")
    if isinstance(invariants, (Invariant, type)) or callable(invariants):
        invariants = [invariants]
    return _Search(scenario, mode, opts, list(invariants), progress).run()
