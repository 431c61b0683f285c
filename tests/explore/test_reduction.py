"""The partial-order reduction and state hashing are sound: on generated small scenarios they
find exactly the invariants plain enumeration finds, with the same shortest counterexample
lengths, visit the same states, and run no more schedules (docs/explore.md, "Why it is sound")."""
from __future__ import annotations

from hypothesis import given, settings

from kit.explore import explore

from .generated import scenarios


def summary(result):
    return {name: (r.violations > 0, r.example.steps if r.example else None)
            for name, r in result.invariants.items()}


@settings(max_examples=150)
@given(scenarios())
def test_reduction_finds_what_plain_enumeration_finds(scn):
    plain = explore(scn, reduction=False, hashing=False)
    assert plain.complete
    for reduction, hashing in ((True, True), (True, False), (False, True)):
        reduced = explore(scn, reduction=reduction, hashing=hashing)
        assert reduced.complete
        assert summary(reduced) == summary(plain), (reduction, hashing)
        assert reduced.states == plain.states
        assert reduced.schedules <= plain.schedules


@settings(max_examples=60)
@given(scenarios())
def test_counterexamples_replay_to_the_same_violation(scn):
    result = explore(scn)
    for name, r in result.invariants.items():
        if r.example is None:
            continue
        again = explore(scn, "replay", schedule=list(r.example.schedule))
        assert again.invariants[name].violations == 1
        assert again.invariants[name].example.steps == r.example.steps


@settings(max_examples=60)
@given(scenarios())
def test_snapshot_rebuild_matches_replay_rebuild(scn):
    by_replay = explore(scn, rebuild="replay")
    by_snapshot = explore(scn, rebuild="snapshot")
    assert by_snapshot.options["rebuild"] == "snapshot"
    assert (by_snapshot.schedules, by_snapshot.states, summary(by_snapshot)) == \
        (by_replay.schedules, by_replay.states, summary(by_replay))
    assert [r.example and r.example.schedule for r in by_snapshot.invariants.values()] == \
        [r.example and r.example.schedule for r in by_replay.invariants.values()]


@settings(max_examples=60)
@given(scenarios(max_ops=7))
def test_bounded_with_a_large_bound_is_exhaustive(scn):
    plain = explore(scn, reduction=False, hashing=False)
    bounded = explore(scn, "bounded", preemptions=7)
    assert bounded.complete
    assert summary(bounded) == summary(plain)


def test_independent_threads_collapse():
    """Three threads of three steps on three different keys: 9!/(3!3!3!) = 1680 interleavings,
    one Mazurkiewicz trace, 4**3 = 64 states."""
    from .generated import Generated
    programs = [[("w", k, 1), ("r", k), ("w", k, 2)] for k in ("x", "y", "z")]
    plain = explore(Generated(programs), reduction=False, hashing=False)
    reduced = explore(Generated(programs))
    assert plain.schedules == 1680 and plain.states == reduced.states == 64
    assert reduced.schedules <= 16 and reduced.steps < plain.steps / 50
