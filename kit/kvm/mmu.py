"""The vCPU: the guest-access fault path, the hypercall exit, the VMGEXITs of an SEV-ES/SNP
guest (GHCB page-state change, MSR protocol, termination) and userspace's answer to an exit.

Sources: arch/x86/kvm/mmu/mmu.c (``kvm_mmu_page_fault``: for SW_PROTECTED VMs the access is
private exactly when ``kvm_mem_is_private(gfn)``; ``kvm_mmu_faultin_pfn``: access/attribute
mismatch -> ``kvm_mmu_prepare_memory_fault_exit``; ``kvm_handle_noslot_fault``;
``kvm_mmu_faultin_pfn_gmem``: private access to a non-gmem slot; ``kvm_max_level_for_order``,
``kvm_max_private_mapping_level`` and ``KVM_LPAGE_MIXED_FLAG`` cap the level),
virt/kvm/guest_memfd.c (``kvm_gmem_get_pfn``: EFAULT once the file is closed), arch/x86/kvm/x86.c
(``____kvm_emulate_hypercall`` for ``KVM_HC_MAP_GPA_RANGE``, ``complete_hypercall_exit``).

The private fault reaches the arch only through the VM's ops table (:mod:`kit.kvm.x86_ops`):
``gmem_prepare`` on the folio, ``private_max_mapping_level`` on the level, the hardware's RMP
check of a private access (``check_private_access``), and the VMGEXIT handlers. A completion
left for userspace is ``vcpu->arch.complete_userspace_io`` (arch/x86/kvm/x86.c
``kvm_arch_vcpu_ioctl_run``), run by :meth:`Vcpu.complete_hypercall`. The model's rules are
summarised in docs/kvm-model.md.
"""
from __future__ import annotations

import errno

from ..errors import KitError, KvmError
from ..units import PAGE_1G, PAGE_2M, PAGE_4K, PAGE_SHIFT, check_bool, check_int
from . import uapi as U
from .content import check_byte, check_span
from .ghcb import GHCB_MSR_INFO_MASK, GHCB_MSR_PSC_REQ, ghcb_msr_term_req
from .gmem import max_level_for_order
from .injection import signal_after
from .limits import MAX_GPA_BITS, PAGE_BY_PAGE
from .uapi import check_field
# the exit structures and the hypercall's attribute bits live in .uapi (re-exported here)
from .uapi import (KVM_MAP_GPA_RANGE_DECRYPTED, KVM_MAP_GPA_RANGE_ENCRYPTED,  # noqa: F401
                   KVM_MAP_GPA_RANGE_PAGE_SZ_1G, KVM_MAP_GPA_RANGE_PAGE_SZ_2M,
                   KVM_MAP_GPA_RANGE_PAGE_SZ_4K, Exit, Hypercall, MemoryFault)

MAP_SHARED, MAP_PRIVATE = 1, 2   # values in the VM's SPTE range store (what the NPT maps)


def _check_access(gpa, write, private, length: int = 0) -> tuple[int, bool, bool | None]:
    """A guest access's operands: ``gpa`` (and ``gpa + length``) below 2**MAX_GPA_BITS (no
    wider guest physical address exists), ``write`` a bool, ``private`` a bool or None."""
    gpa = check_int(gpa, "gpa", 0, (1 << MAX_GPA_BITS) - 1)
    if gpa + length > 1 << MAX_GPA_BITS:
        raise ValueError(f"gpa, length: [{gpa:#x}, {gpa + length:#x}) goes past the widest guest "
                         f"physical address (2**{MAX_GPA_BITS})")
    write = check_bool(write, "write")
    if private is not None:
        private = check_bool(private, "private")
    return gpa, write, private


class VcpuNotRunnable(KitError):
    """A guest operation on a vCPU that runs no guest code: the guest asked to terminate
    (``exit`` is the ``KVM_EXIT_SYSTEM_EVENT`` KVM handed to userspace; a terminated guest does
    nothing more), or KVM handed an exit to userspace that is not answered yet
    (:meth:`Vcpu.complete_hypercall`; the vCPU is in ``KVM_RUN``'s return path, not in the
    guest)."""

    def __init__(self, vcpu, why: str, exit=None):
        self.vcpu, self.why, self.exit = vcpu, why, exit
        super().__init__(f"vCPU {vcpu.id}: {why}")


class Vcpu:
    """``struct kvm_vcpu``: its VM, its id, and the SEV-ES/SNP state the model needs (whether
    its VMSA is protected, and for SNP the VMSA's host frame, set by the arch's
    ``vcpu_create``).

    Guest operations (:meth:`access`, :meth:`fault_in`, :meth:`fill`, :meth:`read`,
    :meth:`hypercall`, :meth:`vmgexit_psc`, :meth:`vmgexit_msr`, :meth:`ghcb_terminate`, and
    PVALIDATE in :func:`kit.kvm.snp.guest_pvalidate`) raise :class:`VcpuNotRunnable` once the
    guest terminated (:attr:`terminated`) and while an exit waits for
    :meth:`complete_hypercall`.

    Cost events go to the host's ledger on these paths, in the kernel's order: ``vm_exit``
    when the guest exits to KVM (#NPF, VMCALL, VMGEXIT), ``set_attributes`` when KVM changes
    attributes itself, ``npt_map`` when a fault installs a mapping, ``user_exit`` when
    ``KVM_RUN`` returns an exit to userspace."""

    def __init__(self, vm, id: int):
        self.vm = vm
        self.id = id
        self.vmsa_protected = False   # SEV-ES: set by LAUNCH_UPDATE_VMSA
        self.vmsa_pfn: int | None = None
        self.terminated: Exit | None = None   # the KVM_EXIT_SYSTEM_EVENT of a termination request
        self.complete_userspace_io = None     # vcpu->arch.complete_userspace_io: ret -> Exit | None
        self.pending_exit: Exit | None = None
        self.ghcb_msr = 0                     # the GHCB MSR (the MSR protocol's response)
        self.psc = None                       # the GHCB page-state change in flight (SNP)
        self.psc_result: tuple[int, int] | None = None   # (sw_exit_info_1, sw_exit_info_2)

    def __repr__(self) -> str:
        return f"<vCPU {self.id} of {self.vm!r}>"

    # ------------------------------------------------------------------ running state
    def _record(self, op: str, **events: int) -> None:
        self.vm.kvm.host.ledger.record(op, **events)

    def check_runnable(self) -> None:
        """Before a guest operation: the VM is alive (EIO), the guest has not terminated and no
        exit waits for userspace's answer (:class:`VcpuNotRunnable`)."""
        self.vm.check_alive()
        if self.terminated is not None:
            raise VcpuNotRunnable(self, "the guest requested termination and runs no more",
                                  self.terminated)
        if self.complete_userspace_io is not None:
            raise VcpuNotRunnable(self, "an exit waits for userspace (complete_hypercall)",
                                  self.pending_exit)

    def to_userspace(self, out):
        """``KVM_RUN`` returns ``out`` (an :class:`Exit`) to userspace: ``user_exit`` recorded,
        and a termination remembered. None (KVM resumed the guest) passes through."""
        if isinstance(out, Exit):
            self._record("kvm_run_exit", user_exit=1)
            self.pending_exit = out if self.complete_userspace_io is not None else None
            if out.reason == U.KVM_EXIT_SYSTEM_EVENT and out.system_event \
                    and out.system_event[0] == U.KVM_SYSTEM_EVENT_SEV_TERM:
                self.terminated = out
        return out

    def complete_hypercall(self, ret: int):
        """Userspace answers the pending exit and calls ``KVM_RUN`` again: ``ret`` is
        ``run->hypercall.ret``, handed to the completion KVM left
        (``vcpu->arch.complete_userspace_io``, e.g. arch/x86/kvm/svm/sev.c
        ``snp_complete_one_psc`` / ``snp_complete_psc_msr``). Returns the next :class:`Exit`
        for userspace, or None when KVM answered the guest. No exit pending is the caller's
        error (ValueError)."""
        self.vm.check_alive()
        if self.terminated is not None:
            raise VcpuNotRunnable(self, "the guest requested termination and runs no more",
                                  self.terminated)
        ret = check_int(ret, "ret", -(1 << 63), U.U64)     # run->hypercall.ret, a 64-bit register
        if self.complete_userspace_io is None:
            raise ValueError(f"ret: vCPU {self.id} has no exit waiting for userspace's answer")
        complete, self.complete_userspace_io, self.pending_exit = self.complete_userspace_io, None, None
        return self.to_userspace(complete(ret))

    # ------------------------------------------------------------------ accesses
    def _is_private(self, gfn: int, private: bool | None) -> bool:
        if private is None:
            return bool(self.vm.memory_attributes(gfn) & U.KVM_MEMORY_ATTRIBUTE_PRIVATE)
        return bool(private)

    def access(self, gpa: int, *, write: bool = True, private: bool | None = None):
        """A guest access to ``gpa``: KVM's fault path (:meth:`fault_in`), then, once the page
        is mapped, the hardware's check of a private (C-bit) access through the VM's arch ops
        (``check_private_access``): on SNP the RMP entry of the frame must be assigned to the
        VM's ASID at this GPA and validated, else the guest gets #VC
        (:class:`~kit.errors.VmmCommunicationException`, ``SVM_EXIT_PAGE_NOT_VALIDATED``)
        [APM2 15.36.10]. Returns None when the access completes, or the fault path's
        :class:`Exit`."""
        gpa, write, private = _check_access(gpa, write, private)
        out = self.fault_in(gpa, write=write, private=private)
        if out is None and self._is_private(gpa >> PAGE_SHIFT, private):
            self.vm.x86_ops.check_private_access(self, gpa)
        return out

    def fault_in(self, gpa: int, *, write: bool = True, private: bool | None = None):
        """KVM's handling of the guest's fault at ``gpa`` (``npf_interception`` ->
        ``kvm_mmu_page_fault``), without the hardware's RMP check of the access itself
        (:meth:`access` adds it): what a PVALIDATE or an access of a page not yet mapped makes
        KVM do. Returns None when the page is mapped (KVM faulting it in as needed) or an
        :class:`Exit`. ``private=None``: as the attribute says (SW_PROTECTED,
        ``kvm_mmu_page_fault``); SNP accesses state their C-bit. Exits, in the kernel's order:
        private access with no memslot or to a non-guest_memfd slot, access/attribute mismatch,
        guest_memfd failure -> ``KVM_EXIT_MEMORY_FAULT`` (gpa page-aligned, size 4096, flags
        PRIVATE iff the access was private); shared access with no memslot -> MMIO.

        A private fault gets the folio (``kvm_gmem_get_pfn``), has the arch prepare it once
        (``kvm_gmem_prepare_folio`` runs ``gmem_prepare`` only on a folio not yet prepared; a
        failure is EINVAL) and maps it at the folio's level (``kvm_max_level_for_order``)
        capped by the arch (``private_max_mapping_level``) and by mixed attributes in the huge
        page (``KVM_LPAGE_MIXED_FLAG``).

        Ledger: ``vm_exit`` when the page was not mapped as the access needs (a #NPF),
        ``set_attributes`` for an auto-conversion, ``npt_map`` for the mapping installed,
        ``user_exit`` for an exit."""
        vm = self.vm
        self.check_runnable()
        gpa, write, private = _check_access(gpa, write, private)
        gpa, private = vm.x86_ops.fault_gpa(vm, gpa, private)
        gfn = gpa >> PAGE_SHIFT
        is_private = self._is_private(gfn, private)
        if is_private and not vm.has_private_mem:
            raise ValueError("private: this VM type has no private memory")
        if vm.sptes.get(gfn) != (MAP_PRIVATE if is_private else MAP_SHARED):
            self._record("npf", vm_exit=1)
        slot = vm.slot_for_gfn(gfn)
        fault = lambda: self.to_userspace(Exit(U.KVM_EXIT_MEMORY_FAULT, memory_fault=MemoryFault(
            gfn << PAGE_SHIFT, PAGE_4K, U.KVM_MEMORY_EXIT_FLAG_PRIVATE if is_private else 0),
            errno=errno.EFAULT))
        if slot is None:
            return fault() if is_private else self.to_userspace(Exit(U.KVM_EXIT_MMIO))
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
            self._record("kvm_set_mem_attributes", set_attributes=1)
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
        f = slot.gmem
        pfn, order = f.get_pfn(index)
        if not f.prepared.get(index):               # kvm_gmem_get_pfn: prepare once
            if ops.gmem_prepare(vm, pfn, gfn, order):
                raise KvmError(errno.EINVAL, f"gmem_prepare failed for gfn {gfn:#x}")
            f.prepared.set(index, index + 1, 1)
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
        slot's ``userspace_addr``. ``length`` is at most :data:`~kit.kvm.limits.PAGE_BY_PAGE`'s
        bound (the fill goes page by page)."""
        check_span(gpa, length, whole_pages=True, addr_name="gpa")
        check_byte(value)
        PAGE_BY_PAGE.check(length)
        _check_access(gpa, True, private, length)
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
        _check_access(gpa, False, private, length)
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
            self._record("npt_map", npt_map=1)
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

    # ------------------------------------------------------------------ KVM_PRE_FAULT_MEMORY
    def pre_fault_memory(self, gpa: int, size: int, flags: int = 0) -> U.PreFaultMemory:
        """The ``KVM_PRE_FAULT_MEMORY`` vCPU ioctl (virt/kvm/kvm_main.c
        ``kvm_vcpu_pre_fault_memory``, arch/x86/kvm/mmu/mmu.c ``kvm_arch_vcpu_pre_fault_memory``
        and ``kvm_tdp_map_page``; Documentation/virt/kvm/api.rst 4.143): map
        ``[gpa, gpa + size)`` into the NPT as a read fault of the vCPU would, one mapping at a
        time, each advancing past the page it installed (a huge mapping to its end). Private
        exactly where the attribute is (``kvm_mem_is_private`` of each step's gfn): the
        folio from guest_memfd, prepared once by the arch (SNP: ``rmp_make_private``), mapped at
        its level. No VM exit and no ``KVM_RUN``: the calling thread does the work.

        Returns the range left (:class:`~kit.kvm.uapi.PreFaultMemory`): ``size`` 0 when all
        was mapped. A step that fails after at least one mapping ends the call with success
        and the rest left (the kernel: "Return success if at least one page was mapped
        successfully"); a failure of the first step raises :class:`~kit.errors.KvmError`,
        in the kernel's order:

        - EIO: the VM is dead (``kvm_vcpu_ioctl``);
        - EINVAL: ``flags`` not 0; ``gpa`` or ``size`` not page aligned, ``size`` 0, or
          ``gpa + size`` wraps;
        - EINTR: a signal is pending (:attr:`~kit.kvm.injection.FaultInjection.signal_after`);
        - EOPNOTSUPP: the VM's ``pre_fault_allowed`` is false (an SNP VM before
          ``snp_launch_finish``, a TDX VM before ``KVM_TDX_FINALIZE_VM``);
        - EINVAL: ``gpa`` is an alias (``kvm_is_gfn_alias``: it carries TDX's shared bit);
        - ENOENT: no memslot at a shared gfn (``RET_PF_EMULATE``, emulated MMIO);
        - EFAULT: a private gfn with no memslot, in a slot without guest_memfd, or whose
          guest_memfd is closed (``kvm_mmu_faultin_pfn_gmem``: a memory-fault exit is
          prepared, and ``-EFAULT`` returned);
        - EINVAL: the arch's ``gmem_prepare`` failed (``kvm_gmem_get_pfn``); the folio stays
          in the file, as ``kvm_gmem_get_pfn`` leaves it.

        Every check of the first step comes before any change, so a failed call changes
        nothing (the ``gmem_prepare`` failure aside, as in the kernel). ``padding`` is not
        read by the kernel. Not modelled: shadow paging (EOPNOTSUPP), MMU cache allocation
        (ENOMEM), a memslot changed by another thread during the call.

        Ledger: per mapping the fault path's own events (``bytes_zeroed`` of a new folio,
        the prepare's ``rmpupdate`` and direct-map work, ``npt_map``), never ``vm_exit``; then
        once per call ``pre_fault`` (mappings installed) and ``pre_fault_bytes`` (bytes of
        folios the call cleared, a part of ``bytes_zeroed``)."""
        vm = self.vm
        vm.check_alive()
        gpa, size, flags = check_field(gpa, "gpa"), check_field(size, "size"), check_field(flags, "flags")
        if flags:
            raise KvmError(errno.EINVAL, f"flags {flags:#x}: must be 0")
        if gpa % PAGE_4K or size % PAGE_4K or size == 0 or gpa + size > U.U64:
            raise KvmError(errno.EINVAL, f"gpa {gpa:#x}, size {size:#x}: not page aligned, empty, or wrapping")
        signal = signal_after(vm)
        if signal is not None:
            signal = check_int(signal, "fault_injection.signal_after", 0, U.U64)
        ledger = vm.kvm.host.ledger
        zeroed = ledger.totals.get("bytes_zeroed", 0)
        steps, at, left = 0, gpa, size
        while left:
            if signal is not None and steps >= signal:
                error = KvmError(errno.EINTR, "a signal is pending")
                break
            try:
                done = self._pre_fault_one(at, left)
            except KvmError as e:
                error = e
                break
            steps, at, left = steps + 1, at + done, left - done
        if steps:
            ledger.record("KVM_PRE_FAULT_MEMORY", pre_fault=steps,
                          pre_fault_bytes=ledger.totals.get("bytes_zeroed", 0) - zeroed)
        elif left:
            raise error
        return U.PreFaultMemory(at, left, flags)

    def _pre_fault_one(self, gpa: int, size: int) -> int:
        """``kvm_arch_vcpu_pre_fault_memory``: one mapping at ``gpa`` through the fault path
        (``kvm_tdp_map_page``); returns the bytes it covers from ``gpa`` (at most ``size``)."""
        vm = self.vm
        if not vm.pre_fault_allowed:
            raise KvmError(errno.EOPNOTSUPP, "KVM_PRE_FAULT_MEMORY is not allowed on this VM yet (pre_fault_allowed)")
        gfn = gpa >> PAGE_SHIFT
        if gfn & vm.x86_ops.gfn_direct_bits(vm):
            raise KvmError(errno.EINVAL, f"gpa {gpa:#x} is an alias (kvm_is_gfn_alias)")
        private = vm.has_private_mem and bool(vm.memory_attributes(gfn) & U.KVM_MEMORY_ATTRIBUTE_PRIVATE)
        slot = vm.slot_for_gfn(gfn)
        if slot is None:
            if private:
                raise KvmError(errno.EFAULT, f"private gfn {gfn:#x} has no memslot")
            raise KvmError(errno.ENOENT, f"gpa {gpa:#x} is outside the memslots (RET_PF_EMULATE)")
        if private or slot.gmem_only:
            if not slot.flags & U.KVM_MEM_GUEST_MEMFD or slot.gmem is None:
                raise KvmError(errno.EFAULT, f"gfn {gfn:#x}: no open guest_memfd backs its slot")
            index = slot.gmem_index(gfn)
            if private:
                level = self._private_level(gfn, slot, index)
            else:                                   # shared, served from guest_memfd
                slot.gmem.mark_allocated(index, index + 1)
                level = PAGE_4K
        else:
            level = self.max_level(gfn, slot, False)
        self._map(gfn, level, private)
        end = (gpa & ~(level - 1)) + level
        return min(size, end - gpa)

    # ------------------------------------------------------------------ hypercalls
    def hypercall(self, nr: int, *args: int, cpl: int = 0, long_mode: bool = True):
        """A guest VMCALL. ``KVM_HC_MAP_GPA_RANGE`` (``____kvm_emulate_hypercall``): CPL != 0 ->
        the guest gets -KVM_EPERM; not enabled with ``KVM_CAP_EXIT_HYPERCALL`` -> -KVM_ENOSYS;
        gpa not page aligned, npages 0, or the gfn range wraps -> -KVM_EINVAL (attrs are not
        validated). Returns the guest's RAX (an int) or the ``KVM_EXIT_HYPERCALL`` exit (the
        caller hands userspace's ``ret`` to the guest: no completion is left pending).
        Ledger: ``vm_exit``; ``set_attributes`` where the guest owns the attributes;
        ``user_exit`` for the exit."""
        self.check_runnable()
        nr = check_field(nr, "nr")
        args = tuple(check_field(a, f"args[{i}]") for i, a in enumerate(args))
        cpl, long_mode = check_int(cpl, "cpl", 0, 3), check_bool(long_mode, "long_mode")
        self._record("vmcall", vm_exit=1)
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
            self._record("kvm_set_mem_attributes", set_attributes=1)
            return 0
        return self.to_userspace(Exit(U.KVM_EXIT_HYPERCALL, hypercall=Hypercall(
            U.KVM_HC_MAP_GPA_RANGE, (gpa, npages, attrs), U.KVM_EXIT_HYPERCALL_LONG_MODE if long_mode else 0)))

    # ------------------------------------------------------------------ VMGEXIT (SEV-ES/SNP)
    def _vmgexit(self, handler, arg):
        """A VMGEXIT: the guest exits to KVM (``vm_exit``), the VM's arch ops handle it; an
        exit for userspace leaves the handler's completion pending."""
        self.check_runnable()
        ledger = self.vm.kvm.host.ledger
        mark = ledger.mark()
        self._record("vmgexit", vm_exit=1)
        try:
            out = handler(self, arg)
        except (TypeError, ValueError):             # the caller's error: nothing happened
            ledger.rollback(mark)
            raise
        return self.to_userspace(out)

    def vmgexit_psc(self, desc):
        """The guest's GHCB page-state change: VMGEXIT with ``SVM_VMGEXIT_PSC`` and the
        descriptor ``desc`` (:class:`kit.kvm.ghcb.PscDesc`) in the shared buffer, which KVM
        processes in place (``sev_handle_vmgexit`` -> ``snp_begin_psc``). Returns the
        ``KVM_HC_MAP_GPA_RANGE`` :class:`Exit` userspace must answer
        (:meth:`complete_hypercall`), or None when KVM answered the guest: then
        :attr:`psc_result` holds ``(sw_exit_info_1, sw_exit_info_2)``. See
        :func:`kit.kvm.snp.snp_vmgexit_psc`."""
        self.check_runnable()
        self.psc_result = None
        return self._vmgexit(self.vm.x86_ops.vmgexit_psc, desc)

    def vmgexit_msr(self, msr: int):
        """A VMGEXIT with the GHCB MSR protocol: the guest wrote ``msr`` to the GHCB MSR
        (``sev_handle_vmgexit_msr_protocol``). Returns an :class:`Exit` or None; the response
        is in :attr:`ghcb_msr` once KVM answered."""
        if isinstance(msr, bool) or not isinstance(msr, int) or not 0 <= msr < 1 << 64:
            raise ValueError(f"msr: expected a 64-bit value, got {msr!r}")
        return self._vmgexit(self.vm.x86_ops.vmgexit_msr, msr)

    def vmgexit_msr_psc(self, msr: int):
        """A page-state change over the MSR protocol (``GHCB_MSR_PSC_REQ``, one 4K page;
        :func:`kit.kvm.ghcb.ghcb_msr_psc_req` builds it). Returns the ``KVM_HC_MAP_GPA_RANGE``
        :class:`Exit` or None; :attr:`ghcb_msr` holds ``GHCB_MSR_PSC_RESP`` or
        ``GHCB_MSR_PSC_RESP_ERROR`` once KVM answered (after :meth:`complete_hypercall`)."""
        if isinstance(msr, int) and not isinstance(msr, bool) and msr & GHCB_MSR_INFO_MASK != GHCB_MSR_PSC_REQ:
            raise ValueError(f"msr: not a page-state-change request ({msr:#x})")
        return self.vmgexit_msr(msr)

    def ghcb_terminate(self, reason_set: int, reason_code: int):
        """The guest's termination request (arch/x86/boot/startup/sev-shared.c
        ``sev_es_terminate``: ``GHCB_MSR_TERM_REQ | set << 12 | code << 16`` written to the
        GHCB MSR, then VMGEXIT). KVM answers ``KVM_EXIT_SYSTEM_EVENT`` with
        ``system_event=(KVM_SYSTEM_EVENT_SEV_TERM, msr)`` (``sev_handle_vmgexit_msr_protocol``,
        ``out_terminate``). From then on the vCPU refuses guest operations
        (:class:`VcpuNotRunnable`): the guest loops on HLT and does nothing more."""
        return self.vmgexit_msr(ghcb_msr_term_req(reason_set, reason_code))
