"""Page contents, for the data checks of the selftests.

The selftests (tools/testing/selftests/kvm/guest_memfd_test.c, x86/private_mem_conversions_test.c)
write a byte pattern over whole pages (``memset``) and check who sees which pattern. The kit
keeps one fill byte per 4K page in a range store (page index -> byte, 0 = a zeroed page), so a
1 TiB fill is one entry. Byte-granular contents are not modelled: fills must cover whole pages.

Two kinds of backing hold contents:
- a guest_memfd file (by page offset in the file), which the guest reaches through a
  guest_memfd memslot (private accesses, and shared ones on a ``KVM_MEMSLOT_GMEM_ONLY`` slot)
  and userspace through ``mmap`` of the file;
- the VMM's own anonymous memory at a memslot's ``userspace_addr`` (by host virtual page),
  which backs shared accesses to every other slot.
"""
from __future__ import annotations

import numpy as np

from ..host.ranges import RangeStore
from ..units import PAGE_4K, PAGE_SHIFT
from .limits import PAGE_BY_PAGE
from .uapi import TASK_SIZE_MAX

MAX_READ = PAGE_BY_PAGE.max   # bytes one read may materialise


def check_byte(value, name: str = "value") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFF:
        raise ValueError(f"{name}: expected a byte value 0..255, got {value!r}")
    return value


def check_span(addr, length, *, whole_pages: bool, addr_name: str = "offset") -> tuple[int, int]:
    for v, n in ((addr, addr_name), (length, "length")):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{n}: expected a non-negative int, got {v!r}")
    if whole_pages and (addr % PAGE_4K or length % PAGE_4K):
        raise ValueError(f"{addr_name}, length: contents are modelled per 4K page; fills must be "
                         f"page aligned, got {addr:#x}+{length:#x}")
    if not whole_pages and length > MAX_READ:
        raise ValueError(f"length: at most {MAX_READ} bytes per read, got {length}")
    return addr, length


class PageContents:
    """One fill byte per 4K page, keyed by page index; unset pages read as zero."""

    def __init__(self):
        self._pages = RangeStore()

    def fill(self, first: int, npages: int, value: int) -> None:
        if npages:
            self._pages.set(first, first + npages, value)

    def zero(self, first: int, end: int) -> None:
        if first < end:
            self._pages.set(first, end, 0)

    def page(self, index: int) -> int:
        return self._pages.get(index)

    def read(self, addr: int, length: int) -> bytes:
        """``length`` bytes from byte address ``addr`` (page index = addr // 4K)."""
        if not length:
            return b""
        first, last = addr // PAGE_4K, (addr + length - 1) // PAGE_4K
        per_page = np.zeros(last - first + 1, dtype=np.uint8)
        for s, e, v in self._pages.ranges(first, last + 1):
            per_page[max(s, first) - first:min(e, last + 1) - first] = v
        start = addr - first * PAGE_4K
        return np.repeat(per_page, PAGE_4K)[start:start + length].tobytes()

    @property
    def nbytes(self) -> int:
        return self._pages.nbytes


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
