"""kit.kvm.probe: the model's answers by name, as notebooks show them (ioctl results, exits,
hypercall returns), the conversion outcome matrix and ASID states."""
import pytest

from kit import PAGE_4K, Host, Kvm
from kit.kvm import probe
from kit.kvm import uapi as U
from kit.kvm.mmu import KVM_MAP_GPA_RANGE_ENCRYPTED

GPA = probe.CONVERSION_GPA


def test_ioctl_names_the_errno_or_says_0():
    vm = Kvm(Host(mem="2GiB", cores=4)).create_vm(U.KVM_X86_SW_PROTECTED_VM)
    assert probe.ioctl(vm.create_guest_memfd, 4095) == "EINVAL"
    assert probe.ioctl(vm.set_memory_attributes, 0, PAGE_4K, U.KVM_MEMORY_ATTRIBUTE_PRIVATE, flags=1) == "EINVAL"
    assert probe.ioctl(vm.set_memory_attributes, 0, PAGE_4K, U.KVM_MEMORY_ATTRIBUTE_PRIVATE) == "0"


def test_exit_info_in_both_forms():
    vm, cpu, vmm = probe.conversion_vm()
    mf = cpu.access(GPA, private=True)                       # attribute shared: KVM_EXIT_MEMORY_FAULT
    assert probe.exit_info(mf) == {"reason": "KVM_EXIT_MEMORY_FAULT", "KVM_RUN": "-1/EFAULT", "gpa": hex(GPA),
                                   "size": 4096, "flags": "PRIVATE"}
    assert probe.exit_info(mf, plain=True) == {"reason": "KVM_EXIT_MEMORY_FAULT", "errno": "EFAULT", "gpa": hex(GPA),
                                               "size": 4096, "private": True}
    hc = cpu.hypercall(U.KVM_HC_MAP_GPA_RANGE, GPA, 2, KVM_MAP_GPA_RANGE_ENCRYPTED)
    assert probe.exit_info(hc) == {"reason": "KVM_EXIT_HYPERCALL", "KVM_RUN": "0", "nr": U.KVM_HC_MAP_GPA_RANGE,
                                   "args": [hex(GPA), "0x2", hex(KVM_MAP_GPA_RANGE_ENCRYPTED)]}
    assert probe.exit_info(cpu.access(1 << 40, private=False)) == {"reason": "KVM_EXIT_MMIO", "KVM_RUN": "0"}
    assert probe.exit_info(None) is None
    assert probe.exit_info(-U.KVM_EPERM) == "-KVM_EPERM" and probe.hypercall_return(0) == "0"
    assert probe.hypercall_return(-7) == -7                  # no name: the number


def test_outcome_matrix_of_owner_npf_backing_and_guest():
    rows = probe.outcome_matrix(pages=1, max_exits=3)
    assert len(rows) == 16
    out = {(r["owner"], r["npf_policy"], r["backing"], r["guest"]): r for r in rows}
    assert out[("userspace", "exit", "guest_memfd", "just touches")]["outcome"] == "completed"
    assert out[("userspace", "exit", "anonymous", "asks first")]["outcome"] == "completed (shared)"
    assert out[("guest", "exit", "guest_memfd", "just touches")]["outcome"] == "EPERM"
    stuck = out[("guest", "exit", "anonymous", "just touches")]
    assert stuck["outcome"] == "stuck (EFAULT)" and stuck["exits"] == 3
    assert out[("userspace", "auto-convert", "guest_memfd", "just touches")]["kvm_conversions"] == 1
    with pytest.raises(ValueError, match="guest: unknown"):
        probe.conversion_outcome(guest="waits")


def test_asid_states():
    kvm = probe.asid_kvm(3, 5, cores=4)
    a = kvm.create_vm(U.KVM_X86_SEV_VM)
    a.sev_init()
    b = kvm.create_vm(U.KVM_X86_SNP_VM)
    b.sev_init()
    c = kvm.create_vm(U.KVM_X86_SEV_VM)
    c.sev_init()
    c.destroy()
    kvm.snp_decommission_fails = True
    b.destroy()
    assert probe.asid_states(kvm) == {1: "leaked", 2: "free", 3: "in use", 4: "to reclaim", 5: "free"}
    assert list(probe.asid_states(kvm, 2)) == [1, 2]
