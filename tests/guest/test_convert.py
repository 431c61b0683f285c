"""Conversions in the kernel's order (arch/x86/mm/pat/set_memory.c __set_memory_enc_pgtable with
the hooks of arch/x86/mm/mem_encrypt_amd.c), the GHCB PSC loop (arch/x86/coco/sev/core.c
vmgexit_psc), the MSR protocol, termination, and the SW_PROTECTED guest."""
import errno

import pytest

from kit.guest import Guest, GuestTerminated, PscLivelock, Termination
from kit.kvm import snp
from kit.kvm import uapi as U
from kit.kvm.vmm import Vmm
from kit.units import MiB, PAGE_2M, PAGE_4K, PAGE_SHIFT, PAGES_PER_2M

from .conftest import RAM_GPA


def steps(g, *wanted):
    return [(s.name, s.detail) for s in g.log if s.name in wanted]


def rmp_entry(g, gpa):
    vm = g.vm
    slot = vm.slot_for_gfn(gpa >> PAGE_SHIFT)
    pfn, _ = slot.gmem.get_pfn(slot.gmem_index(gpa >> PAGE_SHIFT), allocate=False)
    return None if pfn is None else vm.kvm.host.rmp.rmpread(pfn)


@pytest.fixture
def accepted(make_guest):
    g = make_guest()
    g.accept(RAM_GPA, 8 * MiB, step=4 * MiB)
    return g


def test_decrypt_rescinds_before_the_psc_to_shared_and_clears_the_c_bit_after(accepted):
    g = accepted
    ledger = g.vm.kvm.host.ledger
    mark, n = ledger.mark(), len(g.log)
    assert g.convert(RAM_GPA, PAGE_2M, private=False) == 0
    order = [s.name for s in g.log[n:] if s.name in ("tlb_flush", "pvalidate", "psc", "c_bit")]
    assert order == ["tlb_flush", "pvalidate", "psc", "c_bit", "tlb_flush"]
    assert "validate=0" in next(s.detail for s in g.log[n:] if s.name == "pvalidate")
    rows = ledger.rows[mark:]
    rescind = [i for i, (_, ev) in enumerate(rows) if "pvalidate" in ev]
    psc = [i for i, (_, ev) in enumerate(rows) if "set_attributes" in ev]
    assert rescind and psc and max(rescind) < min(psc)
    gfn = RAM_GPA >> PAGE_SHIFT
    assert not g.validated.get(gfn) and not g.is_private(RAM_GPA)
    assert not g.vm.memory_attributes(gfn) & U.KVM_MEMORY_ATTRIBUTE_PRIVATE
    assert not rmp_entry(g, RAM_GPA).validated


def test_encrypt_sets_the_c_bit_then_changes_page_state_then_validates(accepted):
    g = accepted
    g.convert(RAM_GPA, PAGE_2M, private=False)
    n, mark = len(g.log), g.vm.kvm.host.ledger.mark()
    assert g.convert(RAM_GPA, PAGE_2M, private=True) == 0
    order = [s.name for s in g.log[n:] if s.name in ("tlb_flush", "pvalidate", "psc", "c_bit")]
    assert order == ["tlb_flush", "c_bit", "tlb_flush", "psc", "pvalidate"]
    rows = g.vm.kvm.host.ledger.rows[mark:]
    psc = [i for i, (_, ev) in enumerate(rows) if "set_attributes" in ev]
    pval = [i for i, (_, ev) in enumerate(rows) if "pvalidate" in ev]
    assert psc and pval and max(psc) < min(pval)
    assert g.is_validated(RAM_GPA) and g.is_private(RAM_GPA)
    e = rmp_entry(g, RAM_GPA)
    assert e.assigned and e.validated and e.asid == g.vm.asid
    assert g.touch(RAM_GPA) == []


def test_unaligned_conversion_uses_4k_entries(accepted):
    g = accepted
    g.convert(RAM_GPA + PAGE_4K, 3 * PAGE_4K, private=False)
    gfn = (RAM_GPA >> PAGE_SHIFT) + 1
    assert not g.validated.get(gfn) and g.validated.get(gfn + 3) and g.validated.get(gfn - 1)
    assert g.view.ranges(gfn, gfn + 3) == [] and g.is_private(RAM_GPA)


class OneEntryPerExit:
    """A hypervisor that does one entry per VMGEXIT and returns to the guest with the rest
    pending (the GHCB specification lets it): KVM underneath, with the header's end_entry held
    at cur_entry while it works."""

    def __init__(self, vcpu):
        self.vcpu, self.real_begin, self.real_complete = vcpu, vcpu.vmgexit_psc, vcpu.complete_hypercall
        self.calls, self.desc, self.end = [], None, None

    def begin(self, desc):
        self.calls.append(desc.cur_entry)
        self.desc, self.end = desc, desc.end_entry
        desc.end_entry = desc.cur_entry
        return self.finish(self.real_begin(desc))

    def complete(self, ret):
        return self.finish(self.real_complete(ret))

    def finish(self, out):
        if out is None:
            self.desc.end_entry = self.end
        return out


def test_a_partly_done_request_is_resubmitted_and_resumes_at_cur_entry(accepted):
    g = accepted
    vcpu = g.vcpus[0]
    hv = OneEntryPerExit(vcpu)
    vcpu.vmgexit_psc, vcpu.complete_hypercall = hv.begin, hv.complete
    g.convert(RAM_GPA, 3 * PAGE_2M, private=False)        # 3 entries in one descriptor
    assert hv.calls == [0, 1, 2]
    assert g.counts["vmgexit_psc"] >= 3
    gfn = RAM_GPA >> PAGE_SHIFT
    assert g.vm.attributes.ranges(gfn, gfn + 3 * PAGES_PER_2M) == []
    assert g.terminated is None


def test_a_hypervisor_that_never_advances_is_a_livelock_not_a_hang(accepted):
    g = accepted
    vcpu = g.vcpus[0]

    def idle(desc):
        vcpu.psc_result = (0, 0)
        return None
    vcpu.vmgexit_psc = idle
    with pytest.raises(PscLivelock):
        g.convert(RAM_GPA, PAGE_2M, private=False)


def test_processing_going_backward_terminates_with_ghcb_term_psc(accepted):
    g = accepted
    vcpu = g.vcpus[0]

    def backward(desc):
        desc.end_entry += 1
        vcpu.psc_result = (0, 0)
        return None
    vcpu.vmgexit_psc = backward
    with pytest.raises(GuestTerminated):
        g.convert(RAM_GPA, PAGE_2M, private=False)
    assert (g.terminated.reason_set, g.terminated.reason_code) == (snp.SEV_TERM_SET_LINUX, snp.GHCB_TERM_PSC)
    assert "backward" in g.terminated.why


class Denies(Vmm):
    """A VMM that refuses every conversion (userspace may deny, defer or retry)."""

    def handle(self, exit):
        self.log.append(exit)
        return U.KVM_EINVAL


def test_a_refused_psc_terminates_the_guest_and_it_does_nothing_more(make_guest):
    g = make_guest(vmm=Denies)
    with pytest.raises(GuestTerminated) as ei:
        g.accept(RAM_GPA, 4 * MiB)
    t = g.terminated
    assert isinstance(t, Termination) and ei.value.termination is t
    assert (t.reason_set, t.reason_code) == (snp.SEV_TERM_SET_LINUX, snp.GHCB_TERM_PSC)
    assert t.msr == 0x100 | snp.SEV_TERM_SET_LINUX << 12 | snp.GHCB_TERM_PSC << 16
    assert t.exit.reason == U.KVM_EXIT_SYSTEM_EVENT
    assert t.exit.system_event == (U.KVM_SYSTEM_EVENT_SEV_TERM, t.msr)
    assert g.unaccepted.all() and g.validated.starts.size == 0    # bits are cleared only after
    # a terminated guest does nothing more: every operation raises before any effect
    ledger, n = g.vm.kvm.host.ledger, len(g.log)
    mark = ledger.mark()
    for op in (lambda: g.accept(RAM_GPA, 4 * MiB), lambda: g.touch(RAM_GPA),
               lambda: g.convert(RAM_GPA, PAGE_4K, private=False),
               lambda: g.pvalidate(RAM_GPA, PAGE_4K, True),
               lambda: g.on_vc(None), lambda: g.terminate(0, 0, "again")):
        with pytest.raises(GuestTerminated):
            op()
    assert ledger.rows[mark:] == [] and len(g.log) == n and g.terminated is t


def test_msr_protocol_one_page_per_request_in_the_kernel_order(accepted):
    g = accepted
    n = len(g.log)
    g.convert(RAM_GPA, 2 * PAGE_4K, private=False, protocol="msr")
    order = [s.name for s in g.log[n:] if s.name in ("pvalidate", "psc_msr")]
    assert order == ["pvalidate", "psc_msr", "pvalidate", "psc_msr"]
    assert g.counts["vmgexit_msr_psc"] == 2
    n = len(g.log)
    g.convert(RAM_GPA, 2 * PAGE_4K, private=True, protocol="msr")
    order = [s.name for s in g.log[n:] if s.name in ("pvalidate", "psc_msr")]
    assert order == ["psc_msr", "pvalidate", "psc_msr", "pvalidate"]
    assert g.is_validated(RAM_GPA + PAGE_4K)


def test_a_guest_without_ghcb_uses_the_msr_protocol(make_guest):
    g = make_guest()
    g.ghcb = False
    g.accept(RAM_GPA + 62 * MiB, PAGE_2M)                 # the last unit: no guard
    assert g.counts["vmgexit_msr_psc"] == PAGES_PER_2M and g.counts["vmgexit_psc"] == 0


def test_hypercall_protocol_refused_is_minus_eio_not_termination(accepted):
    g = accepted
    g.vmm = Denies(g.vm)
    assert g.convert(RAM_GPA, PAGE_4K, private=False, protocol="hypercall") == -errno.EIO
    assert g.terminated is None and g.is_private(RAM_GPA)


def test_a_linux_guest_converts_only_its_own_ram(accepted):
    with pytest.raises(ValueError, match="RAM"):
        accepted.convert(RAM_GPA - PAGE_2M, PAGE_2M, private=False)
    with pytest.raises(ValueError, match="aligned"):
        accepted.convert(RAM_GPA + 1, PAGE_4K, private=False)


def sw_guest(kvm, *, exit_hypercall=True):
    vm = kvm.create_vm(U.KVM_X86_SW_PROTECTED_VM)
    f = vm.create_guest_memfd(8 * MiB)
    vm.set_user_memory_region2(0, U.KVM_MEM_GUEST_MEMFD, RAM_GPA, 8 * MiB, 1 << 44, 0, f)
    if exit_hypercall:
        vm.enable_cap(U.KVM_CAP_EXIT_HYPERCALL, 1 << U.KVM_HC_MAP_GPA_RANGE)
    vm.create_vcpu(0)
    return Guest(vm)


def test_sw_protected_guest_converts_with_map_gpa_range_and_has_no_pvalidate(make_kvm):
    g = sw_guest(make_kvm())
    assert not g.is_private(RAM_GPA)
    assert g.convert(RAM_GPA, PAGE_2M, private=True) == 0
    assert g.is_private(RAM_GPA) and g.vm.memory_attributes(RAM_GPA >> PAGE_SHIFT)
    assert [s.name for s in g.log] == ["map_gpa_range", "c_bit"]
    assert g.touch(RAM_GPA) == []
    with pytest.raises(ValueError, match="SNP"):
        g.pvalidate(RAM_GPA, PAGE_4K, True)
    with pytest.raises(ValueError, match="GHCB"):
        g.convert(RAM_GPA, PAGE_4K, private=False, protocol="ghcb")


def test_sw_protected_guest_without_the_exit_gets_an_error(make_kvm):
    g = sw_guest(make_kvm(), exit_hypercall=False)
    assert g.convert(RAM_GPA, PAGE_4K, private=True) == -errno.EIO
    assert not g.is_private(RAM_GPA) and g.terminated is None
