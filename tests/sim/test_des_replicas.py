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
