"""#VC and the behaviours: each against the VM's #NPF policy (exit / auto-convert) and the owner
of the memory attributes (userspace / guest)."""
import pytest

from kit.errors import SVM_EXIT_PAGE_NOT_VALIDATED, VmmCommunicationException
from kit.guest import (BEHAVIOURS, Guest, GuestStuck, GuestTerminated, Linux, Malicious, Revalidating,
                       Unenlightened)
from kit.host import Host
from kit.host.rmp import PVALIDATE_FAIL_NOUPDATE
from kit.kvm import Kvm, snp
from kit.kvm import uapi as U
from kit.kvm.vmm import Vmm
from kit.units import MiB, PAGE_2M, PAGE_4K, PAGE_SHIFT

from .conftest import RAM_GPA, snp_vm

POLICIES = ("exit", "auto-convert")
OWNERS = ("userspace", "guest")


def guest(behaviour, npf_policy="exit", owner="userspace", *, host_fault_policy="oops", **kw):
    kvm = Kvm(Host(mem="1GiB", cores=4, host_fault_policy=host_fault_policy), gmem_hugepages=True)
    vm = snp_vm(kvm, mem=16 * MiB, npf_policy=npf_policy, attribute_owner=owner)
    return Guest(vm, behaviour=behaviour, vmm=Vmm(vm, fallocate=kw.pop("fallocate", False)), **kw)


def outcome(op) -> str:
    """converted / #VC-handled / stuck / terminated, for the matrix."""
    try:
        op()
    except GuestTerminated:
        return "terminated"
    except GuestStuck:
        return "stuck"
    return "completed"


def test_vc_on_a_never_validated_page_terminates_with_the_reason_recorded():
    g = guest(Linux, "auto-convert")
    with pytest.raises(GuestTerminated):
        g.touch(RAM_GPA)                                  # unaccepted: C-bit set, never validated
    assert len(g.vcs) == 1 and isinstance(g.vcs[0], VmmCommunicationException)
    assert g.vcs[0].exit_code == SVM_EXIT_PAGE_NOT_VALIDATED and g.vcs[0].gpa == RAM_GPA
    t = g.terminated
    assert (t.reason_set, t.reason_code) == (snp.SEV_TERM_SET_GEN, snp.GHCB_SEV_ES_GEN_REQ)
    assert "#VC" in t.why and t.exit.reason == U.KVM_EXIT_SYSTEM_EVENT
    assert [s.name for s in g.log][-2:] == ["#VC", "terminate"]


@pytest.mark.parametrize("policy", POLICIES)
def test_after_the_host_flips_a_page_back_the_next_private_access_is_a_vc(policy):
    g = guest(Linux, policy, host_fault_policy="auto-convert")
    g.accept(RAM_GPA, PAGE_2M)
    assert g.touch(RAM_GPA) == []
    slot = g.vm.slot_for_gfn(RAM_GPA >> PAGE_SHIFT)
    pfn, _ = slot.gmem.get_pfn(slot.gmem_index(RAM_GPA >> PAGE_SHIFT), allocate=False)
    g.vm.kvm.host.write(pfn)                              # the host takes the page back
    assert g.is_validated(RAM_GPA)                        # the guest still believes it
    with pytest.raises(GuestTerminated):
        g.touch(RAM_GPA)
    assert g.vcs[-1].exit_code == SVM_EXIT_PAGE_NOT_VALIDATED


@pytest.mark.parametrize("policy", POLICIES)
def test_revalidating_guest_cannot_validate_a_page_the_host_took_back(policy):
    # the host made the entry shared; KVM still maps the page private and prepares a folio only
    # once, so PVALIDATE meets an RMP #NPF that sev_handle_rmp_fault leaves alone: stuck
    g = guest(Revalidating, policy, host_fault_policy="auto-convert")
    g.accept(RAM_GPA, PAGE_2M)
    slot = g.vm.slot_for_gfn(RAM_GPA >> PAGE_SHIFT)
    pfn, _ = slot.gmem.get_pfn(slot.gmem_index(RAM_GPA >> PAGE_SHIFT), allocate=False)
    g.vm.kvm.host.write(pfn)
    with pytest.raises(GuestStuck):
        g.touch(RAM_GPA)
    assert g.terminated is None and len(g.vcs) == 1


def vmm_replaces_the_page(g):
    """The VMM makes the page shared and private again behind the guest's back (QEMU's
    discard punches guest_memfd): KVM prepares a fresh folio, Validated=0."""
    g.vmm.convert(RAM_GPA, PAGE_2M, False)
    g.vmm.convert(RAM_GPA, PAGE_2M, True)


@pytest.mark.parametrize("policy", POLICIES)
def test_a_page_replaced_behind_the_guests_back_linux_terminates_revalidating_goes_on(policy):
    linux = guest(Linux, policy, fallocate=True)
    linux.accept(RAM_GPA, PAGE_2M)
    vmm_replaces_the_page(linux)
    with pytest.raises(GuestTerminated):
        linux.touch(RAM_GPA)
    r = guest(Revalidating, policy, fallocate=True)
    r.accept(RAM_GPA, PAGE_2M)
    vmm_replaces_the_page(r)
    assert r.touch(RAM_GPA) == []                         # validated the new (zeroed) page
    assert r.terminated is None and len(r.vcs) == 1 and r.is_validated(RAM_GPA)
    slot = r.vm.slot_for_gfn(RAM_GPA >> PAGE_SHIFT)
    pfn, _ = slot.gmem.get_pfn(slot.gmem_index(RAM_GPA >> PAGE_SHIFT), allocate=False)
    assert r.vm.kvm.host.rmp.rmpread(pfn).validated


def test_revalidating_ignores_noupdate_where_linux_terminates():
    r = guest(Revalidating)
    r.accept(RAM_GPA, PAGE_2M)
    assert r.terminated is None
    assert r.pvalidate(RAM_GPA, PAGE_2M, True) == PVALIDATE_FAIL_NOUPDATE
    linux = guest(Linux)
    linux.accept(RAM_GPA, PAGE_2M)
    with pytest.raises(GuestTerminated):
        linux.pvalidate_pages([(RAM_GPA >> PAGE_SHIFT, PAGE_2M)], True)
    assert linux.terminated.reason_code == snp.GHCB_TERM_PVALIDATE


# ------------------------------------------------------------------ the outcome matrix
def accept_then_touch(g):
    g.accept(RAM_GPA, PAGE_2M)
    g.touch(RAM_GPA)


EXPECTED = {
    # behaviour: {(npf_policy, owner): outcome of accept + touch}
    "Linux": {(p, o): "completed" for p in POLICIES for o in OWNERS},
    "Revalidating": {(p, o): "completed" for p in POLICIES for o in OWNERS},
    "Malicious": {(p, o): "completed" for p in POLICIES for o in OWNERS},
    # no acceptance: the access meets the #NPF policy, then the not-validated page: #VC
    "Unenlightened": {("exit", "userspace"): "terminated", ("auto-convert", "userspace"): "terminated",
                      ("exit", "guest"): "stuck", ("auto-convert", "guest"): "terminated"},
}


@pytest.mark.parametrize("name", sorted(BEHAVIOURS))
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("owner", OWNERS)
def test_each_behaviour_against_each_npf_policy_and_owner(name, policy, owner):
    g = guest(BEHAVIOURS[name], policy, owner)
    got = outcome(lambda: accept_then_touch(g))
    assert got == EXPECTED[name][(policy, owner)], (name, policy, owner, g.log[-3:])
    if got == "terminated":
        assert g.terminated.reason_set == snp.SEV_TERM_SET_GEN and g.vcs


@pytest.mark.parametrize("policy", POLICIES)
def test_unenlightened_shared_access_is_converted_by_the_npf_policy(policy):
    g = guest(Unenlightened, policy)
    g.vmm.convert(RAM_GPA, PAGE_4K, True)                 # private in KVM (e.g. the VMM's start)
    g.convert(RAM_GPA, PAGE_4K, private=False)            # only its C-bit
    assert [s.name for s in g.log] == ["c_bit"]
    exits = g.touch(RAM_GPA)
    assert len(exits) == (1 if policy == "exit" else 0)
    assert not g.vm.memory_attributes(RAM_GPA >> PAGE_SHIFT) & U.KVM_MEMORY_ATTRIBUTE_PRIVATE
    assert g.terminated is None


@pytest.mark.parametrize("owner", OWNERS)
def test_malicious_keeps_a_shared_page_validated_in_the_rmp(owner):
    g = guest(Malicious, "exit", owner)
    g.accept(RAM_GPA, PAGE_2M)
    g.convert(RAM_GPA, PAGE_2M, private=False)            # rescinds nothing
    assert not any(s.name == "pvalidate" and "validate=0" in s.detail for s in g.log)
    slot = g.vm.slot_for_gfn(RAM_GPA >> PAGE_SHIFT)
    pfn, _ = slot.gmem.get_pfn(slot.gmem_index(RAM_GPA >> PAGE_SHIFT), allocate=False)
    e = g.vm.kvm.host.rmp.rmpread(pfn)
    assert e.assigned and e.validated                     # shared by attribute, validated in the RMP
    assert not g.vm.memory_attributes(RAM_GPA >> PAGE_SHIFT) & U.KVM_MEMORY_ATTRIBUTE_PRIVATE
    # back to private: the PVALIDATE finds nothing to do (NOUPDATE) and the guest goes on
    g.convert(RAM_GPA, PAGE_2M, private=True)
    assert g.terminated is None and any(s.name == "pvalidate_error_ignored" for s in g.log)


@pytest.mark.parametrize("owner", OWNERS)
def test_malicious_asks_for_pages_that_are_not_its_ram_and_goes_on_until_stuck(owner):
    g = guest(Malicious, "exit", owner)
    with pytest.raises(GuestStuck):                       # its PVALIDATE can never be backed
        g.convert(RAM_GPA - PAGE_2M, PAGE_2M, private=True)   # below its RAM: no memslot
    assert g.terminated is None
    assert any(s.name == "psc_error_ignored" for s in g.log)
    linux = guest(Linux, "exit", owner)
    with pytest.raises(ValueError):
        linux.convert(RAM_GPA - PAGE_2M, PAGE_2M, private=True)


class ProtectsRing(Vmm):
    """A VMM that keeps its shared ring (the first 2M of RAM) shared: it refuses to make it
    private, whatever the guest asks."""

    def convert(self, gpa, size, private):
        if private and gpa < RAM_GPA + PAGE_2M:
            return U.KVM_EINVAL
        return super().convert(gpa, size, private)


@pytest.mark.parametrize("owner", OWNERS)
def test_who_owns_the_attributes_decides_whether_a_malicious_guest_takes_the_ring(owner):
    kvm = Kvm(Host(mem="1GiB", cores=4), gmem_hugepages=True)
    vm = snp_vm(kvm, mem=16 * MiB, attribute_owner=owner)
    g = Guest(vm, behaviour=Malicious, vmm=ProtectsRing(vm, fallocate=False))
    try:
        g.convert(RAM_GPA, PAGE_2M, private=True)
        result = "taken"
    except GuestStuck:
        result = "stuck"
    private = bool(vm.memory_attributes(RAM_GPA >> PAGE_SHIFT) & U.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    # userspace ownership: the VMM denies, the page stays shared and the guest cannot validate it;
    # guest ownership: KVM converts at once, the VMM is never asked
    assert (result, private) == (("stuck", False) if owner == "userspace" else ("taken", True))


def test_a_behaviour_written_in_a_cell_overrides_one_step():
    class SkipsRescind(Linux):
        name = "SkipsRescind"

        def rescind(self, guest, entries, cpu):
            guest.note("rescind_skipped", entries[0][0] << PAGE_SHIFT, 0)

    g = guest(SkipsRescind())
    g.accept(RAM_GPA, PAGE_2M)
    g.convert(RAM_GPA, PAGE_4K, private=False)
    names = [s.name for s in g.log]
    assert "rescind_skipped" in names and names.index("rescind_skipped") < names.index("c_bit")
    assert g.is_validated(RAM_GPA)                        # nothing rescinded it
    linux = guest(Linux)
    linux.accept(RAM_GPA, PAGE_2M)
    linux.convert(RAM_GPA, PAGE_4K, private=False)
    assert not linux.is_validated(RAM_GPA)


def test_a_behaviour_may_handle_a_vc_and_decline_it():
    class Declines(Linux):
        def on_vc(self, guest, exc, cpu):
            return False

    g = guest(Declines, "auto-convert")
    with pytest.raises(VmmCommunicationException):
        g.touch(RAM_GPA)
    assert g.terminated is None and len(g.vcs) == 1


def test_behaviour_given_as_a_class_or_instance_and_the_default_is_linux():
    assert type(guest(None).behaviour) is Linux
    assert type(guest(Malicious).behaviour) is Malicious
    assert set(BEHAVIOURS) == {"Linux", "Unenlightened", "Revalidating", "Malicious"}
