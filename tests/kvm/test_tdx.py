"""TDX's private/shared convention (kit.kvm.tdx, docs/tdx.md): the shared-bit alias, MapGPA as
KVM turns it into KVM_HC_MAP_GPA_RANGE exits (arch/x86/kvm/vmx/tdx.c ``tdx_map_gpa``,
``tdx_complete_vmcall_map_gpa``), the guest's retry loop (arch/x86/coco/tdx/tdx.c
``tdx_map_gpa``), and where a conversion gets stuck under each ownership style."""
import errno

import pytest

from tests.kvm.conformance.helpers import errno_of
from kit.kvm import tdx
from kit.kvm import uapi as U
from kit.kvm.uapi import Exit
from kit.kvm.vmm import Vmm
from kit.units import MiB, PAGE_2M, PAGE_4K

GPA = 1 << 32                      # guest RAM at 4 GiB
SIZE = 8 * MiB
P = U.KVM_MEMORY_ATTRIBUTE_PRIVATE
BIT47 = 1 << 47


@pytest.fixture
def td(make_kvm):
    """A TD on an Intel host: guest_memfd-backed RAM at 4 GiB, all private, MapGPA exits on."""
    def build(owner="userspace", gpaw=48, exits=True):
        k = make_kvm("2GiB", 4, init_ops=tdx.vt_init_ops, vm_types=tdx.VT_VM_TYPES)
        vm = k.create_vm(U.KVM_X86_TDX_VM, attribute_owner=owner)
        tdx.tdx_init_vm(vm, gpaw)
        f = vm.create_guest_memfd(SIZE)
        vm.set_user_memory_region2(0, U.KVM_MEM_GUEST_MEMFD, GPA, SIZE, 0x7f0000000000, 0, f)
        if exits:
            vm.enable_cap(U.KVM_CAP_EXIT_HYPERCALL, 1 << U.KVM_HC_MAP_GPA_RANGE)
        if owner == "userspace":
            vm.set_memory_attributes(GPA, SIZE, P)
        else:
            vm.kvm_vm_set_mem_attributes(GPA, SIZE, P)
        return vm, vm.create_vcpu(0)
    return build


def run_map_gpa(vcpu, gpa, size, answer):
    """One TDG.VP.VMCALL<MapGPA>: the exits userspace answers with ``answer(exit)``, then the
    status. Returns (status, exits)."""
    exits = []
    out = tdx.tdvmcall_map_gpa(vcpu, gpa, size)
    while isinstance(out, Exit):
        exits.append(out)
        out = tdx.complete_map_gpa(vcpu, answer(out))
    return out, exits


def guest_map_gpa(vcpu, start, end, enc, answer, gpaw=48):
    """The TD's ``tdx_map_gpa(start, end, enc)`` (arch/x86/coco/tdx/tdx.c): the shared bit on
    both ends for a conversion to shared; RETRY resumes from R11, at most 3 retries without
    progress; any other error fails (the caller's set_memory_decrypted returns -EIO).
    Returns (ok, number of TDVMCALLs)."""
    if not enc:
        start, end = tdx.shared_alias(start, gpaw), end | tdx.shared_bit(gpaw)
    retries = calls = 0
    while retries < 3:
        status, _ = run_map_gpa(vcpu, start, end - start, answer)
        calls += 1
        if status != tdx.TDVMCALL_STATUS_RETRY:
            return status == tdx.TDVMCALL_STATUS_SUCCESS, calls
        r11 = vcpu.tdx.r11
        if r11 < start or r11 >= end:
            return False, calls
        if r11 == start:
            retries += 1
            continue
        start, retries = r11, 0
    return False, calls


# ---------------------------------------------------------------- the shared bit
def test_shared_bit_follows_the_gpa_width():
    assert tdx.shared_bit(48) == BIT47 and tdx.shared_bit(52) == 1 << 51
    assert tdx.TDX_SHARED_BIT_PWL_4 << 12 == BIT47 and tdx.TDX_SHARED_BIT_PWL_5 << 12 == 1 << 51
    assert tdx.shared_alias(0x5000) == BIT47 | 0x5000 and tdx.private_alias(BIT47 | 0x5000) == 0x5000
    assert tdx.shared_alias(0x5000, 52) == (1 << 51) | 0x5000
    with pytest.raises(ValueError, match="gpaw"):
        tdx.shared_bit(50)
    with pytest.raises(ValueError, match="gpa"):
        tdx.shared_alias(1 << 48)


def test_a_td_is_a_vm_type_of_an_intel_host(make_kvm, td):
    amd = make_kvm()
    assert errno_of(amd.create_vm, U.KVM_X86_TDX_VM) == errno.EINVAL
    vm, cpu = td()
    assert vm.kvm.check_extension(U.KVM_CAP_VM_TYPES) == (1 << 0) | (1 << 1) | (1 << 5)
    assert vm.has_private_mem and vm.has_protected_state and vm.x86_ops is tdx.TDX_X86_OPS
    assert vm.supported_mem_attributes() == P and vm.kvm.asids is None
    assert repr(vm).startswith("<VM KVM_X86_TDX_VM")


def test_tdx_init_vm_takes_48_or_52_before_vcpus(make_kvm):
    k = make_kvm(init_ops=tdx.vt_init_ops, vm_types=tdx.VT_VM_TYPES)
    vm = k.create_vm(U.KVM_X86_TDX_VM)
    assert errno_of(tdx.tdx_init_vm, vm, 50) == errno.EINVAL
    assert tdx.tdx_init_vm(vm, 52) == 0 and vm.tdx.shared_gpa_mask == 1 << 51
    vm.create_vcpu(0)
    assert errno_of(tdx.tdx_init_vm, vm, 48) == errno.EINVAL
    assert errno_of(tdx.tdx_init_vm, k.create_vm(), 48) == errno.ENOTTY


def test_the_fault_path_strips_the_shared_bit(td):
    vm, cpu = td()
    assert cpu.access(GPA) is None and vm.faults_in[-1] == (GPA >> 12, PAGE_4K, True)
    out = cpu.access(tdx.shared_alias(GPA + PAGE_4K))        # shared access, attribute private
    assert out.reason == U.KVM_EXIT_MEMORY_FAULT and out.errno == errno.EFAULT
    assert out.memory_fault.gpa == GPA + PAGE_4K and out.memory_fault.flags == 0
    assert cpu.access(GPA + PAGE_4K, private=False).memory_fault == out.memory_fault   # same access
    with pytest.raises(ValueError, match="shared bit"):
        cpu.access(tdx.shared_alias(GPA), private=True)
    with pytest.raises(ValueError, match="width"):
        cpu.access(1 << 48)
    vm52, cpu52 = td(gpaw=52)
    out = cpu52.access(GPA | BIT47)                  # bit 47 is an address bit there: private, no slot
    assert out.memory_fault.gpa == GPA | BIT47 and out.memory_fault.flags == U.KVM_MEMORY_EXIT_FLAG_PRIVATE
    assert cpu52.access((1 << 51) | GPA).memory_fault.gpa == GPA


# ---------------------------------------------------------------- what KVM and userspace see
def test_map_gpa_to_shared_is_one_exit_per_2m_chunk_without_the_shared_bit(td):
    vm, cpu = td()
    vmm = Vmm(vm, fallocate=False)
    status, exits = run_map_gpa(cpu, tdx.shared_alias(GPA), 5 * MiB, vmm.handle)
    assert status == tdx.TDVMCALL_STATUS_SUCCESS
    assert [e.hypercall.args for e in exits] == [
        (GPA, 512, U.KVM_MAP_GPA_RANGE_DECRYPTED), (GPA + PAGE_2M, 512, U.KVM_MAP_GPA_RANGE_DECRYPTED),
        (GPA + 2 * PAGE_2M, 256, U.KVM_MAP_GPA_RANGE_DECRYPTED)]
    assert all(e.hypercall.nr == U.KVM_HC_MAP_GPA_RANGE and e.hypercall.ret == 0 and
               e.hypercall.flags == U.KVM_EXIT_HYPERCALL_LONG_MODE for e in exits)
    assert vm.attributes.has(GPA >> 12, (GPA + 5 * MiB) >> 12, 0)
    assert vm.memory_attributes((GPA + 5 * MiB) >> 12) == P
    assert vmm.ioctls == 3 and vm.kvm_conversions == []
    assert cpu.access(tdx.shared_alias(GPA)) is None            # the shared alias now maps


def test_map_gpa_to_private_says_encrypted(td):
    vm, cpu = td()
    vm.set_memory_attributes(GPA, SIZE, 0)
    status, exits = run_map_gpa(cpu, GPA + PAGE_4K, PAGE_2M, Vmm(vm).handle)
    assert status == 0 and [e.hypercall.args for e in exits] == [(GPA + PAGE_4K, 512, U.KVM_MAP_GPA_RANGE_ENCRYPTED)]
    assert vm.attributes.has((GPA >> 12) + 1, (GPA >> 12) + 513, P)


@pytest.mark.parametrize("gpa,size,status", [
    (GPA, 0, tdx.TDVMCALL_STATUS_INVALID_OPERAND),                       # empty
    ((1 << 64) - PAGE_4K, 2 * PAGE_4K, tdx.TDVMCALL_STATUS_INVALID_OPERAND),   # wraps
    (1 << 48, PAGE_4K, tdx.TDVMCALL_STATUS_INVALID_OPERAND),             # beyond GPAW
    (BIT47 - PAGE_4K, 2 * PAGE_4K, tdx.TDVMCALL_STATUS_INVALID_OPERAND),  # private start, shared end
    (GPA + 1, PAGE_4K, tdx.TDVMCALL_STATUS_ALIGN_ERROR),
    (GPA, PAGE_4K + 1, tdx.TDVMCALL_STATUS_ALIGN_ERROR),
    (BIT47 - PAGE_4K + 1, 2 * PAGE_4K, tdx.TDVMCALL_STATUS_INVALID_OPERAND),  # operand before alignment
], ids=["empty", "wraps", "beyond-gpaw", "mixed-kinds", "gpa-unaligned", "size-unaligned", "order"])
def test_map_gpa_errors_in_kvms_order(td, gpa, size, status):
    vm, cpu = td()
    assert tdx.tdvmcall_map_gpa(cpu, gpa, size) == status and cpu.tdx.r11 == gpa
    assert vm.attributes.has(GPA >> 12, (GPA + SIZE) >> 12, P)


def test_without_the_exit_cap_the_guest_gets_subfunc_unsupported(td):
    vm, cpu = td(exits=False)
    assert tdx.tdvmcall_map_gpa(cpu, tdx.shared_alias(GPA), PAGE_4K) == tdx.TDVMCALL_STATUS_SUBFUNC_UNSUPPORTED
    ok, calls = guest_map_gpa(cpu, GPA, GPA + PAGE_4K, False, Vmm(vm).handle)
    assert not ok and calls == 1                     # set_memory_decrypted: -EIO, page leaked


def test_userspace_refusing_a_chunk_fails_the_call_at_that_chunk(td):
    vm, cpu = td()
    vmm = Vmm(vm, fallocate=False)
    answers = iter([0, 1])                           # converts the first chunk, refuses the second

    def answer(e):
        return vmm.handle(e) if next(answers) == 0 else 1
    status, exits = run_map_gpa(cpu, tdx.shared_alias(GPA), 3 * PAGE_2M, answer)
    assert status == tdx.TDVMCALL_STATUS_INVALID_OPERAND and len(exits) == 2
    assert cpu.tdx.r11 == tdx.shared_alias(GPA + PAGE_2M)     # the refused chunk, as the TD wrote it
    assert vm.attributes.has(GPA >> 12, (GPA + PAGE_2M) >> 12, 0)
    assert vm.attributes.has((GPA + PAGE_2M) >> 12, (GPA + SIZE) >> 12, P)


def test_vmm_without_backing_refuses_a_private_conversion(td):
    vm, cpu = td()
    status, exits = run_map_gpa(cpu, GPA + SIZE, PAGE_2M, Vmm(vm).handle)   # no memslot there
    assert status == tdx.TDVMCALL_STATUS_INVALID_OPERAND and cpu.tdx.r11 == GPA + SIZE


# ---------------------------------------------------------------- interrupts: RETRY with progress
def test_a_pending_event_ends_the_call_with_retry_and_the_guest_resumes(td):
    vm, cpu = td()
    vmm = Vmm(vm, fallocate=False)

    def answer(e):                                   # an interrupt arrives during every exit
        cpu.tdx.event_pending = True
        return vmm.handle(e)
    status, exits = run_map_gpa(cpu, tdx.shared_alias(GPA), 3 * PAGE_2M, answer)
    assert status == tdx.TDVMCALL_STATUS_RETRY and len(exits) == 1
    assert cpu.tdx.r11 == tdx.shared_alias(GPA + PAGE_2M) and not cpu.tdx.event_pending
    ok, calls = guest_map_gpa(cpu, GPA + PAGE_2M, GPA + 3 * PAGE_2M, False, answer)
    assert ok and calls == 2                         # RETRY always follows progress: never stuck
    assert vm.attributes.has(GPA >> 12, (GPA + 3 * PAGE_2M) >> 12, 0)


def test_an_event_after_the_last_chunk_does_not_retry(td):
    vm, cpu = td()
    cpu.tdx.event_pending = True                     # not looked at before the first chunk
    status, exits = run_map_gpa(cpu, tdx.shared_alias(GPA), PAGE_2M, Vmm(vm).handle)
    assert status == tdx.TDVMCALL_STATUS_SUCCESS and len(exits) == 1 and not cpu.tdx.event_pending


# ---------------------------------------------------------------- ownership
def test_guest_ownership_converts_in_kvm_without_exits(td):
    vm, cpu = td(owner="guest", exits=False)
    assert tdx.tdvmcall_map_gpa(cpu, tdx.shared_alias(GPA), 3 * PAGE_2M) == tdx.TDVMCALL_STATUS_SUCCESS
    g = GPA >> 12
    assert vm.kvm_conversions == [(g, g + 512, 0), (g + 512, g + 1024, 0), (g + 1024, g + 1536, 0)]
    assert vm.attributes.has(g, g + 1536, 0)
    assert errno_of(vm.set_memory_attributes, GPA, PAGE_4K, P) == errno.EPERM   # userspace can't undo
    cpu.tdx.event_pending = True
    assert tdx.tdvmcall_map_gpa(cpu, GPA, 2 * PAGE_2M) == tdx.TDVMCALL_STATUS_RETRY
    assert cpu.tdx.r11 == GPA + PAGE_2M
    assert tdx.tdvmcall_map_gpa(cpu, GPA + PAGE_2M, PAGE_2M) == 0 and vm.attributes.has(g, g + 1024, P)


def test_where_each_ownership_style_gets_stuck(td):
    """Userspace ownership: KVM did its part, but userspace decides; a VMM that says yes and
    converts nothing leaves the TD's next shared access exiting for ever (a memory-fault exit
    only userspace can resolve). Guest ownership: the conversion happened in KVM; the access
    goes through."""
    vm, cpu = td()
    status, _ = run_map_gpa(cpu, tdx.shared_alias(GPA), PAGE_4K, lambda e: 0)   # "done", nothing done
    assert status == tdx.TDVMCALL_STATUS_SUCCESS
    for _ in range(3):
        out = cpu.access(tdx.shared_alias(GPA))
        assert out.reason == U.KVM_EXIT_MEMORY_FAULT and out.memory_fault.flags == 0
    vm, cpu = td(owner="guest")
    assert tdx.tdvmcall_map_gpa(cpu, tdx.shared_alias(GPA), PAGE_4K) == 0
    assert cpu.access(tdx.shared_alias(GPA)) is None


# ---------------------------------------------------------------- misuse
def test_calls_out_of_order_and_on_the_wrong_vcpu(make_kvm, td):
    vm, cpu = td()
    with pytest.raises(ValueError, match="waiting"):
        tdx.complete_map_gpa(cpu, 0)
    assert isinstance(tdx.tdvmcall_map_gpa(cpu, GPA, PAGE_4K), Exit)
    with pytest.raises(ValueError, match="still waiting"):
        tdx.tdvmcall_map_gpa(cpu, GPA, PAGE_4K)
    assert tdx.complete_map_gpa(cpu, 0) == 0
    other = make_kvm().create_vm(U.KVM_X86_SNP_VM).create_vcpu(0)
    with pytest.raises(ValueError, match="not a TD"):
        tdx.tdvmcall_map_gpa(other, GPA, PAGE_4K)
    vm.destroy()
    assert errno_of(tdx.tdvmcall_map_gpa, cpu, GPA, PAGE_4K) == errno.EIO
