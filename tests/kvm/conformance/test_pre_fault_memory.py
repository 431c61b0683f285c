"""KVM_PRE_FAULT_MEMORY (virt/kvm/kvm_main.c ``kvm_vcpu_pre_fault_memory``, arch/x86/kvm/mmu/mmu.c
``kvm_arch_vcpu_pre_fault_memory``, Documentation/virt/kvm/api.rst 4.143) and the VMM that
calls it after a page-state change (QEMU commit 4cdc489eb9c2, "i386/kvm: Prefault memory on
page state change"): the errno table, each failure changing nothing; partial success; the
mapping levels; who allows the call; the ledger; the VMM option."""
from __future__ import annotations

import errno

import pytest

from kit.errors import KvmError
from kit.kvm import snp, tdx
from kit.kvm import uapi as U
from kit.kvm.mmu import MAP_PRIVATE, MAP_SHARED
from kit.kvm.vmm import Vmm
from kit.units import MiB, PAGE_2M, PAGE_4K, PAGE_SHIFT, PAGES_PER_2M
from tests.hostile import digest
from tests.kvm.conformance.helpers import errno_of

GPA = 1 << 32
SIZE = 8 * MiB
UADDR = 1 << 40
P = U.KVM_MEMORY_ATTRIBUTE_PRIVATE
GMEM = U.KVM_MEM_GUEST_MEMFD


def _snp(make_kvm, huge=True, launched=True):
    """An SNP VM with guest_memfd RAM at 4 GiB (its first 4 MiB private), one vCPU, launched."""
    vm = make_kvm("2GiB", 8, gmem_hugepages=huge).create_vm(U.KVM_X86_SNP_VM)
    vm.sev_init()
    f = vm.create_guest_memfd(SIZE)
    vm.set_user_memory_region2(0, GMEM, GPA, SIZE, UADDR, 0, f)
    vm.enable_cap(U.KVM_CAP_EXIT_HYPERCALL, 1 << U.KVM_HC_MAP_GPA_RANGE)
    cpu = vm.create_vcpu(0)
    if launched:
        snp.snp_launch_finish(vm)
    vm.set_memory_attributes(GPA, 4 * MiB, P)
    return vm, f, cpu


def _sw(make_kvm):
    """A SW_PROTECTED VM: a guest_memfd slot at 4 GiB, a plain slot above it, one vCPU."""
    vm = make_kvm("2GiB", 4).create_vm(U.KVM_X86_SW_PROTECTED_VM)
    f = vm.create_guest_memfd(SIZE)
    vm.set_user_memory_region2(0, GMEM, GPA, SIZE, UADDR, 0, f)
    vm.set_user_memory_region2(1, 0, GPA + SIZE, SIZE, UADDR + SIZE)
    return vm, f, vm.create_vcpu(0)


def _td(make_kvm):
    """A TD after KVM_TDX_FINALIZE_VM (``pre_fault_allowed`` set as tdx_td_finalize sets it)."""
    vm = make_kvm("2GiB", 4, init_ops=tdx.vt_init_ops, vm_types=tdx.VT_VM_TYPES).create_vm(U.KVM_X86_TDX_VM)
    tdx.tdx_init_vm(vm, 48)
    f = vm.create_guest_memfd(SIZE)
    vm.set_user_memory_region2(0, GMEM, GPA, SIZE, UADDR, 0, f)
    vm.pre_fault_allowed = True
    return vm, f, vm.create_vcpu(0)


def _dead(make_kvm):
    vm, f, cpu = _sw(make_kvm)
    vm.destroy()
    return vm, f, cpu


def _signal(make_kvm):
    vm, f, cpu = _sw(make_kvm)
    vm.fault_injection.signal_after = 0
    return vm, f, cpu


def _closed(make_kvm):
    vm, f, cpu = _sw(make_kvm)
    vm.set_memory_attributes(GPA, PAGE_4K, P)
    f.close()
    return vm, f, cpu


def _private_plain(make_kvm):
    vm, f, cpu = _sw(make_kvm)
    vm.set_memory_attributes(GPA + SIZE, PAGE_4K, P)
    return vm, f, cpu


def _private_noslot(make_kvm):
    vm, f, cpu = _sw(make_kvm)
    vm.set_memory_attributes(GPA + 4 * SIZE, PAGE_4K, P)
    return vm, f, cpu


#: (case, world, gpa, size, flags, errno), in the kernel's order of checks
ERRNO_TABLE = [
    ("the VM is dead", _dead, GPA, PAGE_4K, 0, errno.EIO),
    ("flags not 0", _sw, GPA, PAGE_4K, 1, errno.EINVAL),
    ("gpa not page aligned", _sw, GPA + 1, PAGE_4K, 0, errno.EINVAL),
    ("size not page aligned", _sw, GPA, PAGE_4K + 1, 0, errno.EINVAL),
    ("size 0", _sw, GPA, 0, 0, errno.EINVAL),
    ("gpa + size wraps", _sw, U.U64 + 1 - PAGE_4K, 2 * PAGE_4K, 0, errno.EINVAL),
    ("gpa + size ends at 2**64", _sw, U.U64 + 1 - PAGE_4K, PAGE_4K, 0, errno.EINVAL),
    ("a signal is pending", _signal, GPA, PAGE_4K, 0, errno.EINTR),
    ("SNP before launch finish", lambda mk: _snp(mk, launched=False), GPA, PAGE_4K, 0, errno.EOPNOTSUPP),
    ("a TD's shared alias", _td, GPA | 1 << 47, PAGE_4K, 0, errno.EINVAL),
    ("shared gpa outside the memslots", _sw, GPA + 4 * SIZE, PAGE_4K, 0, errno.ENOENT),
    ("private gpa outside the memslots", _private_noslot, GPA + 4 * SIZE, PAGE_4K, 0, errno.EFAULT),
    ("private gpa in a slot without guest_memfd", _private_plain, GPA + SIZE, PAGE_4K, 0, errno.EFAULT),
    ("private gpa, guest_memfd closed", _closed, GPA, PAGE_4K, 0, errno.EFAULT),
]


@pytest.mark.parametrize("case, world, gpa, size, flags, want", ERRNO_TABLE, ids=[c[0] for c in ERRNO_TABLE])
def test_errno_table_and_a_failed_call_changes_nothing(make_kvm, case, world, gpa, size, flags, want):
    vm, f, cpu = world(make_kvm)
    before = digest(vm.kvm)
    assert errno_of(cpu.pre_fault_memory, gpa, size, flags) == want
    assert digest(vm.kvm) == before, f"{case}: the failed call changed the model"


@pytest.mark.parametrize("name, value", [("gpa", -1), ("size", 1 << 64), ("flags", 1.0), ("gpa", None)])
def test_argument_checks_name_the_parameter(make_kvm, name, value):
    vm, f, cpu = _sw(make_kvm)
    args = {"gpa": GPA, "size": PAGE_4K, "flags": 0, name: value}
    before = digest(vm.kvm)
    with pytest.raises((TypeError, ValueError), match=name):
        cpu.pre_fault_memory(**args)
    assert digest(vm.kvm) == before


def test_pre_fault_allowed_follows_the_vm_type(make_kvm):
    """kvm_arch_init_vm: default and SW_PROTECTED at once; svm_vm_init: SEV and SEV-ES at once,
    SNP (private memory) only from snp_launch_finish; TDX from KVM_TDX_FINALIZE_VM."""
    kvm = make_kvm()
    for t in (U.KVM_X86_DEFAULT_VM, U.KVM_X86_SW_PROTECTED_VM, U.KVM_X86_SEV_VM, U.KVM_X86_SEV_ES_VM):
        assert kvm.create_vm(t).pre_fault_allowed, U.VM_TYPE_NAMES[t]
    vm, _, _ = _snp(make_kvm, launched=False)
    assert not vm.pre_fault_allowed
    snp.snp_launch_finish(vm)
    assert vm.pre_fault_allowed
    td = make_kvm("2GiB", 4, init_ops=tdx.vt_init_ops, vm_types=tdx.VT_VM_TYPES).create_vm(U.KVM_X86_TDX_VM)
    assert not td.pre_fault_allowed
    assert kvm.check_extension(U.KVM_CAP_PRE_FAULT_MEMORY) == 1


@pytest.mark.parametrize("huge", [False, True])
def test_private_range_is_mapped_as_a_fault_would_without_an_exit(make_kvm, huge):
    vm, f, cpu = _snp(make_kvm, huge=huge)
    host = vm.kvm.host
    before = dict(host.ledger.totals)
    left = cpu.pre_fault_memory(GPA, 4 * MiB)
    assert left == U.PreFaultMemory(GPA + 4 * MiB, 0, 0)
    gfn = GPA >> PAGE_SHIFT
    assert vm.sptes.has(gfn, gfn + 4 * MiB // PAGE_4K, MAP_PRIVATE)
    pfn = f.folios[0]
    e = host.rmp.rmpread(pfn)
    assert e.assigned and e.asid == vm.asid and not e.validated
    assert e.pagesize == (PAGE_2M if huge else PAGE_4K)
    ev = {k: host.ledger.totals.get(k, 0) - before.get(k, 0) for k in host.ledger.totals}
    steps = 2 if huge else 4 * MiB // PAGE_4K              # one mapping per step
    assert ev.get("vm_exit", 0) == 0 and ev.get("user_exit", 0) == 0
    assert ev["npt_map"] == ev["pre_fault"] == steps
    assert ev["bytes_zeroed"] == ev["pre_fault_bytes"] == 4 * MiB
    # PVALIDATE now finds the pages mapped: no #NPF
    before = host.ledger.totals.get("vm_exit", 0)
    assert snp.guest_pvalidate(cpu, GPA, PAGE_2M if huge else PAGE_4K, True) == 0
    assert host.ledger.totals.get("vm_exit", 0) == before
    # a second call finds everything mapped (RET_PF_SPURIOUS): the same range, nothing new
    again = dict(host.ledger.totals)
    assert cpu.pre_fault_memory(GPA, 4 * MiB).size == 0
    assert host.ledger.totals.get("bytes_zeroed") == again.get("bytes_zeroed")


def test_a_huge_mapping_advances_to_its_end_and_shared_pages_map_shared(make_kvm):
    vm, f, cpu = _snp(make_kvm, huge=True)
    left = cpu.pre_fault_memory(GPA + PAGE_2M + 5 * PAGE_4K, PAGE_4K)
    assert left == U.PreFaultMemory(GPA + PAGE_2M + 6 * PAGE_4K, 0, 0)
    left = cpu.pre_fault_memory(GPA + 4 * MiB + PAGE_4K, 8 * PAGE_4K)    # shared: userspace memory, 2M
    assert left.size == 0 and left.gpa == GPA + 4 * MiB + 9 * PAGE_4K
    assert vm.sptes.get((GPA + 4 * MiB) >> PAGE_SHIFT) == MAP_SHARED
    assert vm.faults_in[-1] == ((GPA + 4 * MiB + PAGE_4K) >> PAGE_SHIFT, PAGE_2M, False)


def test_success_once_a_page_is_mapped_then_the_error(make_kvm):
    """The selftest's shape (tools/testing/selftests/kvm/pre_fault_memory_test.c): a range
    running past the last memslot maps what it can and returns 0 with the rest left; the
    next call on the rest fails with ENOENT."""
    vm, f, cpu = _sw(make_kvm)
    end = GPA + 2 * SIZE                                     # the plain slot's end
    left = cpu.pre_fault_memory(end - PAGE_4K, 2 * PAGE_4K)
    assert left == U.PreFaultMemory(end, PAGE_4K, 0)
    assert errno_of(cpu.pre_fault_memory, left.gpa, left.size) == errno.ENOENT


def test_a_signal_partway_returns_the_rest(make_kvm):
    vm, f, cpu = _snp(make_kvm, huge=False)
    vm.fault_injection.signal_after = 3
    left = cpu.pre_fault_memory(GPA, 8 * PAGE_4K)
    assert left == U.PreFaultMemory(GPA + 3 * PAGE_4K, 5 * PAGE_4K, 0)
    assert vm.kvm.host.ledger.totals["pre_fault"] == 3
    vm.fault_injection.signal_after = None
    assert cpu.pre_fault_memory(left.gpa, left.size).size == 0


def test_the_ioctl_runs_while_an_exit_waits_for_userspace(make_kvm):
    """QEMU calls it from the exit handler, before KVM_RUN again: a vCPU whose PSC exit is
    pending is not 'runnable' for guest operations, but takes the ioctl."""
    from kit.kvm.ghcb import PscDesc, PscEntry, SNP_PAGE_STATE_PRIVATE
    vm, f, cpu = _snp(make_kvm, huge=False)
    gfn = (GPA + 4 * MiB) >> PAGE_SHIFT
    out = cpu.vmgexit_psc(PscDesc([PscEntry(gfn, SNP_PAGE_STATE_PRIVATE, PAGE_4K)]))
    assert out is not None and cpu.complete_userspace_io is not None
    vm.set_memory_attributes(gfn << PAGE_SHIFT, PAGE_4K, P)
    assert cpu.pre_fault_memory(gfn << PAGE_SHIFT, PAGE_4K).size == 0
    assert vm.sptes.get(gfn) == MAP_PRIVATE


# ------------------------------------------------------------------ the VMM option
def test_vmm_prefaults_after_converting_a_hypercall_range(make_kvm):
    vm, f, cpu = _snp(make_kvm, huge=False)
    vmm = Vmm(vm, fallocate=False, prefault=True)
    gpa = GPA + 4 * MiB
    out = cpu.hypercall(U.KVM_HC_MAP_GPA_RANGE, gpa, 4, U.KVM_MAP_GPA_RANGE_ENCRYPTED)
    assert vmm.handle(out) == 0
    gfn = gpa >> PAGE_SHIFT
    assert vm.attributes.has(gfn, gfn + 4, P) and vm.sptes.has(gfn, gfn + 4, MAP_PRIVATE)
    assert vmm.pre_faults == 1
    # back to shared: QEMU pre-faults that direction too (shared pages from userspace memory)
    out = cpu.hypercall(U.KVM_HC_MAP_GPA_RANGE, gpa, 4, U.KVM_MAP_GPA_RANGE_DECRYPTED)
    assert vmm.handle(out) == 0
    assert vm.sptes.has(gfn, gfn + 4, MAP_SHARED)


def test_vmm_without_the_option_does_not_prefault(make_kvm):
    vm, f, cpu = _snp(make_kvm, huge=False)
    vmm = Vmm(vm, fallocate=False)
    out = cpu.hypercall(U.KVM_HC_MAP_GPA_RANGE, GPA + 4 * MiB, 4, U.KVM_MAP_GPA_RANGE_ENCRYPTED)
    assert vmm.handle(out) == 0 and vmm.pre_faults == 0
    assert vm.sptes.get((GPA + 4 * MiB) >> PAGE_SHIFT) == 0


def test_vmm_ignores_a_failing_prefault_and_skips_memory_fault_exits(make_kvm):
    vm, f, cpu = _snp(make_kvm, huge=False, launched=False)   # pre_fault_allowed is still false
    vmm = Vmm(vm, fallocate=False, prefault=True)
    out = cpu.hypercall(U.KVM_HC_MAP_GPA_RANGE, GPA + 4 * MiB, 4, U.KVM_MAP_GPA_RANGE_ENCRYPTED)
    assert vmm.handle(out) == 0 and vmm.pre_faults == 1
    assert vm.sptes.get((GPA + 4 * MiB) >> PAGE_SHIFT) == 0
    vm2, f2, cpu2 = _snp(make_kvm, huge=False)
    vmm2 = Vmm(vm2, fallocate=False, prefault=True)
    exit = cpu2.fault_in(GPA + 6 * MiB, private=True)           # attribute shared: a memory-fault exit
    assert exit.reason == U.KVM_EXIT_MEMORY_FAULT
    assert vmm2.handle(exit) == 0 and vmm2.pre_faults == 0


def test_vmm_refused_conversion_is_not_prefaulted(make_kvm):
    vm, f, cpu = _sw(make_kvm)
    vm.enable_cap(U.KVM_CAP_EXIT_HYPERCALL, 1 << U.KVM_HC_MAP_GPA_RANGE)
    vmm = Vmm(vm, prefault=True)
    out = cpu.hypercall(U.KVM_HC_MAP_GPA_RANGE, GPA + SIZE, 1, U.KVM_MAP_GPA_RANGE_ENCRYPTED)  # no guest_memfd
    assert vmm.handle(out) == -U.KVM_EINVAL and vmm.pre_faults == 0


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_vmm_prefault_option_is_a_bool(make_kvm, value):
    vm, f, cpu = _sw(make_kvm)
    with pytest.raises((TypeError, ValueError), match="prefault"):
        Vmm(vm, prefault=value)


def test_vmm_pre_fault_takes_a_vcpu_of_its_vm(make_kvm):
    vm, f, cpu = _sw(make_kvm)
    other, _, ocpu = _sw(make_kvm)
    with pytest.raises(TypeError, match="vcpu"):
        Vmm(vm, prefault=True).pre_fault(GPA, PAGE_4K, ocpu)
    vm.set_memory_attributes(GPA, PAGE_4K, P)
    assert Vmm(vm, prefault=True).pre_fault(GPA, PAGE_2M) == 0
    assert vm.sptes.get(GPA >> PAGE_SHIFT) == MAP_PRIVATE
    assert vm.sptes.get((GPA >> PAGE_SHIFT) + PAGES_PER_2M - 1) == MAP_SHARED


def test_kvm_error_carries_the_errno(make_kvm):
    vm, f, cpu = _sw(make_kvm)
    with pytest.raises(KvmError) as e:
        cpu.pre_fault_memory(GPA + 4 * SIZE, PAGE_4K)
    assert e.value.errno == errno.ENOENT
