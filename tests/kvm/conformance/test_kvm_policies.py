"""What KVM does on an implicit conversion (thread "[PATCH Part2 RFC v4 37/40] KVM: SVM: Add
support to handle the RMP nested page fault", 2021) and who owns attributes (thread "[RFC PATCH
v12 11/33] KVM: Introduce per-page memory attributes", 2023)."""
import errno

import pytest

from kit.errors import KvmError
from kit.kvm import uapi as U
from kit.kvm.mmu import KVM_MAP_GPA_RANGE_ENCRYPTED
from kit.kvm.vmm import Vmm

GPA, MiB = 0xC0000000, 1 << 20
P = U.KVM_MEMORY_ATTRIBUTE_PRIVATE
HC = U.KVM_HC_MAP_GPA_RANGE


@pytest.fixture
def vm_with(make_kvm):
    def build(gmem=True, **kw):
        vm = make_kvm().create_vm(U.KVM_X86_SW_PROTECTED_VM, **kw)
        if gmem:
            f = vm.create_guest_memfd(2 * MiB)
            vm.set_user_memory_region2(1, U.KVM_MEM_GUEST_MEMFD, GPA, 2 * MiB, 0, 0, f)
        else:
            vm.set_user_memory_region2(1, 0, GPA, 2 * MiB, 0x10000000)
        if kw.get("attribute_owner") != "guest":
            vm.enable_cap(U.KVM_CAP_EXIT_HYPERCALL, 1 << HC)
        return vm, vm.create_vcpu(0)
    return build


def test_npf_exit_policy_goes_to_userspace(vm_with):
    vm, cpu = vm_with()
    assert cpu.access(GPA, private=True).reason == U.KVM_EXIT_MEMORY_FAULT
    assert vm.memory_attributes(GPA >> 12) == 0


def test_npf_auto_convert_converts_in_kvm_without_an_exit(vm_with):
    vm, cpu = vm_with(npf_policy="auto-convert")
    assert cpu.access(GPA, private=True) is None
    assert vm.memory_attributes(GPA >> 12) == P and vm.kvm_conversions == [(GPA >> 12, (GPA >> 12) + 1, P)]
    # it cannot make memory private that no guest_memfd backs: still an exit
    vm2, cpu2 = vm_with(gmem=False, npf_policy="auto-convert")
    assert cpu2.access(GPA, private=True).reason == U.KVM_EXIT_MEMORY_FAULT


def test_userspace_owner_can_refuse_so_the_guest_is_not_stuck(vm_with):
    vm, cpu = vm_with(gmem=False)
    ex = cpu.hypercall(HC, GPA, 1, KVM_MAP_GPA_RANGE_ENCRYPTED)
    assert Vmm(vm).handle(ex) == -U.KVM_EINVAL          # the guest's hypercall fails cleanly
    assert vm.memory_attributes(GPA >> 12) == 0 and cpu.access(GPA) is None


def test_guest_owner_converts_in_the_hypercall_and_gets_stuck(vm_with):
    vm, cpu = vm_with(gmem=False, attribute_owner="guest")
    assert cpu.hypercall(HC, GPA, 1, KVM_MAP_GPA_RANGE_ENCRYPTED) == 0   # no exit: KVM decided
    assert vm.memory_attributes(GPA >> 12) == P
    with pytest.raises(KvmError) as ei:                    # userspace may not change it back
        vm.set_memory_attributes(GPA, 4096, 0)
    assert ei.value.errno == errno.EPERM
    with pytest.raises(KvmError, match="stuck|attributes are owned"):
        Vmm(vm).access(cpu, GPA)                           # private access, no slot can back it


def test_guest_owner_with_gmem_saves_the_ioctl(vm_with):
    vm, cpu = vm_with(attribute_owner="guest")
    assert cpu.hypercall(HC, GPA, 4, KVM_MAP_GPA_RANGE_ENCRYPTED) == 0
    assert cpu.access(GPA) is None                         # private, no exit, no ioctl
    vm_u, cpu_u = vm_with()
    vmm = Vmm(vm_u)
    vmm.handle(cpu_u.hypercall(HC, GPA, 4, KVM_MAP_GPA_RANGE_ENCRYPTED))
    assert vmm.ioctls == 1 and cpu_u.access(GPA) is None


def test_bad_options(make_kvm):
    k = make_kvm()
    with pytest.raises(ValueError, match="attribute_owner"):
        k.create_vm(U.KVM_X86_SW_PROTECTED_VM, attribute_owner="pkvm")
    with pytest.raises(ValueError, match="npf_policy"):
        k.create_vm(U.KVM_X86_SW_PROTECTED_VM, npf_policy="convert")
