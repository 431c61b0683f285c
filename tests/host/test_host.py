"""Kernel helpers, host accesses and host fault policies (kit/host/host.py, policies.py)."""
import errno

import pytest

from kit.errors import X86_PF_RMP, HostOops, KernelError, RmpUpdateLivelock
from kit.host import DIRECTMAP_POLICIES, DirectMapPolicy, Host
from kit.units import PAGE_1G, PAGE_2M, PAGE_4K, PAGES_PER_2M

R = 512


def test_host_defaults_and_repr():
    h = Host()
    assert h.nr_pages == 1536 * 1024 * 1024 // 4 and h.cores == 512
    assert "split-on-demand" in repr(h) and "1536GiB" in repr(h)


@pytest.mark.parametrize("kw,match", [
    (dict(mem="1.5XiB"), "mem"), (dict(mem="3MiB"), "mem"), (dict(mem=-1), "mem"),
    (dict(cores=0), "cores"), (dict(directmap_policy="split"), "directmap_policy: unknown policy 'split'"),
    (dict(host_fault_policy="panic"), "host_fault_policy"), (dict(seed="x"), "seed"),
])
def test_host_rejects_bad_arguments(kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        Host(**{"mem": "2GiB", **kw})


def test_rmp_make_private_split_on_demand_2m_needs_nothing():
    # tip 661b1c6169e2 adjust_direct_map: 2M RMP entries are skipped
    h = Host(mem="2GiB", cores=4)
    assert h.rmp_make_private(R, 0x200000, PAGE_2M, 1, False) == 0
    assert h.directmap.level(R) == PAGE_1G and h.ledger.totals["split_2m"] == 0
    assert h.snp_lookup_rmpentry(R + 5) == (True, PAGE_2M)
    assert h.rmp_make_shared(R, PAGE_2M) == 0
    assert h.snp_lookup_rmpentry(R + 5) == (False, PAGE_2M)


def test_rmp_make_private_4k_splits_once_per_region():
    h = Host(mem="2GiB", cores=4)
    assert h.rmp_make_private(0, 0, PAGE_4K, 1, False, npages=3 * R) == 0
    t = h.ledger.totals
    assert t["split_2m"] == 3 and t["split_1g"] == 1 and t["rmpupdate"] == 3 * R
    assert t["cpa_lock"] == 3 + 4       # one set_memory_4k per region + one per split
    assert h.directmap.counts()["DirectMap4k"] == 3 * 2048


def test_failed_helper_changes_nothing_and_logs():
    h = Host(mem="2GiB", cores=4)
    h.rmp.rmpupdate(7, assigned=True, pagesize=PAGE_4K, immutable=True, asid=1, gpa=0)
    counts, mark = h.directmap.counts(), h.ledger.mark()
    assert h.rmp_make_private(0, 0, PAGE_4K, 2, False, npages=16) == -errno.EFAULT
    assert h.directmap.counts() == counts and h.ledger.mark() == mark     # no split left behind
    assert not h.rmp.rmpread(0).assigned
    assert "RMPUPDATE failed for PFN 7" in h.dmesg[-1]


def test_overlap_livelock_or_bounded_retry():
    h = Host(mem="2GiB", cores=4)
    h.rmp_make_private(0, 0, PAGE_2M, 1, False)
    with pytest.raises(RmpUpdateLivelock):
        h.rmp_make_shared(3, PAGE_4K)
    assert h.rmp.rmpread(3).assigned
    h = Host(mem="2GiB", cores=4, overlap_retries=10)
    h.rmp_make_private(0, 0, PAGE_2M, 1, False)
    assert h.rmp_make_shared(3, PAGE_4K) == -errno.EFAULT


def test_snp_off():
    h = Host(mem="2GiB", cores=4, snp=False)
    assert h.rmp_make_private(0, 0, PAGE_4K, 1, False) == -errno.ENODEV
    with pytest.raises(KernelError) as ei:
        h.snp_lookup_rmpentry(0)
    assert ei.value.errno == errno.ENODEV


def test_leak_pages():
    h = Host(mem="2GiB", cores=4)
    h.snp_leak_pages(10, 3)
    assert h.snp_nr_leaked_pages == 3 and h.memory.owner(11) == "leaked"
    with pytest.raises(ValueError):
        h.memory.free(11)


# ------------------------------------------------------------------ accesses and faults
def test_none_policy_host_write_beside_private_4k_page_is_an_rmp_fault():
    # docs/host-model.md, "Direct-map policies": `none` is not safe
    h = Host(mem="2GiB", cores=4, directmap_policy="none")
    h.rmp_make_private(R + 1, 0x1000, PAGE_4K, 1, False)
    h.read(R + 2)                                           # reads take no RMP check
    with pytest.raises(HostOops) as ei:
        h.write(R + 2)
    f = ei.value
    assert f.kind == "rmp" and f.pfn == R + 2 and f.level == PAGE_1G and f.error_code & X86_PF_RMP
    assert not f.entry.assigned                      # the written page itself is the host's


def test_split_on_demand_makes_that_write_safe():
    h = Host(mem="2GiB", cores=4)
    h.rmp_make_private(R + 1, 0x1000, PAGE_4K, 1, False)
    h.write(R)
    h.write(R + 2, 510)
    assert h.faults == []


def test_writes_fault_on_private_page_under_any_policy():
    for name in DIRECTMAP_POLICIES:
        h = Host(mem="2GiB", cores=4, directmap_policy=name)
        h.rmp_make_private(R + 1, 0x1000, PAGE_4K, 1, False)
        with pytest.raises(HostOops) as ei:
            h.write(R + 1)
        want = "not-present" if name.startswith("invalidate") else "rmp"
        assert ei.value.kind == want, name
        if name != "none":
            h.write(R)
            h.write(R + 2, 510)


def test_auto_convert_flips_private_page_back_to_shared():
    h = Host(mem="2GiB", cores=4, host_fault_policy="auto-convert")
    h.rmp_make_private(5, 0x5000, PAGE_4K, 3, False)
    h.write(5)
    assert not h.rmp.rmpread(5).assigned
    assert h.guest_notices == [("validated-cleared", 5, 3, 0x5000, PAGE_4K)]
    assert len(h.faults) == 1 and h.ledger.totals["host_rmp_fault"] == 1


def test_auto_convert_case1_and_case2():
    # M. Roth, "[PATCH Part2 v5 39/45] KVM: SVM: Introduce ops for the post gfn map and unmap"
    # (2021): with pages unmapped from the direct map, a not-present fault is ambiguous
    h = Host(mem="2GiB", cores=4, host_fault_policy="auto-convert", directmap_policy="invalidate-4k")
    h.rmp_make_private(5, 0x5000, PAGE_4K, 3, False)
    h.write(5)                                       # CASE1: private and not present -> fixed
    assert not h.rmp.rmpread(5).assigned and h.directmap.present(5)
    h.directmap.set_direct_map_invalid_noflush(9)    # CASE2: a broken direct map, page not private
    with pytest.raises(HostOops) as ei:
        h.write(9)
    assert ei.value.kind == "not-present"


def test_auto_convert_splits_under_a_large_mapping():
    h = Host(mem="2GiB", cores=4, host_fault_policy="auto-convert", directmap_policy="none")
    h.rmp_make_private(5, 0x5000, PAGE_4K, 3, False)
    h.write(6)
    assert h.rmp.rmpread(5).assigned and h.directmap.level(6) == PAGE_4K


def test_custom_policy_from_a_notebook_cell():
    class DeferSplit(DirectMapPolicy):
        name = "split-2m-too"
        safe = True

        def before_rmpupdate(self, host, pfn, npages, level, assigned):
            host.directmap.set_memory_4k(pfn, npages)
            return 0

    h = Host(mem="2GiB", cores=4, directmap_policy=DeferSplit())
    h.rmp_make_private(0, 0, PAGE_2M, 1, False)
    assert h.directmap.level(0) == PAGE_4K and h.directmap_policy.name == "split-2m-too"

    class Refuses(DirectMapPolicy):
        def before_rmpupdate(self, host, pfn, npages, level, assigned):
            return -errno.ENOMEM

    h = Host(mem="2GiB", cores=4, directmap_policy=Refuses())
    assert h.rmp_make_private(0, 0, PAGE_2M, 1, False) == -errno.EFAULT
    assert not h.rmp.rmpread(0).assigned


def test_presplit_boots_all_4k_and_switching_policy_runs_boot():
    h = Host(mem="2GiB", cores=4, directmap_policy="presplit-4k")
    assert h.directmap.counts() == {"DirectMap4k": 2 * 1024 * 1024, "DirectMap2M": 0, "DirectMap1G": 0}
    h = Host(mem="2GiB", cores=4)
    h.directmap_policy = "presplit-4k"
    assert h.directmap.counts()["DirectMap4k"] == 2 * 1024 * 1024


def test_collapse_policy_remerges_when_last_private_page_goes():
    h = Host(mem="2GiB", cores=4, directmap_policy="split-on-demand-collapse")
    h.rmp_make_private(R + 1, 0x1000, PAGE_4K, 1, False)
    h.rmp_make_private(R + 2, 0x2000, PAGE_4K, 1, False)
    h.rmp_make_shared(R + 1, PAGE_4K)
    assert h.directmap.level(R) == PAGE_4K
    h.rmp_make_shared(R + 2, PAGE_4K)
    assert h.directmap.level(R) == PAGE_1G


def test_invalidate_flush_costs_a_flush_per_page():
    h = Host(mem="2GiB", cores=4, directmap_policy="invalidate-4k-flush")
    h.rmp_make_private(0, 0, PAGE_4K, 1, False, npages=4)
    h.rmp_make_private(R, 0, PAGE_2M, 1, False)
    t = h.ledger.totals
    assert t["flush_tlb_range"] == 4 + PAGES_PER_2M and t["invlpg"] == 4 + PAGES_PER_2M
    assert t["flush_tlb_all"] == 2 + 1         # 1G+2M split, 2M split of region 1 (their own flushes)


def test_invalidate_flush_per_entry_costs_a_flush_per_entry():
    """``flush_unit = "entry"``: one cpa_flush of each RMP entry's pages (a 2M entry's 512 pages
    are past the single-page ceiling: flush_tlb_all)."""
    from kit.host.policies import Invalidate4KFlush

    class PerEntry(Invalidate4KFlush):
        flush_unit = "entry"

    h = Host(mem="2GiB", cores=4, directmap_policy=PerEntry())
    h.rmp_make_private(0, 0, PAGE_4K, 1, False, npages=4)
    h.rmp_make_private(R, 0, PAGE_2M, 1, False)
    t = h.ledger.totals
    assert t["flush_tlb_range"] == 4 and t["invlpg"] == 4
    assert t["flush_tlb_all"] == 2 + 1 + 1     # 1G+2M split, 2M split of region 1, the 2M entry's flush


def test_policy_subclass_defined_in_a_cell_is_used_as_given():
    """A policy written in a notebook cell (its class in ``__main__``), built from a built-in and
    keeping the built-in's name, is the object the host calls, not the built-in it extends."""
    cell = '''
from kit.host.policies import SplitOnDemand

class CountingSplit(SplitOnDemand):
    description = "split-on-demand, counting the calls"
    calls = 0

    def before_rmpupdate(self, host, pfn, npages, level, assigned):
        type(self).calls += 1
        return super().before_rmpupdate(host, pfn, npages, level, assigned)
'''
    ns = {"__name__": "__main__"}
    exec(compile(cell, "<notebook cell>", "exec"), ns)
    policy_class = ns["CountingSplit"]
    for given in (policy_class(), policy_class):
        h = Host(mem="2GiB", cores=4, directmap_policy=given)
        assert type(h.directmap_policy) is policy_class
        assert h.directmap_policy.name == "split-on-demand"
    calls = policy_class.calls
    assert h.rmp_make_private(R + 1, 0x1000, PAGE_4K, 1, False) == 0
    assert policy_class.calls == calls + 1 and h.directmap.level(R) == PAGE_4K
    h.directmap_policy = policy_class()
    assert type(h.directmap_policy) is policy_class
