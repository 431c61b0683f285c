"""What an SNP guest meets in KVM (issue [2/6], KVM side): the Validated bit on the access path
(APM vol. 2 §15.36.10), PVALIDATE through the #NPF path, the GHCB page-state change as a stateful
protocol (arch/x86/kvm/svm/sev.c ``snp_begin_psc``, ``snp_complete_one_psc``,
``snp_complete_psc``, ``snp_begin_psc_msr``), attribute ownership, termination
(``sev_handle_vmgexit_msr_protocol``, selftest sev_smoke_test) and the cost events of each
step, in the kernel's order. Scenarios named after the selftests where one exists
(tools/testing/selftests/kvm/x86/private_mem_conversions_test.c, sev_smoke_test.c)."""
import errno

import pytest

from kit.errors import SVM_EXIT_PAGE_NOT_VALIDATED, KvmError, NestedPageFault, VmmCommunicationException
from kit.host import Host
from kit.host.rmp import PVALIDATE_FAIL_NOUPDATE
from kit.kvm import Kvm, snp
from kit.kvm import uapi as U
from kit.kvm.ghcb import (GHCB_ERR_MISSING_INPUT, GHCB_HV_RESP_MALFORMED_INPUT, PscDesc, PscEntry,
                          ghcb_msr_psc_req, ghcb_msr_term_req)
from kit.kvm.mmu import VcpuNotRunnable
from kit.kvm.vmm import Vmm
from kit.units import PAGE_2M, PAGE_4K, PAGE_SHIFT, PAGES_PER_2M

GPA, MiB, UADDR = 1 << 32, 1 << 20, 0x10000000
G = GPA >> PAGE_SHIFT
R = PAGES_PER_2M
P = U.KVM_MEMORY_ATTRIBUTE_PRIVATE
PRIV, SHARED = snp.SNP_PAGE_STATE_PRIVATE, snp.SNP_PAGE_STATE_SHARED
TRACKED = ("vm_exit", "user_exit", "set_attributes", "npt_map")


def snp_vm(*, huge=False, size=4 * MiB, owner="userspace", npf="exit", gmem=True, exit_hc=True,
           host_fault_policy="oops", vcpus=1, vm_type=U.KVM_X86_SNP_VM):
    host = Host(mem="2GiB", cores=4, host_fault_policy=host_fault_policy)
    vm = Kvm(host, gmem_hugepages=huge).create_vm(vm_type, attribute_owner=owner, npf_policy=npf)
    vm.sev_init()
    if gmem:
        vm.set_user_memory_region2(1, U.KVM_MEM_GUEST_MEMFD, GPA, size, UADDR, 0, vm.create_guest_memfd(size))
    else:
        vm.set_user_memory_region2(1, 0, GPA, size, UADDR)
    if exit_hc and owner == "userspace":
        vm.enable_cap(U.KVM_CAP_EXIT_HYPERCALL, 1 << U.KVM_HC_MAP_GPA_RANGE)
    cpus = [vm.create_vcpu(i) for i in range(vcpus)]
    return host, vm, cpus[0] if vcpus == 1 else cpus


def events(ledger, mark):
    """The tracked cost events recorded since ``mark``, in order, one name per count."""
    return [k for _, ev in ledger.rows[mark:] for k, n in ev.items() if k in TRACKED for _ in range(n)]


def psc(cpu, vmm, desc):
    """The guest's ``vmgexit_psc`` loop with the VMM answering: resubmit until done or refused."""
    ex = cpu.vmgexit_psc(desc)
    vmm.answer(cpu, ex)
    return cpu.psc_result


def pfn_of(vm, gpa):
    slot = vm.slot_for_gfn(gpa >> PAGE_SHIFT)
    return slot.gmem.get_pfn(slot.gmem_index(gpa >> PAGE_SHIFT), allocate=False)[0]


# ---------------------------------------------------------------- 1. the Validated bit
def test_private_access_to_a_page_never_validated_is_vc():
    host, vm, cpu = snp_vm()
    vm.set_memory_attributes(GPA, PAGE_4K, P)
    with pytest.raises(VmmCommunicationException) as ei:
        cpu.access(GPA + 8, private=True)
    assert ei.value.exit_code == SVM_EXIT_PAGE_NOT_VALIDATED == 0x404
    assert ei.value.gpa == GPA + 8 and ei.value.detail == "Validated=0"
    assert host.rmp.rmpread(pfn_of(vm, GPA)).assigned          # KVM faulted it in first
    assert snp.guest_pvalidate(cpu, GPA, PAGE_4K, True) == 0
    assert cpu.access(GPA + 8, private=True) is None
    assert cpu.fill(GPA, PAGE_4K, 0x5A, private=True) is None and cpu.read(GPA, 1, private=True) == b"\x5a"


def test_shared_accesses_are_not_checked():
    host, vm, cpu = snp_vm()
    assert cpu.access(GPA, private=False) is None


def test_host_flip_back_to_shared_loses_validated_and_the_next_private_access_is_vc():
    """``host_fault_policy="auto-convert"`` (M. Roth, 2021): a host write to a private page
    makes it shared again; the guest's next private access gets #VC and a fault does not
    prepare the folio again (``kvm_gmem_get_pfn`` prepares it once)."""
    host, vm, cpu = snp_vm(host_fault_policy="auto-convert")
    vm.set_memory_attributes(GPA, PAGE_4K, P)
    assert snp.guest_pvalidate(cpu, GPA, PAGE_4K, True) == 0 and cpu.access(GPA, private=True) is None
    pfn = pfn_of(vm, GPA)
    host.write(pfn)                                             # RMP #PF -> rmp_make_shared, retried
    assert not host.rmp.rmpread(pfn).assigned and host.guest_notices[-1][0] == "validated-cleared"
    n = host.ledger.totals["rmpupdate"]
    with pytest.raises(VmmCommunicationException, match="not assigned"):
        cpu.access(GPA, private=True)
    vm.zap_gfn_range(G, G + 1, "all")                           # even a new #NPF does not re-prepare
    with pytest.raises(VmmCommunicationException, match="not assigned"):
        cpu.access(GPA, private=True)
    assert host.ledger.totals["rmpupdate"] == n and not host.rmp.rmpread(pfn).assigned


def test_sev_gmem_prepare_leaves_an_assigned_entry_alone():
    host, vm, cpu = snp_vm()
    vm.set_memory_attributes(GPA, PAGE_4K, P)
    snp.guest_pvalidate(cpu, GPA, PAGE_4K, True)
    pfn, n = pfn_of(vm, GPA), host.ledger.totals["rmpupdate"]
    assert snp.sev_gmem_prepare(vm, pfn, G, 0) == 0
    e = host.rmp.rmpread(pfn)
    assert e.assigned and e.validated and host.ledger.totals["rmpupdate"] == n


def test_an_entry_of_another_gpa_or_asid_is_vc():
    host, vm, cpu = snp_vm()
    vm.set_memory_attributes(GPA, 2 * PAGE_4K, P)
    snp.guest_pvalidate(cpu, GPA, PAGE_4K, True)
    pfn = pfn_of(vm, GPA)
    host.rmp_make_shared(pfn, PAGE_4K)
    host.rmp_make_private(pfn, GPA + PAGE_4K, PAGE_4K, vm.asid, False)
    with pytest.raises(VmmCommunicationException, match="maps gpa"):
        cpu.access(GPA, private=True)
    host.rmp_make_shared(pfn, PAGE_4K)
    host.rmp_make_private(pfn, GPA, PAGE_4K, vm.asid + 1, False)
    with pytest.raises(VmmCommunicationException, match="ASID"):
        cpu.access(GPA, private=True)


def test_a_2m_entry_is_checked_at_the_page_inside_it():
    host, vm, cpu = snp_vm(huge=True)
    vm.set_memory_attributes(GPA, PAGE_2M, P)
    assert snp.guest_pvalidate(cpu, GPA, PAGE_2M, True) == 0
    assert host.rmp.rmpread(pfn_of(vm, GPA)).pagesize == PAGE_2M
    assert cpu.access(GPA + 300 * PAGE_4K, private=True) is None


def test_range_fast_paths_fault_in_prepare_and_validate_without_a_per_page_loop():
    host, vm, cpu = snp_vm(huge=True, size=64 * MiB)
    n = 64 * MiB // PAGE_2M
    vm.set_memory_attributes(GPA, 64 * MiB, P)
    rows = len(host.ledger.rows)
    snp.snp_fault_in_private_2m(vm, G, n)
    assert snp.guest_pvalidate_2m_run(vm, GPA, n) == [0] * n
    assert len(host.ledger.rows) - rows < 12                   # range operations, not per page
    f = vm.slot_for_gfn(G).gmem
    assert f.prepared.has(0, n * PAGES_PER_2M, 1)
    assert cpu.access(GPA + 17 * PAGE_2M + 5 * PAGE_4K, private=True) is None
    assert host.ledger.totals["vm_exit"] == n and host.ledger.totals["npt_map"] == n
    assert host.ledger.totals["pvalidate"] == n


def test_pvalidate_2m_run_of_pages_not_mapped_goes_through_the_npf_path():
    host, vm, cpu = snp_vm(huge=True, size=8 * MiB)
    vm.set_memory_attributes(GPA, 4 * MiB, P)
    assert snp.guest_pvalidate_2m_run(vm, GPA, 2) == [0, 0]    # faulted in unit by unit
    assert host.ledger.totals["npt_map"] == 2
    out = snp.guest_pvalidate_2m_run(vm, GPA + 4 * MiB, 2)     # still shared: exits
    assert [o.reason for o in out] == [U.KVM_EXIT_MEMORY_FAULT] * 2


# ---------------------------------------------------------------- 2. PVALIDATE through the #NPF path
def test_pvalidate_on_a_shared_page_is_a_memory_fault_exit_and_allocates_no_folio():
    host, vm, cpu = snp_vm()
    f = vm.slot_for_gfn(G).gmem
    out = snp.guest_pvalidate(cpu, GPA, PAGE_4K, True)
    assert out.reason == U.KVM_EXIT_MEMORY_FAULT and out.errno == errno.EFAULT
    assert out.memory_fault.gpa == GPA and out.memory_fault.flags == U.KVM_MEMORY_EXIT_FLAG_PRIVATE
    assert f.folios == {} and f.allocated_pages() == 0 and host.ledger.totals["bytes_zeroed"] == 0
    Vmm(vm, fallocate=False).handle(out)                        # userspace converts; the guest retries
    assert snp.guest_pvalidate(cpu, GPA, PAGE_4K, True) == 0
    assert host.rmp.rmpread(pfn_of(vm, GPA)).validated


def test_pvalidate_with_auto_convert_converts_then_succeeds():
    host, vm, cpu = snp_vm(npf="auto-convert")
    assert snp.guest_pvalidate(cpu, GPA, PAGE_4K, True) == 0
    assert vm.memory_attributes(G) == P and vm.kvm_conversions == [(G, G + 1, P)]
    assert cpu.access(GPA, private=True) is None


def test_pvalidate_where_nothing_can_back_private_memory_exits():
    host, vm, cpu = snp_vm(gmem=False, npf="auto-convert")
    assert snp.guest_pvalidate(cpu, GPA, PAGE_4K, True).reason == U.KVM_EXIT_MEMORY_FAULT
    assert snp.guest_pvalidate(cpu, 1 << 40, PAGE_4K, True).reason == U.KVM_EXIT_MEMORY_FAULT  # no slot


def test_pvalidate_of_a_page_the_host_took_back_is_an_npf_kvm_cannot_resolve():
    host, vm, cpu = snp_vm(host_fault_policy="auto-convert")
    vm.set_memory_attributes(GPA, PAGE_4K, P)
    snp.guest_pvalidate(cpu, GPA, PAGE_4K, True)
    host.write(pfn_of(vm, GPA))
    with pytest.raises(NestedPageFault, match="not assigned"):  # sev_handle_rmp_fault returns early
        snp.guest_pvalidate(cpu, GPA, PAGE_4K, True)


def test_revalidating_a_validated_page_is_noupdate():
    host, vm, cpu = snp_vm()
    vm.set_memory_attributes(GPA, PAGE_4K, P)
    assert snp.guest_pvalidate(cpu, GPA, PAGE_4K, True) == 0
    assert snp.guest_pvalidate(cpu, GPA, PAGE_4K, True) == PVALIDATE_FAIL_NOUPDATE


# ---------------------------------------------------------------- 3. the GHCB page-state change
def test_psc_is_processed_in_place_one_coalesced_run_at_a_time():
    host, vm, cpu = snp_vm()
    vmm = Vmm(vm, fallocate=False)
    d = PscDesc([PscEntry(G, PRIV, PAGE_4K), PscEntry(G + 1, PRIV, PAGE_4K), PscEntry(G + 2, SHARED, PAGE_4K),
                 PscEntry(G + R, PRIV, PAGE_2M)])
    assert snp.VMGEXIT_PSC_MAX_COUNT == 253 and d.end_entry == 3
    ex = cpu.vmgexit_psc(d)
    assert ex.hypercall.args == (GPA, 2, U.KVM_MAP_GPA_RANGE_ENCRYPTED) and cpu.psc_result is None
    assert d.cur_entry == 0 and cpu.psc.inflight == 2
    with pytest.raises(VcpuNotRunnable, match="waits for userspace"):
        cpu.access(GPA, private=False)                          # the vCPU is in userspace
    ex = cpu.complete_hypercall(vmm.handle(ex))
    assert d.cur_entry == 2 and [e.cur_page for e in d.entries[:2]] == [1, 1]
    assert ex.hypercall.args == (GPA + 2 * PAGE_4K, 1, U.KVM_MAP_GPA_RANGE_DECRYPTED)
    ex = cpu.complete_hypercall(vmm.handle(ex))
    assert ex.hypercall.args == (GPA + PAGE_2M, R, U.KVM_MAP_GPA_RANGE_ENCRYPTED | U.KVM_MAP_GPA_RANGE_PAGE_SZ_2M)
    assert cpu.complete_hypercall(vmm.handle(ex)) is None
    assert cpu.psc_result == (0, 0) and d.done and d.cur_entry == 4 and d.entries[3].cur_page == R
    assert vm.memory_attributes(G) == P and vm.memory_attributes(G + 2) == 0 and vm.attributes.has(G + R, G + 2 * R, P)
    with pytest.raises(ValueError, match="no exit"):
        cpu.complete_hypercall(0)


def test_psc_a_finished_request_is_success_without_an_exit():
    """snp_begin_psc: ``idx > idx_end`` -> snp_complete_psc(svm, 0)."""
    host, vm, cpu = snp_vm()
    d = PscDesc([PscEntry(G, PRIV, PAGE_4K)], cur_entry=1, end_entry=0)
    mark = host.ledger.mark()
    assert cpu.vmgexit_psc(d) is None and cpu.psc_result == (0, 0)
    assert events(host.ledger, mark) == ["vm_exit"]
    done = PscDesc([PscEntry(G, PRIV, PAGE_4K, cur_page=1), PscEntry(G + R, SHARED, PAGE_2M, cur_page=R)])
    assert cpu.vmgexit_psc(done) is None and cpu.psc_result == (0, 0) and done.cur_entry == 2


def test_psc_userspace_refusal_is_generic_and_the_entries_stay_as_they_were():
    host, vm, cpu = snp_vm()
    d = PscDesc([PscEntry(G, PRIV, PAGE_4K), PscEntry(G + 5, PRIV, PAGE_4K)])
    ex = cpu.vmgexit_psc(d)
    ex = cpu.complete_hypercall(Vmm(vm).handle(ex))            # the first run converted
    assert d.cur_entry == 1
    assert cpu.complete_hypercall(-errno.EAGAIN) is None        # the second refused
    assert cpu.psc_result == (0, snp.VMGEXIT_PSC_ERROR_GENERIC)
    assert d.cur_entry == 1 and d.entries[1].cur_page == 0 and vm.memory_attributes(G + 5) == 0
    ex = cpu.vmgexit_psc(d)                                     # the guest may resubmit: KVM resumes
    assert ex.hypercall.args == (GPA + 5 * PAGE_4K, 1, U.KVM_MAP_GPA_RANGE_ENCRYPTED)


@pytest.mark.parametrize("entries,kw,want", [
    ([PscEntry(G, PRIV, PAGE_4K)] * 254, {}, snp.VMGEXIT_PSC_ERROR_INVALID_HDR),
    ([PscEntry(G, PRIV, PAGE_4K)], {"end_entry": 253}, snp.VMGEXIT_PSC_ERROR_INVALID_HDR),
    ([PscEntry(G, PRIV, PAGE_4K)], {"end_entry": 3}, snp.VMGEXIT_PSC_ERROR_INVALID_HDR),     # model: short list
    ([PscEntry(G + 1, PRIV, PAGE_2M)], {}, snp.VMGEXIT_PSC_ERROR_INVALID_ENTRY),               # unaligned 2M
    ([PscEntry(G, PRIV, PAGE_2M, cur_page=R + 1)], {}, snp.VMGEXIT_PSC_ERROR_INVALID_ENTRY),   # cur_page > npages
    ([PscEntry(G, PRIV, PAGE_4K, cur_page=2)], {}, snp.VMGEXIT_PSC_ERROR_INVALID_ENTRY),
    ([PscEntry(G, 7, PAGE_4K)], {}, snp.VMGEXIT_PSC_ERROR_INVALID_ENTRY),                      # model: op
])
def test_psc_invalid_requests(entries, kw, want):
    host, vm, cpu = snp_vm()
    assert cpu.vmgexit_psc(PscDesc(list(entries), **kw)) is None
    assert cpu.psc_result == (0, want) and vm.attributes.has(G, G + 2 * R, 0)


def test_psc_253_entries_is_the_largest_request():
    host, vm, cpu = snp_vm()
    d = PscDesc([PscEntry(G + i, PRIV, PAGE_4K) for i in range(253)])
    ex = cpu.vmgexit_psc(d)
    assert ex.hypercall.args[1] == 253 and cpu.psc.inflight == 253


def test_psc_a_bad_entry_after_good_runs_stops_there():
    host, vm, cpu = snp_vm()
    d = PscDesc([PscEntry(G, PRIV, PAGE_4K), PscEntry(G + 3, PRIV, PAGE_2M)])
    Vmm(vm).answer(cpu, cpu.vmgexit_psc(d))
    assert cpu.psc_result == (0, snp.VMGEXIT_PSC_ERROR_INVALID_ENTRY) and d.cur_entry == 1
    assert vm.memory_attributes(G) == P


def test_psc_partly_done_2m_entry_is_finished_as_4k_pages():
    """A partly done 2M range is finished as 4K pages from ``gfn + cur_page``; the size flag is
    still the entry's own (``entry_start.pagesize``)."""
    host, vm, cpu = snp_vm()
    d = PscDesc([PscEntry(G, PRIV, PAGE_2M, cur_page=100), PscEntry(G + R, PRIV, PAGE_2M)])
    ex = cpu.vmgexit_psc(d)
    flags = U.KVM_MAP_GPA_RANGE_ENCRYPTED | U.KVM_MAP_GPA_RANGE_PAGE_SZ_2M
    assert ex.hypercall.args == (GPA + 100 * PAGE_4K, R - 100, flags)
    assert cpu.psc.inflight == 1                                # no 2M entry joins a 4K run
    ex = cpu.complete_hypercall(0)
    assert d.entries[0].cur_page == R and ex.hypercall.args[0] == GPA + PAGE_2M


def test_psc_coalescing_compares_with_the_first_entrys_own_gfn():
    """The kernel joins an entry when ``entry.gfn == entry_start.gfn + npages``: after a partly
    done 2M entry that is not the page after the run (sev.c ``snp_begin_psc``, as written)."""
    host, vm, cpu = snp_vm()
    done = R - 12                                               # 12 pages left: gfn + 500 .. gfn + 511
    d = PscDesc([PscEntry(G, PRIV, PAGE_2M, cur_page=done), PscEntry(G + 12, PRIV, PAGE_4K)])
    ex = cpu.vmgexit_psc(d)
    assert ex.hypercall.args[:2] == (GPA + done * PAGE_4K, 13) and cpu.psc.inflight == 2
    assert cpu.complete_hypercall(Vmm(vm).handle(ex)) is None and d.entries[1].cur_page == 1
    assert vm.memory_attributes(G + 12) == 0 and vm.memory_attributes(G + R) == P   # "done", not converted


def test_psc_psmash_and_unsmash_complete_without_an_exit():
    host, vm, cpu = snp_vm()
    d = PscDesc([PscEntry(G, snp.SNP_PAGE_STATE_PSMASH, PAGE_2M), PscEntry(G + R, snp.SNP_PAGE_STATE_UNSMASH, PAGE_2M)])
    assert cpu.vmgexit_psc(d) is None and cpu.psc_result == (0, 0) and d.cur_entry == 2


def test_psc_without_the_hypercall_exit_is_generic():
    host, vm, cpu = snp_vm(exit_hc=False)
    assert cpu.vmgexit_psc(PscDesc([PscEntry(G, PRIV, PAGE_4K)])) is None
    assert cpu.psc_result == (0, snp.VMGEXIT_PSC_ERROR_GENERIC)


def test_psc_from_an_sev_es_guest_is_malformed_input():
    """sev_es_validate_vmgexit: SVM_VMGEXIT_PSC only from an SNP guest; bad input, guest resumes."""
    host, vm, cpu = snp_vm(vm_type=U.KVM_X86_SEV_ES_VM, gmem=False, exit_hc=False)
    assert cpu.vmgexit_psc(PscDesc([PscEntry(G, PRIV, PAGE_4K)])) is None
    assert cpu.psc_result == (GHCB_HV_RESP_MALFORMED_INPUT, GHCB_ERR_MISSING_INPUT)


def test_vmgexit_needs_a_ghcb():
    host = Host(mem="2GiB", cores=4)
    kvm = Kvm(host)
    for t in (U.KVM_X86_SW_PROTECTED_VM, U.KVM_X86_SEV_VM):
        vm = kvm.create_vm(t)
        cpu = vm.create_vcpu(0)
        mark = host.ledger.mark()
        with pytest.raises(ValueError, match="GHCB"):
            cpu.vmgexit_psc(PscDesc([PscEntry(G, PRIV, PAGE_4K)]))
        with pytest.raises(ValueError, match="GHCB"):
            cpu.ghcb_terminate(0, 0)
        assert host.ledger.rows[mark:] == []                    # a refused call records nothing


def test_psc_legacy_list_form_matches_the_stateful_exits():
    host, vm, cpu = snp_vm()
    entries = [(G, PRIV, PAGE_4K), (G + 1, PRIV, PAGE_4K), (G + R, SHARED, PAGE_2M)]
    rc, exits = snp.snp_begin_psc(cpu, entries)
    d = PscDesc([PscEntry(*e) for e in entries])
    seen, ex = [], cpu.vmgexit_psc(d)
    while ex is not None:
        seen.append(ex)
        ex = cpu.complete_hypercall(0)
    assert rc == 0 and exits == seen and cpu.psc_result == (0, 0)
    assert snp.snp_begin_psc(cpu, entries, cur_entry=3, end_entry=2) == (0, [])


# ---------------------------------------------------------------- ownership (pKVM thread, 2023)
def test_guest_owned_psc_converts_inside_kvm_without_an_exit():
    host, vm, cpu = snp_vm(owner="guest")
    d = PscDesc([PscEntry(G, PRIV, PAGE_4K), PscEntry(G + 1, PRIV, PAGE_4K), PscEntry(G + R, PRIV, PAGE_2M)])
    assert cpu.vmgexit_psc(d) is None and cpu.psc_result == (0, 0) and d.done
    assert vm.kvm_conversions == [(G, G + 2, P), (G + R, G + 2 * R, P)]
    assert snp.guest_pvalidate(cpu, GPA, PAGE_4K, True) == 0 and cpu.access(GPA, private=True) is None


def test_guest_owned_psc_that_kvm_cannot_make_is_generic_and_the_guest_terminates():
    host, vm, cpu = snp_vm(owner="guest", gmem=False)
    d = PscDesc([PscEntry(G, PRIV, PAGE_4K)])
    assert cpu.vmgexit_psc(d) is None and cpu.psc_result == (0, snp.VMGEXIT_PSC_ERROR_GENERIC)
    assert vm.memory_attributes(G) == 0 and d.cur_entry == 0
    ex = cpu.ghcb_terminate(snp.SEV_TERM_SET_LINUX, snp.GHCB_TERM_PSC)   # the Linux guest: __set_pages_state
    assert ex.system_event == (U.KVM_SYSTEM_EVENT_SEV_TERM, 0x11100)


class DeferringVmm(Vmm):
    """A VMM that answers the first conversion with an error (busy: deny or defer) and converts
    on a later request."""

    def __init__(self, vm, **kw):
        super().__init__(vm, **kw)
        self.refused = 0

    def handle(self, exit):
        if exit.reason == U.KVM_EXIT_HYPERCALL and not self.refused:
            self.refused += 1
            self.log.append(exit)
            return -errno.EAGAIN
        return super().handle(exit)


class RetryingVmm(Vmm):
    """A VMM whose KVM_SET_MEMORY_ATTRIBUTES fails for lack of memory once: it frees memory and
    retries the ioctl before answering (userspace may take its time)."""

    def convert(self, gpa, size, private):
        try:
            return super().convert(gpa, size, private)
        except KvmError as e:
            if e.errno != errno.ENOMEM:
                raise
            self.vm.xa_reserve_fails = False                    # reclaimed; try again
            return super().convert(gpa, size, private)


def test_ownership_decides_the_outcome_userspace_can_deny_defer_retry_the_guest_cannot():
    """With userspace ownership a refusal is an answer the guest can resubmit after, and a
    transient failure is retried by the VMM before it answers; with guest ownership the same
    transient failure in KVM is an immediate error: the guest terminates ("either immediately
    succeeds or terminates the guest")."""
    # userspace: refused once, the guest resubmits the same descriptor, converted
    host, vm, cpu = snp_vm()
    vmm = DeferringVmm(vm)
    d = PscDesc([PscEntry(G, PRIV, PAGE_4K)])
    assert psc(cpu, vmm, d) == (0, snp.VMGEXIT_PSC_ERROR_GENERIC) and vm.memory_attributes(G) == 0
    assert psc(cpu, vmm, d) == (0, 0) and vm.memory_attributes(G) == P and d.done
    # userspace: a transient ENOMEM in the ioctl, retried by the VMM: the guest sees success
    host, vm, cpu = snp_vm()
    vm.xa_reserve_fails = True
    assert psc(cpu, RetryingVmm(vm), PscDesc([PscEntry(G, PRIV, PAGE_4K)])) == (0, 0)
    assert vm.memory_attributes(G) == P
    # guest: the same transient ENOMEM inside KVM is an error at once; the guest terminates
    host, vm, cpu = snp_vm(owner="guest")
    vm.xa_reserve_fails = True
    assert cpu.vmgexit_psc(PscDesc([PscEntry(G, PRIV, PAGE_4K)])) is None
    assert cpu.psc_result == (0, snp.VMGEXIT_PSC_ERROR_GENERIC) and vm.memory_attributes(G) == 0
    assert cpu.ghcb_terminate(snp.SEV_TERM_SET_LINUX, snp.GHCB_TERM_PSC).reason == U.KVM_EXIT_SYSTEM_EVENT
    with pytest.raises(VcpuNotRunnable):
        cpu.vmgexit_psc(PscDesc([PscEntry(G, PRIV, PAGE_4K)]))


# ---------------------------------------------------------------- the MSR protocol
def test_msr_psc_answers_in_the_ghcb_msr_after_userspace():
    host, vm, cpu = snp_vm()
    ex = cpu.vmgexit_msr_psc(ghcb_msr_psc_req(G + 3, PRIV))
    assert ex.hypercall.args == (GPA + 3 * PAGE_4K, 1, U.KVM_MAP_GPA_RANGE_ENCRYPTED)
    assert cpu.complete_hypercall(Vmm(vm).handle(ex)) is None
    assert cpu.ghcb_msr == snp.GHCB_MSR_PSC_RESP and vm.memory_attributes(G + 3) == P
    ex = cpu.vmgexit_msr_psc(ghcb_msr_psc_req(G + 4, PRIV))
    assert cpu.complete_hypercall(1) is None and cpu.ghcb_msr == snp.GHCB_MSR_PSC_RESP_ERROR == (1 << 63) | 0x15
    assert cpu.vmgexit_msr_psc(ghcb_msr_psc_req(G, snp.SNP_PAGE_STATE_PSMASH)) is None
    assert cpu.ghcb_msr == snp.GHCB_MSR_PSC_RESP_ERROR
    with pytest.raises(ValueError, match="not a page-state-change request"):
        cpu.vmgexit_msr_psc(ghcb_msr_term_req(0, 0))


def test_msr_psc_guest_owned_converts_inside():
    host, vm, cpu = snp_vm(owner="guest")
    assert cpu.vmgexit_msr_psc(ghcb_msr_psc_req(G, PRIV)) is None
    assert cpu.ghcb_msr == snp.GHCB_MSR_PSC_RESP and vm.memory_attributes(G) == P
    host, vm, cpu = snp_vm(owner="guest", gmem=False)
    assert cpu.vmgexit_msr_psc(ghcb_msr_psc_req(G, PRIV)) is None and cpu.ghcb_msr == snp.GHCB_MSR_PSC_RESP_ERROR


def test_msr_psc_from_an_sev_es_guest_terminates_it():
    """sev_handle_vmgexit_msr_protocol: GHCB_MSR_PSC_REQ from a guest that is not SNP -> out_terminate."""
    host, vm, cpu = snp_vm(vm_type=U.KVM_X86_SEV_ES_VM, gmem=False, exit_hc=False)
    msr = ghcb_msr_psc_req(G, PRIV)
    ex = cpu.vmgexit_msr_psc(msr)
    assert ex.system_event == (U.KVM_SYSTEM_EVENT_SEV_TERM, msr) and cpu.terminated is ex


# ---------------------------------------------------------------- 5. termination (sev_smoke_test)
@pytest.mark.parametrize("vm_type", [U.KVM_X86_SEV_ES_VM, U.KVM_X86_SNP_VM])
def test_sev_smoke_test_guest_termination(vm_type):
    """The guest writes GHCB_MSR_TERM_REQ and VMGEXITs; the host sees KVM_EXIT_SYSTEM_EVENT,
    type KVM_SYSTEM_EVENT_SEV_TERM, data[0] the MSR (sev_smoke_test asserts GHCB_MSR_TERM_REQ)."""
    host, vm, cpus = snp_vm(vm_type=vm_type, gmem=vm_type == U.KVM_X86_SNP_VM, vcpus=2)
    ex = cpus[0].ghcb_terminate(snp.SEV_TERM_SET_GEN, snp.GHCB_SEV_ES_GEN_REQ)
    assert ex.reason == U.KVM_EXIT_SYSTEM_EVENT
    assert ex.system_event == (U.KVM_SYSTEM_EVENT_SEV_TERM, snp.GHCB_MSR_TERM_REQ)
    assert cpus[0].terminated is ex and host.dmesg[-1].endswith("requested termination: 0x0:0x0")
    vmm = Vmm(vm)
    assert vmm.handle(ex) == 0 and vmm.panicked is ex          # QEMU: qemu_system_guest_panicked
    assert cpus[1].terminated is None


def test_termination_reason_codes_reach_the_host():
    host, vm, cpu = snp_vm()
    assert cpu.ghcb_terminate(snp.SEV_TERM_SET_LINUX, snp.GHCB_TERM_PVALIDATE).system_event[1] == 0x21100
    assert ghcb_msr_term_req(snp.SEV_TERM_SET_LINUX, snp.GHCB_TERM_PSC) == 0x11100
    with pytest.raises(ValueError, match="reason_set"):
        ghcb_msr_term_req(16, 0)


def test_a_terminated_guest_does_nothing_more():
    """Choice of the model: after the termination exit every guest operation on that vCPU
    raises VcpuNotRunnable (the guest loops on HLT in sev_es_terminate); userspace-side calls
    (ioctls, host accesses) go on."""
    host, vm, cpu = snp_vm()
    vm.set_memory_attributes(GPA, PAGE_4K, P)
    term = cpu.ghcb_terminate(snp.SEV_TERM_SET_LINUX, snp.GHCB_TERM_PSC)
    mark = host.ledger.mark()
    for op in (lambda: cpu.access(GPA, private=True), lambda: cpu.fault_in(GPA, private=True),
               lambda: cpu.fill(GPA, PAGE_4K, 1, private=True),
               lambda: cpu.hypercall(U.KVM_HC_MAP_GPA_RANGE, GPA, 1, 0),
               lambda: cpu.vmgexit_psc(PscDesc([PscEntry(G, PRIV, PAGE_4K)])),
               lambda: cpu.vmgexit_msr_psc(ghcb_msr_psc_req(G, PRIV)), lambda: cpu.ghcb_terminate(0, 0),
               lambda: snp.guest_pvalidate(cpu, GPA, PAGE_4K, True), lambda: cpu.complete_hypercall(0)):
        with pytest.raises(VcpuNotRunnable) as ei:
            op()
        assert ei.value.exit is term
    assert host.ledger.rows[mark:] == [] and vm.set_memory_attributes(GPA, PAGE_4K, 0) == 0


# ---------------------------------------------------------------- 6. cost events in the kernel's order
def test_ledger_psc_to_private_with_userspace_ownership():
    host, vm, cpu = snp_vm()
    vmm = Vmm(vm, fallocate=False)
    mark = host.ledger.mark()
    ex = cpu.vmgexit_psc(PscDesc([PscEntry(G, PRIV, PAGE_4K)]))
    vmm.answer(cpu, ex)
    assert events(host.ledger, mark) == ["vm_exit", "user_exit", "set_attributes"]
    mark = host.ledger.mark()
    assert snp.guest_pvalidate(cpu, GPA, PAGE_4K, True) == 0  # the next private access: #NPF, mapped
    assert events(host.ledger, mark) == ["vm_exit", "npt_map"]
    mark = host.ledger.mark()
    cpu.access(GPA, private=True)                               # mapped: no exit at all
    assert events(host.ledger, mark) == []


def test_ledger_psc_of_two_runs_exits_twice_from_one_vmgexit():
    host, vm, cpu = snp_vm()
    mark = host.ledger.mark()
    Vmm(vm).answer(cpu, cpu.vmgexit_psc(PscDesc([PscEntry(G, PRIV, PAGE_4K), PscEntry(G + 9, PRIV, PAGE_4K)])))
    assert events(host.ledger, mark) == ["vm_exit", "user_exit", "set_attributes", "user_exit", "set_attributes"]


def test_ledger_psc_with_guest_ownership_has_no_user_exit():
    host, vm, cpu = snp_vm(owner="guest")
    mark = host.ledger.mark()
    cpu.vmgexit_psc(PscDesc([PscEntry(G, PRIV, PAGE_4K)]))
    assert events(host.ledger, mark) == ["vm_exit", "set_attributes"]


def test_ledger_implicit_conversion_exit_and_auto_convert():
    host, vm, cpu = snp_vm()
    mark = host.ledger.mark()
    ex = cpu.fault_in(GPA, private=True)
    Vmm(vm).handle(ex)
    cpu.fault_in(GPA, private=True)
    assert events(host.ledger, mark) == ["vm_exit", "user_exit", "set_attributes", "vm_exit", "npt_map"]
    host, vm, cpu = snp_vm(npf="auto-convert")
    mark = host.ledger.mark()
    snp.guest_pvalidate(cpu, GPA, PAGE_4K, True)
    assert events(host.ledger, mark) == ["vm_exit", "set_attributes", "npt_map"]


def test_ledger_msr_psc_hypercall_and_termination():
    host, vm, cpu = snp_vm()
    mark = host.ledger.mark()
    Vmm(vm).answer(cpu, cpu.vmgexit_msr_psc(ghcb_msr_psc_req(G, PRIV)))
    assert events(host.ledger, mark) == ["vm_exit", "user_exit", "set_attributes"]
    mark = host.ledger.mark()
    Vmm(vm).handle(cpu.hypercall(U.KVM_HC_MAP_GPA_RANGE, GPA + PAGE_4K, 1, U.KVM_MAP_GPA_RANGE_ENCRYPTED))
    assert events(host.ledger, mark) == ["vm_exit", "user_exit", "set_attributes"]
    mark = host.ledger.mark()
    cpu.ghcb_terminate(0, 0)
    assert events(host.ledger, mark) == ["vm_exit", "user_exit"]


def test_ledger_pvalidate_4k_on_a_2m_entry():
    """PVALIDATE 4K on a 2M RMP entry: #NPF(SIZEM) -> sev_handle_rmp_fault (PSMASH, zap), then
    the retried instruction faults the page in again at 4K."""
    host, vm, cpu = snp_vm(huge=True)
    vm.set_memory_attributes(GPA, PAGE_2M, P)
    cpu.fault_in(GPA, private=True)
    mark = host.ledger.mark()
    assert snp.guest_pvalidate(cpu, GPA + PAGE_4K, PAGE_4K, True) == 0
    assert events(host.ledger, mark) == ["vm_exit", "vm_exit", "npt_map"]
    assert [op for op, _ in host.ledger.rows[mark:]][:2] == ["npf", "psmash"]


# ---------------------------------------------------------------- private_mem_conversions_test
@pytest.mark.parametrize("fallocate", [True, False])
@pytest.mark.parametrize("offset,size", [(0, PAGE_4K), (PAGE_4K, PAGE_4K), (0, PAGE_2M), (PAGE_2M, PAGE_2M),
                                         (PAGE_4K, 2 * PAGE_4K)])
def test_private_mem_conversions_explicit_conversion(offset, size, fallocate):
    """guest_test_explicit_conversion, with an SNP guest: PSC to private through the GHCB, the
    VMM converting (with or without fallocate), PVALIDATE, private data invisible to the VMM;
    then every other page back to shared (rescinded first), reading the VMM's data; then back
    to private, reading zero where the punch freed the page."""
    host, vm, cpu = snp_vm(huge=True, size=8 * MiB)
    vmm = Vmm(vm, fallocate=fallocate)
    gpa, n = GPA + offset, size // PAGE_4K
    vm.kvm.user_memory.fill(UADDR + offset, size, 0x11)   # shared contents in the VMM's memory
    huge = size == PAGE_2M and offset % PAGE_2M == 0
    d = PscDesc([PscEntry(gpa >> PAGE_SHIFT, PRIV, PAGE_2M)] if huge else
                [PscEntry((gpa >> PAGE_SHIFT) + i, PRIV, PAGE_4K) for i in range(n)])
    assert psc(cpu, vmm, d) == (0, 0)
    assert vm.attributes.has(gpa >> PAGE_SHIFT, (gpa >> PAGE_SHIFT) + n, P)
    codes = [snp.guest_pvalidate(cpu, gpa, PAGE_2M, True)] if huge else snp.guest_validate(cpu, gpa, n)
    assert codes == [0] * len(codes)
    assert cpu.fill(gpa, size, 0xAB, private=True) is None
    assert cpu.read(gpa, 1, private=True) == b"\xab" and vm.kvm.user_memory.read(UADDR + offset, 1) == b"\x11"
    odd = [gpa + i * PAGE_4K for i in range(1, n, 2)]
    for g in odd:                                               # rescind, then PSC to shared
        assert snp.guest_pvalidate(cpu, g, PAGE_4K, False) == 0
    for i in range(0, len(odd), snp.VMGEXIT_PSC_MAX_ENTRY):     # the Linux guest's chunks of 64
        chunk = odd[i:i + snp.VMGEXIT_PSC_MAX_ENTRY]
        assert psc(cpu, vmm, PscDesc([PscEntry(g >> PAGE_SHIFT, SHARED, PAGE_4K) for g in chunk])) == (0, 0)
    if odd:
        assert cpu.read(odd[0], 1, private=False) == b"\x11"
        assert psc(cpu, vmm, PscDesc([PscEntry(odd[0] >> PAGE_SHIFT, PRIV, PAGE_4K)])) == (0, 0)
        snp.guest_pvalidate(cpu, odd[0], PAGE_4K, True)
        want = b"\x00" if fallocate else b"\xab"               # the VMM punched it: zero on refault
        assert cpu.read(odd[0], 1, private=True) == want
    assert cpu.read(gpa, 1, private=True) == b"\xab"
