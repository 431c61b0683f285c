"""Memslots: ``struct kvm_memory_slot`` and the checks of ``KVM_SET_USER_MEMORY_REGION(2)``.

Sources: virt/kvm/kvm_main.c (``kvm_set_memory_region``, ``check_memory_region_flags``,
``kvm_check_memslot_overlap``), arch/x86/kvm/x86.c (``kvm_arch_nr_memslot_as_ids``,
``kvm_arch_has_readonly_mem``, ``kvm_arch_pre_set_memory_attributes``), virt/kvm/guest_memfd.c
(``kvm_gmem_get_index``). A failed check raises :class:`~kit.errors.KvmError` before anything
changed; the VM applies the result (:meth:`kit.kvm.vm.VM.set_user_memory_region2`).
"""
from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import NamedTuple

from ..errors import KvmError
from ..units import PAGE_4K, PAGE_SHIFT, PAGES_PER_1G, PAGES_PER_2M
from . import uapi as U
from .uapi import check_field


@dataclass
class Memslot:
    """``struct kvm_memory_slot`` (the fields the model uses)."""

    id: int
    as_id: int
    flags: int
    base_gfn: int
    npages: int
    userspace_addr: int
    gmem: "GuestMemfd | None" = None   # noqa: F821 (kit.kvm.gmem.GuestMemfd)
    gmem_pgoff: int = 0
    gmem_only: bool = False    # KVM_MEMSLOT_GMEM_ONLY: bound to a file created with MMAP

    @property
    def end_gfn(self) -> int:
        return self.base_gfn + self.npages

    def gmem_index(self, gfn: int) -> int:
        """The page of the bound guest_memfd that backs ``gfn`` (``kvm_gmem_get_index``)."""
        return gfn - self.base_gfn + self.gmem_pgoff

    def hva(self, gfn: int) -> int:
        """The VMM's virtual page number behind ``gfn`` (``__gfn_to_hva_memslot``, in pages)."""
        return (self.userspace_addr >> PAGE_SHIFT) + gfn - self.base_gfn

    def _repr_html_(self) -> str:
        from ..viz.html import memslot_html
        return memslot_html(self)


class Region(NamedTuple):
    """A checked ``struct kvm_userspace_memory_region2``, in pages."""

    as_id: int
    id: int
    flags: int
    base_gfn: int
    npages: int
    userspace_addr: int
    gmem_offset: int


def check_memory_region_flags(vm, flags: int) -> int:
    """``check_memory_region_flags``: the flags valid for this VM and this region."""
    valid = U.KVM_MEM_LOG_DIRTY_PAGES | U.KVM_MEM_GUEST_MEMFD
    if flags & U.KVM_MEM_GUEST_MEMFD:
        valid &= ~U.KVM_MEM_LOG_DIRTY_PAGES
    if not vm.has_protected_state and not flags & U.KVM_MEM_GUEST_MEMFD:   # kvm_arch_has_readonly_mem
        valid |= U.KVM_MEM_READONLY
    return valid


def check_memory_region(vm, slot, flags, gpa, size, uaddr, gmem_offset) -> Region:
    """The checks of ``kvm_vm_ioctl_set_memory_region`` + ``kvm_set_memory_region``, in the
    kernel's order, each EINVAL: slot id, flags, alignment of size, GPA and user address
    (``access_ok``), guest_memfd offset, address space (one for VMs with private memory:
    ``kvm_arch_nr_memslot_as_ids``), and a range that wraps or has too many pages."""
    slot, flags = check_field(slot, "slot", 32), check_field(flags, "flags", 32)
    gpa, size = check_field(gpa, "guest_phys_addr"), check_field(size, "memory_size")
    uaddr = check_field(uaddr, "userspace_addr")
    gmem_offset = check_field(gmem_offset, "guest_memfd_offset")
    sid, as_id = slot & 0xFFFF, slot >> 16
    if sid >= U.KVM_USER_MEM_SLOTS:
        raise KvmError(errno.EINVAL, f"slot id {sid} >= KVM_USER_MEM_SLOTS")
    if flags & ~check_memory_region_flags(vm, flags):
        raise KvmError(errno.EINVAL, f"memslot flags {flags:#x} not valid here")
    if size % PAGE_4K:
        raise KvmError(errno.EINVAL, "memory_size not page aligned")
    if gpa % PAGE_4K:
        raise KvmError(errno.EINVAL, "guest_phys_addr not page aligned")
    if uaddr % PAGE_4K or uaddr + size > U.TASK_SIZE_MAX:
        raise KvmError(errno.EINVAL, "userspace_addr not aligned or not a user address (access_ok)")
    if flags & U.KVM_MEM_GUEST_MEMFD and (gmem_offset % PAGE_4K or gmem_offset + size > U.U64):
        raise KvmError(errno.EINVAL, "guest_memfd_offset not aligned or offset+size wraps")
    if as_id >= (1 if vm.has_private_mem else 2) or sid >= U.KVM_MEM_SLOTS_NUM:
        raise KvmError(errno.EINVAL, f"address space {as_id} does not exist for this VM")
    if gpa + size > U.U64 + 1 or (size >> PAGE_SHIFT) > U.KVM_MEM_MAX_NR_PAGES:
        raise KvmError(errno.EINVAL, "guest_phys_addr+memory_size wraps or too many pages")
    return Region(as_id, sid, flags, gpa >> PAGE_SHIFT, size >> PAGE_SHIFT, uaddr, gmem_offset)


def check_memslot_overlap(memslots: dict, as_id: int, sid: int, base_gfn: int, npages: int) -> None:
    """``kvm_check_memslot_overlap``: EEXIST on any GPA overlap with another slot of the
    address space."""
    for (a, i), s in memslots.items():
        if a == as_id and i != sid and base_gfn < s.end_gfn and s.base_gfn < base_gfn + npages:
            raise KvmError(errno.EEXIST, f"GPA range overlaps memslot {i}")


def check_memslot_move(old: Memslot, flags: int, base_gfn: int, npages: int, uaddr: int) -> None:
    """``kvm_set_memory_region`` on an existing slot: a guest_memfd slot is immutable; only
    ``base_gfn`` and ``LOG_DIRTY_PAGES`` may change (EINVAL)."""
    if flags & U.KVM_MEM_GUEST_MEMFD:
        raise KvmError(errno.EINVAL, "private memslots are immutable")
    if (uaddr != old.userspace_addr or npages != old.npages
            or (flags ^ old.flags) & (U.KVM_MEM_READONLY | U.KVM_MEM_GUEST_MEMFD)):
        raise KvmError(errno.EINVAL, "only base_gfn and LOG_DIRTY_PAGES may change")


def slot_for_gfn(memslots: dict, gfn: int, as_id: int = 0) -> Memslot | None:
    """``__gfn_to_memslot``: the slot of address space ``as_id`` holding ``gfn``, or None."""
    for (a, _), s in memslots.items():
        if a == as_id and s.base_gfn <= gfn < s.end_gfn:
            return s
    return None


def hugepage_extend(slot: Memslot, s: int, e: int) -> tuple[int, int]:
    """``kvm_arch_pre_set_memory_attributes`` adds the head and tail huge pages (2M, 1G) that
    lie inside the slot to the invalidation, so a huge mapping straddling the range goes whole.
    (The kernel skips ones already mixed; including them only zaps mappings that cannot be
    huge anyway.)"""
    for n in (PAGES_PER_2M, PAGES_PER_1G):
        hs, he = s - s % n, -(-e // n) * n
        if hs >= slot.base_gfn:
            s = hs
        if he <= slot.end_gfn:
            e = he
    return s, e
