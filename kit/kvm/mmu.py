"""The guest-access fault path and the hypercall exit, for vCPUs of a VM.

Sources: arch/x86/kvm/mmu/mmu.c (``kvm_mmu_page_fault``: for SW_PROTECTED VMs the access is
private exactly when ``kvm_mem_is_private(gfn)``; ``kvm_mmu_faultin_pfn``: access/attribute
mismatch -> ``kvm_mmu_prepare_memory_fault_exit``; ``kvm_handle_noslot_fault``;
``kvm_mmu_faultin_pfn_gmem``: private access to a non-gmem slot; ``kvm_max_level_for_order``,
``kvm_max_private_mapping_level`` and ``KVM_LPAGE_MIXED_FLAG`` cap the level),
virt/kvm/guest_memfd.c (``kvm_gmem_get_pfn``: EFAULT once the file is closed), arch/x86/kvm/x86.c
(``____kvm_emulate_hypercall`` for ``KVM_HC_MAP_GPA_RANGE``, ``complete_hypercall_exit``).

The private fault reaches the arch only through the VM's ops table (:mod:`kit.kvm.x86_ops`):
``gmem_prepare`` on the folio, ``private_max_mapping_level`` on the level.
"""
from __future__ import annotations

import errno

from ..errors import KvmError
from ..units import PAGE_1G, PAGE_2M, PAGE_4K, PAGE_SHIFT
from . import uapi as U
from .content import check_byte, check_span
from .gmem import max_level_for_order
# the exit structures and the hypercall's attribute bits live in .uapi (re-exported here)
from .uapi import (KVM_MAP_GPA_RANGE_DECRYPTED, KVM_MAP_GPA_RANGE_ENCRYPTED,  # noqa: F401
                   KVM_MAP_GPA_RANGE_PAGE_SZ_1G, KVM_MAP_GPA_RANGE_PAGE_SZ_2M,
                   KVM_MAP_GPA_RANGE_PAGE_SZ_4K, Exit, Hypercall, MemoryFault)

MAP_SHARED, MAP_PRIVATE = 1, 2   # values in the VM's SPTE range store (what the NPT maps)


class Vcpu:
    """``struct kvm_vcpu``: its VM, its id, and the SEV-ES/SNP state the model needs (whether
    its VMSA is protected, and for SNP the VMSA's host frame, set by the arch's
    ``vcpu_create``)."""

    def __init__(self, vm, id: int):
        self.vm = vm
        self.id = id
        self.vmsa_protected = False   # SEV-ES: set by LAUNCH_UPDATE_VMSA
        self.vmsa_pfn: int | None = None

    def __repr__(self) -> str:
        return f"<vCPU {self.id} of {self.vm!r}>"

    # ------------------------------------------------------------------ accesses
    def access(self, gpa: int, *, write: bool = True, private: bool | None = None):
        """A guest access to ``gpa``. Returns None when it completes (KVM faulting the page in
        as needed) or an :class:`Exit`. ``private=None``: as the attribute says (SW_PROTECTED,
        ``kvm_mmu_page_fault``); SNP accesses state their C-bit. Exits, in the kernel's order:
        private access with no memslot or to a non-guest_memfd slot, access/attribute mismatch,
        guest_memfd failure -> ``KVM_EXIT_MEMORY_FAULT`` (gpa page-aligned, size 4096, flags
        PRIVATE iff the access was private); shared access with no memslot -> MMIO.

        A private fault gets the folio (``kvm_gmem_get_pfn``), has the arch prepare it
        (``gmem_prepare``; a failure is EINVAL) and maps it at the folio's level
        (``kvm_max_level_for_order``) capped by the arch (``private_max_mapping_level``) and
        by mixed attributes in the huge page (``KVM_LPAGE_MIXED_FLAG``)."""
        vm = self.vm
        vm.check_alive()
        if isinstance(gpa, bool) or not isinstance(gpa, int) or gpa < 0:
            raise ValueError(f"gpa: expected a non-negative int, got {gpa!r}")
        gpa, private = vm.x86_ops.fault_gpa(vm, gpa, private)
        gfn = gpa >> PAGE_SHIFT
        is_private = bool(vm.memory_attributes(gfn) & U.KVM_MEMORY_ATTRIBUTE_PRIVATE) if private is None else bool(private)
        if is_private and not vm.has_private_mem:
            raise ValueError("private: this VM type has no private memory")
        slot = vm.slot_for_gfn(gfn)
        fault = lambda: Exit(U.KVM_EXIT_MEMORY_FAULT, memory_fault=MemoryFault(
            gfn << PAGE_SHIFT, PAGE_4K, U.KVM_MEMORY_EXIT_FLAG_PRIVATE if is_private else 0),
            errno=errno.EFAULT)
        if slot is None:
            return fault() if is_private else Exit(U.KVM_EXIT_MMIO)
        attr_private = bool(vm.memory_attributes(gfn) & U.KVM_MEMORY_ATTRIBUTE_PRIVATE)
        if is_private != attr_private:
            can_back = not is_private or (slot.flags & U.KVM_MEM_GUEST_MEMFD and slot.gmem is not None)
            if vm.npf_policy != "auto-convert" or not can_back:
                return fault()
            # the 2021 agreement (thread "[PATCH Part2 RFC v4 37/40] KVM: SVM: Add support to
            # handle the RMP nested page fault"): KVM converts on a guest access itself, never
            # on a host access
            value = U.KVM_MEMORY_ATTRIBUTE_PRIVATE if is_private else 0
            vm.kvm_vm_set_mem_attributes(gfn << PAGE_SHIFT, PAGE_4K, value)
            vm.kvm_conversions.append((gfn, gfn + 1, value))
        if is_private or slot.gmem_only:   # __kvm_mmu_faultin_pfn: private, or a GMEM_ONLY slot
            if not slot.flags & U.KVM_MEM_GUEST_MEMFD:
                return fault()
            if slot.gmem is None:                   # kvm_gmem_get_pfn: file closed -> EFAULT
                return fault()
            index = slot.gmem_index(gfn)
            if not is_private:                      # shared fault served from guest_memfd
                slot.gmem.mark_allocated(index, index + 1)
                return self._map(gfn, PAGE_4K, False)
            return self._map(gfn, self._private_level(gfn, slot, index), True)
        return self._map(gfn, self.max_level(gfn, slot, is_private), is_private)

    def _private_level(self, gfn: int, slot, index: int) -> int:
        """``kvm_mmu_faultin_pfn_gmem`` + ``kvm_max_private_mapping_level``: fault the folio in,
        have the arch prepare it, and the level it may be mapped at."""
        vm, ops = self.vm, self.vm.x86_ops
        pfn, order = slot.gmem.get_pfn(index)
        if ops.gmem_prepare(vm, pfn, gfn, order):
            raise KvmError(errno.EINVAL, f"gmem_prepare failed for gfn {gfn:#x}")
        level = max_level_for_order(order)
        if level > PAGE_4K:                     # the arch is asked only about huge mappings
            cap = ops.private_max_mapping_level(vm, pfn)
            if cap:
                level = min(level, cap)
        while level > PAGE_4K and vm.lpage_mixed(gfn, level // PAGE_4K):   # KVM_LPAGE_MIXED_FLAG
            level = PAGE_2M if level == PAGE_1G else PAGE_4K
        return level

    def fill(self, gpa: int, length: int, value: int, *, private: bool | None = None):
        """The guest writes ``value`` over ``[gpa, gpa+length)`` (whole pages), page by page
        through :meth:`access`. Returns None, or the first page's exit (pages before it are
        written, as a guest ``memset`` would have). The bytes land where KVM mapped the page:
        guest_memfd for private pages and GMEM_ONLY slots, else the VMM's memory at the
        slot's ``userspace_addr``."""
        check_span(gpa, length, whole_pages=True, addr_name="gpa")
        check_byte(value)
        for page in range(gpa >> PAGE_SHIFT, (gpa + length) >> PAGE_SHIFT):
            out = self.access(page << PAGE_SHIFT, write=True, private=private)
            if out is not None:
                return out
            store, index = self._backing(page, private)
            store.fill(index, 1, value)
        return None

    def read(self, gpa: int, length: int = 1, *, private: bool | None = None):
        """The guest reads ``length`` bytes at ``gpa``: bytes, or the first page's exit."""
        check_span(gpa, length, whole_pages=False, addr_name="gpa")
        out = bytearray()
        first = gpa >> PAGE_SHIFT
        for page in range(first, ((gpa + max(length, 1) - 1) >> PAGE_SHIFT) + 1):
            ex = self.access(page << PAGE_SHIFT, write=False, private=private)
            if ex is not None:
                return ex
            store, index = self._backing(page, private)
            base = page << PAGE_SHIFT
            lo = gpa - base if page == first else 0
            hi = min(PAGE_4K, gpa + length - base)
            out += store.read(index * PAGE_4K + lo, hi - lo)
        return bytes(out)

    def _backing(self, gfn: int, private: bool | None):
        """(contents, page index) of the memory the NPT maps at ``gfn`` after a fault-in."""
        vm = self.vm
        is_private = (bool(vm.memory_attributes(gfn) & U.KVM_MEMORY_ATTRIBUTE_PRIVATE)
                      if private is None else bool(private))
        slot = vm.slot_for_gfn(gfn)
        if is_private or slot.gmem_only:
            return slot.gmem.data, slot.gmem_index(gfn)
        return vm.kvm.user_memory.data, slot.hva(gfn)

    def _map(self, gfn: int, level: int, is_private: bool):
        """Install the NPT mapping (once): the level-aligned range around ``gfn``."""
        vm = self.vm
        if vm.sptes.get(gfn) != (MAP_PRIVATE if is_private else MAP_SHARED):
            n = level // PAGE_4K
            base = gfn - gfn % n
            vm.sptes.set(base, base + n, MAP_PRIVATE if is_private else MAP_SHARED)
            vm.faults_in.append((gfn, level, is_private))
        return None

    def max_level(self, gfn: int, slot, is_private: bool) -> int:
        """Mapping level of a fault not served from guest_memfd: shared mappings may be 2M/1G
        where the huge page lies inside the slot and its attributes are uniform
        (``KVM_LPAGE_MIXED_FLAG``). Host page-size limits of the userspace mapping are not
        modelled (taken as huge-page backed). (Private faults: :meth:`access`.)"""
        if is_private:
            return PAGE_4K
        for level in (PAGE_1G, PAGE_2M):
            n = level // PAGE_4K
            base = gfn - gfn % n
            if base >= slot.base_gfn and base + n <= slot.end_gfn and not self.vm.lpage_mixed(gfn, n):
                return level
        return PAGE_4K

    # ------------------------------------------------------------------ hypercalls
    def hypercall(self, nr: int, *args: int, cpl: int = 0, long_mode: bool = True):
        """A guest VMCALL. ``KVM_HC_MAP_GPA_RANGE`` (``____kvm_emulate_hypercall``): CPL != 0 ->
        the guest gets -KVM_EPERM; not enabled with ``KVM_CAP_EXIT_HYPERCALL`` -> -KVM_ENOSYS;
        gpa not page aligned, npages 0, or the gfn range wraps -> -KVM_EINVAL (attrs are not
        validated). Returns the guest's RAX (an int) or the ``KVM_EXIT_HYPERCALL`` exit."""
        self.vm.check_alive()
        if nr != U.KVM_HC_MAP_GPA_RANGE:
            return -U.KVM_ENOSYS
        if cpl != 0:
            return -U.KVM_EPERM
        guest_owned = self.vm.attribute_owner == "guest"   # KVM handles it: no exit needed
        if not guest_owned and not self.vm.exit_hypercalls & (1 << U.KVM_HC_MAP_GPA_RANGE):
            return -U.KVM_ENOSYS
        gpa, npages, attrs = (list(args) + [0, 0, 0])[:3]
        gfn = gpa >> PAGE_SHIFT
        if gpa % PAGE_4K or npages == 0 or (gfn + npages) % (1 << 64) <= gfn:   # u64 wrap
            return -U.KVM_EINVAL
        if guest_owned:
            # the pKVM proposal (thread "[RFC PATCH v12 11/33] KVM: Introduce per-page memory
            # attributes", 2023): the guest's call decides; KVM applies it
            value = U.KVM_MEMORY_ATTRIBUTE_PRIVATE if attrs & KVM_MAP_GPA_RANGE_ENCRYPTED else 0
            self.vm.kvm_vm_set_mem_attributes(gpa, npages << PAGE_SHIFT, value)
            self.vm.kvm_conversions.append((gfn, gfn + npages, value))
            return 0
        return Exit(U.KVM_EXIT_HYPERCALL, hypercall=Hypercall(
            U.KVM_HC_MAP_GPA_RANGE, (gpa, npages, attrs), U.KVM_EXIT_HYPERCALL_LONG_MODE if long_mode else 0))
