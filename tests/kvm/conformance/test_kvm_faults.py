"""The fault path and hypercall exits (arch/x86/kvm/mmu/mmu.c, arch/x86/kvm/x86.c;
private_mem_kvm_exits_test.c, private_mem_conversions_test.c), and the QEMU-style VMM."""
import errno

import pytest

from kit.errors import KvmError
from kit.kvm import uapi as U
from kit.kvm.mmu import KVM_MAP_GPA_RANGE_ENCRYPTED, MAP_PRIVATE
from kit.kvm.vmm import Vmm
from kit.units import PAGE_2M, PAGE_4K

GPA, SLOT, MiB = 0xC0000000, 10, 1 << 20
P = U.KVM_MEMORY_ATTRIBUTE_PRIVATE


@pytest.fixture
def sw_vm(make_kvm):
    def build(gmem_slot=True, size=2 * MiB):
        vm = make_kvm().create_vm(U.KVM_X86_SW_PROTECTED_VM)
        f = vm.create_guest_memfd(size)
        if gmem_slot:
            vm.set_user_memory_region2(SLOT, U.KVM_MEM_GUEST_MEMFD, GPA, size, 0, 0, f)
        return vm, f, vm.create_vcpu(0)
    return build


def test_private_access_after_slot_deletion_is_memory_fault(sw_vm):
    vm, f, cpu = sw_vm()
    vm.set_memory_attributes(GPA, PAGE_4K, P)
    assert cpu.access(GPA + 8, write=False) is None
    vm.set_user_memory_region2(SLOT, 0, GPA, 0, 0)
    ex = cpu.access(GPA + 8, write=False)
    assert ex.reason == U.KVM_EXIT_MEMORY_FAULT and ex.errno == errno.EFAULT
    assert (ex.memory_fault.gpa, ex.memory_fault.size, ex.memory_fault.flags) == (GPA, 4096, U.KVM_MEMORY_EXIT_FLAG_PRIVATE)


def test_private_attribute_on_a_non_gmem_slot_is_memory_fault(make_kvm):
    vm = make_kvm().create_vm(U.KVM_X86_SW_PROTECTED_VM)
    vm.set_user_memory_region2(SLOT, 0, GPA, PAGE_4K, 0x10000000)
    vm.set_memory_attributes(GPA, PAGE_4K, P)
    ex = vm.create_vcpu(0).access(GPA)
    assert ex.reason == U.KVM_EXIT_MEMORY_FAULT and ex.memory_fault.flags == U.KVM_MEMORY_EXIT_FLAG_PRIVATE


def test_mismatch_exit_reports_the_access_kind_and_closed_gmem_faults(sw_vm):
    vm, f, cpu = sw_vm()
    ex = cpu.access(GPA + 0x1234, private=True)                 # attribute says shared
    assert ex.memory_fault.gpa == GPA + 0x1000 and ex.memory_fault.flags == U.KVM_MEMORY_EXIT_FLAG_PRIVATE
    vm.set_memory_attributes(GPA, PAGE_4K, P)
    assert cpu.access(GPA, private=False).memory_fault.flags == 0
    f.close()
    assert cpu.access(GPA).reason == U.KVM_EXIT_MEMORY_FAULT
    assert cpu.access(0x1000, private=False).reason == U.KVM_EXIT_MMIO      # shared, no slot


def test_mapping_levels_and_zap_of_the_old_kind(sw_vm):
    vm, f, cpu = sw_vm()
    assert cpu.access(GPA) is None and vm.faults_in[-1] == (GPA >> 12, PAGE_2M, False)
    vm.set_memory_attributes(GPA + PAGE_4K, PAGE_4K, P)        # mixed 2M -> 4K shared mappings
    assert vm.sptes.get(GPA >> 12) == 0                        # the 2M shared mapping was zapped
    assert cpu.access(GPA) is None and vm.faults_in[-1][1] == PAGE_4K
    assert cpu.access(GPA + PAGE_4K) is None and vm.faults_in[-1] == ((GPA >> 12) + 1, PAGE_4K, True)
    assert f.allocated_pages() == 1 and vm.sptes.get((GPA >> 12) + 1) == MAP_PRIVATE


def test_map_gpa_range_hypercall_rules(sw_vm):
    vm, f, cpu = sw_vm()
    assert cpu.hypercall(U.KVM_HC_MAP_GPA_RANGE, GPA, 1, 0) == -U.KVM_ENOSYS
    with pytest.raises(KvmError) as ei:
        vm.enable_cap(U.KVM_CAP_EXIT_HYPERCALL, 1 << 13)
    assert ei.value.errno == errno.EINVAL
    vm.enable_cap(U.KVM_CAP_EXIT_HYPERCALL, 1 << U.KVM_HC_MAP_GPA_RANGE)
    assert cpu.hypercall(U.KVM_HC_MAP_GPA_RANGE, GPA, 1, 0, cpl=3) == -U.KVM_EPERM
    assert cpu.hypercall(U.KVM_HC_MAP_GPA_RANGE, GPA + 1, 1, 0) == -U.KVM_EINVAL
    assert cpu.hypercall(U.KVM_HC_MAP_GPA_RANGE, GPA, 0, 0) == -U.KVM_EINVAL
    ex = cpu.hypercall(U.KVM_HC_MAP_GPA_RANGE, GPA, 512, 0xFFFF)     # attrs not validated
    assert ex.reason == U.KVM_EXIT_HYPERCALL and ex.hypercall.args == (GPA, 512, 0xFFFF)
    assert ex.hypercall.flags == U.KVM_EXIT_HYPERCALL_LONG_MODE


@pytest.mark.parametrize("off,size", [(0, PAGE_4K), (0, PAGE_2M), (PAGE_4K, PAGE_4K),
                                      (PAGE_4K, PAGE_2M), (PAGE_2M, PAGE_4K)])
def test_conversions_round_trip(off, size, sw_vm):
    """private_mem_conversions_test.c ranges: shared -> private -> shared through the VMM."""
    vm, f, cpu = sw_vm(size=2 * PAGE_2M + PAGE_4K)
    vm.enable_cap(U.KVM_CAP_EXIT_HYPERCALL, 1 << U.KVM_HC_MAP_GPA_RANGE)
    vmm = Vmm(vm)
    gpa = GPA + off
    assert cpu.access(gpa) is None                                     # initially shared
    vmm.handle(cpu.hypercall(U.KVM_HC_MAP_GPA_RANGE, gpa, size >> 12, KVM_MAP_GPA_RANGE_ENCRYPTED))
    assert vm.memory_attributes(gpa >> 12) == P and vm.memory_attributes((gpa + size) >> 12) == 0
    assert cpu.access(gpa) is None and f.allocated_pages() == size >> 12
    vmm.handle(cpu.hypercall(U.KVM_HC_MAP_GPA_RANGE, gpa, size >> 12, 0))
    assert vm.memory_attributes(gpa >> 12) == 0 and f.allocated_pages() == 0
    assert cpu.access(gpa) is None


def test_implicit_conversion_costs_an_exit_and_an_ioctl(sw_vm):
    vm, f, cpu = sw_vm()
    vmm = Vmm(vm)
    exits = vmm.access(cpu, GPA, private=True)
    assert [e.reason for e in exits] == [U.KVM_EXIT_MEMORY_FAULT] and vmm.ioctls == 1
    assert vm.memory_attributes(GPA >> 12) == P


def test_guest_driven_conversion_gets_stuck_without_a_private_capable_slot(make_kvm):
    """Guest-owned attributes (the pKVM proposal, thread "[RFC PATCH v12 11/33] KVM: Introduce
    per-page memory attributes"): no memslot can back private memory -> the access never completes."""
    vm = make_kvm().create_vm(U.KVM_X86_SW_PROTECTED_VM)
    vm.set_user_memory_region2(SLOT, 0, GPA, PAGE_2M, 0x10000000)
    vmm = Vmm(vm)
    with pytest.raises(KvmError, match="stuck"):
        vmm.access(vm.create_vcpu(0), GPA, private=True)
