"""KVM behind its uAPI: the system scope (``/dev/kvm``), VMs, memslots, memory attributes and
guest_memfd files, failing with the kernel's errno in the kernel's order.

Sources (kit reference notes kvm-uapi.md): virt/kvm/kvm_main.c (``kvm_vm_ioctl``,
``kvm_vm_ioctl_set_mem_attributes``, ``kvm_vm_set_mem_attributes``, ``kvm_set_memory_region``,
``check_memory_region_flags``, ``kvm_check_memslot_overlap``), virt/kvm/guest_memfd.c
(``kvm_gmem_create``, ``kvm_gmem_bind``, ``kvm_gmem_fallocate``, ``kvm_gmem_punch_hole``,
``kvm_gmem_release``), arch/x86/kvm/x86.c (VM types, ``kvm_arch_nr_memslot_as_ids``,
``kvm_arch_has_readonly_mem``), include/linux/kvm_host.h (``kvm_gmem_get_supported_flags``).

Every call either succeeds completely or raises :class:`~kit.errors.KvmError` having changed
nothing.
"""
from __future__ import annotations

import errno
import itertools
from dataclasses import dataclass
from typing import NamedTuple

from ..errors import KvmError, SigBus
from ..units import PAGE_4K
from . import uapi as U
from ..host.ranges import RangeStore as AttributeRanges
from .content import PageContents, check_byte, check_span

U64 = (1 << 64) - 1
TASK_SIZE_MAX = (1 << 47) - PAGE_4K      # x86-64 user address space, for access_ok()
PAGE_SHIFT = 12


def _u(value, name: str, bits: int = 64) -> int:
    """A uAPI integer field: ints only, masked to the field's width as C would store it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    if value < 0 or value >> bits:
        raise ValueError(f"{name}: must fit an unsigned {bits}-bit field, got {value!r}")
    return value


@dataclass
class Memslot:
    """``struct kvm_memory_slot`` (the fields the model uses)."""

    id: int
    as_id: int
    flags: int
    base_gfn: int
    npages: int
    userspace_addr: int
    gmem: "GuestMemfd | None" = None
    gmem_pgoff: int = 0
    gmem_only: bool = False    # KVM_MEMSLOT_GMEM_ONLY: bound to a file created with MMAP

    @property
    def end_gfn(self) -> int:
        return self.base_gfn + self.npages

    def _repr_html_(self) -> str:
        from ..viz.html import memslot_html
        return memslot_html(self)


_inode_numbers = itertools.count(1)   # get_next_ino(): every guest_memfd has its own inode

# mm/madvise.c advice values (include/uapi/asm-generic/mman-common.h) and
# mm/mempolicy.c modes (include/uapi/linux/mempolicy.h)
MADV_NORMAL, MADV_RANDOM, MADV_SEQUENTIAL, MADV_WILLNEED, MADV_DONTNEED = 0, 1, 2, 3, 4
MADV_REMOVE, MADV_HUGEPAGE, MADV_NOHUGEPAGE, MADV_COLLAPSE = 9, 14, 15, 25
MPOL_DEFAULT, MPOL_PREFERRED, MPOL_BIND, MPOL_INTERLEAVE, MPOL_LOCAL = 0, 1, 2, 3, 4
MPOL_PREFERRED_MANY, MPOL_WEIGHTED_INTERLEAVE, MPOL_MAX = 5, 6, 7


class Stat(NamedTuple):
    """The ``struct stat`` fields ``fstat`` on a guest_memfd is checked for."""

    st_size: int
    st_blksize: int
    st_ino: int


class GuestMemfd:
    """A guest_memfd file (``kvm_gmem_create``): its own inode of ``size`` bytes, a reference
    on its VM, the memslots bound to ranges of it, which pages are allocated, and their
    contents (one fill byte per page, :mod:`kit.kvm.content`)."""

    def __init__(self, vm: "VM", size: int, flags: int):
        self.vm = vm
        self.size = size
        self.flags = flags
        self.bindings: list[tuple[int, int, Memslot]] = []   # (first pgoff, end pgoff, slot)
        self.allocated = AttributeRanges()                    # page indices, value 1
        self.folios: dict[int, int] = {}                      # folio index -> host pfn
        self.unprepared: set[int] = set()                     # folios fallocate took, not yet cleared
        self.data = PageContents()                            # page index -> fill byte
        self.ino = next(_inode_numbers)
        self.map_length = 0                                   # bytes mapped by mmap(), 0 = none
        self.policies = AttributeRanges()                     # page -> index+1 in policy_table
        self.policy_table: list[tuple[int, frozenset]] = []   # (mode, nodes) set by mbind
        self.closed = False

    def __repr__(self) -> str:
        return f"<guest_memfd of {self.vm!r}: {self.size} bytes, flags {self.flags:#x}>"

    def fallocate(self, mode: int, offset: int, length: int) -> int:
        """``kvm_gmem_fallocate``: mode must have KEEP_SIZE and nothing but KEEP_SIZE|PUNCH_HOLE
        (EOPNOTSUPP); offset and len page-aligned (EINVAL); an allocation past i_size is EINVAL,
        a hole punched past EOF is a no-op. Allocating takes the folios from the host
        (``kvm_gmem_allocate`` -> ``kvm_gmem_get_folio``; frames are tracked for SNP VMs, see
        :func:`kit.kvm.snp.gmem_allocate`) without clearing them: a folio is cleared when a
        fault first gets it. Punching invalidates KVM's mappings of the range in every bound
        slot, then frees the pages; the next fault gets a zeroed page."""
        if self.closed:
            raise KvmError(errno.EBADF, "guest_memfd is closed")
        mode, offset, length = _u(mode, "mode", 32), _u(offset, "offset"), _u(length, "length")
        if not mode & U.FALLOC_FL_KEEP_SIZE or mode & ~(U.FALLOC_FL_KEEP_SIZE | U.FALLOC_FL_PUNCH_HOLE):
            raise KvmError(errno.EOPNOTSUPP, "fallocate mode must be KEEP_SIZE [| PUNCH_HOLE]")
        if offset % PAGE_4K or length % PAGE_4K:
            raise KvmError(errno.EINVAL, "offset and len must be page aligned")
        start, end = offset >> PAGE_SHIFT, (offset + length) >> PAGE_SHIFT
        if mode & U.FALLOC_FL_PUNCH_HOLE:
            end = min(end, self.size >> PAGE_SHIFT)
            if start < end:
                from .snp import gmem_free_range
                self.vm._invalidate_gmem(self, start, end)
                gmem_free_range(self, start, end)
                self.allocated.set(start, end, 0)
                self.data.zero(start, end)
            return 0
        if offset + length > self.size:
            raise KvmError(errno.EINVAL, "allocation beyond the file size")
        if length:
            if self.vm.type == U.KVM_X86_SNP_VM:
                from .snp import gmem_allocate
                gmem_allocate(self, start, end)
            self.allocated.set(start, end, 1)
        return 0

    def mmap(self, length: int, offset: int = 0, *, shared: bool = True) -> int:
        """``kvm_gmem_mmap``: without GUEST_MEMFD_FLAG_MMAP -> ENODEV; a private (COW) mapping
        -> EINVAL. The mapping may be longer than the file (accesses past i_size then SIGBUS).
        Returns 0 (the mapping is then usable with :meth:`user_access`, :meth:`user_fill`,
        :meth:`user_read`, :meth:`madvise`, :meth:`mbind`)."""
        self._open()
        length, offset = _u(length, "length"), _u(offset, "offset")
        if not self.flags & U.GUEST_MEMFD_FLAG_MMAP:
            raise KvmError(errno.ENODEV, "guest_memfd was created without GUEST_MEMFD_FLAG_MMAP")
        if not shared:
            raise KvmError(errno.EINVAL, "only MAP_SHARED mappings of guest_memfd")
        if length == 0 or offset % PAGE_4K:                  # do_mmap
            raise KvmError(errno.EINVAL, "mmap length 0 or offset not page aligned")
        self.map_length = -(-length // PAGE_4K) * PAGE_4K
        self.mapped = True
        return 0

    def _user_pages(self, offset: int, length: int) -> tuple[int, int]:
        """The pages a userspace access touches: the file must be mapped and the range inside
        the mapping; any page at or past i_size, or a file without INIT_SHARED, raises SIGBUS
        (``kvm_gmem_fault_user_mapping``) before anything is written."""
        if not getattr(self, "mapped", False):
            raise ValueError("offset: the file is not mapped (call mmap first)")
        if offset + max(length, 1) > self.map_length:
            raise ValueError(f"offset, length: {offset:#x}+{length:#x} is outside the "
                             f"{self.map_length:#x}-byte mapping (SIGSEGV)")
        end = offset + max(length, 1)
        if end > self.size or not self.flags & U.GUEST_MEMFD_FLAG_INIT_SHARED:
            bad = max(offset, self.size) if self.flags & U.GUEST_MEMFD_FLAG_INIT_SHARED else offset
            raise SigBus(f"SIGBUS at guest_memfd offset {bad:#x}")
        first, last = offset >> PAGE_SHIFT, (end - 1) >> PAGE_SHIFT
        self.allocated.set(first, last + 1, 1)   # order-0 folios, zeroed when first faulted
        return first, last + 1

    def user_access(self, offset: int) -> None:
        """A userspace access through the mapping (``kvm_gmem_fault_user_mapping``): at or past
        i_size, or without INIT_SHARED -> SIGBUS; otherwise a zeroed order-0 page."""
        offset = _u(offset, "offset")
        self._user_pages(offset, 1)

    def user_fill(self, offset: int, length: int, value: int) -> None:
        """Userspace ``memset(map + offset, value, length)`` through the mapping (whole pages)."""
        check_span(offset, length, whole_pages=True)
        check_byte(value)
        first, end = self._user_pages(offset, length)
        self.data.fill(first, end - first, value)

    def user_read(self, offset: int, length: int = 1) -> bytes:
        """Userspace reads ``length`` bytes through the mapping."""
        check_span(offset, length, whole_pages=False)
        self._user_pages(offset, length)
        return self.data.read(offset, length)

    def fstat(self) -> Stat:
        """``fstat``: the inode's ``i_size`` (the file size), a page-sized ``st_blksize``, and
        an inode number of its own (``kvm_gmem_create``: one inode per file)."""
        self._open()
        return Stat(self.size, PAGE_4K, self.ino)

    def madvise(self, offset: int, length: int, advice: int) -> int:
        """``madvise`` on the mapping (mm/madvise.c). ``offset`` unaligned or an unknown advice ->
        EINVAL (``madvise_behavior_valid``); a range outside the mapping -> ENOMEM.
        ``MADV_COLLAPSE`` -> EINVAL: guest_memfd folios are not THP-eligible
        (``madvise_collapse`` finds no allowed huge order for the VMA). ``MADV_DONTNEED`` drops
        the user PTEs only: the file keeps its pages and data. Other valid advice is a no-op."""
        offset, length, advice = _u(offset, "offset"), _u(length, "length"), _u(advice, "advice", 32)
        if not getattr(self, "mapped", False):
            raise KvmError(errno.ENOMEM, "no mapping of this guest_memfd")
        valid = {MADV_NORMAL, MADV_RANDOM, MADV_SEQUENTIAL, MADV_WILLNEED, MADV_DONTNEED,
                 MADV_REMOVE, MADV_HUGEPAGE, MADV_NOHUGEPAGE, MADV_COLLAPSE}
        if offset % PAGE_4K or advice not in valid:
            raise KvmError(errno.EINVAL, f"madvise: offset not aligned or advice {advice} not valid")
        if offset + length > self.map_length:
            raise KvmError(errno.ENOMEM, "madvise range outside the mapping")
        if advice == MADV_COLLAPSE:
            raise KvmError(errno.EINVAL, "MADV_COLLAPSE: guest_memfd folios cannot be collapsed")
        if advice == MADV_REMOVE:   # needs fallocate(PUNCH_HOLE) on a shared writable mapping
            return self.fallocate(U.FALLOC_FL_KEEP_SIZE | U.FALLOC_FL_PUNCH_HOLE, offset,
                                  min(length, max(self.size - offset, 0)))
        return 0

    def mbind(self, offset: int, length: int, mode: int, nodemask=(0,)) -> int:
        """``mbind`` on the mapping (mm/mempolicy.c ``kernel_mbind``/``do_mbind``): mode >=
        MPOL_MAX -> EINVAL; BIND/INTERLEAVE/PREFERRED[_MANY] with an empty nodemask, or a node
        the host does not have -> EINVAL; the policy is stored in the file's shared policy
        (``kvm_gmem_set_policy``) and new folios honour it. The host model has one NUMA node
        (node 0), so placement is trivially on it."""
        offset, length, mode = _u(offset, "offset"), _u(length, "length"), _u(mode, "mode", 32)
        if not getattr(self, "mapped", False):
            raise KvmError(errno.EFAULT, "no mapping of this guest_memfd")
        nodes = frozenset(nodemask)
        if mode >= MPOL_MAX or offset % PAGE_4K:
            raise KvmError(errno.EINVAL, f"mbind: mode {mode} not valid (MPOL_MAX is {MPOL_MAX})")
        if mode in (MPOL_DEFAULT, MPOL_LOCAL):
            if nodes - {0} and mode == MPOL_LOCAL:
                raise KvmError(errno.EINVAL, "MPOL_LOCAL takes no nodemask")
            nodes = frozenset()
        elif not nodes or any(not isinstance(n, int) or n != 0 for n in nodes):
            raise KvmError(errno.EINVAL, f"nodemask {sorted(nodes, key=str)} empty or has nodes "
                           "this host lacks (nodes: [0])")
        if offset + length > self.map_length:
            raise KvmError(errno.EFAULT, "mbind range outside the mapping")
        first, end = offset >> PAGE_SHIFT, -(-(offset + length) // PAGE_4K)
        if mode != MPOL_DEFAULT:
            self.policy_table.append((mode, nodes))
        self.policies.set(first, end, len(self.policy_table) if mode != MPOL_DEFAULT else 0)
        return 0

    def get_mempolicy(self, offset: int) -> tuple[int, frozenset]:
        """``get_mempolicy(MPOL_F_ADDR)``: (mode, nodes) in force at ``offset``."""
        v = self.policies.get(_u(offset, "offset") >> PAGE_SHIFT)
        return (MPOL_DEFAULT, frozenset()) if not v else self.policy_table[v - 1]

    def node_of(self, offset: int) -> int:
        """The NUMA node of the folio at ``offset``: always 0 (one-node host model)."""
        return 0

    def ftruncate(self, size: int) -> int:
        """``kvm_gmem_setattr``: the size of a guest_memfd cannot change -> EINVAL."""
        self._open()
        raise KvmError(errno.EINVAL, "guest_memfd cannot be resized")

    def read(self, *args) -> int:
        """guest_memfd has no read/write file operations: the call fails (EINVAL)."""
        self._open()
        raise KvmError(errno.EINVAL, "guest_memfd has no read/write")

    write = pread = pwrite = read

    def _open(self) -> None:
        if self.closed:
            raise KvmError(errno.EBADF, "guest_memfd is closed")

    def close(self) -> None:
        """``kvm_gmem_release`` and, with the last reference, the inode's eviction: bound slots
        lose their file (later faults: EFAULT), KVM's mappings are zapped, and the pages are
        truncated: for SNP made shared again (``sev_gmem_invalidate``), then freed to the host.
        The VM reference is dropped."""
        if self.closed:
            return
        from .snp import gmem_free_range
        for s, e, slot in self.bindings:
            self.vm._zap(slot.base_gfn, slot.end_gfn, "all")
            slot.gmem = None
        gmem_free_range(self, 0, self.size >> PAGE_SHIFT)
        self.allocated.set(0, self.size >> PAGE_SHIFT, 0)
        self.data.zero(0, self.size >> PAGE_SHIFT)
        self.closed = True
        self.vm._gmem_files.discard(self)

    def allocated_pages(self) -> int:
        return sum(e - s for s, e, _ in self.allocated.ranges(0, self.size >> PAGE_SHIFT))


class UserMemory:
    """The VMM process's anonymous memory (what ``userspace_addr`` of a memslot points at):
    contents per host-virtual page, zero until written. Backs the guest's shared accesses to
    every slot that is not ``KVM_MEMSLOT_GMEM_ONLY`` (``__kvm_faultin_pfn`` via the HVA)."""

    def __init__(self):
        self.data = PageContents()

    def _check(self, addr: int, length: int) -> None:
        if addr + length > TASK_SIZE_MAX:
            raise ValueError(f"addr: {addr:#x}+{length:#x} is not a user address (below {TASK_SIZE_MAX:#x})")

    def fill(self, addr: int, length: int, value: int) -> None:
        """``memset(addr, value, length)`` (whole pages)."""
        check_span(addr, length, whole_pages=True, addr_name="addr")
        check_byte(value)
        self._check(addr, length)
        self.data.fill(addr >> PAGE_SHIFT, length >> PAGE_SHIFT, value)

    def read(self, addr: int, length: int = 1) -> bytes:
        check_span(addr, length, whole_pages=False, addr_name="addr")
        self._check(addr, length)
        return self.data.read(addr, length)


class Kvm:
    """``/dev/kvm``: system-scope capabilities and VM creation.

    ``vm_types`` are the x86 VM types this host supports (``kvm_caps.supported_vm_types``);
    ``min_sev_asid``/``max_sev_asid`` are CPUID 0x8000001F EDX/ECX (used by SEV VMs).
    ``block_snp_mirror``: the 2026 patch (A. Patra) rejecting SNP sources for mirror/move.
    ``gmem_hugepages``: guest_memfd hands out 2M folios (the hugepage series) instead of
    upstream's order-0 folios.
    """

    def __init__(self, host, *, min_sev_asid: int = 100, max_sev_asid: int = 509,
                 vm_types=(U.KVM_X86_DEFAULT_VM, U.KVM_X86_SW_PROTECTED_VM, U.KVM_X86_SEV_VM,
                           U.KVM_X86_SEV_ES_VM, U.KVM_X86_SNP_VM), block_snp_mirror: bool = True,
                 gmem_hugepages: bool = False):
        bad = [t for t in vm_types if t not in U.VM_TYPE_NAMES]
        if bad:
            raise ValueError(f"vm_types: unknown VM types {bad}; known: {sorted(U.VM_TYPE_NAMES)}")
        self.host = host
        self.min_sev_asid = _u(min_sev_asid, "min_sev_asid", 32)
        self.max_sev_asid = _u(max_sev_asid, "max_sev_asid", 32)
        self.vm_types = tuple(vm_types)
        self.vms: list[VM] = []
        from .sev import AsidSpace
        self.asids = AsidSpace(self, self.min_sev_asid, self.max_sev_asid)
        self.block_snp_mirror = block_snp_mirror
        self.gmem_hugepages = bool(gmem_hugepages)
        self.snp_decommission_fails = False   # set to model SNP_DECOMMISSION failing
        self.leaked_asids: set[int] = set()
        self.user_memory = UserMemory()       # the VMM process's memory behind userspace_addr
        self.page_reclaim_fails = False       # model knob: SNP_PAGE_RECLAIM fails

    def check_extension(self, cap: int) -> int:
        """``KVM_CHECK_EXTENSION`` on /dev/kvm (``kvm`` is NULL: private features reported as
        available)."""
        return _check_extension(self, None, cap)

    def create_vm(self, type: int = U.KVM_X86_DEFAULT_VM, *, attribute_owner: str = "userspace",
                  npf_policy: str = "exit") -> "VM":
        """``KVM_CREATE_VM``: an unsupported type is EINVAL (``kvm_arch_init_vm``).

        Model options (questions.md §3-4): ``attribute_owner`` ``"userspace"`` (upstream: the
        VMM decides with KVM_SET_MEMORY_ATTRIBUTES after a hypercall exit) or ``"guest"`` (the
        pKVM proposal: the guest's MAP_GPA_RANGE hypercall sets the attribute in KVM and
        userspace may only follow); ``npf_policy`` ``"exit"`` (upstream: an implicit conversion
        by a guest access is a KVM_EXIT_MEMORY_FAULT) or ``"auto-convert"`` (the 2021 agreement:
        KVM converts on a guest access, never on a host access)."""
        if attribute_owner not in ("userspace", "guest"):
            raise ValueError(f"attribute_owner: must be 'userspace' or 'guest', got {attribute_owner!r}")
        if npf_policy not in ("exit", "auto-convert"):
            raise ValueError(f"npf_policy: must be 'exit' or 'auto-convert', got {npf_policy!r}")
        if type not in self.vm_types:
            raise KvmError(errno.EINVAL, f"VM type {type} is not supported")
        vm = VM(self, type)
        vm.attribute_owner, vm.npf_policy = attribute_owner, npf_policy
        self.vms.append(vm)
        return vm


def _check_extension(kvm: Kvm, vm: "VM | None", cap: int) -> int:
    private = vm is None or vm.has_private_mem
    if cap == U.KVM_CAP_NR_MEMSLOTS:
        return U.KVM_USER_MEM_SLOTS
    if cap == U.KVM_CAP_MEMORY_ATTRIBUTES:       # kvm_supported_mem_attributes
        return U.KVM_MEMORY_ATTRIBUTE_PRIVATE if private else 0
    if cap == U.KVM_CAP_GUEST_MEMFD:
        return 1
    if cap == U.KVM_CAP_GUEST_MEMFD_FLAGS:       # kvm_gmem_get_supported_flags
        flags = U.GUEST_MEMFD_FLAG_MMAP
        if vm is None or not vm.has_private_mem:
            flags |= U.GUEST_MEMFD_FLAG_INIT_SHARED
        return flags
    if cap == U.KVM_CAP_VM_TYPES:
        return sum(1 << t for t in kvm.vm_types)
    if cap in (U.KVM_CAP_USER_MEMORY2, U.KVM_CAP_MEMORY_FAULT_INFO, U.KVM_CAP_EXIT_HYPERCALL,
               U.KVM_CAP_VM_COPY_ENC_CONTEXT_FROM, U.KVM_CAP_VM_MOVE_ENC_CONTEXT_FROM):
        return 1
    return 0


class VM:
    """A VM: memslots, memory attributes and guest_memfd files, by the kernel's rules."""

    def __init__(self, kvm: Kvm, type: int):
        self.kvm = kvm
        self.type = type
        # x86.c kvm_arch_init_vm: SW_PROTECTED and SNP VMs have private memory; SEV-ES and SNP
        # have protected state (no READONLY memslots: kvm_arch_has_readonly_mem)
        self.has_private_mem = type in (U.KVM_X86_SW_PROTECTED_VM, U.KVM_X86_SNP_VM)
        self.has_protected_state = type in (U.KVM_X86_SEV_ES_VM, U.KVM_X86_SNP_VM)
        self.attributes = AttributeRanges()
        self.memslots: dict[tuple[int, int], Memslot] = {}
        self._gmem_files: set[GuestMemfd] = set()
        self.dead = False
        self.zaps: list[tuple[int, int, str]] = []   # (start gfn, end gfn, filter) invalidations
        self.sptes = AttributeRanges()   # gfn -> MAP_SHARED / MAP_PRIVATE: what the NPT maps
        self.faults_in: list[tuple[int, int, bool]] = []   # (gfn, level, private) per fault-in
        self.vcpus: dict = {}
        self.exit_hypercalls = 0
        self.asid = 0
        self.sev_active = False
        self.mirror_of: VM | None = None
        self.mirrors: list[VM] = []
        self.enc_regions: list[tuple[int, int]] = []   # KVM_MEMORY_ENCRYPT_REG_REGION (addr, size)
        self.migration_in_progress = False
        self.launch_pages: list[int] = []
        self.launch_fw_errors: dict[int, int] = {}   # model knob: gfn -> SNP_LAUNCH_UPDATE fw error
        # model knob: make the xa_reserve step of KVM_SET_MEMORY_ATTRIBUTES fail (-ENOMEM)
        self.xa_reserve_fails = False
        self.bugged = False        # KVM_BUG_ON fired (e.g. a VMSA could not be made shared)
        self.snp_launched = False
        self.pre_fault_allowed = type == U.KVM_X86_SW_PROTECTED_VM
        self.attribute_owner = "userspace"
        self.npf_policy = "exit"
        self.kvm_conversions: list[tuple[int, int, int]] = []   # (start gfn, end gfn, attrs) made by KVM

    def __repr__(self) -> str:
        return f"<VM {U.VM_TYPE_NAMES[self.type]}, {len(self.memslots)} memslots>"

    def _repr_html_(self) -> str:
        from ..viz.html import vm_html
        return vm_html(self)

    def _alive(self) -> None:
        """Every VM ioctl: EIO once the VM is dead (``kvm_vm_ioctl``)."""
        if self.dead:
            raise KvmError(errno.EIO, "the VM is dead")

    def check_extension(self, cap: int) -> int:
        self._alive()
        return _check_extension(self.kvm, self, cap)

    # ------------------------------------------------------------------ attributes
    def supported_mem_attributes(self) -> int:
        return U.KVM_MEMORY_ATTRIBUTE_PRIVATE if self.has_private_mem else 0

    def set_memory_attributes(self, address: int, size: int, attributes: int, flags: int = 0) -> int:
        """``KVM_SET_MEMORY_ATTRIBUTES`` (``kvm_vm_ioctl_set_mem_attributes``). EINVAL, in
        order: flags != 0; an unsupported attribute; size 0 or address+size wraps; address or
        size not page aligned. A range that already has the value returns 0 with no zap
        (``kvm_range_has_memory_attributes``). Otherwise existing mappings of the *old* kind in
        overlapping memslots are invalidated (``kvm_arch_pre_set_memory_attributes``) and the
        value is stored (reserve-then-store: all or nothing)."""
        self._alive()
        address, size = _u(address, "address"), _u(size, "size")
        attributes, flags = _u(attributes, "attributes"), _u(flags, "flags")
        if self.attribute_owner == "guest":
            raise KvmError(errno.EPERM, "attributes are owned by the guest on this VM (pKVM style)")
        return self._set_attributes(address, size, attributes, flags)

    def _set_attributes(self, address: int, size: int, attributes: int, flags: int = 0) -> int:
        if flags:
            raise KvmError(errno.EINVAL, "flags must be 0")
        if attributes & ~self.supported_mem_attributes():
            raise KvmError(errno.EINVAL, f"attributes {attributes:#x} not supported by this VM")
        if size == 0 or address + size > U64:
            raise KvmError(errno.EINVAL, "size is 0 or address+size wraps")
        if address % PAGE_4K or size % PAGE_4K:
            raise KvmError(errno.EINVAL, "address and size must be page aligned")
        start, end = address >> PAGE_SHIFT, (address + size) >> PAGE_SHIFT
        if self.attributes.has(start, end, attributes):
            return 0
        if self.xa_reserve_fails:        # xa_reserve failed: -ENOMEM before anything changed
            raise KvmError(errno.ENOMEM, "xa_reserve failed")
        going_private = bool(attributes & U.KVM_MEMORY_ATTRIBUTE_PRIVATE)
        for slot in self.memslots.values():
            s, e = max(start, slot.base_gfn), min(end, slot.end_gfn)
            if s < e:
                s, e = self._hugepage_extend(slot, s, e)
                self._zap(s, e, "shared" if going_private else "private")
        self.attributes.set(start, end, attributes)
        return 0

    @staticmethod
    def _hugepage_extend(slot: Memslot, s: int, e: int) -> tuple[int, int]:
        """``kvm_arch_pre_set_memory_attributes`` adds the head and tail huge pages (2M, 1G)
        that lie inside the slot to the invalidation, so a huge mapping straddling the range
        goes whole. (The kernel skips ones already mixed; including them only zaps mappings
        that cannot be huge anyway.)"""
        for n in (512, 512 * 512):
            hs, he = s - s % n, -(-e // n) * n
            if hs >= slot.base_gfn:
                s = hs
            if he <= slot.end_gfn:
                e = he
        return s, e

    def memory_attributes(self, gfn: int) -> int:
        """``kvm_get_memory_attributes(kvm, gfn)``."""
        return self.attributes.get(_u(gfn, "gfn"))

    def lpage_mixed(self, gfn: int, level_pages: int) -> bool:
        """Whether the ``level_pages``-aligned huge page around ``gfn`` holds gfns with different
        attributes: ``KVM_LPAGE_MIXED_FLAG`` (``hugepage_has_attrs``), which caps the mapping
        level. Computed from the range store on demand."""
        base = gfn - gfn % level_pages
        return not self.attributes.has(base, base + level_pages, self.attributes.get(base))

    # ------------------------------------------------------------------ guest_memfd
    def create_guest_memfd(self, size: int, flags: int = 0) -> GuestMemfd:
        """``KVM_CREATE_GUEST_MEMFD`` (``kvm_gmem_create``): unsupported flags first, then
        size <= 0 or not page aligned: EINVAL."""
        self._alive()
        size, flags = _u(size, "size"), _u(flags, "flags")
        if flags & ~_check_extension(self.kvm, self, U.KVM_CAP_GUEST_MEMFD_FLAGS):
            raise KvmError(errno.EINVAL, f"guest_memfd flags {flags:#x} not supported")
        if size == 0 or size % PAGE_4K:
            raise KvmError(errno.EINVAL, "size must be a positive multiple of the page size")
        f = GuestMemfd(self, size, flags)
        self._gmem_files.add(f)
        return f

    def _invalidate_gmem(self, f: GuestMemfd, start: int, end: int) -> None:
        """``kvm_gmem_invalidate_begin``: zap the gfns of every bound slot mapping [start, end)."""
        kind = "shared" if f.flags & U.GUEST_MEMFD_FLAG_INIT_SHARED else "private"
        for s, e, slot in f.bindings:
            lo, hi = max(s, start), min(e, end)
            if lo < hi:
                g0 = slot.base_gfn + lo - slot.gmem_pgoff
                self._zap(g0, g0 + hi - lo, kind)

    # ------------------------------------------------------------------ memslots
    def set_user_memory_region(self, slot: int, flags: int, guest_phys_addr: int,
                               memory_size: int, userspace_addr: int) -> int:
        """``KVM_SET_USER_MEMORY_REGION`` (v1): only LOG_DIRTY_PAGES|READONLY flags (EINVAL)."""
        self._alive()
        if _u(flags, "flags", 32) & ~(U.KVM_MEM_LOG_DIRTY_PAGES | U.KVM_MEM_READONLY):
            raise KvmError(errno.EINVAL, "v1 memslot flags are LOG_DIRTY_PAGES|READONLY only")
        return self._set_memory_region(slot, flags, guest_phys_addr, memory_size, userspace_addr, 0, None)

    def set_user_memory_region2(self, slot: int, flags: int, guest_phys_addr: int, memory_size: int,
                                userspace_addr: int = 0, guest_memfd_offset: int = 0,
                                guest_memfd=None) -> int:
        """``KVM_SET_USER_MEMORY_REGION2``."""
        self._alive()
        return self._set_memory_region(slot, flags, guest_phys_addr, memory_size, userspace_addr,
                                       guest_memfd_offset, guest_memfd)

    def _valid_flags(self, flags: int) -> int:
        """``check_memory_region_flags``."""
        valid = U.KVM_MEM_LOG_DIRTY_PAGES | U.KVM_MEM_GUEST_MEMFD
        if flags & U.KVM_MEM_GUEST_MEMFD:
            valid &= ~U.KVM_MEM_LOG_DIRTY_PAGES
        if not self.has_protected_state and not flags & U.KVM_MEM_GUEST_MEMFD:
            valid |= U.KVM_MEM_READONLY
        return valid

    def _set_memory_region(self, slot, flags, gpa, size, uaddr, gmem_offset, gmem) -> int:
        """``kvm_vm_ioctl_set_memory_region`` + ``kvm_set_memory_region``, checks in order."""
        slot, flags = _u(slot, "slot", 32), _u(flags, "flags", 32)
        gpa, size, uaddr = _u(gpa, "guest_phys_addr"), _u(size, "memory_size"), _u(uaddr, "userspace_addr")
        gmem_offset = _u(gmem_offset, "guest_memfd_offset")
        sid, as_id = slot & 0xFFFF, slot >> 16
        if sid >= U.KVM_USER_MEM_SLOTS:
            raise KvmError(errno.EINVAL, f"slot id {sid} >= KVM_USER_MEM_SLOTS")
        if flags & ~self._valid_flags(flags):
            raise KvmError(errno.EINVAL, f"memslot flags {flags:#x} not valid here")
        if size % PAGE_4K:
            raise KvmError(errno.EINVAL, "memory_size not page aligned")
        if gpa % PAGE_4K:
            raise KvmError(errno.EINVAL, "guest_phys_addr not page aligned")
        if uaddr % PAGE_4K or uaddr + size > TASK_SIZE_MAX:
            raise KvmError(errno.EINVAL, "userspace_addr not aligned or not a user address (access_ok)")
        if flags & U.KVM_MEM_GUEST_MEMFD and (gmem_offset % PAGE_4K or gmem_offset + size > U64):
            raise KvmError(errno.EINVAL, "guest_memfd_offset not aligned or offset+size wraps")
        if as_id >= (1 if self.has_private_mem else 2) or sid >= U.KVM_MEM_SLOTS_NUM:
            raise KvmError(errno.EINVAL, f"address space {as_id} does not exist for this VM")
        if gpa + size > U64 + 1 or (size >> PAGE_SHIFT) > U.KVM_MEM_MAX_NR_PAGES:
            raise KvmError(errno.EINVAL, "guest_phys_addr+memory_size wraps or too many pages")
        old = self.memslots.get((as_id, sid))
        if size == 0:                                      # delete
            if old is None:
                raise KvmError(errno.EINVAL, "deleting a memslot that does not exist")
            if old.gmem is not None:
                self._gmem_unbind(old)
            self._zap_slot(old)
            del self.memslots[(as_id, sid)]
            return 0
        base_gfn, npages = gpa >> PAGE_SHIFT, size >> PAGE_SHIFT
        if old is not None:                                # modify: move or flags-only
            if flags & U.KVM_MEM_GUEST_MEMFD:
                raise KvmError(errno.EINVAL, "private memslots are immutable")
            if (uaddr != old.userspace_addr or npages != old.npages
                    or (flags ^ old.flags) & (U.KVM_MEM_READONLY | U.KVM_MEM_GUEST_MEMFD)):
                raise KvmError(errno.EINVAL, "only base_gfn and LOG_DIRTY_PAGES may change")
            if base_gfn == old.base_gfn and flags == old.flags:
                return 0
            if base_gfn != old.base_gfn:
                self._check_overlap(as_id, sid, base_gfn, npages)
                self._zap_slot(old)
            old.base_gfn, old.flags = base_gfn, flags
            return 0
        self._check_overlap(as_id, sid, base_gfn, npages)   # create
        new = Memslot(sid, as_id, flags, base_gfn, npages, uaddr)
        if flags & U.KVM_MEM_GUEST_MEMFD:
            self._gmem_bind(new, gmem, gmem_offset)
        self.memslots[(as_id, sid)] = new
        return 0

    def _check_overlap(self, as_id, sid, base_gfn, npages) -> None:
        """``kvm_check_memslot_overlap``: EEXIST on any GPA overlap in the address space."""
        for (a, i), s in self.memslots.items():
            if a == as_id and i != sid and base_gfn < s.end_gfn and s.base_gfn < base_gfn + npages:
                raise KvmError(errno.EEXIST, f"GPA range overlaps memslot {i}")

    def _gmem_bind(self, slot: Memslot, f, offset: int) -> None:
        """``kvm_gmem_bind``: EBADF for no file; EINVAL for something that is not a guest_memfd
        (a VM, /dev/kvm, a plain memfd), one of another VM, a bad offset or size, or a range of
        the file already bound (EINVAL, not EEXIST)."""
        if f is None or (isinstance(f, GuestMemfd) and f.closed):
            raise KvmError(errno.EBADF, "guest_memfd is not an open file")
        if not isinstance(f, GuestMemfd):
            raise KvmError(errno.EINVAL, f"{type(f).__name__} is not a guest_memfd")
        if f.vm is not self:
            raise KvmError(errno.EINVAL, "guest_memfd belongs to another VM")
        start, end = offset >> PAGE_SHIFT, (offset >> PAGE_SHIFT) + slot.npages
        if offset % PAGE_4K or offset + (slot.npages << PAGE_SHIFT) > f.size:
            raise KvmError(errno.EINVAL, "offset not aligned or range beyond the file size")
        if any(s < end and start < e for s, e, _ in f.bindings):
            raise KvmError(errno.EINVAL, "range of the guest_memfd already bound")
        f.bindings.append((start, end, slot))
        slot.gmem, slot.gmem_pgoff = f, start
        slot.gmem_only = bool(f.flags & U.GUEST_MEMFD_FLAG_MMAP)

    def _gmem_unbind(self, slot: Memslot) -> None:
        f = slot.gmem
        f.bindings = [b for b in f.bindings if b[2] is not slot]
        slot.gmem = None

    def _zap_slot(self, slot: Memslot) -> None:
        self._zap(slot.base_gfn, slot.end_gfn, "all")

    def _zap(self, start: int, end: int, kind: str) -> None:
        """``kvm_unmap_gfn_range`` with a filter: drop the NPT mappings of that kind (a huge
        mapping straddling the range goes whole: it is rebuilt on the next fault)."""
        from .mmu import MAP_PRIVATE, MAP_SHARED
        self.zaps.append((start, end, kind))
        drop = {"shared": (MAP_SHARED,), "private": (MAP_PRIVATE,), "all": (MAP_SHARED, MAP_PRIVATE)}[kind]
        for s, e, v in self.sptes.ranges(start, end):
            if v in drop:
                self.sptes.set(s, e, 0)

    # ------------------------------------------------------------------ vCPUs and caps
    def create_vcpu(self, id: int):
        """``KVM_CREATE_VCPU``: an id already in use is EEXIST."""
        from .mmu import Vcpu
        self._alive()
        id = _u(id, "id", 32)
        if id in self.vcpus:
            raise KvmError(errno.EEXIST, f"vCPU {id} exists")
        vcpu = Vcpu(self, id)
        if self.type == U.KVM_X86_SNP_VM:
            from .snp import snp_alloc_vmsa
            vcpu.vmsa_pfn = snp_alloc_vmsa(self.kvm.host)
        self.vcpus[id] = vcpu
        return vcpu

    def enable_cap(self, cap: int, *args) -> int:
        """``KVM_ENABLE_CAP``. ``KVM_CAP_EXIT_HYPERCALL``: args[0] is a mask of hypercalls to
        exit to userspace for; bits outside ``KVM_EXIT_HYPERCALL_VALID_MASK`` (only
        ``KVM_HC_MAP_GPA_RANGE``) -> EINVAL. Other caps: EINVAL (not modelled yet)."""
        self._alive()
        if cap in (U.KVM_CAP_VM_COPY_ENC_CONTEXT_FROM, U.KVM_CAP_VM_MOVE_ENC_CONTEXT_FROM):
            from .sev import copy_enc_context_from, move_enc_context_from
            if not args:
                raise KvmError(errno.EBADF, "no source VM given")
            fn = copy_enc_context_from if cap == U.KVM_CAP_VM_COPY_ENC_CONTEXT_FROM else move_enc_context_from
            return fn(self, args[0])
        if cap == U.KVM_CAP_EXIT_HYPERCALL:
            mask = _u(args[0] if args else 0, "args[0]")
            if mask & ~(1 << U.KVM_HC_MAP_GPA_RANGE):
                raise KvmError(errno.EINVAL, "hypercall mask has bits outside the valid mask")
            self.exit_hypercalls = mask
            return 0
        raise KvmError(errno.EINVAL, f"capability {cap} cannot be enabled here")

    def slot_for_gfn(self, gfn: int, as_id: int = 0) -> Memslot | None:
        for (a, _), s in self.memslots.items():
            if a == as_id and s.base_gfn <= gfn < s.end_gfn:
                return s
        return None

    def sev_init(self) -> int:
        """Initialise SEV/SEV-ES/SNP for this VM: allocates its ASID (``kit.kvm.sev``)."""
        from .sev import sev_init
        return sev_init(self)

    def memory_encrypt_reg_region(self, addr: int, size: int) -> int:
        """``KVM_MEMORY_ENCRYPT_REG_REGION`` (``kit.kvm.sev.register_region``)."""
        from .sev import register_region
        self._alive()
        return register_region(self, _u(addr, "addr"), _u(size, "size"))

    def memory_encrypt_unreg_region(self, addr: int, size: int) -> int:
        """``KVM_MEMORY_ENCRYPT_UNREG_REGION`` (``kit.kvm.sev.unregister_region``)."""
        from .sev import unregister_region
        self._alive()
        return unregister_region(self, _u(addr, "addr"), _u(size, "size"))

    def destroy(self) -> None:
        """Userspace dropped the VM: ``sev_vm_destroy`` (ASID to reclaim, or mirror unlink);
        the VM is dead; its guest_memfd files keep their memory."""
        from .sev import sev_vm_destroy
        from .snp import sev_free_vcpu
        if not self.dead:
            for vcpu in self.vcpus.values():
                if getattr(vcpu, "vmsa_pfn", None) is not None:
                    sev_free_vcpu(vcpu)
            sev_vm_destroy(self)
        self.dead = True
