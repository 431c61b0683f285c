"""uAPI conformance: the selftest scenarios (tools/testing/selftests/kvm: set_memory_region_test.c,
guest_memfd_test.c, private_mem_*_test.c) and the checks of virt/kvm/kvm_main.c and
virt/kvm/guest_memfd.c, errno for errno."""
import errno

import pytest

from tests.kvm.conformance.helpers import errno_of
from kit.kvm import uapi as U

PS = 4096
MiB = 1 << 20
GPA = 0xC0000000
SLOT = 10
GMEM = U.KVM_MEM_GUEST_MEMFD


@pytest.fixture(scope="module")
def kvm(make_kvm):
    return make_kvm()


def err(fn, *a, **kw) -> int:
    """The errno of a call that must fail (a success fails the test)."""
    code = errno_of(fn, *a, **kw)
    assert code, f"{getattr(fn, '__name__', fn)} succeeded; it must fail"
    return code


def test_errors_are_oserrors_with_the_kernel_errno(kvm):
    with pytest.raises(OSError) as ei:
        kvm.create_vm(7)
    assert ei.value.errno == errno.EINVAL and "EINVAL" in str(ei.value)


# ------------------------------------------------------------- capabilities (KVM_CHECK_EXTENSION)
def test_caps(kvm):
    assert kvm.check_extension(U.KVM_CAP_VM_TYPES) == 0b11111
    assert kvm.check_extension(U.KVM_CAP_MEMORY_ATTRIBUTES) == U.KVM_MEMORY_ATTRIBUTE_PRIVATE
    assert kvm.check_extension(U.KVM_CAP_GUEST_MEMFD_FLAGS) == U.GUEST_MEMFD_FLAG_MMAP | U.GUEST_MEMFD_FLAG_INIT_SHARED
    d, sw = kvm.create_vm(), kvm.create_vm(U.KVM_X86_SW_PROTECTED_VM)
    assert d.check_extension(U.KVM_CAP_MEMORY_ATTRIBUTES) == 0
    assert sw.check_extension(U.KVM_CAP_MEMORY_ATTRIBUTES) == U.KVM_MEMORY_ATTRIBUTE_PRIVATE
    assert sw.check_extension(U.KVM_CAP_GUEST_MEMFD_FLAGS) == U.GUEST_MEMFD_FLAG_MMAP  # no INIT_SHARED
    assert d.check_extension(U.KVM_CAP_NR_MEMSLOTS) == U.KVM_USER_MEM_SLOTS


# ------------------------------------------------------------- memory attributes (kvm_vm_ioctl_set_mem_attributes)
def test_set_memory_attributes_check_order(make_kvm):
    vm = make_kvm().create_vm(U.KVM_X86_SW_PROTECTED_VM)
    P = U.KVM_MEMORY_ATTRIBUTE_PRIVATE
    assert err(vm.set_memory_attributes, 1, 0, 1 << 5, flags=1) == errno.EINVAL     # flags first
    assert err(vm.set_memory_attributes, 0, PS, 1 << 5) == errno.EINVAL             # unsupported
    assert err(vm.set_memory_attributes, 0, 0, P) == errno.EINVAL                   # size 0
    assert err(vm.set_memory_attributes, (1 << 64) - PS, 2 * PS, P) == errno.EINVAL  # wraps
    assert err(vm.set_memory_attributes, 1, PS, P) == errno.EINVAL                  # unaligned
    assert vm.set_memory_attributes(GPA, 2 * MiB, P) == 0                           # no memslot needed
    assert vm.memory_attributes(GPA >> 12) == P and vm.memory_attributes((GPA >> 12) - 1) == 0


def test_default_vm_rejects_private_but_accepts_zero(kvm):
    vm = kvm.create_vm()
    assert err(vm.set_memory_attributes, 0, PS, U.KVM_MEMORY_ATTRIBUTE_PRIVATE) == errno.EINVAL
    assert vm.set_memory_attributes(0, PS, 0) == 0


def test_same_value_is_a_noop_without_zap_and_old_kind_is_zapped(kvm):
    vm = kvm.create_vm(U.KVM_X86_SW_PROTECTED_VM)
    f = vm.create_guest_memfd(2 * MiB)
    vm.set_user_memory_region2(SLOT, GMEM, GPA, 2 * MiB, 0, 0, f)
    vm.set_memory_attributes(GPA, 2 * MiB, U.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    assert vm.zaps == [(GPA >> 12, (GPA >> 12) + 512, "shared")]
    vm.set_memory_attributes(GPA, PS, U.KVM_MEMORY_ATTRIBUTE_PRIVATE)       # already so: no zap
    assert len(vm.zaps) == 1
    vm.set_memory_attributes(GPA, PS, 0)
    # the head/tail 2M page inside the slot is invalidated whole (kvm_arch_pre_set_memory_attributes)
    assert vm.zaps[-1] == (GPA >> 12, (GPA >> 12) + 512, "private")
    assert vm.lpage_mixed(GPA >> 12, 512) and not vm.lpage_mixed((GPA >> 12) + 512, 512)


# ------------------------------------------------------------- memslots (kvm_set_memory_region, set_memory_region_test.c)
def test_memslot_flag_rules(kvm):
    vm = kvm.create_vm(U.KVM_X86_SW_PROTECTED_VM)
    f = vm.create_guest_memfd(4 * MiB)
    assert err(vm.set_user_memory_region, SLOT, GMEM, GPA, 2 * MiB, 0) == errno.EINVAL      # v1
    assert err(vm.set_user_memory_region, SLOT, 1 << 7, GPA, 2 * MiB, 0) == errno.EINVAL
    assert err(vm.set_user_memory_region2, SLOT, 1 << 7, GPA, 2 * MiB, 0) == errno.EINVAL
    assert err(vm.set_user_memory_region2, SLOT, GMEM | U.KVM_MEM_LOG_DIRTY_PAGES, GPA, 2 * MiB, 0, 0, f) == errno.EINVAL
    assert err(vm.set_user_memory_region2, SLOT, GMEM | U.KVM_MEM_READONLY, GPA, 2 * MiB, 0, 0, f) == errno.EINVAL
    assert err(vm.set_user_memory_region2, U.KVM_USER_MEM_SLOTS, 0, GPA, 2 * MiB, 0) == errno.EINVAL
    assert err(vm.set_user_memory_region2, 1 << 16 | SLOT, 0, GPA, 2 * MiB, 0) == errno.EINVAL  # one AS
    snp = kvm.create_vm(U.KVM_X86_SNP_VM)
    assert err(snp.set_user_memory_region2, SLOT, U.KVM_MEM_READONLY, GPA, 2 * MiB, 0) == errno.EINVAL
    assert kvm.create_vm().set_user_memory_region2(1 << 16 | SLOT, 0, GPA, 2 * MiB, 0) == 0  # SMM AS


def test_memslot_guest_memfd_bind_errors(kvm):
    vm, other = kvm.create_vm(U.KVM_X86_SW_PROTECTED_VM), kvm.create_vm(U.KVM_X86_SW_PROTECTED_VM)
    f, g = vm.create_guest_memfd(2 * MiB), other.create_guest_memfd(2 * MiB)
    for bad in (kvm, vm, object(), g):       # /dev/kvm, a VM fd, a plain memfd, another VM's gmem
        assert err(vm.set_user_memory_region2, SLOT, GMEM, GPA, 2 * MiB, 0, 0, bad) == errno.EINVAL
    assert err(vm.set_user_memory_region2, SLOT, GMEM, GPA, 2 * MiB, 0, 0, None) == errno.EBADF
    for off in (1, PS - 1):
        assert err(vm.set_user_memory_region2, SLOT, GMEM, GPA, 2 * MiB, 0, off, f) == errno.EINVAL
    assert vm.set_user_memory_region2(SLOT, GMEM, GPA, 2 * MiB, 0, 0, f) == 0
    assert other.set_user_memory_region2(SLOT, GMEM, GPA, 2 * MiB, 0, 0, g) == 0
    # a gmem slot is immutable: re-issue, move or flag change -> EINVAL; delete works
    assert err(vm.set_user_memory_region2, SLOT, GMEM, GPA, 2 * MiB, 0, 0, f) == errno.EINVAL
    assert err(vm.set_user_memory_region2, SLOT, 0, GPA, 2 * MiB, 0) == errno.EINVAL
    assert vm.set_user_memory_region2(SLOT, 0, GPA, 0, 0) == 0
    assert err(vm.set_user_memory_region2, SLOT, 0, GPA, 0, 0) == errno.EINVAL      # delete twice


def test_gpa_overlap_is_eexist_but_file_offset_overlap_is_einval(kvm):
    vm = kvm.create_vm(U.KVM_X86_SW_PROTECTED_VM)
    f = vm.create_guest_memfd(8 * MiB)
    G = GPA
    vm.set_user_memory_region2(10, GMEM, G, 4 * MiB, 0, 0, f)
    vm.set_user_memory_region2(11, GMEM, 2 * G, 4 * MiB, 0, 4 * MiB, f)
    vm.set_user_memory_region2(10, 0, G, 0, 0)
    for gpa in (2 * G - 2 * MiB, 2 * G + 2 * MiB):
        assert err(vm.set_user_memory_region2, 10, GMEM, gpa, 4 * MiB, 0, 0, f) == errno.EEXIST
    # no GPA overlap, file offsets [4M,8M) already bound to slot 11 -> EINVAL (kvm_gmem_bind)
    assert err(vm.set_user_memory_region2, 10, GMEM, 3 * G, 4 * MiB, 0, 4 * MiB, f) == errno.EINVAL
    assert vm.set_user_memory_region2(10, GMEM, 3 * G, 4 * MiB, 0, 0, f) == 0


def test_memslot_modify_rules(kvm):
    vm = kvm.create_vm()
    vm.set_user_memory_region2(1, 0, GPA, 2 * MiB, 0x10000000)
    assert vm.set_user_memory_region2(1, 0, GPA, 2 * MiB, 0x10000000) == 0              # identical
    assert err(vm.set_user_memory_region2, 1, 0, GPA, 4 * MiB, 0x10000000) == errno.EINVAL  # npages
    assert err(vm.set_user_memory_region2, 1, 0, GPA, 2 * MiB, 0x20000000) == errno.EINVAL  # uaddr
    assert err(vm.set_user_memory_region2, 1, U.KVM_MEM_READONLY, GPA, 2 * MiB, 0x10000000) == errno.EINVAL
    assert vm.set_user_memory_region2(1, U.KVM_MEM_LOG_DIRTY_PAGES, GPA, 2 * MiB, 0x10000000) == 0
    vm.set_user_memory_region2(2, 0, 0, 2 * MiB, 0x30000000)
    assert err(vm.set_user_memory_region2, 1, U.KVM_MEM_LOG_DIRTY_PAGES, MiB, 2 * MiB, 0x10000000) == errno.EEXIST
    assert vm.set_user_memory_region2(1, U.KVM_MEM_LOG_DIRTY_PAGES, 4 * MiB, 2 * MiB, 0x10000000) == 0  # move
    assert vm.slot_for_gfn((4 * MiB) >> 12).id == 1
    assert err(vm.set_user_memory_region2, 3, 0, GPA + 1, PS, 0) == errno.EINVAL
    assert err(vm.set_user_memory_region2, 3, 0, GPA, PS + 1, 0) == errno.EINVAL
    assert err(vm.set_user_memory_region2, 3, 0, GPA, PS, 1 << 47) == errno.EINVAL        # access_ok


def test_dead_vm_is_eio(kvm):
    vm = kvm.create_vm()
    vm.destroy()
    assert err(vm.set_memory_attributes, 0, PS, 0) == errno.EIO


# ------------------------------------------------------------- guest_memfd (virt/kvm/guest_memfd.c, guest_memfd_test.c)
def test_guest_memfd_create(kvm):
    vm = kvm.create_vm()
    supported = vm.check_extension(U.KVM_CAP_GUEST_MEMFD_FLAGS)
    for bit in range(64):
        if (1 << bit) & supported:
            assert vm.create_guest_memfd(4 * PS, 1 << bit).flags == 1 << bit
        else:
            assert err(vm.create_guest_memfd, 4 * PS, 1 << bit) == errno.EINVAL
    for size in (1, PS - 1, 0):
        assert err(vm.create_guest_memfd, size) == errno.EINVAL
    assert err(vm.create_guest_memfd, 1, 1 << 9) == errno.EINVAL   # flags checked first
    sw = kvm.create_vm(U.KVM_X86_SW_PROTECTED_VM)
    assert err(sw.create_guest_memfd, PS, U.GUEST_MEMFD_FLAG_INIT_SHARED) == errno.EINVAL


def test_guest_memfd_fallocate_table(kvm):
    f = kvm.create_vm().create_guest_memfd(4 * PS)
    K, P, total = U.FALLOC_FL_KEEP_SIZE, U.FALLOC_FL_PUNCH_HOLE, 4 * PS
    assert f.fallocate(K, 0, total) == 0 and f.allocated_pages() == 4
    assert err(f.fallocate, K | P, PS - 1, PS) == errno.EINVAL
    assert err(f.fallocate, K, total, PS) == errno.EINVAL
    assert err(f.fallocate, K, total + PS, PS) == errno.EINVAL
    assert f.fallocate(K | P, total, PS) == 0 and f.fallocate(K | P, total + PS, PS) == 0   # past EOF
    assert err(f.fallocate, K | P, PS, PS - 1) == errno.EINVAL
    assert f.fallocate(K | P, PS, PS) == 0 and f.allocated_pages() == 3
    assert f.fallocate(K, PS, PS) == 0 and f.allocated_pages() == 4
    for off, ln in [(0, 1), (0, PS - 1), (0, PS + 1), (1, 1), (1, PS - 1), (1, PS), (1, PS + 1),
                    (PS, 1), (PS, PS - 1), (PS, PS + 1)]:
        assert err(f.fallocate, K | P, off, ln) == errno.EINVAL
    assert err(f.fallocate, P, 0, PS) == errno.EOPNOTSUPP          # KEEP_SIZE missing
    assert err(f.fallocate, K | 0x10, 0, PS) == errno.EOPNOTSUPP


def test_punch_hole_zaps_bound_slots_and_survives_the_vm(make_kvm):
    vm = make_kvm().create_vm(U.KVM_X86_SW_PROTECTED_VM)
    f = vm.create_guest_memfd(4 * MiB)
    vm.set_user_memory_region2(SLOT, GMEM, GPA, 2 * MiB, 0, 2 * MiB, f)
    f.fallocate(U.FALLOC_FL_KEEP_SIZE, 0, 4 * MiB)
    f.fallocate(U.FALLOC_FL_KEEP_SIZE | U.FALLOC_FL_PUNCH_HOLE, 2 * MiB, PS)
    assert vm.zaps[-1] == (GPA >> 12, (GPA >> 12) + 1, "private")
    vm.destroy()                                  # conversions test: still works after the VM
    assert f.fallocate(U.FALLOC_FL_KEEP_SIZE | U.FALLOC_FL_PUNCH_HOLE, 0, PS) == 0
    f.close()
    assert err(f.fallocate, U.FALLOC_FL_KEEP_SIZE, 0, PS) == errno.EBADF


def test_guest_memfd_file_operations(kvm):
    from kit.errors import SigBus
    vm = kvm.create_vm()
    plain = vm.create_guest_memfd(4 * PS)
    assert err(plain.mmap, PS) == errno.ENODEV                                   # no MMAP flag
    assert err(plain.read) == errno.EINVAL and err(plain.pwrite) == errno.EINVAL
    assert err(plain.ftruncate, 8 * PS) == errno.EINVAL
    m = vm.create_guest_memfd(4 * PS, U.GUEST_MEMFD_FLAG_MMAP)
    assert err(m.mmap, PS, shared=False) == errno.EINVAL                         # MAP_PRIVATE
    assert m.mmap(4 * PS) == 0
    with pytest.raises(SigBus):
        m.user_access(0)                                                         # not INIT_SHARED
    s = vm.create_guest_memfd(4 * PS, U.GUEST_MEMFD_FLAG_MMAP | U.GUEST_MEMFD_FLAG_INIT_SHARED)
    s.mmap(16 * PS)                                                              # map 4x the file
    s.user_access(3 * PS)
    assert s.allocated_pages() == 1
    with pytest.raises(SigBus):
        s.user_access(4 * PS)                                                    # at i_size


def test_closing_the_last_reference_returns_snp_pages_shared_to_the_host(make_kvm):
    vm = make_kvm(gmem_hugepages=True).create_vm(U.KVM_X86_SNP_VM)
    host = vm.kvm.host
    vm.sev_init()
    f = vm.create_guest_memfd(4 * MiB)
    vm.set_user_memory_region2(1, GMEM, 1 << 32, 4 * MiB, 0, 0, f)
    vm.set_memory_attributes(1 << 32, 4 * MiB, U.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    cpu = vm.create_vcpu(0)
    cpu.fault_in(1 << 32, private=True)
    pfn = f.folios[0]
    free_before = host.memory.free_pages()
    f.close()
    assert not host.rmp.rmpread(pfn).assigned and host.memory.owner(pfn) == "free"
    assert host.memory.free_pages() == free_before + 512
    assert cpu.fault_in(1 << 32, private=True).reason == U.KVM_EXIT_MEMORY_FAULT   # file gone: EFAULT
