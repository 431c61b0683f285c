"""Modes (replay, bounded, random), limits, options, invariant forms and the JSON shape."""
from __future__ import annotations

import json

import numpy as np
import pytest

from kit.explore import (EXPLORE_PARAMS, Counter, Invariant, Lock, Scenario, Step, explore, freeze,
                         invariant)
from kit.explore.engine import Opaque

from .scenarios import LostUpdate, OppositeOrder


# ---------------------------------------------------------------------------------------- replay
def test_replay_runs_an_explicit_schedule():
    fine = explore(LostUpdate(), "replay", schedule=["A", "A", "B", "B"])
    assert fine.ok and fine.schedules == 1 and not fine.complete
    assert [(s.thread, s.label) for s in fine.trace] == [
        ("A", "load c"), ("A", "store c = 1"), ("B", "load c"), ("B", "store c = 2")]
    assert fine.trace[3].changes == {"c": (1, 2)}
    lost = explore(LostUpdate(), "replay", schedule=["A", "B", "A", "B"])
    assert lost.violated == ["no lost update"]
    assert lost.example("no lost update").schedule == ("A", "B", "A", "B")   # a replay is not shrunk


def test_a_partial_schedule_checks_only_the_states_it_reaches():
    result = explore(LostUpdate(), "replay", schedule=["A", "B"])
    assert result.ok and len(result.trace) == 2
    assert explore(LostUpdate(), "replay", schedule=[]).ok


@pytest.mark.parametrize("schedule,message", [
    (["A", "C"], r"schedule\[1\]: unknown thread 'C'; threads: A, B"),
    (["A", "A", "A"], r"schedule\[2\]: thread 'A' has finished"),
    ([0], r"schedule\[0\]: expected a thread name, got 0"),
    ("AB", r"schedule: expected a list of thread names"),
])
def test_a_bad_schedule_names_its_position(schedule, message):
    with pytest.raises(ValueError, match=message):
        explore(LostUpdate(), "replay", schedule=schedule)


def test_a_blocked_thread_in_a_schedule_names_its_position():
    with pytest.raises(ValueError, match=r"schedule\[1\]: thread 'B' is blocked in 'lock lock'"):
        explore(LostUpdate(locked=True), "replay", schedule=["A", "B"])
    with pytest.raises(ValueError, match=r"schedule\[2\]: thread 'T1' is blocked in 'lock b'"):
        explore(OppositeOrder(), "replay", schedule=["T1", "T2", "T1"])


def test_replay_of_a_deadlock_carries_the_lock_graph():
    result = explore(OppositeOrder(), "replay", schedule=["T1", "T2"])
    assert result.example("no-deadlock").lock_graph.cycle


# --------------------------------------------------------------------------------------- bounded
def test_bounded_zero_preemptions_misses_the_lost_update_one_finds_it():
    none = explore(LostUpdate(), "bounded", preemptions=0)
    assert none.ok and not none.complete and none.stopped_by == "preemptions"
    one = explore(LostUpdate(), "bounded", preemptions=1)
    assert one.violated == ["no lost update"]
    assert one.example("no lost update").steps == 4


def test_bounded_is_complete_when_the_bound_cuts_nothing():
    result = explore(LostUpdate(), "bounded", preemptions=3)
    assert result.complete and result.violated == ["no lost update"]


def test_a_switch_at_a_blocked_thread_is_not_a_preemption():
    result = explore(OppositeOrder(), "bounded", preemptions=1)
    assert result.violated == ["no-deadlock"]
    assert explore(LostUpdate(locked=True), "bounded", preemptions=0).ok


# ---------------------------------------------------------------------------------------- random
@pytest.mark.parametrize("strategy", ["pct", "uniform"])
def test_random_is_deterministic_per_seed(strategy):
    a = explore(LostUpdate(), "random", runs=30, seed=7, strategy=strategy)
    b = explore(LostUpdate(), "random", runs=30, seed=7, strategy=strategy)
    assert a.to_json() == b.to_json()
    assert a.invariants["no lost update"].violations == b.invariants["no lost update"].violations > 0
    assert not a.complete and a.stopped_by == "sampled" and a.schedules == 30


def test_random_seeds_differ():
    counts = {explore(LostUpdate(), "random", runs=20, seed=s, strategy="uniform")
              .invariants["no lost update"].violations for s in range(6)}
    assert len(counts) > 1


def test_random_counterexamples_are_shrunk():
    class Noisy(LostUpdate):
        """The lost update with a third thread of unrelated steps in the way."""
        def setup(self):
            threads = super().setup()
            self.other = Counter("other")
            threads["N"] = self.noise()
            return threads

        def noise(self):
            for _ in range(4):
                yield self.other.add(1)

        def state_key(self):
            return super().state_key(), self.other.state()

    result = explore(Noisy(), "random", runs=40, seed=3, strategy="uniform",
                     invariants=[Invariant("c stays 0", lambda s: s.c.value == 0)])
    early = result.example("c stays 0")
    assert early.schedule in (("A", "A"), ("B", "B"))
    final = result.example("no lost update")   # a final invariant needs every thread to finish
    assert final.steps == 8 and final.switches == 3
    assert [t for t in final.schedule if t != "N"] in (list("ABBA"), list("BAAB"))


# ---------------------------------------------------------------------------------------- limits
@pytest.mark.parametrize("mode,options,name", [
    ("exhaustive", dict(max_schedules=0), "max_schedules"),
    ("exhaustive", dict(max_steps=-1), "max_steps"),
    ("exhaustive", dict(time_budget=0), "time_budget"),
    ("exhaustive", dict(max_thread_steps=0), "max_thread_steps"),
    ("exhaustive", dict(reduction="yes"), "reduction"),
    ("exhaustive", dict(rebuild="copy"), "rebuild"),
    ("bounded", dict(preemptions=-1), "preemptions"),
    ("random", dict(runs=0), "runs"),
    ("random", dict(seed=-1), "seed"),
    ("random", dict(strategy="round-robin"), "strategy"),
    ("random", dict(depth=0), "depth"),
    ("exhaustive", dict(preemptions=2), "preemptions"),
    ("bounded", dict(reduction=False), "reduction"),
    ("random", dict(schedule=["A"]), "schedule"),
    ("replay", dict(), "schedule"),
    ("sideways", dict(), "mode"),
    ("exhaustive", dict(progress=3), "progress"),
    ("exhaustive", dict(rebuild="snapshot"), "rebuild"),
])
def test_bad_options_are_refused_naming_the_option(mode, options, name):
    class NoSnapshot(LostUpdate):
        snapshot = restore = None

    with pytest.raises(ValueError, match=rf"^{name}"):
        explore(NoSnapshot(), mode, **options)


def test_options_are_checked_before_any_work():
    class Counting(LostUpdate):
        builds = 0

        def setup(self):
            Counting.builds += 1
            return super().setup()

    with pytest.raises(ValueError):
        explore(Counting(), max_schedules=0)
    Counting.snapshot = None
    with pytest.raises(ValueError, match="^rebuild"):
        explore(Counting(), rebuild="snapshot")
    assert Counting.builds == 0
    assert EXPLORE_PARAMS["max_thread_steps"].default == 100


def test_max_schedules_cuts_the_search():
    result = explore(LostUpdate(), reduction=False, hashing=False, max_schedules=2)
    assert result.schedules == 2 and not result.complete and result.stopped_by == "max_schedules"


def test_max_steps_cuts_each_schedule():
    result = explore(LostUpdate(), max_steps=2)
    assert not result.complete and result.stopped_by == "max_steps" and result.ok


def test_time_budget_stops_the_search():
    class Slow(LostUpdate):
        def state_key(self):
            import time
            time.sleep(0.002)
            return super().state_key()

    result = explore(Slow(), reduction=False, hashing=False, time_budget=0.005)
    assert not result.complete and result.stopped_by == "time_budget"


def test_progress_is_reported_and_can_stop_the_search(monkeypatch):
    from kit.explore import search
    monkeypatch.setattr(search, "PROGRESS_EVERY", 0.0)
    seen = []
    result = explore(LostUpdate(), reduction=False, hashing=False, progress=seen.append)
    assert seen and seen[-1].schedules == result.schedules == 6 and seen[-1].mode == "exhaustive"
    stopped = explore(LostUpdate(), reduction=False, hashing=False, progress=lambda p: p.schedules < 3)
    assert stopped.schedules == 3 and stopped.stopped_by == "progress" and not stopped.complete


# ----------------------------------------------------------------------------------- invariants
def test_invariants_can_be_functions_decorated_functions_or_classes():
    def c_never_three(s):
        return s.c.value != 3

    @invariant(final=True, name="ends at two")
    def ends_at_two(s):
        return s.c.value == 2

    class AtMostTwo(Invariant):
        name = "c at most 2"

        def holds(self, s):
            return s.c.value <= 2

    result = explore(LostUpdate(), invariants=[c_never_three, ends_at_two, AtMostTwo])
    assert set(result.invariants) >= {"c_never_three", "ends at two", "c at most 2"}
    assert result.invariants["ends at two"].violations and result.invariants["ends at two"].final
    assert result.invariants["c at most 2"].violations == 0


def test_invariant_names_must_be_given_and_unique():
    with pytest.raises(ValueError, match="a lambda needs a name"):
        explore(LostUpdate(), invariants=[lambda s: True])
    with pytest.raises(ValueError, match="repeated: no lost update"):
        explore(LostUpdate(), invariants=[Invariant("no lost update", lambda s: True)])
    with pytest.raises(TypeError, match="override holds"):
        Invariant("x")


# ------------------------------------------------------------------------------------ the result
def test_to_json_has_the_fixed_shape():
    data = explore(LostUpdate()).to_json()
    assert set(data) == {"complete", "schedules", "invariants"}
    assert data["complete"] is True and isinstance(data["schedules"], int)
    assert set(data["invariants"]) == {"no lost update", "no-deadlock", "bounded-steps", "no-exception"}
    for entry in data["invariants"].values():
        assert set(entry) == {"violations", "example"}
    example = data["invariants"]["no lost update"]["example"]
    assert [set(step) for step in example] == [{"thread", "step", "changed"}] * 4
    assert example[2]["changed"] == {"c": [0, 1]}
    assert data["invariants"]["no-deadlock"]["example"] is None
    json.dumps(data)


def test_results_with_and_without_snapshots_agree():
    a = explore(LostUpdate(), rebuild="replay")
    b = explore(LostUpdate(), rebuild="snapshot")
    assert (a.options["rebuild"], b.options["rebuild"]) == ("replay", "snapshot")
    assert a.to_json() == b.to_json() and a.states == b.states


def test_freeze_makes_results_comparable_by_value():
    assert freeze([1, {2: [3]}]) == freeze([1, {2: [3]}])
    assert freeze(np.arange(3)) == freeze(np.arange(3)) != freeze(np.arange(4))
    assert freeze((1, 2)) != freeze([1, 2])
    obj = object()
    assert isinstance(freeze(obj), Opaque) and freeze(obj) != freeze(obj)


def test_unhashable_step_results_still_merge_states():
    class Lists(Scenario):
        def setup(self):
            self.seen = []
            return {"A": self.read(), "B": self.read()}

        def read(self):
            yield Step("read list", reads={"seen"}, action=lambda t: list(self.seen))

        def state_key(self):
            return tuple(self.seen)

    assert explore(Lists()).states == 4


def test_replay_takes_no_search_limits():
    with pytest.raises(ValueError, match="^max_steps: applies to modes exhaustive, bounded, random, not replay"):
        explore(LostUpdate(), "replay", schedule=["A"], max_steps=3)


def test_state_key_must_be_hashable():
    class Unhashable(LostUpdate):
        def state_key(self):
            return [self.c.value]

    with pytest.raises(TypeError, match=r"state_key\(\) must return a hashable value"):
        explore(Unhashable())


def test_an_invariant_subclass_without_a_name_takes_its_class_name():
    class CounterNeverThree(Invariant):
        def holds(self, s):
            return s.c.value != 3

    assert "CounterNeverThree" in explore(LostUpdate(), invariants=[CounterNeverThree]).invariants


def test_a_progress_callback_that_stops_at_the_end_does_not_raise():
    result = explore(LostUpdate(), progress=lambda p: False)
    assert result.schedules >= 1
