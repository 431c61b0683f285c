"""The catalog (kit.explore.catalog): fixed names, parameters, explore_named's arguments and
errors, the JSON shape of results, schemes and invariants written in a cell, and the search on
the real model: the reduction against plain enumeration, snapshots against replays."""
from __future__ import annotations

import json

import pytest

import kit.explore.search as search
from kit.explore import (DEADLOCK, EXPLORE_PARAMS, SCENARIO_PARAMS, SCENARIOS, SCHEMES, Invariant, Progress,
                         ScenarioSpec, Step, build, explore_named, schemes_for, state_views)
from kit.explore.scenarios import HostWriteVsConversion, MirrorSetup
from kit.explore.schemes import HostWriteTrack, MirrorMerged, Srcu
from kit.explore.threads import add_map, maps_key

HWC = "host-write-vs-conversion"
CONVERSION_INVARIANTS = ["no RMP #PF on a mapped page", "no oops unless the kernel bug ran", "bounded faults per access",
                         "tracking counter equals live maps", "no RMPUPDATE to private while mapped",
                         "Validated lost only by host bug or guest request", "no NPT mapping of a freed frame"]
MIRROR_INVARIANTS = ["no ASID reused while referenced", "no mirror of a mirror", "no mirror of a VM with vCPUs"]
BUILTIN = ["no-deadlock", "bounded-steps", "no-exception"]


def test_fixed_names():
    assert list(SCENARIOS) == ["host-write-vs-conversion", "mirror-setup"]
    assert list(SCHEMES) == ["srcu", "host_write_track", "host_write_track_locked", "flip_back_unmap",
                             "flip_back_split", "upstream", "mirror-2021", "mirror-merged"]
    assert schemes_for(HWC) == list(SCHEMES)[:6]
    assert schemes_for("mirror-setup") == ["mirror-2021", "mirror-merged"]
    assert all(isinstance(s, ScenarioSpec) and s.name == n for n, s in SCENARIOS.items())
    assert all(isinstance(cls, type) and cls.name == n for n, cls in SCHEMES.items())
    with pytest.raises(ValueError, match="unknown 'nope'"):
        schemes_for("nope")


def test_every_result_names_every_invariant():
    assert list(explore_named(HWC, "upstream", second_writer=False).invariants) == CONVERSION_INVARIANTS + BUILTIN
    assert list(explore_named("mirror-setup", "mirror-merged", vcpu=False).invariants) == MIRROR_INVARIANTS + BUILTIN


def test_scenario_parameters_are_params_of_one_table():
    for name, spec in SCENARIOS.items():
        assert spec.params == SCENARIO_PARAMS[name]
        assert [p.name for p in spec.param_specs()] == list(spec.params)
        assert all(EXPLORE_PARAMS[p].help for p in spec.params)
        assert set(spec.threads) >= {"writer", "conversion", "writer2"} or set(spec.threads) >= {"copy1", "copy2"}
    assert EXPLORE_PARAMS["scenario"].choices == tuple(SCENARIOS)
    assert EXPLORE_PARAMS["scheme"].choices == tuple(SCHEMES)
    assert EXPLORE_PARAMS["host_mem"].check("64MiB") == 64 << 20


def test_the_json_shape():
    result = explore_named(HWC, "host_write_track")
    data = json.loads(json.dumps(result.to_json()))
    assert set(data) == {"complete", "schedules", "invariants"}
    assert data["complete"] is True and isinstance(data["schedules"], int) and data["schedules"] > 0
    assert list(data["invariants"]) == CONVERSION_INVARIANTS + BUILTIN
    for name, inv in data["invariants"].items():
        assert set(inv) == {"violations", "example"} and isinstance(inv["violations"], int)
        if inv["violations"]:
            assert all(set(step) >= {"thread", "step", "changed"} for step in inv["example"])
            assert all(isinstance(v, list) and len(v) == 2 for step in inv["example"] for v in step["changed"].values())
        else:
            assert inv["example"] is None
    lost = data["invariants"]["tracking counter equals live maps"]["example"]
    assert lost[-1]["changed"] == {"host maps": [1, 2]}
    assert result.options["scheme"] == "host_write_track" and result.options["writes"] == 1


def test_modes_and_bound():
    bounded = explore_named(HWC, "srcu", "bounded", bound=1)
    assert bounded.mode == "bounded" and bounded.options["preemptions"] == 1
    assert "no RMPUPDATE to private while mapped" in bounded.violated       # one preemption is enough
    rnd = explore_named(HWC, "srcu", "random", bound=20, seed=3)
    assert rnd.schedules == 20 and rnd.options["runs"] == 20 and rnd.options["seed"] == 3
    assert explore_named(HWC, "srcu", "random", bound=20, seed=3).to_json() == rnd.to_json()
    replay = explore_named(HWC, "srcu", "replay", schedule=["writer"] * 3)
    assert [s.label for s in replay.trace] == ["srcu_read_lock kvm->psc_srcu", "post_map_gfn: snp_lookup_rmpentry",
                                               "kvm_vcpu_map: gfn 0x10 -> kmap"]


def test_bad_input_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="scenario: unknown"):
        explore_named("nope", "srcu")
    with pytest.raises(ValueError, match="scheme: unknown"):
        explore_named(HWC, "nope")
    with pytest.raises(ValueError, match="does not apply to scenario host-write-vs-conversion"):
        explore_named(HWC, "mirror-merged")
    with pytest.raises(ValueError, match="bound: applies to modes bounded"):
        explore_named(HWC, "srcu", bound=2)
    with pytest.raises(ValueError, match="writes"):
        explore_named(HWC, "srcu", writes=9)
    with pytest.raises(ValueError, match="colour: neither an option of explore"):
        explore_named(HWC, "srcu", colour=1)
    with pytest.raises(ValueError, match="op: applies to scenario mirror-setup"):
        HostWriteVsConversion("srcu", op="copy")
    with pytest.raises(ValueError, match="punch_hole"):
        explore_named(HWC, "srcu", punch_hole=True)
    with pytest.raises(ValueError, match="op: scheme 'mirror-2021' has no MOVE"):
        explore_named("mirror-setup", "mirror-2021", op="move")
    with pytest.raises(ValueError, match="schedule\\[0\\]: unknown thread 'nobody'"):
        explore_named(HWC, "srcu", "replay", schedule=["nobody"])
    with pytest.raises(ValueError, match="mode"):
        explore_named(HWC, "srcu", "sideways")


def test_a_scheme_written_in_a_cell():
    class AtomicTrack(HostWriteTrack):
        """host_write_track with atomic_inc/atomic_dec: no lost update, but still nothing
        blocks a writer behind the conversion's check."""
        name = "atomic-track"

        def track(self, w, pfn, delta):
            counter = w.p[self.counter]

            def act(thread):
                counter.value += delta
                w.b.tracked += delta
                add_map(w, pfn, delta, True)
            yield Step(f"atomic add {counter.name} {delta:+d}", writes=(counter.key, maps_key(pfn)), action=act)

    result = explore_named(HWC, AtomicTrack)
    assert "tracking counter equals live maps" not in result.violated
    assert "no RMPUPDATE to private while mapped" in result.violated
    assert result.options["scheme"] == "atomic-track"
    assert explore_named(HWC, AtomicTrack()).to_json() == result.to_json()


def test_an_invariant_written_in_a_cell():
    at_most_one = Invariant("at most one live map", lambda s: s.w.live_maps() <= 1)
    result = explore_named(HWC, "srcu", invariants=[at_most_one])
    assert "at most one live map" in result.violated
    assert result.example("at most one live map").steps == 6     # both writers: lock, check, kmap


def test_dropping_migration_in_progress_deadlocks_the_crossing_copies():
    class NoBail(MirrorMerged):
        """sev_lock_two_vms without the migration_in_progress bail: destination, then source."""
        name = "no-bail"

        def lock_two_vms(self, w, dst, src):
            yield w.p[f"{dst}->lock"].acquire()
            yield w.p[f"{src}->lock"].acquire()
            return 0

        def unlock_two_vms(self, w, dst, src):
            yield w.p[f"{dst}->lock"].release()
            yield w.p[f"{src}->lock"].release()

    result = explore_named("mirror-setup", NoBail, vcpu=False)
    assert result.violated == [DEADLOCK]
    graph = result.example(DEADLOCK).lock_graph
    assert set(graph.cycle) >= {"copy1", "copy2", "A->lock", "B->lock"}


def test_progress_is_reported_and_can_stop_the_search():
    seen = []

    def stop(p: Progress):
        seen.append(p)
        return False
    old, search.PROGRESS_EVERY = search.PROGRESS_EVERY, 0.0
    try:
        result = explore_named(HWC, "srcu", progress=stop)
    finally:
        search.PROGRESS_EVERY = old
    assert seen and not result.complete and result.stopped_by == "progress"


def test_limits_cut_the_search():
    result = explore_named(HWC, "srcu", max_schedules=5)
    assert not result.complete and result.stopped_by == "max_schedules" and result.schedules == 5


def test_build_and_objects():
    scn = build(HWC, "srcu", writes=2)
    assert isinstance(scn, HostWriteVsConversion) and scn.params["writes"] == 2
    assert build(scn) is scn
    with pytest.raises(ValueError, match="explored as it is"):
        build(scn, "srcu")
    assert isinstance(build("mirror-setup"), MirrorSetup)          # the first scheme of the scenario
    assert isinstance(build(HostWriteVsConversion, Srcu), HostWriteVsConversion)
    r = explore_named(MirrorSetup("mirror-merged", vcpu=False))
    assert r.ok and r.options["scheme"] == "mirror-merged"


# ===================================================================== search on the real model
SMALL = [(HWC, s, {"second_writer": False}) for s in schemes_for(HWC)] + [
    ("mirror-setup", "mirror-merged", {"vcpu": False}), ("mirror-setup", "mirror-2021", {"vcpu": False})]


@pytest.mark.parametrize("scenario,scheme,params", SMALL, ids=[f"{s}" for _, s, _ in SMALL])
def test_the_reduction_finds_what_plain_enumeration_finds_with_fewer_schedules(scenario, scheme, params):
    reduced = explore_named(scenario, scheme, **params)
    plain = explore_named(scenario, scheme, reduction=False, hashing=False, **params)
    assert reduced.complete and plain.complete
    assert reduced.violated == plain.violated
    for name in reduced.violated:
        assert reduced.example(name).steps == plain.example(name).steps
    assert reduced.schedules < plain.schedules


@pytest.mark.parametrize("scheme", ["srcu", "flip_back_unmap", "upstream"])
def test_snapshots_and_replays_explore_the_same_states(scheme):
    snap = explore_named(HWC, scheme, rebuild="snapshot")
    replay = explore_named(HWC, scheme, rebuild="replay")
    assert snap.options["rebuild"] == "snapshot" and replay.options["rebuild"] == "replay"
    assert (snap.schedules, snap.states, snap.to_json()) == (replay.schedules, replay.states, replay.to_json())
    assert snap.steps < replay.steps


def test_a_snapshot_restores_the_model():
    scn = HostWriteVsConversion("flip_back_unmap")
    threads = scn.setup()
    key, snap = scn.state_key(), scn.snapshot()
    rmp, dm = scn.w.host.rmp.rmpread(scn.w.pfn), scn.w.host.directmap.level(scn.w.pfn)
    conversion, value = threads["conversion"], None
    for _ in range(4):                        # attributes, direct-map step, RMPUPDATE, after step
        step = conversion.send(value)
        value = step.action("conversion")
    assert scn.w.host.rmp.rmpread(scn.w.pfn).assigned and scn.state_key() != key
    scn.restore(snap)
    assert scn.state_key() == key
    assert scn.w.host.rmp.rmpread(scn.w.pfn) == rmp and scn.w.host.directmap.level(scn.w.pfn) == dm
    assert list(threads) == list(scn.threads())


def test_state_views_step_through_a_counterexample():
    result = explore_named(HWC, "host_write_track")
    ex = result.example("tracking counter equals live maps")
    views = state_views(HWC, "host_write_track", ex.schedule)
    assert len(views) == len(ex.schedule) + 1
    assert views[0]["rmp"] == "shared" and views[0]["host_write_track[gfn]"] == 0 and views[0]["host maps"] == 0
    assert views[-1]["host_write_track[gfn]"] == 1 and views[-1]["host maps"] == 2
    for before, after, step in zip(views, views[1:], ex.trace):
        assert {k for k in after if after[k] != before[k]} == set(step.changes)
    with pytest.raises(ValueError, match="schedule\\[1\\]: unknown thread"):
        state_views(HWC, "srcu", ["writer", "nobody"])
