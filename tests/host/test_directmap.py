"""Direct-map rules (kit/host/directmap.py): arch/x86/mm/pat/set_memory.c, init_64.c."""
import pytest

from kit.host import Host
from kit.units import GiB, MiB, PAGE_1G, PAGE_2M, PAGE_4K

R = 512


def dm(mem="3GiB", **kw):
    return Host(mem=mem, cores=4, directmap_policy="none", **kw).directmap


def test_boot_uses_1g_where_aligned_else_2m():
    d = dm(mem=3 * GiB + 6 * MiB)
    assert d.counts() == {"DirectMap4k": 0, "DirectMap2M": 6 * 1024, "DirectMap1G": 3 * 1024 * 1024}
    assert d.level(0) == PAGE_1G and d.level(3 * GiB // 4096) == PAGE_2M
    d = dm(direct_gbpages=False)
    assert d.counts() == {"DirectMap4k": 0, "DirectMap2M": 3 * 1024 * 1024}  # no 1G line


def test_set_memory_4k_from_1g_costs_two_splits_and_two_flushes():
    h = Host(mem="3GiB", cores=4, directmap_policy="none")
    m = h.ledger.mark()
    h.directmap.set_memory_4k(700, 1)
    ev = h.ledger.since(m)
    assert (ev["split_1g"], ev["split_2m"], ev["flush_tlb_all"], ev["pgtable_alloc"]) == (1, 1, 2, 2)
    assert ev["cpa_lock"] == 1 + 2
    assert h.directmap.level(700) == PAGE_4K and h.directmap.level(0) == PAGE_2M
    assert h.directmap.counts() == {"DirectMap4k": 2048, "DirectMap2M": 511 * 2048,
                                    "DirectMap1G": 2 * 1024 * 1024}
    assert h.directmap.vmstat["direct_map_level3_splits"] == 1
    # already 4K: the lock is still taken per page, nothing split, no flush
    m = h.ledger.mark()
    h.directmap.set_memory_4k(700, 3)
    assert h.ledger.since(m) == {"cpa_lock": 3}


def test_invalid_noflush_splits_and_clears_present_no_flush():
    h = Host(mem="3GiB", cores=4, directmap_policy="none")
    d = h.directmap
    m = h.ledger.mark()
    d.set_direct_map_invalid_noflush(R * 5 + 1, 2)
    ev = h.ledger.since(m)
    assert ev["flush_tlb_all"] == 2 and ev["cpa_lock"] == 2 + 2       # the splits' flushes only
    assert not d.present(R * 5 + 1) and not d.present(R * 5 + 2) and d.present(R * 5 + 3)
    d.set_direct_map_default_noflush(R * 5 + 1, 2)
    assert d.present(R * 5 + 1) and d.level(R * 5 + 1) == PAGE_4K   # restored, still split


def test_default_noflush_on_large_mapping_is_sameprot():
    h = Host(mem="3GiB", cores=4, directmap_policy="none")
    h.directmap.set_direct_map_default_noflush(R * 9)
    assert h.directmap.level(R * 9) == PAGE_1G and h.ledger.totals["split_2m"] == 0


def test_collapse_remerges_2m_then_1g():
    h = Host(mem="3GiB", cores=4, directmap_policy="none")
    d = h.directmap
    d.set_memory_4k(5, 1)
    d.set_direct_map_invalid_noflush(R + 3)
    assert d.collapse([0, 1]) == 1                  # region 1 has a not-present page
    assert d.counts()["DirectMap4k"] == 2048
    d.set_direct_map_default_noflush(R + 3)
    assert d.collapse([1]) == 1
    assert d.counts() == {"DirectMap4k": 0, "DirectMap2M": 0, "DirectMap1G": 3 * 1024 * 1024}
    assert d.vmstat["direct_map_level3_collapses"] == 1


def test_cpa_flush_ceiling():
    h = Host(mem="2GiB", cores=4, directmap_policy="none")
    h.directmap.cpa_flush(33)
    assert h.ledger.totals["invlpg"] == 33 and h.ledger.totals["flush_tlb_all"] == 0
    h.directmap.cpa_flush(34)
    assert h.ledger.totals["flush_tlb_all"] == 1


@pytest.mark.parametrize("call", [lambda d: d.level(-1), lambda d: d.present(1 << 30),
                                  lambda d: d.set_memory_4k(0, 0), lambda d: d.set_memory_4k(0, 1 << 30)])
def test_bad_pfns(call):
    with pytest.raises(ValueError, match="pfn|npages"):
        call(dm())


from hypothesis import given, settings, strategies as st   # noqa: E402


@settings(deadline=None, max_examples=150)
@given(spans=st.lists(st.tuples(st.integers(0, 3 * R + 99), st.integers(1, 2 * R)), min_size=1, max_size=6))
def test_span_split_equals_the_split_of_each_region(spans):
    """``set_memory_4k`` splits a span on slices of the level array; the result and the events
    equal splitting the same regions listed one by one (the general path)."""
    a, b = dm("3200MiB"), dm("3200MiB")          # 3 x 1G chunks and 100 regions mapped 2M
    for r0, n in spans:
        r1 = min(r0 + n, a.nr_regions)
        ev_a = a._split_span(r0, r1)
        ev_b = b._split(list(range(r0, r1)))
        assert ev_a == ev_b
        assert (a.lvl == b.lvl).all() and a.counts() == b.counts() and a.vmstat == b.vmstat
