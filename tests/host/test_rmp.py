"""RMP instruction rules (kit/host/rmp.py), each traced to its source in docs/host-model.md."""
import numpy as np
import pytest

from kit.errors import PFERR_GUEST_RMP_MASK, PFERR_GUEST_SIZEM_MASK, NestedPageFault
from kit.host import Host, RmpRules
from kit.host.rmp import (PSMASH_FAIL_INPUT, PSMASH_FAIL_INUSE, PVALIDATE_FAIL_NOUPDATE,
                          PVALIDATE_FAIL_SIZEMISMATCH, RMPADJUST_FAIL_PERMISSION,
                          RMPADJUST_FAIL_SIZEMISMATCH, RMPUPDATE_FAIL_INPUT, RMPUPDATE_FAIL_INUSE,
                          RMPUPDATE_FAIL_OVERLAP, RMPUPDATE_FAIL_PERMISSION, VMPL_ALL, VMPL_R,
                          VMPL_W)
from kit.units import PAGE_2M, PAGE_4K

R = 512  # pfns per 2M


@pytest.fixture
def rmp():
    return Host(mem="2GiB", cores=4).rmp


def test_boot_entries_are_hypervisor_4k(rmp):
    e = rmp.rmpread(12345)
    assert (e.assigned, e.pagesize, e.immutable, e.validated, e.asid, e.gpa, e.vmsa) == \
        (False, PAGE_4K, False, False, 0, 0, False)
    assert e.state == "hypervisor"


def test_rmpupdate_2m_governs_subpages(rmp):
    # [LX __snp_lookup_rmpentry]: the level comes from the 2M-aligned entry
    assert rmp.rmpupdate(R, assigned=True, pagesize=PAGE_2M, asid=3, gpa=0x40000000) == 0
    for p in (R, R + 1, 2 * R - 1):
        e = rmp.rmpread(p)
        assert e.assigned and e.pagesize == PAGE_2M and e.asid == 3 and e.gpa == 0x40000000
    assert e.state == "guest-invalid"
    assert not rmp.rmpread(2 * R).assigned


def test_rmpupdate_clears_validated_vmsa_and_vmpl_masks(rmp):
    # [VER rmpupdate; APM2 15.36.6]: any RMPUPDATE leaves the page unvalidated
    rmp.rmpupdate(0, assigned=True, pagesize=PAGE_4K, asid=1, gpa=0)
    assert rmp.pvalidate(0, pagesize=PAGE_4K, validate=True, asid=1, gpa=0) == 0
    assert rmp.rmpadjust(0, pagesize=PAGE_4K, target_vmpl=1, perms=VMPL_R, vmsa=True, asid=1, gpa=0) == 0
    e = rmp.rmpread(0)
    assert e.validated and e.vmsa and e.vmpl_perms == (VMPL_ALL, VMPL_R, 0, 0)
    assert rmp.rmpupdate(0, assigned=True, pagesize=PAGE_4K, asid=1, gpa=0) == 0
    e = rmp.rmpread(0)
    assert not e.validated and not e.vmsa and e.vmpl_perms == (VMPL_ALL, 0, 0, 0)


def test_rmpupdate_overlap_rules(rmp):
    # 4K inside an assigned 2M entry, aligned pfn included -> OVERLAP
    rmp.rmpupdate(0, assigned=True, pagesize=PAGE_2M, asid=1, gpa=0)
    assert rmp.rmpupdate(5, assigned=False, pagesize=PAGE_4K) == RMPUPDATE_FAIL_OVERLAP
    assert rmp.rmpupdate(0, assigned=False, pagesize=PAGE_4K) == RMPUPDATE_FAIL_OVERLAP
    assert rmp.last_failed_pfn == 0
    # 2M over assigned non-aligned 4K entries -> OVERLAP; over only the aligned one -> fine
    rmp.rmpupdate(R + 7, assigned=True, pagesize=PAGE_4K, asid=1, gpa=0x7000)
    assert rmp.rmpupdate(R, assigned=True, pagesize=PAGE_2M, asid=1, gpa=0) == RMPUPDATE_FAIL_OVERLAP
    rmp.rmpupdate(2 * R, assigned=True, pagesize=PAGE_4K, asid=1, gpa=0)
    assert rmp.rmpupdate(2 * R, assigned=True, pagesize=PAGE_2M, asid=1, gpa=0x200000) == 0


def test_rmpupdate_4k_in_unassigned_2m_entry_smashes_it(rmp):
    rmp.rmpupdate(0, assigned=False, pagesize=PAGE_2M)          # a 2M hypervisor entry
    assert rmp.rmpread(3).pagesize == PAGE_2M
    assert rmp.rmpupdate(3, assigned=True, pagesize=PAGE_4K, asid=2, gpa=0x3000) == 0
    assert rmp.rmpread(3).assigned and rmp.rmpread(4).pagesize == PAGE_4K
    assert not rmp.rmpread(4).assigned


def test_rmpupdate_check_order_and_codes():
    h = Host(mem="2GiB", cores=4, rmp_rules=RmpRules(immutable_update=RMPUPDATE_FAIL_PERMISSION))
    rmp = h.rmp
    assert rmp.rmpupdate(0, assigned=False, pagesize=PAGE_4K, asid=5) == RMPUPDATE_FAIL_INPUT
    rmp.rmpupdate(9, assigned=True, pagesize=PAGE_4K, immutable=True, asid=1, gpa=0)
    rmp.mark_in_use(9)
    # immutable is checked before in-use
    assert rmp.rmpupdate(9, assigned=False, pagesize=PAGE_4K) == RMPUPDATE_FAIL_PERMISSION
    rmp.mark_in_use(10)
    assert rmp.rmpupdate(10, assigned=False, pagesize=PAGE_4K) == RMPUPDATE_FAIL_INUSE
    # a range returns the first failing entry's code and changes nothing
    assert rmp.rmpupdate(0, assigned=True, pagesize=PAGE_4K, asid=1, gpa=0, npages=20) == RMPUPDATE_FAIL_PERMISSION
    assert rmp.last_failed_pfn == 9
    assert not rmp.rmpread(0).assigned and not rmp.rmpread(8).assigned
    # a 2M update is refused if any of its 512 entries is immutable
    assert rmp.rmpupdate(0, assigned=True, pagesize=PAGE_2M, asid=1, gpa=0) == RMPUPDATE_FAIL_PERMISSION


def test_rmpupdate_rules_are_parameters():
    h = Host(mem="2GiB", cores=4, rmp_rules=RmpRules(overlap_4k_in_2m=RMPUPDATE_FAIL_INPUT))
    h.rmp.rmpupdate(0, assigned=True, pagesize=PAGE_2M, asid=1, gpa=0)
    assert h.rmp.rmpupdate(1, assigned=False, pagesize=PAGE_4K) == RMPUPDATE_FAIL_INPUT


def test_range_gpa_advances_for_assigned_entries(rmp):
    assert rmp.rmpupdate(R - 2, assigned=True, pagesize=PAGE_4K, asid=4, gpa=0x10000, npages=R + 4) == 0
    assert rmp.rmpread(R - 2).gpa == 0x10000 and rmp.rmpread(R + 1).gpa == 0x10000 + 3 * 4096
    # region 2 holds assigned 4K pages (2R, 2R+1) from the range above: 2M over them overlaps
    assert rmp.rmpupdate(2 * R, assigned=True, pagesize=PAGE_2M, asid=4, gpa=0x40000000, npages=2 * R) == RMPUPDATE_FAIL_OVERLAP
    assert rmp.last_failed_pfn == 2 * R
    assert rmp.rmpupdate(4 * R, assigned=True, pagesize=PAGE_2M, asid=4, gpa=0x40000000, npages=2 * R) == 0
    assert rmp.rmpread(5 * R + 9).gpa == 0x40000000 + 0x200000


def test_psmash_keeps_validated_and_gpas(rmp):
    # [APM2 15.36.11; LX psmash]
    rmp.rmpupdate(0, assigned=True, pagesize=PAGE_2M, asid=1, gpa=0x600000)
    rmp.pvalidate(0, pagesize=PAGE_2M, validate=True, asid=1, gpa=0x600000)
    assert rmp.psmash(0) == 0
    e = rmp.rmpread(5)
    assert e.pagesize == PAGE_4K and e.validated and e.gpa == 0x600000 + 5 * 4096 and e.asid == 1
    assert rmp.psmash(0) == PSMASH_FAIL_INPUT         # no longer a 2M entry
    with pytest.raises(ValueError, match="pfn: PSMASH takes a 2M-aligned pfn"):
        rmp.psmash(3)


def test_psmash_in_use(rmp):
    rmp.rmpupdate(R, assigned=True, pagesize=PAGE_2M, asid=1, gpa=0)
    rmp.mark_in_use(R + 100)
    assert rmp.psmash(R) == PSMASH_FAIL_INUSE
    rmp.mark_in_use(R + 100, False)
    assert rmp.psmash(R) == 0


def test_pvalidate_rules(rmp):
    rmp.rmpupdate(0, assigned=True, pagesize=PAGE_2M, asid=1, gpa=0x200000)
    # 4K on a 2M entry -> #NPF(RMP|SIZEM) [APM2 Table 15-40]
    with pytest.raises(NestedPageFault) as ei:
        rmp.pvalidate(1, pagesize=PAGE_4K, validate=True, asid=1, gpa=0x201000)
    assert ei.value.error_code & PFERR_GUEST_SIZEM_MASK and ei.value.error_code & PFERR_GUEST_RMP_MASK
    # wrong ASID / GPA / unassigned -> #NPF(RMP), no SIZEM
    for kw in (dict(asid=2, gpa=0x200000), dict(asid=1, gpa=0x400000)):
        with pytest.raises(NestedPageFault) as ei:
            rmp.pvalidate(0, pagesize=PAGE_2M, validate=True, **kw)
        assert not ei.value.error_code & PFERR_GUEST_SIZEM_MASK
    assert rmp.pvalidate(0, pagesize=PAGE_2M, validate=True, asid=1, gpa=0x200000) == 0
    assert rmp.pvalidate(0, pagesize=PAGE_2M, validate=True, asid=1, gpa=0x200000) == PVALIDATE_FAIL_NOUPDATE
    # 2M on 4K entries -> SIZEMISMATCH, the guest falls back to 512 x 4K [LX pval_pages]
    rmp.rmpupdate(R, assigned=True, pagesize=PAGE_4K, asid=1, gpa=0, npages=R)
    assert rmp.pvalidate(R, pagesize=PAGE_2M, validate=True, asid=1, gpa=0) == PVALIDATE_FAIL_SIZEMISMATCH
    assert not rmp.rmpread(R).validated
    assert rmp.pvalidate(R + 3, pagesize=PAGE_4K, validate=True, asid=1, gpa=0x3000) == 0
    assert rmp.rmpread(R + 3).validated and not rmp.rmpread(R + 4).validated
    assert rmp.pvalidate(R + 3, pagesize=PAGE_4K, validate=True, asid=1, gpa=0x3000, vmpl=1) == 2


def test_rmpadjust_rules(rmp):
    rmp.rmpupdate(0, assigned=True, pagesize=PAGE_4K, asid=1, gpa=0)
    kw = dict(pagesize=PAGE_4K, asid=1, gpa=0)
    assert rmp.rmpadjust(0, target_vmpl=1, perms=VMPL_R, **kw) == RMPADJUST_FAIL_PERMISSION  # not validated
    rmp.pvalidate(0, pagesize=PAGE_4K, validate=True, asid=1, gpa=0)
    assert rmp.rmpadjust(0, target_vmpl=1, perms=VMPL_R, vmpl=1, **kw) == RMPADJUST_FAIL_PERMISSION  # not less privileged
    assert rmp.rmpadjust(0, target_vmpl=1, perms=VMPL_R, **kw) == 0
    # VMPL1 may not grant VMPL2 more than it has itself [APM2 15.36.7]
    assert rmp.rmpadjust(0, target_vmpl=2, perms=VMPL_R | VMPL_W, vmpl=1, **kw) == RMPADJUST_FAIL_PERMISSION
    assert rmp.rmpadjust(0, target_vmpl=2, perms=VMPL_R, vmpl=1, **kw) == 0
    assert rmp.rmpadjust(0, target_vmpl=2, perms=VMPL_R, vmpl=1, vmsa=True, **kw) == RMPADJUST_FAIL_PERMISSION
    assert rmp.rmpread(0).vmpl_perms == (VMPL_ALL, VMPL_R, VMPL_R, 0)
    rmp.rmpupdate(R, assigned=True, pagesize=PAGE_4K, asid=1, gpa=0x200000)
    rmp.pvalidate(R, pagesize=PAGE_4K, validate=True, asid=1, gpa=0x200000)
    assert rmp.rmpadjust(R, pagesize=PAGE_2M, target_vmpl=1, perms=0, asid=1, gpa=0x200000) == RMPADJUST_FAIL_SIZEMISMATCH


def test_psmash_copies_vmpl_masks(rmp):
    rmp.rmpupdate(0, assigned=True, pagesize=PAGE_2M, asid=1, gpa=0)
    rmp.pvalidate(0, pagesize=PAGE_2M, validate=True, asid=1, gpa=0)
    assert rmp.rmpadjust(0, pagesize=PAGE_2M, target_vmpl=3, perms=VMPL_R, asid=1, gpa=0) == 0
    rmp.psmash(0)
    assert rmp.rmpread(77).vmpl_perms == (VMPL_ALL, 0, 0, VMPL_R)


@pytest.mark.parametrize("call,match", [
    (lambda r: r.rmpupdate(1 << 40, assigned=False, pagesize=PAGE_4K), "pfn: pfn range"),
    (lambda r: r.rmpupdate(3, assigned=True, pagesize=PAGE_2M, asid=1), "pfn: a 2M entry needs"),
    (lambda r: r.rmpupdate(0, assigned=True, pagesize=PAGE_2M * 2, asid=1), "pagesize: must be one of"),
    (lambda r: r.rmpupdate(0, assigned=True, pagesize=PAGE_4K, asid=1024), "asid: must be in"),
    (lambda r: r.rmpupdate(0, assigned=True, pagesize=PAGE_4K, asid=1, gpa=0x123), "gpa: must be"),
    (lambda r: r.rmpupdate(0, assigned=True, pagesize=PAGE_4K, asid=1, npages=0), "npages: must be"),
    (lambda r: r.pvalidate(0, pagesize=PAGE_4K, validate=True, asid=0, gpa=0), "asid: a guest"),
    (lambda r: r.rmpadjust(0, pagesize=PAGE_4K, target_vmpl=4, perms=0, asid=1, gpa=0), "target_vmpl"),
    (lambda r: r.rmpadjust(0, pagesize=PAGE_4K, target_vmpl=1, perms=0x40, asid=1, gpa=0), "perms"),
])
def test_bad_input_names_the_argument_and_changes_nothing(rmp, call, match):
    before = rmp.flags.copy()
    with pytest.raises((ValueError, TypeError), match=match):
        call(rmp)
    assert (rmp.flags == before).all()


def test_firmware_page_states():
    from kit.host.rmp import RmpEntry
    mk = lambda **kw: RmpEntry(**{**dict(assigned=True, pagesize=PAGE_4K, immutable=True, validated=False,
                                         asid=0, gpa=0, vmsa=False), **kw})
    assert mk().state == "firmware" and mk(gpa=0x1000).state == "metadata"
    assert mk(vmsa=True).state == "context" and mk(immutable=False).state == "reclaim"
    assert mk(asid=1).state == "pre-guest" and mk(asid=1, validated=True).state == "pre-swap"
    assert mk(assigned=False).state == "hv-fixed"


@pytest.mark.parametrize("seed", range(40))
def test_pvalidate_2m_run_is_the_instructions_one_by_one(seed):
    """Runs of mixed entries (2M, validated, 4K, partly 4K, another ASID, smashed): the range
    form gives each instruction's code, stops at the first #NPF having done the ones before,
    and leaves the RMP and the cost totals as the instructions one by one do, without a
    Python loop over the regions held as one word."""
    def build():
        rng = np.random.default_rng(seed)
        h = Host(mem="64MiB")
        for reg in range(32):
            p, g, k = reg * 512, reg * PAGE_2M, int(rng.integers(0, 7))
            if k in (1, 2, 6):
                h.rmp.rmpupdate(p, assigned=True, pagesize=PAGE_2M, asid=1, gpa=g)
            if k == 2:
                h.rmp.pvalidate(p, pagesize=PAGE_2M, validate=True, asid=1, gpa=g)
            if k == 3:
                h.rmp.rmpupdate(p, assigned=True, pagesize=PAGE_4K, asid=1, gpa=g, npages=512)
            if k == 4:
                h.rmp.rmpupdate(p + 3, assigned=True, pagesize=PAGE_4K, asid=1, gpa=g + 3 * PAGE_4K)
            if k == 5:
                h.rmp.rmpupdate(p, assigned=True, pagesize=PAGE_2M, asid=2, gpa=g)
            if k == 6:
                h.rmp.psmash(p)
        return h

    def run(fn):
        try:
            return ("ok", fn())
        except NestedPageFault as e:
            return ("npf", e.error_code, e.gpa)

    start = seed % 4
    n = int(np.random.default_rng(seed + 1000).integers(1, 32 - start))
    a, b = build(), build()
    got = run(lambda: a.rmp.pvalidate_2m_run(start * 512, n, asid=1, gpa=start * PAGE_2M))
    want = run(lambda: [b.rmp.pvalidate((start + i) * 512, pagesize=PAGE_2M, validate=True, asid=1,
                                        gpa=(start + i) * PAGE_2M) for i in range(n)])
    assert got == want
    assert all(a.rmp.rmpread(p) == b.rmp.rmpread(p) for p in range(0, 32 * 512, 37))
    assert a.ledger.totals == b.ledger.totals
