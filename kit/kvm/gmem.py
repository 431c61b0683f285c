"""guest_memfd: the file, its folios, and the one folio-order rule (virt/kvm/guest_memfd.c).

Sources: ``kvm_gmem_create``, ``kvm_gmem_bind``, ``kvm_gmem_fallocate`` (``kvm_gmem_allocate``,
``kvm_gmem_punch_hole``), ``kvm_gmem_get_pfn``, ``kvm_gmem_invalidate_begin``,
``kvm_gmem_free_folio``, ``kvm_gmem_release``, ``kvm_gmem_mmap``,
``kvm_gmem_fault_user_mapping``, ``kvm_gmem_setattr``, ``kvm_gmem_set_policy``; mm/madvise.c and
mm/mempolicy.c for ``madvise``/``mbind`` on the mapping; arch/x86/kvm/mmu/mmu.c
(``kvm_max_level_for_order``).

The generic file never calls SNP code: frames leave a file through the VM's arch ops
(``gmem_invalidate``, :mod:`kit.kvm.x86_ops`), and whether a file holds host frames at all is
the table's ``gmem_host_frames`` (the model tracks frames only where the RMP needs them).
"""
from __future__ import annotations

import errno
import itertools
from typing import NamedTuple

import numpy as np

from ..errors import KvmError, SigBus
from ..host.memory import OutOfMemory
from ..host.ranges import RangeStore, pfn_runs
from ..units import PAGE_1G, PAGE_2M, PAGE_4K, PAGE_SHIFT, PMD_SHIFT, PUD_SHIFT, PMD_ORDER, check_bool
from . import uapi as U
from .content import PageContents, check_byte, check_span
from .limits import GMEM_FOLIOS
from .uapi import check_field


PUD_ORDER = PUD_SHIFT - PAGE_SHIFT     # a 1G folio
LOFF_T_MAX = (1 << 63) - 1             # file offsets and sizes are signed 64-bit (loff_t)


def folio_order(f: "GuestMemfd") -> int:
    """The order of the folios file ``f`` hands out: upstream ``kvm_gmem_get_pfn`` gives order-0
    folios (``*max_order = 0``); with the 2M-folio guest_memfd series (``Kvm(gmem_hugepages=
    True)``, what the measured workloads used) a file whose size is a multiple of 2M gets
    PMD-order folios. Files without host frames (``gmem_host_frames`` false in the VM's arch
    ops) are counted in order-0 pages."""
    huge = f.host_frames and f.vm.kvm.gmem_hugepages and f.size % PAGE_2M == 0
    return PMD_ORDER if huge else 0


def max_level_for_order(order: int) -> int:
    """``kvm_max_level_for_order``: the largest page level a folio of ``order`` can be mapped at."""
    if order >= PUD_ORDER:
        return PAGE_1G
    if order >= PMD_ORDER:
        return PAGE_2M
    return PAGE_4K


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
    on its VM, the memslots bound to ranges of it, which pages are allocated, the host frames
    of its folios (folio index -> pfn, for VMs whose arch ops need frames), and the pages'
    contents (one fill byte per page, :mod:`kit.kvm.content`).

    ``prepared`` holds the pages the arch's ``gmem_prepare`` ran for: ``kvm_gmem_get_pfn``
    prepares a folio once (``kvm_gmem_prepare_folio`` when it is not yet up to date, then
    ``kvm_gmem_mark_prepared``), so a later fault on it does not prepare again, whatever
    happened to its RMP entry meanwhile. Kept per page so that a huge folio the arch prepared
    4K at a time goes on page by page; cleared when the folio is freed."""

    def __init__(self, vm, size: int, flags: int):
        self.vm = vm
        self.size = size
        self.flags = flags
        self.bindings: list = []                              # (first pgoff, end pgoff, slot)
        self.allocated = RangeStore()                         # page indices, value 1
        self.folios: dict[int, int] = {}                      # folio index -> host pfn
        self.unprepared: set[int] = set()                     # folios fallocate took, not yet cleared
        self.prepared = RangeStore()                          # pages the arch prepared (value 1)
        self.data = PageContents()                            # page index -> fill byte
        self.ino = next(_inode_numbers)
        self.map_length = 0                                   # bytes mapped by mmap(), 0 = none
        self.mapped = False
        self.policies = RangeStore()                          # page -> index+1 in policy_table
        self.policy_table: list[tuple[int, frozenset]] = []   # (mode, nodes) set by mbind
        self.closed = False

    def __repr__(self) -> str:
        return f"<guest_memfd of {self.vm!r}: {self.size} bytes, flags {self.flags:#x}>"

    @property
    def host_frames(self) -> bool:
        """Whether this file's folios are host frames (the VM's ``x86_ops.gmem_host_frames``)."""
        return self.vm.x86_ops.gmem_host_frames

    @property
    def npages(self) -> int:
        return self.size >> PAGE_SHIFT

    # ------------------------------------------------------------------ folios
    def get_pfn(self, index: int, *, allocate: bool = True) -> tuple[int | None, int]:
        """``kvm_gmem_get_pfn``: (pfn, folio order) of page ``index``. A folio not in the file
        yet is taken from the host's frames and zeroed (``bytes_zeroed`` recorded); one that
        fallocate took is cleared now (:meth:`clear_on_first_use`). ``allocate=False`` only
        looks: (None, order) when the file has no folio there. A file without host frames
        returns (None, order) and counts the page allocated. EFAULT once closed."""
        if self.closed:
            raise KvmError(errno.EFAULT, "guest_memfd is closed")
        index = check_field(index, "index")
        if index >= self.npages:
            raise ValueError(f"index: page {index} is beyond the file's {self.npages} pages")
        allocate = check_bool(allocate, "allocate")
        order = folio_order(self)
        fidx = index >> order
        if not self.host_frames:
            if allocate:
                self.allocated.set(fidx << order, (fidx + 1) << order, 1)
            return None, order
        pfn = self.folios.get(fidx)
        if pfn is None:
            if not allocate:
                return None, order
            self._check_folios(1, "index")
            host = self.vm.kvm.host
            pfn = int(host.memory.alloc(order, "guest")[0])
            host.ledger.record("gmem_folio", bytes_zeroed=PAGE_4K << order)
            self.folios[fidx] = pfn
            self.allocated.set(fidx << order, (fidx + 1) << order, 1)
        elif allocate and fidx in self.unprepared:
            self.clear_on_first_use([fidx])
        return pfn + (index & ((1 << order) - 1)), order

    def get_folios(self, first: int, count: int) -> np.ndarray:
        """:meth:`get_pfn` for ``count`` consecutive folios from folio index ``first``, as range
        operations (the same state and cost events as one call per folio): the host frames."""
        order = folio_order(self)
        first, count = check_field(first, "first"), check_field(count, "count")
        if (first + count) << order > self.npages:
            raise ValueError(f"first, count: folios [{first}, {first + count}) go past the file's end")
        self._check_folios(count, "count")
        idx = range(first, first + count)
        missing = [i for i in idx if i not in self.folios]
        if self.unprepared:
            self.clear_on_first_use([i for i in idx if i in self.unprepared])
        if missing:
            host = self.vm.kvm.host
            pfns = host.memory.alloc(order, "guest", count=len(missing))
            host.ledger.record("gmem_folio", bytes_zeroed=(PAGE_4K << order) * len(missing))
            self.folios.update(zip(missing, (int(p) for p in pfns)))
            for i, n in pfn_runs(missing):          # folio indices, one range per run
                self.allocated.set(i << order, (i + n) << order, 1)
        return self.folio_pfns(first, count)

    def _check_folios(self, more: int, name: str) -> None:
        """The file may hold ``more`` folios beyond those it has (:data:`GMEM_FOLIOS`)."""
        if len(self.folios) + more > GMEM_FOLIOS.max:
            raise ValueError(f"{name}: the file would hold {len(self.folios) + more} folios; at most "
                             f"{GMEM_FOLIOS.max} (the limit: {GMEM_FOLIOS.why})")

    def _check_pages(self, start, end) -> tuple[int, int]:
        """A range of the file's pages, ``0 <= start <= end <= npages``."""
        start, end = check_field(start, "start"), check_field(end, "end")
        if not start <= end <= self.npages:
            raise ValueError(f"start, end: pages [{start}, {end}) are not a range of the file's {self.npages} pages")
        return start, end

    def folio_pfns(self, first: int, count: int) -> np.ndarray:
        """The host frames of folios ``first .. first + count - 1`` (all present)."""
        first, count = check_field(first, "first"), check_field(count, "count")
        if count > len(self.folios):
            raise ValueError(f"count: {count} folios asked for, the file holds {len(self.folios)}")
        try:
            return np.fromiter((self.folios[i] for i in range(first, first + count)), dtype=np.int64,
                               count=count)
        except KeyError as e:
            raise ValueError(f"first, count: folio {e.args[0]} is not in the file") from None

    def clear_on_first_use(self, fidxs) -> None:
        """Folios :meth:`allocate_folios` took are cleared when a fault first gets them
        (``kvm_gmem_get_pfn`` on a folio not yet up to date)."""
        if fidxs:
            self.unprepared.difference_update(fidxs)
            self.vm.kvm.host.ledger.record(
                "gmem_folio", bytes_zeroed=(PAGE_4K << folio_order(self)) * len(fidxs))

    def allocate_folios(self, start: int, end: int) -> None:
        """``kvm_gmem_allocate`` (fallocate without PUNCH_HOLE) for a file with host frames:
        every folio overlapping pages ``[start, end)`` that the file does not hold yet is taken
        from the host (``kvm_gmem_get_folio`` -> ``filemap_grab_folio``), not cleared and not
        prepared: the first :meth:`get_pfn` clears it (``bytes_zeroed`` then) and the arch's
        ``gmem_prepare`` runs on the fault. Too little host memory -> ENOMEM; the kernel keeps
        the folios it took before failing, the kit takes none (a failed call changes nothing)."""
        start, end = self._check_pages(start, end)
        if start == end:
            return
        host = self.vm.kvm.host
        order = folio_order(self)
        lo, hi = start >> order, ((end - 1) >> order) + 1
        held = sum(1 for k in self.folios if lo <= k < hi)
        free = host.memory.free_regions() if order == PMD_ORDER else host.memory.free_pages()
        if hi - lo - held > free:
            raise KvmError(errno.ENOMEM, f"fallocate: {hi - lo - held} folios wanted, the host has {free} free")
        self._check_folios(hi - lo - held, "length")
        need = np.ones(hi - lo, dtype=bool)
        have = np.fromiter((k for k in self.folios if lo <= k < hi), dtype=np.int64)
        need[have - lo] = False
        missing = (lo + np.flatnonzero(need)).tolist()
        if not missing:
            return
        try:
            pfns = host.memory.alloc(order, "guest", count=len(missing))
        except OutOfMemory as e:
            raise KvmError(errno.ENOMEM, f"fallocate: {e}") from None
        self.folios.update(zip(missing, pfns.tolist()))
        self.unprepared.update(missing)
        for i, n in pfn_runs(missing):
            self.allocated.set(i << order, (i + n) << order, 1)

    def free_folios(self, start: int, end: int) -> None:
        """Truncate pages [start, end): every whole folio inside goes back to the host after the
        arch's ``gmem_invalidate`` (``kvm_gmem_free_folio`` -> ``kvm_arch_gmem_invalidate``;
        SNP: the frames become shared again)."""
        start, end = self._check_pages(start, end)
        host = self.vm.kvm.host
        order = folio_order(self)
        for fidx in sorted(k for k in self.folios if start <= (k << order) and ((k + 1) << order) <= end):
            pfn = self.folios.pop(fidx)
            self.unprepared.discard(fidx)
            self.prepared.set(fidx << order, (fidx + 1) << order, 0)
            self.vm.x86_ops.gmem_invalidate(host, pfn, pfn + (1 << order))
            host.memory.free(pfn, order)

    def mark_allocated(self, start: int, end: int) -> None:
        """Pages [start, end) now have (order-0, zeroed-on-first-use) folios."""
        start, end = self._check_pages(start, end)
        self.allocated.set(start, end, 1)

    def invalidate_begin(self, start: int, end: int) -> None:
        """``kvm_gmem_invalidate_begin``: zap the gfns of every bound slot mapping pages
        [start, end), with the file's filter (shared mappings for an INIT_SHARED file, else
        private ones: ``kvm_gmem_get_invalidate_filter``)."""
        start, end = self._check_pages(start, end)
        kind = "shared" if self.flags & U.GUEST_MEMFD_FLAG_INIT_SHARED else "private"
        for s, e, slot in self.bindings:
            lo, hi = max(s, start), min(e, end)
            if lo < hi:
                g0 = slot.base_gfn + lo - slot.gmem_pgoff
                self.vm.zap_gfn_range(g0, g0 + hi - lo, kind)

    # ------------------------------------------------------------------ file operations
    def fallocate(self, mode: int, offset: int, length: int) -> int:
        """``kvm_gmem_fallocate``: mode must have KEEP_SIZE and nothing but KEEP_SIZE|PUNCH_HOLE
        (EOPNOTSUPP); offset and len page-aligned (EINVAL); len 0 is EINVAL
        (fs/open.c vfs_fallocate: ``if (offset < 0 || len <= 0) return -EINVAL``); an allocation past i_size is EINVAL,
        a hole punched past EOF is a no-op. Allocating takes the folios from the host
        (``kvm_gmem_allocate`` -> ``kvm_gmem_get_folio``; frames only for files with host
        frames, :meth:`allocate_folios`) without clearing them: a folio is cleared when a
        fault first gets it. Punching invalidates KVM's mappings of the range in every bound
        slot, then frees the pages; the next fault gets a zeroed page."""
        if self.closed:
            raise KvmError(errno.EBADF, "guest_memfd is closed")
        mode = check_field(mode, "mode", 32)
        offset, length = check_field(offset, "offset"), check_field(length, "length")
        if offset > LOFF_T_MAX or length > LOFF_T_MAX:        # vfs_fallocate: negative loff_t
            raise KvmError(errno.EINVAL, "offset or len negative as an loff_t")
        if length == 0:                                       # vfs_fallocate: len <= 0
            raise KvmError(errno.EINVAL, "len must be positive")
        if offset + length > LOFF_T_MAX:                      # vfs_fallocate: past s_maxbytes
            raise KvmError(errno.EFBIG, "offset+len past the largest file size")
        if not mode & U.FALLOC_FL_KEEP_SIZE or mode & ~(U.FALLOC_FL_KEEP_SIZE | U.FALLOC_FL_PUNCH_HOLE):
            raise KvmError(errno.EOPNOTSUPP, "fallocate mode must be KEEP_SIZE [| PUNCH_HOLE]")
        if offset % PAGE_4K or length % PAGE_4K:
            raise KvmError(errno.EINVAL, "offset and len must be page aligned")
        start, end = offset >> PAGE_SHIFT, (offset + length) >> PAGE_SHIFT
        if mode & U.FALLOC_FL_PUNCH_HOLE:
            end = min(end, self.npages)
            if start < end:
                self.invalidate_begin(start, end)
                self.free_folios(start, end)
                if not self.host_frames:            # order-0 pages, no frames tracked
                    self.prepared.set(start, end, 0)
                self.allocated.set(start, end, 0)
                self.data.zero(start, end)
            return 0
        if offset + length > self.size:
            raise KvmError(errno.EINVAL, "allocation beyond the file size")
        if length:
            if self.host_frames:
                self.allocate_folios(start, end)
            self.allocated.set(start, end, 1)
        return 0

    def mmap(self, length: int, offset: int = 0, *, shared: bool = True) -> int:
        """``kvm_gmem_mmap``: without GUEST_MEMFD_FLAG_MMAP -> ENODEV; a private (COW) mapping
        -> EINVAL. The mapping may be longer than the file (accesses past i_size then SIGBUS).
        Returns 0 (the mapping is then usable with :meth:`user_access`, :meth:`user_fill`,
        :meth:`user_read`, :meth:`madvise`, :meth:`mbind`)."""
        self._open()
        length, offset = check_field(length, "length"), check_field(offset, "offset")
        shared = check_bool(shared, "shared")
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
        if not self.mapped:
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
        offset = check_field(offset, "offset")
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
        offset, length = check_field(offset, "offset"), check_field(length, "length")
        advice = check_field(advice, "advice", 32)
        if not self.mapped:
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
            inside = min(length, max(self.size - offset, 0))
            if not inside:          # do_madvise: an empty range is 0; nothing of the file to punch
                return 0
            return self.fallocate(U.FALLOC_FL_KEEP_SIZE | U.FALLOC_FL_PUNCH_HOLE, offset, inside)
        return 0

    def mbind(self, offset: int, length: int, mode: int, nodemask=(0,)) -> int:
        """``mbind`` on the mapping (mm/mempolicy.c ``kernel_mbind``/``do_mbind``): mode >=
        MPOL_MAX -> EINVAL; BIND/INTERLEAVE/PREFERRED[_MANY] with an empty nodemask, or a node
        the host does not have -> EINVAL; the policy is stored in the file's shared policy
        (``kvm_gmem_set_policy``) and new folios honour it. The host model has one NUMA node
        (node 0), so placement is trivially on it."""
        offset, length = check_field(offset, "offset"), check_field(length, "length")
        mode = check_field(mode, "mode", 32)
        if isinstance(nodemask, (str, bytes)) or not hasattr(nodemask, "__iter__"):
            raise TypeError(f"nodemask: expected a collection of node numbers, got {nodemask!r}")
        try:
            nodes = frozenset(nodemask)
        except TypeError:
            raise TypeError(f"nodemask: expected a collection of node numbers, got {nodemask!r}") from None
        if not self.mapped:
            raise KvmError(errno.EFAULT, "no mapping of this guest_memfd")
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
        v = self.policies.get(check_field(offset, "offset") >> PAGE_SHIFT)
        return (MPOL_DEFAULT, frozenset()) if not v else self.policy_table[v - 1]

    def node_of(self, offset: int) -> int:
        """The NUMA node of the folio at ``offset``: always 0 (one-node host model)."""
        check_field(offset, "offset")
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
        truncated (:meth:`free_folios`: for SNP made shared again by ``sev_gmem_invalidate``,
        then freed to the host). The VM reference is dropped."""
        if self.closed:
            return
        for s, e, slot in self.bindings:
            self.vm.zap_gfn_range(slot.base_gfn, slot.end_gfn, "all")
            slot.gmem = None
        self.free_folios(0, self.npages)
        self.prepared.set(0, self.npages, 0)
        self.allocated.set(0, self.npages, 0)
        self.data.zero(0, self.npages)
        self.closed = True
        self.vm.gmem_files.discard(self)

    def allocated_pages(self) -> int:
        return sum(e - s for s, e, _ in self.allocated.ranges(0, self.npages))


# ------------------------------------------------------------------ binding to memslots
def kvm_gmem_bind(vm, slot, f, offset: int) -> None:
    """``kvm_gmem_bind``: EBADF for no file; EINVAL for something that is not a guest_memfd
    (a VM, /dev/kvm, a plain memfd), one of another VM, a bad offset or size, or a range of
    the file already bound (EINVAL, not EEXIST)."""
    offset = check_field(offset, "offset")
    if f is None or (isinstance(f, GuestMemfd) and f.closed):
        raise KvmError(errno.EBADF, "guest_memfd is not an open file")
    if not isinstance(f, GuestMemfd):
        raise KvmError(errno.EINVAL, f"{type(f).__name__} is not a guest_memfd")
    if f.vm is not vm:
        raise KvmError(errno.EINVAL, "guest_memfd belongs to another VM")
    start, end = offset >> PAGE_SHIFT, (offset >> PAGE_SHIFT) + slot.npages
    if offset % PAGE_4K or offset + (slot.npages << PAGE_SHIFT) > f.size:
        raise KvmError(errno.EINVAL, "offset not aligned or range beyond the file size")
    if any(s < end and start < e for s, e, _ in f.bindings):
        raise KvmError(errno.EINVAL, "range of the guest_memfd already bound")
    f.bindings.append((start, end, slot))
    slot.gmem, slot.gmem_pgoff = f, start
    slot.gmem_only = bool(f.flags & U.GUEST_MEMFD_FLAG_MMAP)


def kvm_gmem_unbind(slot) -> None:
    """``kvm_gmem_unbind``: the slot's range of its file is free again."""
    f = slot.gmem
    f.bindings = [b for b in f.bindings if b[2] is not slot]
    slot.gmem = None
