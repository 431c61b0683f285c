"""Fixtures for the guest's tests: an SNP VM with one guest_memfd slot of guest RAM, launched,
with the hypercall exit enabled (what QEMU sets up), and a Guest on it."""
import pytest

from kit.guest import Guest
from kit.kvm import snp
from kit.kvm import uapi as U
from kit.kvm.vmm import Vmm
from kit.units import GiB, MiB

RAM_GPA = 4 * GiB
UADDR = 1 << 44


def snp_vm(kvm, *, mem=64 * MiB, npf_policy="exit", attribute_owner="userspace", vcpus=1,
           hypercall_exit=True):
    vm = kvm.create_vm(U.KVM_X86_SNP_VM, npf_policy=npf_policy, attribute_owner=attribute_owner)
    vm.sev_init()
    f = vm.create_guest_memfd(mem)
    vm.set_user_memory_region2(0, U.KVM_MEM_GUEST_MEMFD, RAM_GPA, mem, UADDR, 0, f)
    if hypercall_exit:
        vm.enable_cap(U.KVM_CAP_EXIT_HYPERCALL, 1 << U.KVM_HC_MAP_GPA_RANGE)
    for i in range(vcpus):
        vm.create_vcpu(i)
    snp.snp_launch_finish(vm)
    return vm


@pytest.fixture
def make_guest(make_kvm):
    """``make_guest(behaviour=None, vmm=None, hugepages=True, **snp_vm_kwargs)`` -> Guest on a
    fresh host (2 GiB, 4 cores) and SNP VM."""
    def make(behaviour=None, vmm=None, *, hugepages=True, fallocate=False, **kw):
        kvm = make_kvm(gmem_hugepages=hugepages)
        vm = snp_vm(kvm, **kw)
        return Guest(vm, vcpus=len(vm.vcpus), behaviour=behaviour,
                     vmm=vmm(vm) if callable(vmm) else Vmm(vm, fallocate=fallocate))
    return make
