"""The checks of kvm_vm_ioctl_set_mem_attributes, kvm_set_memory_region (virt/kvm/kvm_main.c),
kvm_gmem_bind and kvm_gmem_fallocate (virt/kvm/guest_memfd.c), one test per row, named after the row."""
import errno

import pytest

from tests.kvm.conformance.helpers import errno_of
from kit.kvm import uapi as U

PS, MiB, GPA, SLOT = 4096, 1 << 20, 0xC0000000, 10
P, GMEM = U.KVM_MEMORY_ATTRIBUTE_PRIVATE, U.KVM_MEM_GUEST_MEMFD
LOG, RO = U.KVM_MEM_LOG_DIRTY_PAGES, U.KVM_MEM_READONLY


@pytest.fixture(scope="module")
def kvm(make_kvm):
    return make_kvm()


# KVM_SET_MEMORY_ATTRIBUTES (kvm_vm_ioctl_set_mem_attributes), checks 1-4 plus the supported-attribute rule
ATTR_ROWS = {
    "1-flags-nonzero": (dict(address=0, size=PS, attributes=P, flags=1), errno.EINVAL),
    "2-unsupported-attribute": (dict(address=0, size=PS, attributes=1 << 4), errno.EINVAL),
    "3-size-zero": (dict(address=0, size=0, attributes=P), errno.EINVAL),
    "3-address-plus-size-wraps": (dict(address=(1 << 64) - PS, size=2 * PS, attributes=P), errno.EINVAL),
    "4-address-unaligned": (dict(address=1, size=PS, attributes=P), errno.EINVAL),
    "4-size-unaligned": (dict(address=0, size=PS + 1, attributes=P), errno.EINVAL),
    "valid-private": (dict(address=GPA, size=PS, attributes=P), 0),
    "valid-zero": (dict(address=GPA, size=PS, attributes=0), 0),
    "order-flags-before-alignment": (dict(address=1, size=1, attributes=P, flags=1), errno.EINVAL),
}


@pytest.mark.parametrize("row", ATTR_ROWS)
def test_set_memory_attributes_row(kvm, row):
    kw, want = ATTR_ROWS[row]
    vm = kvm.create_vm(U.KVM_X86_SW_PROTECTED_VM)
    assert errno_of(lambda: vm.set_memory_attributes(**kw)) == want


@pytest.mark.parametrize("vm_type,attrs,want", [
    (U.KVM_X86_DEFAULT_VM, P, errno.EINVAL), (U.KVM_X86_DEFAULT_VM, 0, 0),
    (U.KVM_X86_SEV_VM, P, errno.EINVAL), (U.KVM_X86_SNP_VM, P, 0), (U.KVM_X86_SW_PROTECTED_VM, P, 0)],
    ids=["default-private", "default-zero", "sev-private", "snp-private", "sw-protected-private"])
def test_supported_mem_attributes_by_vm_type(kvm, vm_type, attrs, want):
    vm = kvm.create_vm(vm_type)
    assert errno_of(lambda: vm.set_memory_attributes(0, PS, attrs)) == want


# kvm_set_memory_region, one row each (a SW_PROTECTED VM unless stated)
def _gmem_vm(kvm):
    vm = kvm.create_vm(U.KVM_X86_SW_PROTECTED_VM)
    return vm, vm.create_guest_memfd(8 * MiB)


SLOT_ROWS = {
    "v1-guest-memfd-flag": (lambda vm, f: vm.set_user_memory_region(SLOT, GMEM, GPA, 2 * MiB, 0), errno.EINVAL),
    "v1-unknown-flag": (lambda vm, f: vm.set_user_memory_region(SLOT, 1 << 6, GPA, 2 * MiB, 0), errno.EINVAL),
    "v2-unknown-flag": (lambda vm, f: vm.set_user_memory_region2(SLOT, 1 << 6, GPA, 2 * MiB, 0), errno.EINVAL),
    "slot-id-at-nr-memslots": (lambda vm, f: vm.set_user_memory_region2(U.KVM_USER_MEM_SLOTS, 0, GPA, 2 * MiB, 0), errno.EINVAL),
    "log-dirty-with-guest-memfd": (lambda vm, f: vm.set_user_memory_region2(SLOT, GMEM | LOG, GPA, 2 * MiB, 0, 0, f), errno.EINVAL),
    "readonly-with-guest-memfd": (lambda vm, f: vm.set_user_memory_region2(SLOT, GMEM | RO, GPA, 2 * MiB, 0, 0, f), errno.EINVAL),
    "memory-size-unaligned": (lambda vm, f: vm.set_user_memory_region2(SLOT, 0, GPA, PS + 1, 0), errno.EINVAL),
    "guest-phys-addr-unaligned": (lambda vm, f: vm.set_user_memory_region2(SLOT, 0, GPA + 1, PS, 0), errno.EINVAL),
    "userspace-addr-unaligned": (lambda vm, f: vm.set_user_memory_region2(SLOT, 0, GPA, PS, 1), errno.EINVAL),
    "userspace-addr-not-user": (lambda vm, f: vm.set_user_memory_region2(SLOT, 0, GPA, PS, 1 << 47), errno.EINVAL),
    "guest-memfd-offset-unaligned": (lambda vm, f: vm.set_user_memory_region2(SLOT, GMEM, GPA, PS, 0, 1, f), errno.EINVAL),
    "as-id-beyond-private-vm": (lambda vm, f: vm.set_user_memory_region2(1 << 16 | SLOT, 0, GPA, PS, 0), errno.EINVAL),
    "gpa-plus-size-wraps": (lambda vm, f: vm.set_user_memory_region2(SLOT, 0, (1 << 64) - PS, 2 * PS, 0), errno.EINVAL),
    "too-many-pages": (lambda vm, f: vm.set_user_memory_region2(SLOT, 0, 0, (U.KVM_MEM_MAX_NR_PAGES + 1) * PS, 0), errno.EINVAL),
    "delete-missing-slot": (lambda vm, f: vm.set_user_memory_region2(SLOT, 0, GPA, 0, 0), errno.EINVAL),
    "create-valid-guest-memfd-slot": (lambda vm, f: vm.set_user_memory_region2(SLOT, GMEM, GPA, 2 * MiB, 0, 0, f), 0),
    "create-valid-plain-slot": (lambda vm, f: vm.set_user_memory_region2(SLOT, 0, GPA, 2 * MiB, 0), 0),
}


@pytest.mark.parametrize("row", SLOT_ROWS)
def test_memslot_row(kvm, row):
    call, want = SLOT_ROWS[row]
    vm, f = _gmem_vm(kvm)
    assert errno_of(lambda: call(vm, f)) == want


# kvm_gmem_bind, one row each
BIND_ROWS = {
    "no-file-ebadf": (lambda kvm, vm, f: None, errno.EBADF),
    "closed-file-ebadf": (lambda kvm, vm, f: (f.close(), f)[1], errno.EBADF),
    "kvm-fd-einval": (lambda kvm, vm, f: kvm, errno.EINVAL),
    "vm-fd-einval": (lambda kvm, vm, f: vm, errno.EINVAL),
    "plain-memfd-einval": (lambda kvm, vm, f: object(), errno.EINVAL),
    "other-vms-guest-memfd-einval": (lambda kvm, vm, f: kvm.create_vm(U.KVM_X86_SW_PROTECTED_VM).create_guest_memfd(8 * MiB), errno.EINVAL),
}


@pytest.mark.parametrize("row", BIND_ROWS)
def test_gmem_bind_row(kvm, row):
    make, want = BIND_ROWS[row]
    vm, f = _gmem_vm(kvm)
    target = make(kvm, vm, f)
    assert errno_of(lambda: vm.set_user_memory_region2(SLOT, GMEM, GPA, 2 * MiB, 0, 0, target)) == want


@pytest.mark.parametrize("offset,size,want", [
    (0, 8 * MiB, 0), (PS, 8 * MiB, errno.EINVAL), (8 * MiB, PS, errno.EINVAL), (6 * MiB, 2 * MiB, 0)],
    ids=["whole-file", "offset-plus-size-past-i-size", "offset-at-i-size", "tail-of-file"])
def test_gmem_bind_offset_row(kvm, offset, size, want):
    vm, f = _gmem_vm(kvm)
    assert errno_of(lambda: vm.set_user_memory_region2(SLOT, GMEM, GPA, size, 0, offset, f)) == want


# kvm_gmem_fallocate, one row each
K, PH = U.FALLOC_FL_KEEP_SIZE, U.FALLOC_FL_PUNCH_HOLE
FALLOC_ROWS = {
    "keep-size-missing-eopnotsupp": ((PH, 0, PS), errno.EOPNOTSUPP),
    "unknown-mode-bit-eopnotsupp": ((K | 0x8, 0, PS), errno.EOPNOTSUPP),
    "offset-unaligned-einval": ((K, 1, PS), errno.EINVAL),
    "len-unaligned-einval": ((K, 0, PS + 1), errno.EINVAL),
    "allocate-past-i-size-einval": ((K, 4 * PS, PS), errno.EINVAL),
    "punch-past-eof-ok": ((K | PH, 4 * PS, PS), 0),
    "punch-inside-ok": ((K | PH, PS, PS), 0),
    "allocate-whole-ok": ((K, 0, 4 * PS), 0),
}


@pytest.mark.parametrize("row", FALLOC_ROWS)
def test_fallocate_row(kvm, row):
    args, want = FALLOC_ROWS[row]
    f = kvm.create_vm().create_guest_memfd(4 * PS)
    assert errno_of(lambda: f.fallocate(*args)) == want


def test_set_memory_attributes_reserve_failure_is_enomem_and_changes_nothing(kvm):
    vm = kvm.create_vm(U.KVM_X86_SW_PROTECTED_VM)
    f = vm.create_guest_memfd(2 * MiB)
    vm.set_user_memory_region2(SLOT, GMEM, GPA, 2 * MiB, 0, 0, f)
    vm.set_memory_attributes(GPA, PS, P)
    zaps = list(vm.zaps)
    vm.xa_reserve_fails = True
    assert errno_of(lambda: vm.set_memory_attributes(GPA, 2 * MiB, P)) == errno.ENOMEM
    assert vm.zaps == zaps and vm.memory_attributes((GPA >> 12) + 1) == 0
    assert errno_of(lambda: vm.set_memory_attributes(GPA, PS, P)) == 0     # no-op comes first
