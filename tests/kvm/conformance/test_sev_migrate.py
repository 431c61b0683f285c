"""Moving a mirror keeps it a mirror (arch/x86/kvm/svm/sev.c ``sev_migrate_from``: a source that
is itself a mirror leaves its owner's ``mirror_vms`` and the destination joins it) and ASIDs
are freed only by the VM that owns them (``sev_vm_destroy``). Scenarios of the selftest
tools/testing/selftests/kvm/x86/sev_migrate_tests.c (``test_sev_move_copy``,
``test_sev_migrate_from``); its VMs are ``vm_create_barebones`` VMs, here SEV-type VMs for
the owner and its destinations (a move needs equal types) and default VMs for the mirrors."""
import errno

import pytest

from tests.kvm.conformance.helpers import errno_of
from kit.kvm import uapi as U

COPY, MOVE = U.KVM_CAP_VM_COPY_ENC_CONTEXT_FROM, U.KVM_CAP_VM_MOVE_ENC_CONTEXT_FROM
NR_VCPUS = 4                     # NR_MIGRATE_TEST_VCPUS


@pytest.fixture
def k(make_kvm):
    return make_kvm("2GiB", 8, min_sev_asid=4, max_sev_asid=6)


def sev_vm(k):
    """``sev_vm_create(es=false)``: an SEV VM with its ASID and vCPUs."""
    vm = k.create_vm(U.KVM_X86_SEV_VM)
    vm.sev_init()
    for i in range(NR_VCPUS):
        vm.create_vcpu(i)
    return vm


def aux_vm(k, with_vcpus, type=U.KVM_X86_SEV_VM):
    """``aux_vm_create``: a VM without SEV, with or without vCPUs."""
    vm = k.create_vm(type)
    if with_vcpus:
        for i in range(NR_VCPUS):
            vm.create_vcpu(i)
    return vm


def in_use(k):
    """ASIDs handed out or waiting for reclaim."""
    return k.asids.used | k.asids.reclaim


def test_a_moved_mirror_is_a_mirror_of_the_same_owner(k):
    owner = sev_vm(k)
    mirror = aux_vm(k, False, U.KVM_X86_DEFAULT_VM)
    mirror.enable_cap(COPY, owner)
    dst = aux_vm(k, False, U.KVM_X86_DEFAULT_VM)
    assert dst.enable_cap(MOVE, mirror) == 0
    assert dst.mirror_of is owner and dst.asid == owner.asid and dst.sev_active
    assert owner.mirrors == [dst]                            # the old entry is gone
    assert mirror.dead and not mirror.sev_active and mirror.mirror_of is None
    assert errno_of(mirror.check_extension, U.KVM_CAP_VM_TYPES) == errno.EIO
    assert errno_of(mirror.enable_cap, COPY, owner) == errno.EIO
    # still a mirror: no regions of its own, only the four mirror commands
    assert errno_of(dst.memory_encrypt_reg_region, 0x1000, 0x1000) == errno.EINVAL
    assert errno_of(dst.x86_ops.mem_enc_ioctl, dst, U.KVM_SEV_LAUNCH_START) == errno.EINVAL
    assert dst.x86_ops.mem_enc_ioctl(dst, U.KVM_SEV_GUEST_STATUS) == 0
    # nor can it be mirrored
    assert errno_of(aux_vm(k, False, U.KVM_X86_DEFAULT_VM).enable_cap, COPY, dst) == errno.EINVAL


def test_destroying_a_moved_mirror_does_not_free_the_owners_asid(k):
    owner = sev_vm(k)
    mirror = aux_vm(k, False, U.KVM_X86_DEFAULT_VM)
    mirror.enable_cap(COPY, owner)
    dst = aux_vm(k, False, U.KVM_X86_DEFAULT_VM)
    dst.enable_cap(MOVE, mirror)
    mirror.destroy()
    dst.destroy()
    assert owner.asid in k.asids.used and owner.asid not in k.asids.reclaim
    assert owner.mirrors == []
    # the SEV range [4, 6] fills up and recycles: the owner's ASID is never handed out
    others = [sev_vm(k) for _ in range(2)]
    assert owner.asid not in {v.asid for v in others}
    assert errno_of(aux_vm(k, False).sev_init) == errno.EBUSY
    owner.destroy()
    assert owner.asid in k.asids.reclaim
    assert sev_vm(k).asid == owner.asid                    # now, after a recycle


def test_sev_move_copy(k):
    """``test_sev_move_copy``: moves of the owner and of its mirror, interleaved and chained,
    then every VM freed (owners first); then the same with the mirrors freed first."""
    sev = sev_vm(k)
    dst, dst2, dst3 = (aux_vm(k, True) for _ in range(3))
    mirror, dst_mirror, dst2_mirror, dst3_mirror = (aux_vm(k, False, U.KVM_X86_DEFAULT_VM) for _ in range(4))
    asid = sev.asid
    assert mirror.enable_cap(COPY, sev) == 0
    assert dst_mirror.enable_cap(MOVE, mirror) == 0
    assert dst.enable_cap(MOVE, sev) == 0
    assert dst2.enable_cap(MOVE, dst) == 0
    assert dst2_mirror.enable_cap(MOVE, dst_mirror) == 0
    assert dst3_mirror.enable_cap(MOVE, dst2_mirror) == 0
    assert dst3.enable_cap(MOVE, dst2) == 0
    assert dst3.mirrors == [dst3_mirror] and dst3_mirror.mirror_of is dst3
    assert dst3.asid == dst3_mirror.asid == asid and not dst3.mirror_of
    assert [v.dead for v in (sev, dst, dst2, mirror, dst_mirror, dst2_mirror)] == [True] * 6
    for vm in (dst, sev, dst2, dst3):
        vm.destroy()
    assert asid in k.asids.used                          # dst3_mirror holds dst3
    for vm in (mirror, dst_mirror, dst2_mirror):
        vm.destroy()
    assert asid in k.asids.used
    dst3_mirror.destroy()
    assert asid in k.asids.reclaim and asid not in k.asids.used

    # "destroy mirrors before mirrored VMs to ensure destruction is done safely"
    sev = sev_vm(k)
    dst = aux_vm(k, True)
    mirror, dst_mirror = (aux_vm(k, False, U.KVM_X86_DEFAULT_VM) for _ in range(2))
    asid = sev.asid
    mirror.enable_cap(COPY, sev)
    dst_mirror.enable_cap(MOVE, mirror)
    dst.enable_cap(MOVE, sev)
    assert dst.mirrors == [dst_mirror] and dst_mirror.mirror_of is dst
    mirror.destroy()
    dst_mirror.destroy()
    assert dst.mirrors == [] and asid in k.asids.used
    dst.destroy()
    sev.destroy()
    assert asid in k.asids.reclaim and not in_use(k) - {asid} - k.asids.reclaim


def test_sev_migrate_from_chain_and_back_into_the_dead_source(k):
    """``test_sev_migrate_from``: a chain of moves; moving back into the first (dead) source
    fails with EIO."""
    src = sev_vm(k)
    dsts = [aux_vm(k, True) for _ in range(3)]
    dsts[0].enable_cap(MOVE, src)
    for a, b in zip(dsts, dsts[1:]):
        assert b.enable_cap(MOVE, a) == 0
    assert errno_of(src.enable_cap, MOVE, dsts[-1]) == errno.EIO
    assert dsts[-1].sev_active and dsts[-1].asid in k.asids.used


def test_moving_an_owner_moves_its_mirrors(k):
    owner = sev_vm(k)
    m1, m2 = (aux_vm(k, False, U.KVM_X86_DEFAULT_VM) for _ in range(2))
    m1.enable_cap(COPY, owner)
    m2.enable_cap(COPY, owner)
    owner.memory_encrypt_reg_region(0x1000, 0x2000)
    dst = aux_vm(k, True)
    dst.enable_cap(MOVE, owner)
    assert dst.mirrors == [m1, m2] and m1.mirror_of is m2.mirror_of is dst
    assert dst.enc_regions == [(0x1000, 0x2000)] and owner.enc_regions == []
    assert owner.mirrors == [] and not owner.sev_active
