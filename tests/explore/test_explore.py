"""The explorer on small scenarios: lost updates, locks, deadlocks, SRCU, livelock, exceptions."""
from __future__ import annotations

import pytest

from kit.explore import (DEADLOCK, EXCEPTION, STEP_BOUND, Counter, Invariant, Lock, LockUsageError, Scenario,
                         Step, explore)

from .scenarios import LostUpdate, OppositeOrder, SrcuFree, Spin


def test_lost_update_is_found_with_its_four_step_counterexample():
    result = explore(LostUpdate())
    assert result.complete and result.stopped_by is None
    assert result.violated == ["no lost update"]
    ex = result.example("no lost update")
    assert ex.steps == 4 and ex.switches == 2
    assert ex.schedule in (("A", "B", "B", "A"), ("B", "A", "A", "B"))
    assert [s.label for s in ex.trace] == ["load c", "load c", "store c = 1", "store c = 1"]
    assert ex.trace[2].changes == {"c": (0, 1)} and ex.trace[3].changes == {}
    assert "no lost update: broken after 4 steps" in str(result)


def test_plain_enumeration_sees_every_interleaving():
    plain = explore(LostUpdate(), reduction=False, hashing=False)
    assert plain.schedules == 6            # 4! / (2! 2!)
    assert plain.invariants["no lost update"].violations == 4
    reduced = explore(LostUpdate())
    assert reduced.schedules < plain.schedules
    assert reduced.example("no lost update").steps == plain.example("no lost update").steps == 4


def test_a_lock_fixes_the_lost_update_in_every_interleaving():
    result = explore(LostUpdate(locked=True), reduction=False, hashing=False)
    assert result.complete and result.ok
    assert result.schedules == 2           # the lock serialises the two increments
    assert all(r.violations == 0 and r.example is None for r in result.invariants.values())


def test_deadlock_with_two_locks_in_opposite_order_reports_the_lock_graph():
    result = explore(OppositeOrder())
    assert result.complete and result.violated == [DEADLOCK]
    ex = result.example(DEADLOCK)
    assert ex.steps == 2 and ex.switches == 1
    graph = ex.lock_graph
    assert graph.holds == {"T1": ["a"], "T2": ["b"]}
    assert graph.waits == {"T1": ("b", "lock b"), "T2": ("a", "lock a")}
    assert graph.held_by == {"a": ["T1"], "b": ["T2"]}
    assert graph.cycle in (("T1", "b", "T2", "a", "T1"), ("T2", "a", "T1", "b", "T2"))
    assert "T1 holds a; waits for b (held by T2)" in str(ex)
    assert graph.to_json()["waits"] == {"T1": "b", "T2": "a"}


def test_a_thread_that_takes_a_lock_it_holds_waits_for_itself():
    class Twice(Scenario):
        def setup(self):
            self.lock = Lock("l")
            return {"T": self.run()}

        def run(self):
            yield self.lock.acquire()
            yield self.lock.acquire()

    graph = explore(Twice()).example(DEADLOCK).lock_graph
    assert graph.cycle == ("T", "l", "T")


def test_srcu_synchronize_waits_for_a_reader_that_started_before_it():
    ok = explore(SrcuFree())
    assert ok.complete and ok.ok
    with pytest.raises(ValueError, match=r"schedule\[3\]: thread 'writer' is blocked in "
                                         r"'synchronize_srcu_expedited kvm->srcu: wait'"):
        explore(SrcuFree(), "replay", schedule=["reader", "writer", "writer", "writer"])
    done = explore(SrcuFree(), "replay", schedule=["reader", "writer", "writer", "reader", "reader",
                                                  "writer", "writer", "writer"])
    assert done.ok and [s.label for s in done.trace][-3:] == [
        "synchronize_srcu_expedited kvm->srcu: wait", "check readers", "free object"]


def test_srcu_does_not_wait_for_a_reader_that_started_after_it():
    result = explore(SrcuFree(), "replay", schedule=["writer", "writer", "reader", "writer"])
    assert result.ok and result.trace[-1].label.endswith("wait")


def test_without_synchronize_the_reader_uses_freed_memory():
    result = explore(SrcuFree(synchronize=False))
    assert result.violated == ["no use after free"]
    ex = result.example("no use after free")
    assert [(s.thread, s.label) for s in ex.trace] == [
        ("reader", "srcu_read_lock kvm->srcu"), ("reader", "load ptr"), ("writer", "store ptr = 0"),
        ("writer", "free object"), ("reader", "use object")]


def test_a_thread_spinning_forever_breaks_the_step_bound():
    result = explore(Spin(), max_thread_steps=5)
    assert result.complete and result.violated == [STEP_BOUND]
    assert result.example(STEP_BOUND).steps == 5


def test_a_blocking_wait_is_not_a_livelock():
    class Wait(Spin):
        def wait(self):
            yield Step("wait for flag", reads={self.flag.key}, guard=lambda: self.flag.value == 1)

    assert explore(Wait(setter=True), max_thread_steps=5).ok
    assert explore(Wait(setter=False)).violated == [DEADLOCK]


class Raises(Scenario):
    name = "raises"

    def __init__(self, catch):
        self.catch = catch

    def setup(self):
        self.c = Counter("c")
        self.lock = Lock("l")
        return {"T": self.run(), "U": self.unlock()}

    def run(self):
        try:
            yield Step("bad step", action=lambda t: 1 // 0)
        except ZeroDivisionError:
            if not self.catch:
                raise
        yield self.c.add(1)

    def unlock(self):
        yield self.lock.release()

    def state_key(self):
        return self.c.state(), self.lock.state()


def test_an_uncaught_exception_ends_the_thread_and_breaks_no_exception():
    result = explore(Raises(catch=False))
    assert result.violated == [EXCEPTION]
    ex = result.example(EXCEPTION)
    assert ex.steps == 1
    assert ex.trace[0].raised in ("ZeroDivisionError: integer division or modulo by zero",
                                  "LockUsageError: U unlocks l, not held")
    assert ex.to_json()[0]["raised"] == ex.trace[0].raised


def test_a_caught_exception_is_part_of_the_thread():
    class OnlyT(Raises):
        def setup(self):
            return {"T": super().setup()["T"]}

    assert explore(OnlyT(catch=True)).ok
    assert LockUsageError.__mro__[1] is RuntimeError


def test_invariants_are_checked_on_the_initial_state():
    result = explore(LostUpdate(), invariants=[Invariant("c starts at 1", lambda s: s.c.value == 1)])
    ex = result.example("c starts at 1")
    assert ex.steps == 0 and ex.schedule == () and ex.trace == ()
    assert result.invariants["c starts at 1"].violations == result.schedules


def test_a_failing_invariant_check_names_itself():
    def broken(s):
        return s.missing

    with pytest.raises(AttributeError) as info:
        explore(LostUpdate(), invariants=[broken])
    assert "while checking invariant 'broken'" in "".join(info.value.__notes__)


def test_a_thread_must_yield_steps():
    class Bad(Scenario):
        def setup(self):
            return {"T": iter_yielding_text()}

    def iter_yielding_text():
        yield "lock"

    with pytest.raises(TypeError, match="thread 'T' yielded 'lock'"):
        explore(Bad())


def test_thread_names_must_not_change_between_builds():
    class Moving(Scenario):
        calls = 0

        def setup(self):
            Moving.calls += 1
            c = Counter("c")
            return {f"T{Moving.calls}": c.increment(), "U": c.increment()}

    with pytest.raises(ValueError, match="names and order must not change"):
        explore(Moving(), hashing=False)
