"""Pre-faulting on a page-state change in the simulation: QEMU commit 4cdc489eb9c2 ("i386/kvm:
Prefault memory on page state change") calls KVM_PRE_FAULT_MEMORY on each converted range,
so the guest's validations no longer exit to map the pages. The scenario parameter ``vmm``,
the trace it builds, and the validation row ``map-exits-prefault``."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from kit.cli import main
from kit.sim import scenario, simulate
from kit.sim import trace as T
from kit.sim import validation as V
from kit.sim.scenario import SCENARIO_PARAMS
from kit.units import GiB

MOVED = ("vm_exit", "pre_fault", "pre_fault_bytes")   # what pre-faulting changes in the ledger


def _steady(gmem_huge: bool, vmm: str, chunks: int, vcpus: int) -> dict:
    """Events per chunk of ``chunks`` chunks after the first (the guard unit cancels out)."""
    def run(n):
        host, _, gs = T.build(64 * GiB, 64, "split-on-demand", [(vcpus, 8 * GiB)], 0,
                              gmem_hugepages=gmem_huge, vmm=vmm)
        return T.lazy_accept(host, gs, touched=[n]).totals()
    a, b = run(1), run(1 + chunks)
    return {k: (b[k] - a[k]) / chunks for k in b}


@settings(max_examples=6, deadline=None)
@given(huge=st.booleans(), data=st.data(), vcpus=st.integers(1, 8))
def test_prefault_leaves_no_map_exit_and_moves_the_work_without_changing_it(huge, data, vcpus):
    """With pre-faulting, no exit maps a page: 0 per chunk where the stock VMM takes 1024 (4K
    guest_memfd, one per page) or 2 (2M folios, one per unit). Every other event per chunk
    is the same (the folios are cleared, prepared and mapped all the same, by the VMM's
    thread), and all the clearing happens inside KVM_PRE_FAULT_MEMORY."""
    chunks = data.draw(st.integers(1, 8 if huge else 1), label="chunks")
    d = _steady(huge, "default", chunks, vcpus)
    p = _steady(huge, "prefault", chunks, vcpus)
    assert d["vm_exit"] - d["user_exit"] == (2 if huge else 1024)
    assert p["vm_exit"] - p["user_exit"] == 0
    assert d["vm_exit"] - p["vm_exit"] == (2 if huge else 1024)
    assert {k: v for k, v in p.items() if k not in MOVED} == {k: v for k, v in d.items() if k not in MOVED}
    assert p["pre_fault_bytes"] == p["bytes_zeroed"] == T.ACCEPT_CHUNK
    assert p["pre_fault"] == p["npt_map"] == (2 if huge else 1024)
    assert d["pre_fault"] == d["pre_fault_bytes"] == 0


def test_validation_row_is_computed_and_within():
    rows = {r.id: r for r in V.load_validation()}
    row = rows["map-exits-prefault"]
    assert row.vmm == "prefault" and row.gmem == "4k"
    assert V.map_exits_per_chunk(row, None) == 0
    assert V.map_exits_per_chunk(rows["map-exits-4k-gmem"], None) == 1024
    out = {r["id"]: r for r in V.validate()}["map-exits-prefault"]
    assert out["status"] == "within" and out["model"] == 0 and out["within"]
    assert not V.NOT_MODELLED and V.VMMS == T.VMMS


def test_the_scenario_parameter_is_one_table_entry():
    p = SCENARIO_PARAMS["vmm"]
    assert p.kind == "choice" and tuple(p.choices) == T.VMMS and p.default == "default"
    s = scenario(vmm="prefault", guest_mem="64GiB", vcpus=8)
    assert s.vmm == "prefault" and s.to_json()["vmm"] == "prefault"
    assert s != scenario(guest_mem="64GiB", vcpus=8)
    with pytest.raises(ValueError, match="vmm"):
        scenario(vmm="qemu")
    with pytest.raises(ValueError, match="vmm"):
        T.build(GiB, 4, "split-on-demand", [], 0, vmm="qemu")


@pytest.mark.parametrize("workload", ["lazy-accept", "conversions"])
def test_simulate_traces_with_the_pre_faulting_vmm(workload):
    kw = dict(workload=workload, guests=1, vcpus=8, guest_mem="64GiB", host_cores=64, host_mem="128GiB",
              steps=200)
    d, p = simulate(**kw), simulate(**kw, vmm="prefault")
    assert p.scenario.vmm == "prefault" and d.scenario.vmm == "default"
    assert p.events["pre_fault"] > 0 and d.events.get("pre_fault", 0) == 0
    assert p.events["vm_exit"] < d.events["vm_exit"]


def test_kit_simulate_takes_vmm(capsys):
    assert main(["simulate", "--vmm", "prefault", "--guest-mem", "64GiB", "--vcpus", "8",
                 "--host-cores", "64", "--host-mem", "128GiB"]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith(", VMM prefault")
    assert main(["simulate", "--help"]) == 0
    assert "prefault" in " ".join(capsys.readouterr().out.split())
    assert main(["simulate", "--vmm", "qemu"]) != 0


def test_the_simulation_runner_offers_the_vmm_from_the_table():
    from kit.viz import dashboards as D
    sr = D.SimulationRunner(guests=1, vcpus=8, guest_mem="8GiB", host_cores=16, host_mem="64GiB", vmm="prefault")
    assert tuple(sr.vmm.options) == T.VMMS and sr.kwargs()["vmm"] == "prefault" and sr.check() is None
    with pytest.raises(ValueError, match="vmm"):
        D.SimulationRunner(vmm="qemu")
