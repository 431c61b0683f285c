"""The model calls the explorer splits into steps give what the whole call gives: rmpupdate() as
Host.rmpupdate_pre / rmpupdate_insn / rmpupdate_post, KVM_CREATE_VCPU as VM.vcpu_precreate /
vcpu_arch_create / vcpu_install, the mirror ioctls as checks and changes (kit.kvm.sev)."""
from __future__ import annotations

import errno

import pytest

from kit.errors import KvmError
from kit.host import Host
from kit.kvm import Kvm
from kit.kvm import sev as kvm_sev
from kit.kvm import uapi as U
from kit.units import PAGE_4K, PAGES_PER_2M

P = 3 * PAGES_PER_2M + 5


def state(h: Host):
    e = h.rmp.rmpread(P)
    return (e, h.directmap.level(P), h.directmap.present(P), h.directmap.counts(), dict(h.ledger.totals))


@pytest.mark.parametrize("policy", ["none", "split-on-demand", "invalidate-4k", "invalidate-4k-flush",
                                    "split-on-demand-collapse"])
def test_the_three_steps_of_rmpupdate_give_the_whole_call(policy):
    whole, steps = Host("64MiB", 2, policy), Host("64MiB", 2, policy)
    assert whole.rmp_make_private(P, 0x5000, PAGE_4K, 3, False) == 0
    assert steps.rmpupdate_pre(P, PAGE_4K, assigned=True) == 0
    assert steps.rmpupdate_insn(P, PAGE_4K, assigned=True, asid=3, gpa=0x5000) == 0
    steps.rmpupdate_post(P, PAGE_4K, assigned=True)
    assert state(whole) == state(steps)
    assert whole.rmp_make_shared(P, PAGE_4K) == 0
    assert steps.rmpupdate_pre(P, PAGE_4K, assigned=False) == 0
    assert steps.rmpupdate_insn(P, PAGE_4K, assigned=False) == 0
    steps.rmpupdate_post(P, PAGE_4K, assigned=False)
    assert state(whole) == state(steps)


def test_a_failing_instruction_after_the_direct_map_step_keeps_that_step():
    h = Host("64MiB", 2, "invalidate-4k")
    h.rmp.firmware_set(P, immutable=True)
    assert h.rmpupdate_pre(P, PAGE_4K, assigned=True) == 0
    assert not h.directmap.present(P)                    # the kernel's adjust_direct_map ran
    assert h.rmpupdate_insn(P, PAGE_4K, assigned=True, asid=3, gpa=0x5000) == -errno.EFAULT
    assert not h.rmp.rmpread(P).assigned and h.dmesg[-1].startswith("SEV-SNP: RMPUPDATE failed")
    assert Host("64MiB", 2, snp=False).rmpupdate_pre(P, PAGE_4K, assigned=True) == -errno.ENODEV


def test_create_vcpu_in_three_parts():
    kvm = Kvm(Host("64MiB", 2))
    vm = kvm.create_vm(U.KVM_X86_SEV_VM)
    assert vm.vcpu_precreate() == 1 and vm.created_vcpus == 1 and not vm.vcpus
    vcpu = vm.vcpu_arch_create(0)
    assert vm.vcpu_install(vcpu) is vcpu and vm.vcpus == {0: vcpu}
    vm.vcpu_precreate()
    with pytest.raises(KvmError) as e:
        vm.vcpu_install(vm.vcpu_arch_create(0))
    assert e.value.errno == errno.EEXIST and vm.created_vcpus == 1 and vm.vcpus == {0: vcpu}
    with pytest.raises(KvmError):
        vm.create_vcpu(0)
    assert vm.created_vcpus == 1                          # the whole ioctl checks first: nothing changed
    vm.create_vcpu(1)
    assert vm.created_vcpus == 2


def test_a_vcpu_counted_before_it_exists_blocks_a_mirror():
    kvm = Kvm(Host("64MiB", 2))
    src, dst = kvm.create_vm(U.KVM_X86_SEV_VM), kvm.create_vm(U.KVM_X86_SEV_VM)
    src.sev_init()
    dst.vcpu_precreate()                                   # created_vcpus++ done, vCPU not installed yet
    with pytest.raises(KvmError) as e:
        dst.enable_cap(U.KVM_CAP_VM_COPY_ENC_CONTEXT_FROM, src)
    assert e.value.errno == errno.EINVAL and dst.mirror_of is None


def test_copy_and_move_as_checks_and_changes():
    kvm = Kvm(Host("64MiB", 2))
    a, b, c = (kvm.create_vm(U.KVM_X86_SEV_VM) for _ in range(3))
    a.sev_init()
    kvm_sev.copy_enc_context_check(b, a)
    kvm_sev.copy_enc_context_set(b, a)
    assert b.mirror_of is a and b.asid == a.asid and a.mirrors == [b]
    with pytest.raises(KvmError):
        kvm_sev.copy_enc_context_check(c, b)               # the source is a mirror
    kvm_sev.copy_enc_context_set(c, b)                     # the change does not check: the 2021 ordering's risk
    assert c.mirror_of is b and b.mirror_of is a
    d = kvm.create_vm(U.KVM_X86_SEV_VM)
    kvm_sev.move_enc_context_check(d, a)
    kvm_sev.move_enc_context_set(d, a)
    assert a.dead and d.sev_active and b.mirror_of is d
