"""Two faults on one page: a fault is raised (Host.raise_fault) and its handler runs later
(Host.handle_fault), reading the RMP and the direct map then. The cases are those of the
thread "[PATCH Part2 v5 39/45] KVM: SVM: Introduce ops for the post gfn map and unmap"
(M. Roth, October 2021): CASE1, two threads fault on the same page; with pages unmapped from
the direct map the second handler cannot tell CASE1 from CASE2 and must take the pessimistic
path; with X86_PF_RMP (splitting policies) it may retry. docs/host-model.md, "Two faults on
one page"."""
import pytest

from kit.errors import HostOops
from kit.host import DIRECTMAP_POLICIES, HOST_FAULT_POLICIES, Host
from kit.units import PAGE_4K

R = 512
P = 3 * R + 5                  # a guest page, private 4K
UNMAPPING = {n for n in DIRECTMAP_POLICIES if n.startswith("invalidate")}


def guest_page(directmap_policy, host_fault_policy):
    h = Host(mem="2GiB", cores=4, directmap_policy=directmap_policy, host_fault_policy=host_fault_policy)
    assert h.rmp_make_private(P, 0x5000, PAGE_4K, 3, False) == 0
    return h


@pytest.mark.parametrize("fault_policy", sorted(HOST_FAULT_POLICIES))
@pytest.mark.parametrize("dm_policy", sorted(DIRECTMAP_POLICIES))
def test_two_faults_on_one_page(dm_policy, fault_policy):
    h = guest_page(dm_policy, fault_policy)
    f1 = h.raise_fault(P, write=True)            # thread 1 writes the guest page
    f2 = h.raise_fault(P, write=True)            # thread 2 too, before either handler ran
    kind = "not-present" if dm_policy in UNMAPPING else "rmp"
    assert f1.kind == f2.kind == kind and f1.entry.assigned and f2.entry.assigned
    assert h.ledger.totals["host_rmp_fault" if kind == "rmp" else "host_np_fault"] == 2
    if fault_policy == "oops":
        for f in (f1, f2):
            with pytest.raises(HostOops):
                h.handle_fault(f)
        return
    rmpupdates = h.ledger.totals["rmpupdate"]
    assert h.handle_fault(f1) is True            # thread 1's handler: converts, tells the guest
    assert not h.rmp.rmpread(P).assigned
    assert h.guest_notices == [("validated-cleared", P, 3, 0x5000, PAGE_4K)]
    assert h.ledger.totals["rmpupdate"] == rmpupdates + 1
    if dm_policy in UNMAPPING:
        # the page is not private any more when handler 2 reads the RMP: a not-present fault
        # on a page that is not private is CASE2 for all the handler can tell
        with pytest.raises(HostOops) as ei:
            h.handle_fault(f2)
        assert ei.value.kind == "not-present" and not ei.value.entry.assigned
    else:
        splits = h.ledger.totals["split_2m"] + h.ledger.totals["split_1g"]
        assert h.handle_fault(f2) is True        # X86_PF_RMP: safe to retry
        assert h.ledger.totals["split_2m"] + h.ledger.totals["split_1g"] == splits
        assert h.raise_fault(P, write=True) is None          # both retries now complete
    assert len(h.guest_notices) == 1 and h.ledger.totals["rmpupdate"] == rmpupdates + 1


def test_the_fault_keeps_what_was_raised_and_the_handler_reads_now():
    h = guest_page("split-on-demand", "auto-convert")
    f = h.raise_fault(P, write=True)
    assert h.rmp_make_shared(P, PAGE_4K) == 0     # someone converts before the handler runs
    assert f.entry.assigned                       # the raised fault: as it was
    assert h.handle_fault(f) is True and h.guest_notices == []


def test_large_mapping_split_once_for_two_faults_beside_a_private_page():
    # `none` leaves the 1G mapping: writes beside the private page fault (RMP, 2M check)
    h = guest_page("none", "auto-convert")
    f1 = h.raise_fault(P + 1, write=True)
    f2 = h.raise_fault(P + 2, write=True)
    assert f1.kind == f2.kind == "rmp" and not f1.entry.assigned
    assert h.handle_fault(f1) is True and h.directmap.level(P + 1) == PAGE_4K
    splits = dict(h.ledger.totals)
    assert h.handle_fault(f2) is True             # already split: nothing more
    assert h.ledger.totals["split_2m"] == splits["split_2m"]
    assert h.ledger.totals["cpa_lock"] == splits["cpa_lock"]
    assert h.rmp.rmpread(P).assigned and h.guest_notices == []
    assert h.raise_fault(P + 1, 2, write=True) is None


def test_a_converted_page_leaves_nothing_to_split_for_the_second_handler():
    # thread 1 writes the private page, thread 2 the page beside it, under the same 1G mapping
    h = guest_page("none", "auto-convert")
    f1 = h.raise_fault(P, write=True)
    f2 = h.raise_fault(P + 1, write=True)
    assert h.handle_fault(f1) is True and len(h.guest_notices) == 1
    level = h.directmap.level(P + 1)
    assert h.handle_fault(f2) is True             # no private page left in the 2M region
    assert h.directmap.level(P + 1) == level and len(h.guest_notices) == 1
    assert h.raise_fault(P, 2, write=True) is None


def test_host_access_is_raise_then_handle():
    h = guest_page("split-on-demand", "auto-convert")
    h.write(P)
    assert len(h.faults) == 1 and h.faults[0].entry.assigned and not h.rmp.rmpread(P).assigned
