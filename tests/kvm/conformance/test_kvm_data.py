"""The data checks of the selftests (tools/testing/selftests/kvm): who sees which bytes
(guest_memfd_test.c, private_mem_conversions_test.c), plus fstat, madvise and mbind on a
guest_memfd mapping."""
import errno

import pytest

from kit.errors import KvmError, SigBus
from kit.kvm import uapi as U
from kit.kvm import vm as V
from kit.kvm.mmu import KVM_MAP_GPA_RANGE_ENCRYPTED
from kit.kvm.vmm import Vmm
from kit.units import PAGE_2M, PAGE_4K

from .helpers import errno_of

PS = PAGE_4K
MMAP, INIT_SHARED = U.GUEST_MEMFD_FLAG_MMAP, U.GUEST_MEMFD_FLAG_INIT_SHARED
P = U.KVM_MEMORY_ATTRIBUTE_PRIVATE


def default_gmem(kvm, npages=4, flags=MMAP | INIT_SHARED):
    f = kvm.create_vm().create_guest_memfd(npages * PS, flags)
    f.mmap(npages * PS)
    return f


# ----------------------------------------------------------------- guest_memfd_test.c
def test_mmap_init_shared_write_read_punch_page0_reads_zero_rest_kept_rewrite_ok(kvm):
    f = default_gmem(kvm)
    f.user_fill(0, 4 * PS, 0xAA)
    assert f.user_read(0, 4 * PS) == b"\xaa" * (4 * PS)
    f.fallocate(U.FALLOC_FL_KEEP_SIZE | U.FALLOC_FL_PUNCH_HOLE, 0, PS)
    assert f.user_read(0, PS) == bytes(PS)
    assert f.user_read(PS, 3 * PS) == b"\xaa" * (3 * PS)
    f.user_fill(0, PS, 0x55)
    assert f.user_read(0, PS) == b"\x55" * PS and f.user_read(PS - 1, 2) == b"\x55\xaa"


def test_map_4x_the_file_size_access_at_or_beyond_i_size_is_sigbus(kvm):
    f = kvm.create_vm().create_guest_memfd(4 * PS, MMAP | INIT_SHARED)
    f.mmap(16 * PS)
    f.user_fill(3 * PS, PS, 1)
    for off in (4 * PS, 4 * PS + 1, 15 * PS):
        with pytest.raises(SigBus):
            f.user_read(off, 1)
    with pytest.raises(SigBus):                     # a fill straddling i_size writes nothing
        f.user_fill(3 * PS, 2 * PS, 2)
    assert f.user_read(3 * PS, PS) == b"\x01" * PS


def test_mmap_without_init_shared_any_access_is_sigbus(kvm):
    f = kvm.create_vm(U.KVM_X86_SW_PROTECTED_VM).create_guest_memfd(4 * PS, MMAP)
    f.mmap(4 * PS)
    with pytest.raises(SigBus):
        f.user_read(0, 1)
    with pytest.raises(SigBus):
        f.user_fill(0, PS, 1)


def test_two_fds_fstat_sizes_match_and_inodes_differ(kvm):
    vm = kvm.create_vm()
    a, b = vm.create_guest_memfd(PS), vm.create_guest_memfd(2 * PS)
    assert (a.fstat().st_size, b.fstat().st_size) == (PS, 2 * PS)
    assert a.fstat().st_ino != b.fstat().st_ino


def test_fstat_size_is_total_and_blksize_is_page_size(kvm):
    st = kvm.create_vm().create_guest_memfd(4 * PS).fstat()
    assert st.st_size == 4 * PS and st.st_blksize == PS


def test_fstat_on_a_closed_file_is_ebadf(kvm):
    f = kvm.create_vm().create_guest_memfd(PS)
    f.close()
    assert errno_of(f.fstat) == errno.EBADF


def test_pmd_sized_map_madv_hugepage_ok_collapse_einval_dontneed_reread_ok(kvm):
    f = kvm.create_vm().create_guest_memfd(PAGE_2M, MMAP | INIT_SHARED)
    f.mmap(PAGE_2M)
    f.user_fill(0, PAGE_2M, 0x3C)
    assert f.madvise(0, PAGE_2M, V.MADV_HUGEPAGE) == 0
    assert errno_of(f.madvise, 0, PAGE_2M, V.MADV_COLLAPSE) == errno.EINVAL
    assert f.madvise(0, PAGE_2M, V.MADV_DONTNEED) == 0
    assert f.user_read(0, PAGE_2M) == b"\x3c" * PAGE_2M          # the file kept its data


def test_madvise_bad_advice_or_alignment_einval_outside_mapping_enomem(kvm):
    f = default_gmem(kvm)
    assert errno_of(f.madvise, 0, PS, 999) == errno.EINVAL
    assert errno_of(f.madvise, 1, PS, V.MADV_HUGEPAGE) == errno.EINVAL
    assert errno_of(f.madvise, 0, 8 * PS, V.MADV_HUGEPAGE) == errno.ENOMEM


def test_mbind_policy_honoured_and_policy_999_einval(kvm):
    f = default_gmem(kvm)
    assert f.mbind(0, 4 * PS, V.MPOL_BIND, {0}) == 0
    assert f.get_mempolicy(PS) == (V.MPOL_BIND, frozenset({0}))
    f.user_fill(0, 4 * PS, 7)
    assert f.node_of(0) == 0
    assert errno_of(f.mbind, 0, 4 * PS, 999, {0}) == errno.EINVAL
    assert errno_of(f.mbind, 0, 4 * PS, V.MPOL_INTERLEAVE, {1}) == errno.EINVAL   # no node 1
    assert errno_of(f.mbind, 0, 4 * PS, V.MPOL_BIND, set()) == errno.EINVAL
    assert f.get_mempolicy(PS) == (V.MPOL_BIND, frozenset({0}))                  # unchanged
    assert f.mbind(0, PS, V.MPOL_DEFAULT, ()) == 0 and f.get_mempolicy(0)[0] == V.MPOL_DEFAULT


def test_default_vm_guest_reads_host_0xaa_writes_0xff_host_reads_0xff(kvm):
    """Caps include MMAP and INIT_SHARED; gmem bound at 4 GiB, slot 1, uaddr=NULL: the slot is
    GMEM_ONLY, so the guest's shared accesses go to guest_memfd itself."""
    vm = kvm.create_vm()
    flags = vm.check_extension(U.KVM_CAP_GUEST_MEMFD_FLAGS)
    assert flags & MMAP and flags & INIT_SHARED
    f = vm.create_guest_memfd(4 * PS, MMAP | INIT_SHARED)
    vm.set_user_memory_region2(1, U.KVM_MEM_GUEST_MEMFD, 4 << 30, 4 * PS, 0, 0, f)
    f.mmap(4 * PS)
    f.user_fill(0, 4 * PS, 0xAA)
    cpu = vm.create_vcpu(0)
    assert cpu.read(4 << 30, 4 * PS) == b"\xaa" * (4 * PS)
    assert cpu.fill(4 << 30, 4 * PS, 0xFF) is None
    assert f.user_read(0, 4 * PS) == b"\xff" * (4 * PS)
    assert kvm.user_memory.read(0, PS) == bytes(PS)               # nothing went through the HVA


def test_gmem_only_slot_after_close_is_a_memory_fault(kvm):
    vm = kvm.create_vm()
    f = vm.create_guest_memfd(PS, MMAP | INIT_SHARED)
    vm.set_user_memory_region2(1, U.KVM_MEM_GUEST_MEMFD, 4 << 30, PS, 0, 0, f)
    f.close()
    ex = vm.create_vcpu(0).read(4 << 30)
    assert ex.reason == U.KVM_EXIT_MEMORY_FAULT and ex.memory_fault.flags == 0


def test_content_arguments_are_checked(kvm):
    f = default_gmem(kvm)
    with pytest.raises(ValueError, match="value"):
        f.user_fill(0, PS, 256)
    with pytest.raises(ValueError, match="page aligned"):
        f.user_fill(1, PS, 1)
    with pytest.raises(ValueError, match="mapping"):
        f.user_read(4 * PS, 1)
    with pytest.raises(ValueError, match="addr"):
        kvm.user_memory.fill(1 << 47, PS, 1)


# ----------------------------------------------------------------- private_mem_conversions_test.c
UADDR = 0x7F0000000000
BASE = 4 << 30
RANGES = [(0, PS), (0, PAGE_2M), (PS, PS), (PS, PAGE_2M), (PAGE_2M, PS)]
SLOT_SIZE = PAGE_2M + PS   # per-vCPU data, rounded below to 2M multiples
SIZE = 2 * PAGE_2M


def conversions_vm(kvm, fallocate: bool):
    vm = kvm.create_vm(U.KVM_X86_SW_PROTECTED_VM)
    vm.enable_cap(U.KVM_CAP_EXIT_HYPERCALL, 1 << U.KVM_HC_MAP_GPA_RANGE)
    f = vm.create_guest_memfd(SIZE)
    vm.set_user_memory_region2(10, U.KVM_MEM_GUEST_MEMFD, BASE, SIZE, UADDR, 0, f)
    return kvm, vm, f, vm.create_vcpu(0), Vmm(vm, fallocate=fallocate)


def guest_map(cpu, vmm, gpa, size, private):
    out = cpu.hypercall(U.KVM_HC_MAP_GPA_RANGE, gpa, size >> 12, KVM_MAP_GPA_RANGE_ENCRYPTED if private else 0)
    assert out.reason == U.KVM_EXIT_HYPERCALL and vmm.handle(out) == 0


def prefault(cpu, gpa, size, whole):
    """"whole": the guest touches every page of the data region before checking."""
    if whole:
        assert cpu.read(BASE, SIZE) is not None


@pytest.mark.parametrize("fault_in", ["precise", "whole"])
@pytest.mark.parametrize("fallocate", [True, False])
@pytest.mark.parametrize("off,size", RANGES)
def test_conversions_data_is_where_the_selftest_expects(off, size, fallocate, fault_in, kvm):
    kvm, vm, f, cpu, vmm = conversions_vm(kvm, fallocate)
    host = kvm.user_memory
    gpa, hva = BASE + off, UADDR + off
    whole = fault_in == "whole"
    # initial state: memory is shared; guest and host see the same bytes
    host.fill(UADDR, SIZE, 0x11)
    prefault(cpu, BASE, SIZE, whole)
    assert cpu.read(gpa, size) == b"\x11" * size
    assert cpu.fill(gpa, size, 0x22) is None and host.read(hva, size) == b"\x22" * size
    # convert to private, the guest writes: it reads its data, the host still sees the old pattern
    guest_map(cpu, vmm, gpa, size, True)
    prefault(cpu, BASE, SIZE, whole)
    assert cpu.fill(gpa, size, 0x33) is None
    assert cpu.read(gpa, size) == b"\x33" * size
    assert host.read(hva, size) == b"\x22" * size
    rest = [(BASE, off), (gpa + size, BASE + SIZE - gpa - size)]
    for g, n in rest:                                        # the rest of the range is unchanged
        if n:
            assert cpu.read(g, n) == b"\x11" * n
    # odd pages back to shared: the host sees the pre-conversion shared data, host writes show
    for p in range(1, size >> 12, 2):
        guest_map(cpu, vmm, gpa + p * PS, PS, False)
        assert cpu.read(gpa + p * PS, PS) == b"\x22" * PS
        host.fill(hva + p * PS, PS, 0x44)
        assert cpu.read(gpa + p * PS, PS) == b"\x44" * PS
    for p in range(0, size >> 12, 2):                        # even pages still private
        assert cpu.read(gpa + p * PS, PS) == b"\x33" * PS
    # the whole range back to shared: round trips guest -> host -> guest
    guest_map(cpu, vmm, gpa, size, False)
    assert cpu.fill(gpa, size, 0x55) is None and host.read(hva, size) == b"\x55" * size
    host.fill(hva, size, 0x66)
    assert cpu.read(gpa, size) == b"\x66" * size
    # all private, then PUNCH_HOLE only (attributes unchanged): the guest reads 0
    guest_map(cpu, vmm, gpa, size, True)
    assert cpu.fill(gpa, size, 0x77) is None
    f.fallocate(U.FALLOC_FL_KEEP_SIZE | U.FALLOC_FL_PUNCH_HOLE, off, size)
    assert vm.memory_attributes(gpa >> 12) == P
    assert cpu.read(gpa, size) == bytes(size)


def test_after_the_vm_is_freed_punch_and_allocate_still_succeed(kvm):
    kvm, vm, f, cpu, vmm = conversions_vm(kvm, True)
    vm.destroy()
    assert f.fallocate(U.FALLOC_FL_KEEP_SIZE | U.FALLOC_FL_PUNCH_HOLE, 0, SIZE) == 0
    assert f.fallocate(U.FALLOC_FL_KEEP_SIZE, 0, SIZE) == 0


def test_a_failed_guest_fill_reports_the_exit_of_the_first_unbacked_page(kvm):
    kvm, vm, f, cpu, vmm = conversions_vm(kvm, True)
    out = cpu.fill(BASE + SIZE - PS, 2 * PS, 1)                # the second page has no memslot
    assert out.reason == U.KVM_EXIT_MMIO
    assert kvm.user_memory.read(UADDR + SIZE - PS, PS) == b"\x01" * PS
    with pytest.raises(KvmError):
        vm.set_memory_attributes(BASE, 1, P)
