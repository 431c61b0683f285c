"""Safety of the direct-map policies (docs/host-model.md, "Direct-map policies", column "safe"):
is there any host write to a page the host owns that takes an RMP #PF? Claimed safe policies:
never, in any generated sequence of kernel-helper conversions and PSMASHes. ``none``:
hypothesis finds the overlap case."""
from __future__ import annotations

import numpy as np
import hypothesis.strategies as st
from hypothesis import find, given, settings

from kit.errors import X86_PF_RMP, HostOops
from kit.host import DIRECTMAP_POLICIES, Host
from kit.units import GiB, MiB, PAGE_2M, PAGE_4K

R = 512
MEM = GiB + 4 * MiB
REGIONS = [0, 1, 2, 511, 512, 513]
SAFE = sorted(n for n, c in DIRECTMAP_POLICIES.items() if c.safe)

op = st.tuples(st.sampled_from(["private", "shared", "psmash"]), st.sampled_from(REGIONS),
               st.integers(0, R - 1), st.sampled_from([PAGE_4K, PAGE_2M]), st.integers(1, 3),
               st.sampled_from([1, 2]))
ops = st.lists(op, min_size=1, max_size=12)


def apply(h: Host, o) -> int:
    kind, region, off, level, entries, asid = o
    pfn = region * R + (0 if level == PAGE_2M or kind == "psmash" else off)
    n = entries * (R if level == PAGE_2M else 1)
    n = min(n, h.nr_pages - pfn) if level == PAGE_4K else n
    if level == PAGE_2M and pfn + n > h.nr_pages:
        return 0
    if kind == "psmash":
        return h.rmp.psmash(pfn)
    if kind == "private":
        return h.rmp_make_private(pfn, off * PAGE_2M, level, asid, False, npages=n)
    return h.rmp_make_shared(pfn, level, npages=n)


def host_owned_runs(h: Host, region: int):
    """Runs (start, length) of pages of a 2M region that the host owns (RMP unassigned and
    not immutable): the pages the host kernel may legitimately write."""
    mask = ~h.rmp.assigned_mask(region)
    idx = np.flatnonzero(mask)
    if not len(idx):
        return []
    cut = np.flatnonzero(np.diff(idx) != 1) + 1
    return [(region * R + int(a[0]), len(a)) for a in np.split(idx, cut)]


def write_host_owned(h: Host) -> None:
    for region in REGIONS:
        for start, n in host_owned_runs(h, region):
            h.write(start, n)


@settings(deadline=None)   # examples from the profile: 300 by default, 10,000 in `long`
@given(policy=st.sampled_from(SAFE), seq=ops)
def test_safe_policies_never_fault_a_host_owned_page(policy, seq):
    h = Host(mem=MEM, cores=8, directmap_policy=policy, overlap_retries=0)
    for o in seq:
        apply(h, o)
        write_host_owned(h)          # raises HostOops on any fault: the test fails
    assert h.faults == []


def test_none_policy_overlap_case_is_found_and_reported_as_an_rmp_fault():
    def crashes(seq) -> bool:
        h = Host(mem=MEM, cores=8, directmap_policy="none", overlap_retries=0)
        try:
            for o in seq:
                apply(h, o)
                write_host_owned(h)
        except HostOops:
            return True
        return False

    seq = find(ops, crashes, settings=settings(max_examples=2000, deadline=None, database=None))
    h = Host(mem=MEM, cores=8, directmap_policy="none", overlap_retries=0)
    try:
        for o in seq:
            apply(h, o)
            write_host_owned(h)
    except HostOops as e:
        oops = e
    assert oops.kind == "rmp" and oops.error_code & X86_PF_RMP
    assert not oops.entry.assigned                   # the host wrote its own page
    assert oops.level in (PAGE_2M, GiB)              # through a large mapping
    assert h.rmp.region_has_assigned(np.array([oops.pfn // R]))[0]   # over a private 4K page
    # the minimal case: one 4K page made private, the host writes another page of its 2M
    assert len(seq) == 1 and seq[0][0] == "private" and seq[0][3] == PAGE_4K


@settings(deadline=None, max_examples=100)
@given(policy=st.sampled_from(sorted(DIRECTMAP_POLICIES)), seq=ops)
def test_directmap_counts_follow_every_split_and_collapse(policy, seq):
    """The DirectMap lines are kept as running counts (like ``direct_pages_count[]``); after any
    sequence of conversions, splits and collapses they equal a count of the page tables' levels."""
    h = Host(mem=2 * GiB, cores=8, directmap_policy=policy, overlap_retries=0)
    for o in seq:
        try:
            apply(h, o)
        except HostOops:
            pass
        n = np.bincount(h.directmap.lvl, minlength=3) * 2048
        assert h.directmap.counts() == {"DirectMap4k": int(n[0]), "DirectMap2M": int(n[1]),
                                        "DirectMap1G": int(n[2])}
