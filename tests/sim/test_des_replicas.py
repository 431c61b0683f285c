"""The discrete-event engine's replicated runs: guests standing for several identical guests
(``kit.sim.des.run(copies=...)``, ``expand``), the runs past ``total_touched`` that trace one
guest of each kind and time a few of them (``kit.sim.scenario.des_groups``), and their bounds,
checked before any work."""
import hashlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kit.sim import api, des
from kit.sim.params import CostParams
from kit.units import GiB, TiB

SCN = sys.modules["kit.sim.scenario"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def p():
    return CostParams.load()


def _digest(r) -> str:
    h = hashlib.sha256()
    for a in (r.completions, r.latency, r.guest, *(r.waits[k] for k in sorted(r.waits))):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _inputs(p, **kw):
    s = api.scenario(engine="des", **kw)
    tr = api.run_trace(s)
    per, _ = api._batch_demands(tr, s, p)
    return s, [(s.specs[g][0], per[g]) for g in range(s.guests)]


# ---------------------------------------------------------------- copies in the engine
def test_one_copy_each_is_the_plain_run(p):
    s, guests = _inputs(p, guests=3, vcpus=16, guest_mem="4GiB", host_cores=8, host_mem="64GiB",
                        policy="invalidate-4k")
    a = des.run(guests, s.host_cores, p, seed=3)
    b = des.run(guests, s.host_cores, p, seed=3, copies=[1, 1, 1])
    assert _digest(a) == _digest(b) and a.holds == b.holds and a.handoffs == b.handoffs
    assert a.wait_copies is None and a.copies == [1, 1, 1]
    e = des.expand(a, [[0], [1], [2]])
    assert _digest(e) == _digest(a)


def test_a_guest_with_copies_is_that_many_guests_in_step(p):
    """Two copies of a guest time like two identical guests (here no over-subscription and no
    global lock: they differ only in which of two simultaneous zeroings starts first)."""
    s, guests = _inputs(p, guests=2, vcpus=8, guest_mem="2GiB", host_cores=64, host_mem="64GiB",
                        policy="split-on-demand")
    twin = [guests[0], guests[0]]
    two = des.run(twin, s.host_cores, p)
    one = des.run(twin[:1], s.host_cores, p, copies=[2])
    assert one.events * 2 == two.events
    assert one.sim_us == pytest.approx(two.sim_us, rel=0.01)
    assert one.holds["vm_lock"] == pytest.approx(two.holds["vm_lock"], rel=0.01)
    assert one.runnable_mean == pytest.approx(two.runnable_mean, rel=0.01)
    e = des.expand(one, [[0, 1]])
    assert len(e.completions) == len(two.completions) and np.all(np.diff(e.completions) >= 0)
    assert sorted(set(e.guest.tolist())) == [0, 1]
    assert len(e.waits["vm_lock"]) == len(two.waits["vm_lock"])
    assert e.guest_waits["vm_lock"][0] == e.guest_waits["vm_lock"][1] == one.guest_waits["vm_lock"][0]
    with pytest.raises(ValueError, match="copies"):
        des.run(twin, s.host_cores, p, copies=[1])
    with pytest.raises(ValueError, match="expand"):
        des.expand(one, [[0], [1]])


def test_copies_of_a_global_lock_holder_hold_it_back_to_back(p):
    s, guests = _inputs(p, guests=2, vcpus=4, guest_mem="1GiB", host_cores=64, host_mem="64GiB",
                        policy="invalidate-4k")
    one = des.run(guests[:1], s.host_cores, p)
    three = des.run(guests[:1], s.host_cores, p, copies=[3])
    assert three.holds["cpa_lock"] == pytest.approx(3 * one.holds["cpa_lock"], rel=0.05)
    assert three.wait_copies is not None and set(three.wait_copies["vm_lock"].tolist()) <= {3}


# ---------------------------------------------------------------- replicated runs
REPLICATED = [
    dict(guests=16, vcpus=64, guest_mem="4GiB", host_cores=256, host_mem="128GiB", policy="split-on-demand"),
    dict(guests=16, vcpus=64, guest_mem="4GiB", host_cores=256, host_mem="128GiB", policy="invalidate-4k"),
    dict(guests=12, vcpus=16, guest_mem="4GiB", host_cores=64, host_mem="128GiB", policy="presplit-4k"),
]


@pytest.mark.parametrize("kw", REPLICATED, ids=lambda kw: f"{kw['guests']}x{kw['vcpus']}on{kw['host_cores']}-{kw['policy']}")
def test_a_replicated_run_gives_what_timing_every_guest_gives(kw, p, monkeypatch):
    """Past total_touched (lowered here to 8 GiB) one guest is traced and a few are timed, each
    for several: the rate, the duration and the latencies stay those of timing every guest."""
    full = api.simulate(**kw, engine="des", params=p)
    assert full.trace == "full trace"
    monkeypatch.setattr(SCN, "TOTAL_TOUCHED", SCN.TOTAL_TOUCHED.derive(max=8 * GiB))
    monkeypatch.setattr(SCN, "DES_REPLICAS", 4)
    s = api.scenario(**kw, engine="des")
    assert [len(m) for m in api.des_groups(s)] == [kw["guests"] // 4] * 4
    rep = api.simulate(**kw, engine="des", params=p)
    assert "replicated" in rep.trace and "4 of them timed" in rep.trace
    assert rep.fault_in_gbps == pytest.approx(full.fault_in_gbps, rel=0.03)
    assert rep.sim_seconds == pytest.approx(full.sim_seconds, rel=0.03)
    assert rep.percentiles["accept_latency_us_p50"] == pytest.approx(full.percentiles["accept_latency_us_p50"], rel=0.05)
    assert len(rep.per_guest_gbps) == kw["guests"] and min(rep.per_guest_gbps) > 0
    assert rep.events["split_1g"] == pytest.approx(full.events["split_1g"], rel=0.05, abs=2)
    assert sum(rep.time_per_chunk.values()) == pytest.approx(sum(full.time_per_chunk.values()), rel=0.05)
    assert len(rep.series["fault_in_gbps"]) == len(full.series["fault_in_gbps"])
    assert rep.events == full.events
    # the lines: the workload's changes scale with the guests; the launch's (each guest's VMSAs
    # made private 4K pages) are one guest's, at most one 2M region a guest apart
    assert sum(rep.directmap.values()) == sum(full.directmap.values())
    assert abs(rep.directmap["DirectMap4k"] - full.directmap["DirectMap4k"]) <= 2048 * kw["guests"]
    # every guest's set-up is traced (its VMSAs' splits in the lines), the work replicated
    assert rep.setup == full.setup
    _check_final_lines(rep, full, kw["guests"])


def test_guests_of_two_kinds_are_replicated_kind_by_kind(p, monkeypatch):
    monkeypatch.setattr(SCN, "TOTAL_TOUCHED", SCN.TOTAL_TOUCHED.derive(max=8 * GiB))
    specs = [(16, "2GiB")] * 5 + [(8, "1GiB")] * 3
    s = api.scenario(guest_specs=specs, host_cores=64, host_mem="64GiB", engine="des")
    groups = api.des_groups(s, replicas=2)
    assert groups == [[0, 1, 2], [3, 4], [5, 6], [7]]
    tr = api.des_trace(s)
    assert len(tr.guests) == 8 and {b.guest for b in tr.batches} == set(range(8))
    assert [tr.chunks_of(g) for g in range(8)] == [s.touched_chunks(g) for g in range(8)]
    r = api.simulate(guest_specs=specs, host_cores=64, host_mem="64GiB", engine="des", params=p)
    a = api.simulate(guest_specs=specs, host_cores=64, host_mem="64GiB", params=p)
    assert abs(a.fault_in_gbps - r.fault_in_gbps) <= 0.10 * r.fault_in_gbps


# ---------------------------------------------------------------- the set-up of a replicated run
#: Replicated runs (total_touched lowered to SETUP_TOUCHED): guest counts, two kinds of guests,
#: the three policies whose set-up differs (VMSAs split over, the whole map split at boot, the
#: 4K map of every private page).
SETUP_TOUCHED = 3 * GiB
SETUP_CASES = [
    dict(guests=4, vcpus=8, guest_mem="2GiB", host_cores=64, host_mem="64GiB", policy="split-on-demand"),
    dict(guests=12, vcpus=16, guest_mem="2GiB", host_cores=64, host_mem="64GiB", policy="presplit-4k"),
    dict(guests=9, vcpus=8, guest_mem="2GiB", host_cores=128, host_mem="64GiB", policy="invalidate-4k"),
    dict(guest_specs=[(8, "2GiB")] * 5 + [(4, "1GiB")] * 3, host_cores=64, host_mem="64GiB", policy="split-on-demand"),
    dict(guest_specs=[(4, "1GiB"), (8, "2GiB")] * 3, host_cores=64, host_mem="64GiB", policy="presplit-4k"),
    dict(guest_specs=[(8, "2GiB")] * 2 + [(16, "1GiB")] * 6, host_cores=64, host_mem="64GiB", policy="invalidate-4k"),
]
#: How far a replicated run's final DirectMap4k line may be from timing every guest's, per
#: guest: one 2M region (its set-up is every guest's, and each guest's work changes the line as
#: its kind's traced guest did). The 1G line differs by 1 GiB for each 1G split the replicated
#: work counts beyond or short of the full run's (where the host's allocator placed each
#: guest's folios decides which 1G mappings it splits first; a traced guest's splits are
#: copied to its kind); the 2M line takes the rest (the total is the host's).
LINE_4K_TOLERANCE_KB = 2048
GIB_KB = GiB >> 10


def _setup_of(tr) -> tuple:
    return tr.boot, tr.launch, tr.setup_totals(), tr.directmap_boot, tr.vmsa_pages, tr.guests


def _replicated_vs_full(kw, p, replicas: int):
    """(replicated trace, full trace, replicated result, result timing every guest) of ``kw``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(SCN, "TOTAL_TOUCHED", SCN.TOTAL_TOUCHED.derive(max=SETUP_TOUCHED))
        mp.setattr(SCN, "DES_REPLICAS", replicas)
        s = api.scenario(engine="des", **kw)
        assert api.des_groups(s) is not None
        rt, ft = api.des_trace(s), api.run_trace(s)
        rep = api.simulate(engine="des", params=p, trace=rt, **kw)
    full = api.simulate(engine="des", params=p, trace=ft, **kw)
    assert "replicated" in rep.trace and full.trace == "full trace"
    return rt, ft, rep, full


def _check_setup_and_lines(rt, ft, rep, full):
    # the set-up: every guest's boot and launch, exactly a trace of every guest's
    assert _setup_of(rt) == _setup_of(ft)
    assert rep.setup == full.setup and rep.setup["launch"]
    # the work: every guest's chunks, as many batches
    assert [rt.chunks_of(g) for g in range(len(ft.guests))] == [ft.chunks_of(g) for g in range(len(ft.guests))]
    # the final lines: the host's total; the 4K line within LINE_4K_TOLERANCE_KB a guest, the
    # 1G line off by 1 GiB per 1G split counted beyond or short of the full run's
    _check_final_lines(rep, full, len(ft.guests))


def _check_final_lines(rep, full, guests: int):
    assert sum(rep.directmap.values()) == sum(full.directmap.values())
    assert abs(rep.directmap["DirectMap4k"] - full.directmap["DirectMap4k"]) <= LINE_4K_TOLERANCE_KB * guests
    extra = abs(rep.events["split_1g"] - full.events["split_1g"])
    assert abs(rep.directmap.get("DirectMap1G", 0) - full.directmap.get("DirectMap1G", 0)) <= GIB_KB * extra


@pytest.mark.parametrize("kw", SETUP_CASES, ids=lambda kw: f"{kw.get('guests', len(kw.get('guest_specs', ())))}"
                         f"{'mixed' if 'guest_specs' in kw else ''}-{kw['policy']}")
def test_a_replicated_run_sets_up_every_guest(kw, p):
    """A replicated run builds and launches every guest on the host, as a trace of every guest
    does, and traces the work of one guest of each kind: the boot and launch events, the boot
    DirectMap lines and the VMSA pages are the whole scenario's, bit for bit."""
    rt, ft, rep, full = _replicated_vs_full(kw, p, replicas=2)
    _check_setup_and_lines(rt, ft, rep, full)
    # every guest's VMSAs are launched: an RMPUPDATE per VMSA at least
    assert rep.setup["launch"].get("rmpupdate", 0) >= rt.vmsa_pages


@settings(max_examples=12, deadline=None)
@given(a=st.integers(1, 8), b=st.integers(0, 4),
       policy=st.sampled_from(["split-on-demand", "presplit-4k", "invalidate-4k"]),
       replicas=st.integers(1, 3))
def test_any_replicated_run_has_the_full_set_up(p, a, b, policy, replicas):
    """Over guest counts (``a`` guests of 2 GiB, ``b`` of 1 GiB, past total_touched) and
    policies: the replicated run's set-up equals the full trace's, its final lines are those of
    timing every guest within LINE_4K_TOLERANCE_KB a guest and the 1G splits it counts apart."""
    specs = [(8, "2GiB")] * a + [(4, "1GiB")] * b
    if sum(2 if v == 8 else 1 for v, _ in specs) * GiB <= SETUP_TOUCHED:
        specs += [(8, "2GiB")]                   # past total_touched: replicated
    kw = dict(guest_specs=specs, host_cores=64, host_mem="64GiB", policy=policy)
    _check_setup_and_lines(*_replicated_vs_full(kw, p, replicas))


# ---------------------------------------------------------------- bounds, before any work
def test_the_issue_run_is_replicated_within_its_bounds():
    """64 guests x 160 GiB, each faulting in all of it (10 TiB): one guest traced, 8 timed."""
    s = api.scenario(guests=64, vcpus=128, guest_mem="160GiB", host_cores=512, host_mem=64 * 160 * GiB + 512 * GiB,
                     engine="des", touched="160GiB")
    groups = api.des_groups(s)
    assert [len(m) for m in groups] == [8] * 8 and [m[0] for m in groups] == list(range(0, 64, 8))
    assert api.des_groups(api.scenario(guests=4, guest_mem="8GiB", host_mem="64GiB", engine="des")) is None
    assert api.des_groups(api.scenario("conversions", guests=4, guest_mem="8GiB", host_mem="64GiB",
                                       engine="des")) is None


def test_a_replicated_run_has_bounds_of_its_own():
    from kit.sim.scenario import TOTAL_REPLICATED, TOTAL_TIMED
    # the representatives' work: 8 guests x 400 GiB are all timed
    with pytest.raises(ValueError, match=r"^touched: the representative guests of a replicated DES run fault in "
                                         r"3200GiB; at most 2TiB \(the limit: the engine handles"):
        api.scenario(guests=8, guest_mem="400GiB", host_mem="4TiB", engine="des")
    # every guest's work: 32 x 640 GiB
    with pytest.raises(ValueError, match=r"^touched: 32 guests fault in 20TiB in all; a replicated DES run takes at "
                                         r"most 16TiB"):
        api.scenario(guests=32, guest_mem="640GiB", host_mem="21TiB", engine="des")
    # one guest of each kind traced: 3 kinds x 1 TiB
    specs = [(128, "1TiB"), (64, "1TiB"), (32, "1TiB")] * 2
    with pytest.raises(ValueError, match=r"^touched: one guest of each of 3 kinds faults in 3TiB in all; a DES run "
                                         r"traces at most 2TiB"):
        api.scenario(guest_specs=specs, touched="1TiB", host_mem="7TiB", engine="des")
    assert TOTAL_TIMED.max == 2 * TiB and TOTAL_REPLICATED.max == 16 * TiB
    s = api.scenario(guests=64, guest_mem="256GiB", host_mem=64 * 256 * GiB + 16 * GiB, engine="des")
    assert [len(m) for m in api.des_groups(s)] == [8] * 8   # 16 TiB in all, 256 GiB traced, 2 TiB timed


def test_the_simpy_reference_gives_the_same_result(p):
    """benchmarks/des_simpy.py: the same model, bit for bit, with copies too (needs SimPy)."""
    pytest.importorskip("simpy")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location("des_simpy", ROOT / "benchmarks" / "des_simpy.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    for kw in (dict(guests=3, vcpus=16, guest_mem="2GiB", host_cores=8, host_mem="64GiB", policy="invalidate-4k-flush"),
               dict(guests=2, vcpus=32, guest_mem="2GiB", host_cores=512, host_mem="64GiB", policy="split-on-demand")):
        s, guests = _inputs(p, **kw)
        for copies in (None, [2] + [1] * (s.guests - 1)):
            a = des.run(guests, s.host_cores, p, seed=5, copies=copies)
            b = mod.run(guests, s.host_cores, p, seed=5, copies=copies)
            assert _digest(a) == _digest(b) and a.events == b.events and a.sim_us == b.sim_us
            assert a.holds == b.holds and a.handoffs == b.handoffs
