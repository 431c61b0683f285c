"""Where the time goes (kit.sim.breakdown): the parts of one vCPU's time per accepted chunk."""
import json

import numpy as np
import pytest

from kit.host.ledger import EVENTS
from kit.sim import simulate
from kit.sim.breakdown import PARTS, WAIT_PARTS, time_per_chunk
from kit.sim.params import CostParams
from kit.sim.trace import ACCEPT_CHUNK
from kit.units import PAGE_4K

SMALL = dict(guests=2, vcpus=8, guest_mem="4GiB", host_cores=16, host_mem="64GiB")


def _chunk_time(r) -> float:
    """vCPUs / chunk rate: the mean time one vCPU spends per chunk (us)."""
    chunks_per_us = r.fault_in_gbps * 1e3 / ACCEPT_CHUNK
    return r.scenario.guests * r.scenario.vcpus / chunks_per_us


@pytest.mark.parametrize("policy", ["none", "invalidate-4k", "presplit-4k", "split-on-demand"])
def test_analytic_parts_add_up_to_the_cycle_time(policy):
    r = simulate(policy=policy, **SMALL)
    assert set(r.time_per_chunk) == set(PARTS)
    assert all(v >= 0 for v in r.time_per_chunk.values())
    assert sum(r.time_per_chunk.values()) == pytest.approx(_chunk_time(r), rel=1e-6)


@pytest.mark.parametrize("policy", ["invalidate-4k", "split-on-demand"])
def test_des_parts_add_up_to_the_cycle_time(policy):
    r = simulate(policy=policy, engine="des", **SMALL)
    assert set(r.time_per_chunk) == set(PARTS)
    assert sum(r.time_per_chunk.values()) == pytest.approx(_chunk_time(r), rel=0.05)


def test_the_headline_configuration_puts_invalidate_4k_time_in_cpa_lock_waits():
    """8 guests x 128 vCPUs x 160 GiB on 512 cores / 1.5 TiB: the per-page invalidation
    serialises on cpa_lock; the merged policy is bound by each VM's conversion lock (with the
    zeroing under the host's DRAM bandwidth, dram_gbps_per_socket, zeroing is far from it)."""
    head = dict(guests=8, vcpus=128, guest_mem="160GiB", host_cores=512, host_mem="1.5TiB")
    inv = simulate(policy="invalidate-4k", **head).time_per_chunk
    r = simulate(policy="split-on-demand", **head)
    sod = r.time_per_chunk
    assert max(inv, key=inv.get) == "cpa_lock_wait" and inv["cpa_lock_hold"] > 0
    assert r.bottleneck["resource"].startswith("vm_lock")
    assert max(sod, key=sod.get) == "vmm_conversion_wait" and sod["cpa_lock_wait"] == sod["cpa_lock_hold"] == 0
    assert sod["zeroing"] < sod["vmm_conversion"] + sod["guest_write"]


def test_scheduling_and_shootdown_parts_come_from_the_engine():
    """The analytic engine's scheduling (MvaResult.sched, .handoff) and the TLB shootdown
    fields of the demand reach their own parts."""
    head = dict(guests=8, vcpus=128, guest_mem="160GiB", host_cores=512, host_mem="1.5TiB")
    r = simulate(policy="invalidate-4k", **head)
    t = r.time_per_chunk
    assert r.scheduling["stretch"] > 1 and t["core_contention"] > 0 and t["lock_handoff"] > 0
    assert t["tlb_flush_wait"] > 0 and t["tlb_flush_ipis"] > 0
    p = CostParams()
    ev = dict.fromkeys(EVENTS, 0)
    ev.update(flush_tlb_all=10, split_2m=10, pgd_lock=10, cpa_lock=10, bytes_zeroed=10 * ACCEPT_CHUNK)
    split = time_per_chunk(ev, 10, p, 16, 1.0, 0.0, accept=False, irq=1.5)
    wait = p["flush_ack_us"] + 16 * p["ipi_send_ns"] / 1e3
    assert split["tlb_flush_wait"] == pytest.approx(2 * wait)       # inside cpa_lock's and pgd_lock's hold
    assert split["tlb_flush_ipis"] == pytest.approx(0.5 * (p["cpa_hold_us"] + p["split_us"] + 2 * wait))
    assert split["dm4k_walks"] == pytest.approx(ACCEPT_CHUNK / PAGE_4K * p["dm4k_walk_ns"] / 1e3)
    assert split["zeroing"] == pytest.approx(ACCEPT_CHUNK / (p["zero_gbps_core"] * 1e3))


def test_parts_from_events_and_parameters():
    p = CostParams()
    ev = dict.fromkeys(EVENTS, 0)
    ev.update(rmpupdate=20, pvalidate=20, vm_exit=30, cpa_lock=1000, user_exit=10, bytes_zeroed=10 * ACCEPT_CHUNK)
    t = time_per_chunk(ev, 10, p, 16, 0.0, ACCEPT_CHUNK, waits={"cpa_lock": 7.0, "nothing": 3.0})
    assert t["rmpupdate"] == pytest.approx(2 * p["instr_us"]) and t["pvalidate"] == pytest.approx(2 * p["instr_us"])
    assert t["exits"] == pytest.approx(3 * p["exit_us"]) and t["cpa_lock_hold"] == pytest.approx(100 * p["cpa_hold_us"])
    assert t["vmm_conversion"] == pytest.approx(p["convert_us"]) and t["cpa_lock_wait"] == 7.0
    assert t["zeroing"] == pytest.approx(ACCEPT_CHUNK / (p["zero_gbps_core"] * 1e3))
    assert t["core_contention"] == 0 and t["other_cpu"] == pytest.approx(0, abs=1e-9)
    # over-subscription: the stretch goes to IPIs by their share, the rest to core contention
    s = time_per_chunk(np.asarray([ev[k] for k in EVENTS]), 10, p, 16, 0.0, ACCEPT_CHUNK, sigma=2.0, ipi_share=0.25)
    base = s["exits"] + s["rmpupdate"] + s["pvalidate"] + s["guest_write"] + s["guest_lock_hold"] + s["vmm_conversion"]
    assert s["tlb_flush_ipis"] == pytest.approx(0.25 * base) and s["core_contention"] == pytest.approx(0.75 * base)
    assert set(WAIT_PARTS.values()) <= set(PARTS)


def test_time_per_chunk_is_recorded_in_the_json_and_named_in_the_summary():
    r = simulate(policy="invalidate-4k", **SMALL)
    out = json.loads(json.dumps(r.to_json()))
    assert out["time_per_chunk"] == pytest.approx(r.time_per_chunk)
    s = r.summary()
    assert s["cpa_lock wait, us per 4 MiB chunk"] == round(r.time_per_chunk["cpa_lock_wait"], 3)
    assert "cpa_lock acquisitions (whole run)" in s and "cpa_lock hold, us per acquisition" in s
    assert not any(k.startswith("cpa_lock mean wait") for k in s)
    c = simulate(workload="conversions", policy="split-on-demand", steps=100, **SMALL)
    assert "cpa_lock wait, us per conversion" in c.summary()


def test_kit_simulate_names_units_and_denominators(capsys):
    from kit.cli import main
    assert main(["simulate", "--guests", "1", "--vcpus", "8", "--guest-mem", "4GiB", "--host-cores", "16",
                 "--host-mem", "64GiB", "--policy", "invalidate-4k"]) == 0
    out = capsys.readouterr().out
    assert "cpa_lock wait, us per 4 MiB chunk" in out and "cpa_lock acquisitions (whole run)" in out
    assert "us per 4 MiB chunk" in out and "share %" in out and "cpa_lock_wait" in out
    assert "mean wait us" not in out


@pytest.mark.parametrize("engine,rel", [("analytic", 1e-6), ("des", 0.02)])
def test_parts_add_up_for_guests_of_different_sizes(engine, rel):
    """Each guest's waits are its own (a 4-vCPU guest beside two 12-vCPU ones waits less for
    its VM's lock), so the weighted parts still add up to vCPUs / chunk rate."""
    r = simulate(policy="invalidate-4k", engine=engine, guest_specs=[(4, "2GiB"), (12, "4GiB"), (12, "4GiB")],
                 host_cores=16, host_mem="64GiB")
    vcpus = sum(v for v, _ in r.scenario.specs)
    assert sum(r.time_per_chunk.values()) == pytest.approx(vcpus / (r.fault_in_gbps * 1e3 / ACCEPT_CHUNK), rel=rel)
    assert all(v >= 0 for v in r.time_per_chunk.values())
