"""A scriptable guest: the Linux SNP guest's memory management, step by step, against KVM.

The guest drives KVM the way a guest kernel does: through its vCPUs (accesses, PVALIDATE,
VMGEXIT, VMMCALL) and, for the exits KVM hands to userspace, through its VMM
(:class:`kit.kvm.vmm.Vmm`, which answers like QEMU). It keeps its own state and never reaches
into KVM's:

- ``validated``: a :class:`~kit.host.ranges.RangeStore` gfn -> 1 of the pages the guest believes
  it validated (PVALIDATE returned 0); the RMP may disagree after the host changed an entry;
- ``unaccepted``: the unaccepted-memory bitmap, one bool per ``EFI_UNACCEPTED_UNIT_SIZE`` (2M)
  unit from ``phys_base`` (drivers/firmware/efi/libstub/unaccepted_memory.c
  ``allocate_unaccepted_bitmap``; a set bit is unaccepted);
- ``view``: a RangeStore gfn -> 1 where the guest maps the page private (the C-bit set in its
  page tables); 0 is shared;
- ``terminated``: None, or the :class:`Termination` the guest asked for and why.

Operations follow the kernel (each method names the function it models) and ask the
guest's :mod:`behaviour <kit.guest.behaviours>` at the steps where guests differ. A terminated
guest does nothing more: every operation raises :class:`GuestTerminated` before any effect
(``sev_es_terminate`` never returns: the vCPU halts in a loop), and so does the operation
during which the guest terminates.

Model limits: one thread per call (the vCPU index ``cpu`` only picks whose VMSA and exits
carry the work); the TLB and cache flushes of ``__set_memory_enc_pgtable`` and the cache
eviction after validation (``sev_evict_cache``) are logged steps with no state; an SVSM
(``snp_vmpl != 0``, ``svsm_pval_pages``) is not modelled; ``enc_dec_hypercall`` is not sent
(arch/x86/kernel/kvm.c ``kvm_init_platform`` installs it only when the VMM's CPUID advertises
``KVM_FEATURE_MIGRATION_CONTROL``, which the model's VMM does not).
"""
from __future__ import annotations

import errno
from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..errors import KitError, KvmError, NestedPageFault, VmmCommunicationException
from ..host.ranges import RangeStore, check_int
from ..host.rmp import PVALIDATE_FAIL_SIZEMISMATCH
from ..host.rmptable import F_ASSIGNED, F_VALIDATED, F_VMSA
from ..kvm import snp
from ..kvm import uapi as U
from ..kvm.ghcb import (GHCB_MSR_INFO_MASK, GHCB_MSR_PSC_RESP, SNP_PAGE_STATE_PRIVATE, SNP_PAGE_STATE_SHARED,
                        PscDesc, PscEntry, ghcb_msr_psc_req, ghcb_msr_term_req)
from ..kvm.gmem import PMD_ORDER, folio_order
from ..kvm.mmu import MAP_PRIVATE
from ..kvm.snp import SnpX86Ops
from ..kvm.uapi import Exit
from ..kvm.vmm import Vmm
from ..units import PAGE_2M, PAGE_4K, PAGE_SHIFT, PAGES_PER_2M
from .behaviours import Linux

EFI_UNACCEPTED_UNIT_SIZE = PAGE_2M   # arch/x86/include/asm/efi.h: PMD_SIZE
UNIT_PAGES = EFI_UNACCEPTED_UNIT_SIZE >> PAGE_SHIFT
VMGEXIT_PSC_MAX_ENTRY = 64           # arch/x86/include/asm/sev-common.h: entries of the guest's desc
PROTOCOLS = ("ghcb", "msr", "hypercall")


@dataclass(frozen=True)
class Termination:
    """A guest's termination request (``sev_es_terminate``, arch/x86/boot/startup/sev-shared.c):
    the reason set and code it wrote to the GHCB MSR, why (the model's words), and the exit KVM
    gave userspace for it (``KVM_EXIT_SYSTEM_EVENT``, ``KVM_SYSTEM_EVENT_SEV_TERM``; None on a
    VM with no GHCB)."""

    reason_set: int
    reason_code: int
    why: str
    exit: object = None

    @property
    def msr(self) -> int:
        """The GHCB MSR value: ``GHCB_MSR_TERM_REQ | set << 12 | code << 16``."""
        return ghcb_msr_term_req(self.reason_set, self.reason_code)

    def __str__(self) -> str:
        return f"terminated (set {self.reason_set}, code {self.reason_code}): {self.why}"


class GuestTerminated(KitError):
    """The guest has terminated (``.termination``); it does nothing more."""

    def __init__(self, termination: Termination):
        self.termination = termination
        super().__init__(str(termination))


class GuestStuck(KvmError):
    """An access that still exits after the VMM answered ``Vmm.max_exits`` times (or whose exits
    the VMM cannot answer): the vCPU would re-enter and exit forever."""

    def __init__(self, detail: str):
        super().__init__(errno.EFAULT, detail)


class PscLivelock(KitError):
    """The hypervisor answered a page-state change with success but left ``cur_entry`` where
    it was: ``vmgexit_psc`` would resubmit the request forever (it checks only that processing
    does not go backward). Raised instead of looping."""


class Step(NamedTuple):
    """One entry of :attr:`Guest.log`: a step of the kernel, over ``[gpa, gpa + size)``."""

    name: str
    gpa: int
    size: int
    detail: str = ""


def psc_entries(gfn: int, end: int, max_entries: int = VMGEXIT_PSC_MAX_ENTRY):
    """``__set_pages_state``'s fill loop: at most ``max_entries`` entries from ``gfn``, a 2M
    entry where the address is 2M aligned and at least 2M remain, else a 4K one. Returns
    ``([(gfn, pagesize)], next gfn)``."""
    out = []
    while gfn < end and len(out) < max_entries:
        if gfn % PAGES_PER_2M == 0 and end - gfn >= PAGES_PER_2M:
            out.append((gfn, PAGE_2M))
            gfn += PAGES_PER_2M
        else:
            out.append((gfn, PAGE_4K))
            gfn += 1
    return out, gfn


def _runs(mask: np.ndarray):
    """(start, end) index runs of True in a bool vector."""
    if not mask.any():
        return []
    d = np.diff(np.concatenate(([0], mask.view(np.int8), [0])))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def _unmapped_units(vm, gfn: int, units: int) -> list[tuple[int, int]]:
    """(first gfn, units) runs of the 2M units from ``gfn`` that the NPT does not map private
    (all of them unless the VMM pre-faulted the range), from the VM's SPTE ranges."""
    mapped = np.zeros(units, dtype=bool)
    for s, e, v in vm.sptes.ranges(gfn, gfn + units * PAGES_PER_2M):
        if v == MAP_PRIVATE:
            mapped[-(-(s - gfn) // PAGES_PER_2M):(e - gfn) // PAGES_PER_2M] = True
    return [(gfn + a * PAGES_PER_2M, b - a) for a, b in _runs(~mapped)]


class Guest:
    """A guest kernel on ``vm`` (an SNP VM, or a ``KVM_X86_SW_PROTECTED_VM`` where the concept
    applies: no RMP, no PVALIDATE, no GHCB; conversions with ``KVM_HC_MAP_GPA_RANGE``).

    ``vcpus``: how many vCPUs it runs on (ids 0..n-1, taken from the VM, created if missing)
    or the vCPU objects. ``behaviour``: a :class:`~kit.guest.behaviours.Linux` (default) or
    another behaviour, class or instance. ``vmm``: who answers its exits (default a
    :class:`~kit.kvm.vmm.Vmm` of the VM). ``memory``: its RAM as ``[(gpa, size)]`` (default:
    every memslot). ``unaccepted``: the RAM the firmware left unaccepted as ``[(gpa, size)]``
    (only whole units inside are tracked); default, on SNP, every 2M unit of guest_memfd RAM
    that holds no page validated at launch; a SW_PROTECTED guest has no table. ``ghcb``: False
    for a guest that has no GHCB yet (early boot: page-state changes use the MSR protocol,
    ``set_pages_state``)."""

    def __init__(self, vm, *, vcpus=1, behaviour=None, vmm=None, memory=None, unaccepted=None,
                 ghcb: bool = True):
        if vm.type not in (U.KVM_X86_SNP_VM, U.KVM_X86_SW_PROTECTED_VM):
            raise ValueError(f"vm: a guest needs an SNP or SW_PROTECTED VM, got {U.VM_TYPE_NAMES[vm.type]}")
        self.vm = vm
        self.snp = vm.type == U.KVM_X86_SNP_VM
        self.vcpus = self._take_vcpus(vcpus)
        if behaviour is None:
            behaviour = Linux()
        elif isinstance(behaviour, type):
            behaviour = behaviour()
        self.behaviour = behaviour
        self.vmm = vmm if vmm is not None else Vmm(vm)
        self.ghcb = bool(ghcb)
        self.memory = self._ram(memory)
        self.validated = RangeStore()
        self.view = RangeStore()
        self.terminated: Termination | None = None
        self.log: list[Step] = []
        self.counts: Counter = Counter()    # guest-side events: lock acquisitions, VMGEXITs, ...
        self.vcs: list[VmmCommunicationException] = []
        self.accepting_list: list[tuple[int, int]] = []
        self._init_state(unaccepted)

    # ------------------------------------------------------------------ construction
    def _take_vcpus(self, vcpus) -> list:
        if isinstance(vcpus, bool):
            raise TypeError(f"vcpus: expected a count or vCPU objects, got {vcpus!r}")
        if isinstance(vcpus, int):
            if vcpus < 1:
                raise ValueError(f"vcpus: at least 1, got {vcpus}")
            return [self.vm.vcpus[i] if i in self.vm.vcpus else self.vm.create_vcpu(i) for i in range(vcpus)]
        out = list(vcpus)
        if not out or any(getattr(v, "vm", None) is not self.vm for v in out):
            raise ValueError("vcpus: expected vCPUs of this VM")
        return out

    def _ram(self, memory) -> list[tuple[int, int]]:
        if memory is None:
            memory = [(s.base_gfn << PAGE_SHIFT, s.npages << PAGE_SHIFT)
                      for (as_id, _), s in self.vm.memslots.items() if as_id == 0]
        out = []
        for gpa, size in memory:
            gpa, size = check_int(gpa, "gpa"), check_int(size, "size")
            if gpa % PAGE_4K or size % PAGE_4K or size <= 0:
                raise ValueError(f"memory: ranges must be page aligned and non-empty, got {gpa:#x}+{size:#x}")
            out.append((gpa, size))
        return sorted(out)

    def _gmem_ranges(self):
        """(start gfn, end gfn) of the guest's RAM that guest_memfd slots back."""
        for gpa, size in self.memory:
            start, end = gpa >> PAGE_SHIFT, (gpa + size) >> PAGE_SHIFT
            for slot in self.vm.memslots.values():
                s, e = max(start, slot.base_gfn), min(end, slot.end_gfn)
                if s < e and slot.flags & U.KVM_MEM_GUEST_MEMFD:
                    yield s, e

    def _init_state(self, unaccepted) -> None:
        vm = self.vm
        launch = []
        if self.snp:
            # Linux maps its RAM encrypted (the C-bit in every direct-map entry)
            for s, e in self._gmem_ranges():
                self.view.set(s, e, 1)
            # pages the firmware validated at launch (SNP_LAUNCH_UPDATE, then LAUNCH_FINISH),
            # read from the RMP; the vCPUs' VMSAs are launch pages but not guest memory
            table = vm.kvm.host.rmp.table
            vmsas = {v.vmsa_pfn for v in vm.vcpus.values()}
            for pfn in (vm.sev.launch_pages if vm.sev is not None else ()):
                if pfn in vmsas:
                    continue
                bits, asid, gfn, is2m = table.entry(int(pfn))
                if bits & F_ASSIGNED and bits & F_VALIDATED and not bits & F_VMSA and asid == vm.asid:
                    gfn += int(pfn) % PAGES_PER_2M if is2m else 0
                    self.validated.set(gfn, gfn + 1, 1)
                    launch.append(gfn)
        else:
            for gpa, size in self.memory:     # no C-bit: the attributes say what is private
                for s, e, v in vm.attributes.ranges(gpa >> PAGE_SHIFT, (gpa + size) >> PAGE_SHIFT):
                    if v & U.KVM_MEMORY_ATTRIBUTE_PRIVATE:
                        self.view.set(s, e, 1)
        if not self.snp or not self.memory:
            self.phys_base, self.unaccepted = 0, np.zeros(0, dtype=bool)
            return
        lo = self.memory[0][0]
        hi = max(g + s for g, s in self.memory)
        self.phys_base = lo - lo % EFI_UNACCEPTED_UNIT_SIZE
        n = -(-(hi - self.phys_base) // EFI_UNACCEPTED_UNIT_SIZE)
        self.unaccepted = np.zeros(n, dtype=bool)
        base = self.phys_base >> PAGE_SHIFT
        if unaccepted is None:
            spans = list(self._gmem_ranges())
        else:
            spans = [(g >> PAGE_SHIFT, (g + s) >> PAGE_SHIFT) for g, s in unaccepted]
        for s, e in spans:                    # whole units only (process_unaccepted_memory)
            u0, u1 = -(-(s - base) // UNIT_PAGES), (e - base) // UNIT_PAGES
            if u0 < u1:
                self.unaccepted[max(u0, 0):min(u1, n)] = True
        if unaccepted is None and launch:
            units = (np.asarray(launch) - base) // UNIT_PAGES
            self.unaccepted[units[(units >= 0) & (units < n)]] = False

    def __repr__(self) -> str:
        state = "terminated" if self.terminated else "running"
        return (f"<{self.behaviour.name} guest on {self.vm!r}, {len(self.vcpus)} vCPUs, {state}>")

    # ------------------------------------------------------------------ small helpers
    def _check_alive(self) -> None:
        if self.terminated is not None:
            raise GuestTerminated(self.terminated)

    def note(self, name: str, gpa: int, size: int, detail: str = "") -> None:
        """Append a step to :attr:`log` (behaviours use it for what they decide)."""
        self.log.append(Step(name, gpa, size, detail))

    def _vcpu(self, cpu: int):
        try:
            return self.vcpus[cpu]
        except (IndexError, TypeError):
            raise ValueError(f"cpu: the guest has vCPUs 0..{len(self.vcpus) - 1}, got {cpu!r}") from None

    @staticmethod
    def _span(gpa, size) -> tuple[int, int]:
        gpa, size = check_int(gpa, "gpa"), check_int(size, "size")
        if gpa < 0 or size <= 0:
            raise ValueError(f"gpa, size: need gpa >= 0 and size > 0, got {gpa:#x}, {size:#x}")
        return gpa, size

    def is_ram(self, gpa: int, size: int) -> bool:
        """Whether ``[gpa, gpa + size)`` lies inside one of the guest's RAM ranges."""
        return any(g <= gpa and gpa + size <= g + s for g, s in self.memory)

    def is_validated(self, gpa: int) -> bool:
        return bool(self.validated.get(gpa >> PAGE_SHIFT))

    def is_private(self, gpa: int) -> bool:
        """The guest's view of ``gpa``: mapped private (C-bit set)."""
        return bool(self.view.get(gpa >> PAGE_SHIFT))

    @property
    def unaccepted_bytes(self) -> int:
        return int(np.count_nonzero(self.unaccepted)) * EFI_UNACCEPTED_UNIT_SIZE

    def _set_validated(self, spans, value: int) -> None:
        """Record PVALIDATE results: ``spans`` are (gfn, npages) pairs; adjacent ones merge."""
        run = None
        for gfn, n in spans:
            if run and run[1] == gfn:
                run[1] = gfn + n
                continue
            if run:
                self.validated.set(run[0], run[1], value)
            run = [gfn, gfn + n]
        if run:
            self.validated.set(run[0], run[1], value)

    # ------------------------------------------------------------------ termination and #VC
    def terminate(self, reason_set: int, reason_code: int, why: str = "", *, cpu: int = 0):
        """``sev_es_terminate``: write ``GHCB_MSR_TERM_REQ`` with the reason and VMGEXIT
        (``Vcpu.ghcb_terminate``, which gives userspace ``KVM_EXIT_SYSTEM_EVENT``); the guest
        never runs again. Raises :class:`GuestTerminated`."""
        self._check_alive()
        exit = None
        if self.snp:
            exit = self._vcpu(cpu).ghcb_terminate(reason_set, reason_code)
            self.vmm.handle(exit)          # userspace sees the request (QEMU: a guest panic)
        self.terminated = Termination(reason_set, reason_code, why, exit)
        self.note("terminate", 0, 0, f"set {reason_set} code {reason_code}: {why}")
        raise GuestTerminated(self.terminated)

    def on_vc(self, exc: VmmCommunicationException, *, cpu: int = 0) -> bool:
        """A #VC delivered to the guest (``exc_vmm_communication``): recorded in :attr:`vcs`
        and handed to the behaviour. Linux terminates with ``SEV_TERM_SET_GEN,
        GHCB_SEV_ES_GEN_REQ`` (``vc_handle_exitcode`` has no case for a page that is not
        validated: ``ES_UNSUPPORTED``); a behaviour may instead handle it and return True, and
        the access is retried."""
        self._check_alive()
        self.vcs.append(exc)
        self.note("#VC", exc.gpa >> PAGE_SHIFT << PAGE_SHIFT, PAGE_4K, f"exit code {exc.exit_code:#x}")
        return bool(self.behaviour.on_vc(self, exc, cpu))

    # ------------------------------------------------------------------ accesses
    def touch(self, gpa: int, *, write: bool = True, private: bool | None = None, cpu: int = 0) -> list:
        """A plain access to ``gpa``, with the C-bit as the guest's view says (``private``
        forces it; on a SW_PROTECTED VM the access is private when the attribute says so,
        ``kvm_mmu_page_fault``). The vCPU runs it to completion: each exit goes to the VMM
        and the access is retried; a #VC goes to :meth:`on_vc`. Returns the exits answered.
        Raises :class:`GuestStuck` when the VMM cannot resolve the exits, the
        :class:`~kit.errors.VmmCommunicationException` when the behaviour declines it, and
        :class:`GuestTerminated` when the guest terminates on it."""
        self._check_alive()
        gpa = check_int(gpa, "gpa")
        vcpu = self._vcpu(cpu)
        if private is None and self.snp:
            private = self.is_private(gpa)
        exits, tries = [], 0
        while True:
            try:
                out = vcpu.access(gpa, write=write, private=private)
            except VmmCommunicationException as exc:
                tries += 1
                if tries > self.vmm.max_exits:
                    raise GuestStuck(f"access at {gpa:#x} still raises #VC after {tries - 1} retries") \
                        from exc
                if not self.on_vc(exc, cpu=cpu):
                    raise
                continue
            if out is None:
                self.note("touch", gpa >> PAGE_SHIFT << PAGE_SHIFT, PAGE_4K,
                          ("private" if private else "shared") + (f", {len(exits)} exits" if exits else ""))
                return exits
            exits.append(out)
            if len(exits) > self.vmm.max_exits:
                raise GuestStuck(f"access at {gpa:#x} still exits after {self.vmm.max_exits} answers")
            try:
                self.vmm.handle(out)
            except KvmError as e:          # the VMM's ioctl failed: the vCPU exits again
                self.note("vmm_error", gpa, PAGE_4K, str(e))

    def pvalidate(self, gpa: int, pagesize: int, validate: bool, *, cpu: int = 0) -> int:
        """A raw PVALIDATE (``kit.kvm.snp.guest_pvalidate``), for scripted misbehaviour: returns
        the instruction's code (0 or ``PVALIDATE_FAIL_*``) and records a success in
        :attr:`validated`. An #NPF that KVM hands to userspace (``KVM_EXIT_MEMORY_FAULT``) goes
        to the VMM and the instruction is retried, as a vCPU re-entering the guest retries it."""
        self._check_alive()
        if not self.snp:
            raise ValueError("pvalidate: PVALIDATE exists only in an SNP guest")
        gpa = check_int(gpa, "gpa")
        if pagesize not in (PAGE_4K, PAGE_2M) or gpa % pagesize:
            raise ValueError(f"pagesize: PAGE_4K or PAGE_2M with gpa aligned to it, got {pagesize}, {gpa:#x}")
        rc = self._pvalidate(self._vcpu(cpu), gpa, pagesize, bool(validate))
        if rc == 0:
            self._set_validated([(gpa >> PAGE_SHIFT, pagesize >> PAGE_SHIFT)], int(bool(validate)))
        return rc

    def _pvalidate(self, vcpu, gpa: int, pagesize: int, validate: bool) -> int:
        """PVALIDATE until it completes: an exit goes to the VMM and the instruction is retried
        (a VMM whose ioctl fails, e.g. ``EPERM`` where the guest owns the attributes, answers
        nothing and the vCPU exits again, as for :meth:`touch`); an RMP #NPF that KVM leaves
        unresolved (``sev_handle_rmp_fault`` returns early, e.g. the host took the page back)
        would fault forever: :class:`GuestStuck`."""
        for _ in range(self.vmm.max_exits + 1):
            try:
                out = snp.guest_pvalidate(vcpu, gpa, pagesize, validate)
            except NestedPageFault as e:
                raise GuestStuck(f"PVALIDATE of {gpa:#x} faults again after every re-entry: {e}") from e
            if not isinstance(out, Exit):
                return out
            try:
                self.vmm.handle(out)
            except KvmError as e:          # the VMM's ioctl failed: the vCPU exits again
                self.note("vmm_error", gpa, pagesize, str(e))
        raise GuestStuck(f"PVALIDATE of {gpa:#x} still exits after {self.vmm.max_exits} answers")

    def pvalidate_pages(self, entries, validate: bool, *, cpu: int = 0) -> None:
        """``pvalidate_pages`` -> ``pval_pages`` (arch/x86/coco/sev/core.c): PVALIDATE each
        entry ``(gfn, pagesize)``; a 2M entry that fails ``PVALIDATE_FAIL_SIZEMISMATCH`` is
        done again as 512 4K PVALIDATEs; any other failure goes to the behaviour's
        ``on_pvalidate_error`` (Linux: ``__pval_terminate``)."""
        self._check_alive()
        vcpu = self._vcpu(cpu)
        done = []
        for gfn, size in entries:
            gpa = gfn << PAGE_SHIFT
            rc = self._pvalidate(vcpu, gpa, size, validate)
            if rc == 0:
                done.append((gfn, size >> PAGE_SHIFT))
                continue
            if rc == PVALIDATE_FAIL_SIZEMISMATCH and size == PAGE_2M:
                self.note("pvalidate_4k_fallback", gpa, size)
                done += self._pval_4k(vcpu, gfn, PAGES_PER_2M, validate, cpu)
                continue
            self._set_validated(done, int(validate))
            done = []
            self.behaviour.on_pvalidate_error(self, gpa, size, rc, cpu)
        self._set_validated(done, int(validate))
        self.note("pvalidate", entries[0][0] << PAGE_SHIFT if entries else 0,
                  sum(s for _, s in entries), f"validate={int(validate)}, {len(entries)} entries")

    def _pval_4k(self, vcpu, gfn: int, n: int, validate: bool, cpu: int) -> list:
        """The 4K loop of ``pval_pages`` after a size mismatch (one instruction per page, as
        the kernel issues them). Returns the (gfn, 1) spans that succeeded."""
        done = []
        for g in range(gfn, gfn + n):
            rc = self._pvalidate(vcpu, g << PAGE_SHIFT, PAGE_4K, validate)
            if rc:
                self._set_validated(done, int(validate))
                done = []
                self.behaviour.on_pvalidate_error(self, g << PAGE_SHIFT, PAGE_4K, rc, cpu)
            else:
                done.append((g, 1))
        return done

    # ------------------------------------------------------------------ page-state change
    def _hv_psc(self, vcpu, desc):
        """One VMGEXIT(PSC): KVM works on the shared buffer in place; its exits go to the VMM
        and back (``Vmm.answer``: ``complete_hypercall``) until KVM answers the guest."""
        self.vmm.answer(vcpu, vcpu.vmgexit_psc(desc))
        return vcpu.psc_result

    def vmgexit_psc(self, entries, op: int, *, cpu: int = 0) -> str | None:
        """``vmgexit_psc`` (arch/x86/coco/sev/core.c): copy the request into the GHCB shared
        buffer and VMGEXIT while ``cur_entry <= end_entry``: the hypervisor may do part of the
        request and return, and the guest resumes it where ``cur_entry`` says. Returns None, or
        why the request failed: a non-zero answer (``sw_exit_info_1`` or ``_2``), a reserved
        header field set, or processing going backward (``end_entry`` grown or ``cur_entry``
        below where it started)."""
        self._check_alive()
        vcpu = self._vcpu(cpu)
        desc = PscDesc([PscEntry(gfn, op, size) for gfn, size in entries])
        cur0, end0 = desc.cur_entry, desc.end_entry
        first = entries[0][0] << PAGE_SHIFT if entries else 0
        span = sum(size for _, size in entries)
        while desc.cur_entry <= desc.end_entry:
            before = desc.cur_entry, tuple(e.cur_page for e in desc.entries)
            self.counts["vmgexit_psc"] += 1
            info1, info2 = self._hv_psc(vcpu, desc)
            self.note("psc", first, span, f"op {op}, entries {before[0]}..{desc.end_entry} -> "
                                        f"cur_entry {desc.cur_entry}, answer {info1:#x}/{info2:#x}")
            if info1 or info2:
                return f"VMGEXIT(PSC) answered {info1:#x}/{info2:#x}"
            if desc.reserved:
                return "PSC header reserved field set"
            if desc.end_entry > end0 or cur0 > desc.cur_entry:
                return "PSC processing going backward"
            if (desc.cur_entry, tuple(e.cur_page for e in desc.entries)) == before:
                raise PscLivelock(f"the hypervisor answered success but did not advance the request "
                                  f"(cur_entry {desc.cur_entry} <= end_entry {desc.end_entry})")
        return None

    def _msr_psc(self, vcpu, gfn: int, op: int) -> str | None:
        """``__page_state_change``'s request (arch/x86/boot/startup/sev-shared.c): one 4K page
        over the GHCB MSR protocol; the answer must be ``GHCB_MSR_PSC_RESP`` with a zero value."""
        self.counts["vmgexit_msr_psc"] += 1
        self.vmm.answer(vcpu, vcpu.vmgexit_msr_psc(ghcb_msr_psc_req(gfn, op)))
        val = vcpu.ghcb_msr
        self.note("psc_msr", gfn << PAGE_SHIFT, PAGE_4K, f"op {op}, answer {val:#x}")
        if val & GHCB_MSR_INFO_MASK != GHCB_MSR_PSC_RESP or val >> 32:
            return f"MSR PSC answered {val:#x}"
        return None

    def _map_gpa_range(self, vcpu, gpa: int, size: int, private: bool) -> int:
        """The guest's ``KVM_HC_MAP_GPA_RANGE`` (arch/x86/kernel/kvm.c
        ``kvm_sev_hc_page_enc_status``; the selftests' ``kvm_hypercall_map_gpa_range``): RAX,
        which is the VMM's ``hypercall.ret`` when KVM exits (``complete_hypercall_exit``)."""
        attrs = (U.KVM_MAP_GPA_RANGE_ENCRYPTED if private else U.KVM_MAP_GPA_RANGE_DECRYPTED) \
            | U.KVM_MAP_GPA_RANGE_PAGE_SZ_4K
        self.counts["map_gpa_range"] += 1
        out = vcpu.hypercall(U.KVM_HC_MAP_GPA_RANGE, gpa, size >> PAGE_SHIFT, attrs)
        rax = self.vmm.handle(out) if isinstance(out, Exit) else out
        self.note("map_gpa_range", gpa, size, f"{'private' if private else 'shared'}, rax {rax}")
        return rax

    def set_pages_state(self, gpa: int, size: int, op: int, *, cpu: int = 0,
                        protocol: str = "ghcb") -> str | None:
        """``set_pages_state`` (arch/x86/coco/sev/core.c) for ``[gpa, gpa + size)``: without a
        GHCB (or ``protocol="msr"``) ``early_set_pages_state``, one 4K page per MSR request;
        else ``__set_pages_state`` per descriptor of at most ``VMGEXIT_PSC_MAX_ENTRY`` entries:
        to shared, ``rescind`` first; then the request (``page_state_change``; a failure goes
        to ``on_psc_error``, Linux: ``sev_es_terminate(SEV_TERM_SET_LINUX, GHCB_TERM_PSC)``);
        to private, ``validate`` after. ``protocol="hypercall"`` asks with
        ``KVM_HC_MAP_GPA_RANGE`` instead of the GHCB request, around the same PVALIDATEs; a
        refusal there is not a termination but the conversion's failure, as a hook returning
        an error is for ``__set_memory_enc_pgtable``: the rest is not done and the reason is
        returned (None when everything was done)."""
        self._check_alive()
        vcpu, b = self._vcpu(cpu), self.behaviour
        gfn, end = gpa >> PAGE_SHIFT, (gpa + size) >> PAGE_SHIFT
        if protocol == "msr" or (protocol == "ghcb" and not self.ghcb):
            for g in range(gfn, end):                      # one page per request, as the kernel
                one = [(g, PAGE_4K)]
                if op == SNP_PAGE_STATE_SHARED:
                    b.rescind(self, one, cpu)
                why = self._msr_psc(vcpu, g, op)
                if why:
                    b.on_psc_error(self, why, cpu)
                if op == SNP_PAGE_STATE_PRIVATE:
                    b.validate(self, one, cpu)
            return None
        while gfn < end:
            entries, nxt = psc_entries(gfn, end)
            if op == SNP_PAGE_STATE_SHARED:
                b.rescind(self, entries, cpu)
            if protocol == "hypercall":
                rax = self._map_gpa_range(vcpu, gfn << PAGE_SHIFT, (nxt - gfn) << PAGE_SHIFT,
                                          op == SNP_PAGE_STATE_PRIVATE)
                if rax:
                    return f"KVM_HC_MAP_GPA_RANGE returned {rax}"
            else:
                why = b.page_state_change(self, entries, op, cpu)
                if why:
                    b.on_psc_error(self, why, cpu)
            if op == SNP_PAGE_STATE_PRIVATE:
                b.validate(self, entries, cpu)
            gfn = nxt
        return None

    # ------------------------------------------------------------------ conversion
    def set_c_bit(self, gpa: int, size: int, private: bool) -> None:
        """``__change_page_attr_set_clr`` with the encryption mask: the guest's page tables map
        ``[gpa, gpa + size)`` private (C-bit set) or shared."""
        self.view.set(gpa >> PAGE_SHIFT, (gpa + size) >> PAGE_SHIFT, int(bool(private)))
        self.note("c_bit", gpa, size, "set" if private else "clear")

    def convert(self, gpa: int, size: int, *, private: bool, protocol: str | None = None,
                cpu: int = 0) -> int:
        """``set_memory_encrypted`` (``private=True``) or ``set_memory_decrypted`` of
        ``[gpa, gpa + size)`` (page aligned), by the behaviour's ``set_memory`` step; Linux:
        :meth:`set_memory_enc_dec`. ``protocol``: ``"ghcb"`` (default on SNP), ``"msr"``, or
        ``"hypercall"`` (``KVM_HC_MAP_GPA_RANGE``; the only one on a SW_PROTECTED VM).
        Returns 0, or -EIO when the hypervisor refused a hypercall conversion
        (``__set_memory_enc_pgtable``'s ``vmm_fail``). A GHCB or MSR failure terminates the
        Linux guest instead (:class:`GuestTerminated`)."""
        self._check_alive()
        gpa, size = self._span(gpa, size)
        if gpa % PAGE_4K or size % PAGE_4K:
            raise ValueError(f"gpa, size: must be page aligned, got {gpa:#x}, {size:#x}")
        if protocol is None:
            protocol = "ghcb" if self.snp else "hypercall"
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol: one of {', '.join(PROTOCOLS)}, got {protocol!r}")
        if not self.snp and protocol != "hypercall":
            raise ValueError(f"protocol: a SW_PROTECTED VM has no GHCB; only 'hypercall', got {protocol!r}")
        if not self.behaviour.owns(self, gpa, size):
            raise ValueError(f"gpa, size: [{gpa:#x}, {gpa + size:#x}) is not this guest's RAM")
        return self.behaviour.set_memory(self, gpa, size, bool(private), protocol, cpu)

    def set_memory_enc_dec(self, gpa: int, size: int, private: bool, *, protocol: str = "ghcb",
                           cpu: int = 0) -> int:
        """``__set_memory_enc_pgtable`` (arch/x86/mm/pat/set_memory.c) with the AMD hooks
        (arch/x86/mm/mem_encrypt_amd.c), in the kernel's order: TLB (and cache) flush;
        ``enc_status_change_prepare`` (to shared: ``snp_set_memory_shared`` = rescind, then
        PSC shared); the C-bit change; TLB flush; ``enc_status_change_finish`` (to private:
        ``snp_set_memory_private`` = PSC private, then PVALIDATE). A hook that fails (a refused
        hypercall conversion) ends it with -EIO (``vmm_fail``): a failed prepare before the C-bit
        changes. On a SW_PROTECTED VM the conversion is the ``KVM_HC_MAP_GPA_RANGE`` call alone,
        as the selftests' guest makes it
        (tools/testing/selftests/kvm/x86/private_mem_conversions_test.c), and the guest's view
        follows when KVM and the VMM agree."""
        self._check_alive()
        if not self.snp:
            rax = self._map_gpa_range(self._vcpu(cpu), gpa, size, private)
            if rax:
                return -errno.EIO
            self.set_c_bit(gpa, size, private)
            return 0
        self.note("tlb_flush", gpa, size, "before")     # enc_tlb_flush_required: always on AMD
        if not private and self._enc_status_change(gpa, size, SNP_PAGE_STATE_SHARED, protocol, cpu):
            return -errno.EIO                           # prepare failed: vmm_fail, no C-bit change
        self.set_c_bit(gpa, size, private)
        self.note("tlb_flush", gpa, size, "after")
        if private and self._enc_status_change(gpa, size, SNP_PAGE_STATE_PRIVATE, protocol, cpu):
            return -errno.EIO
        return 0

    def _enc_status_change(self, gpa, size, op, protocol, cpu) -> bool:
        """``snp_set_memory_shared``/``private`` -> :meth:`set_pages_state`; True when a
        hypercall conversion was refused (the hook's failure, which ``vmm_fail`` reports)."""
        return self.set_pages_state(gpa, size, op, cpu=cpu, protocol=protocol) is not None

    # ------------------------------------------------------------------ acceptance
    def accept(self, gpa: int, size: int, *, step: int | None = None, cpu: int = 0) -> int:
        """Accept ``[gpa, gpa + size)``: one ``accept_memory`` call (the behaviour's
        ``accept_memory`` step), or with ``step`` one call per ``step`` bytes in address order,
        as mm/page_alloc.c ``__accept_page`` calls it with ``PAGE_SIZE << MAX_PAGE_ORDER``.
        Returns the number of 2M units accepted. A run of calls whose outcome is known in
        advance (Linux, the stock VMM, the GHCB protocol, whole units all unaccepted, 2M
        guest_memfd folios) is done as range operations with the same state and the same cost
        events as the calls one by one (:meth:`_accept_calls_fast`)."""
        self._check_alive()
        gpa, size = self._span(gpa, size)
        if step is None:
            step = size
        step = check_int(step, "step")
        if step <= 0:
            raise ValueError(f"step: must be positive, got {step}")
        done = self._accept_calls_fast(gpa, size, step, cpu)
        if done is not None:
            return done
        done = 0
        for off in range(0, size, step):
            done += self.behaviour.accept_memory(self, gpa + off, gpa + min(off + step, size), cpu)
        return done

    def _unit_span(self, start: int, end: int):
        """``accept_memory``'s range arithmetic: clamp to the table, the guard unit past an
        aligned end, the bitmap's end. Returns (first unit, end unit), perhaps empty, or None
        when there is no table or the range ends below it."""
        unit = EFI_UNACCEPTED_UNIT_SIZE
        if not len(self.unaccepted):
            return None
        start = max(start, self.phys_base)
        if end < self.phys_base:
            return None
        start, end = start - self.phys_base, end - self.phys_base
        if end % unit == 0:
            end += unit       # load_unaligned_zeropad() must not reach unaccepted memory
        end = min(end, len(self.unaccepted) * unit)
        return start // unit, max(-(-end // unit), start // unit)

    def accept_memory(self, start: int, end: int, *, cpu: int = 0) -> int:
        """``accept_memory`` (drivers/firmware/efi/unaccepted_memory.c) of ``[start, end)``:
        no table -> nothing; the range in units with the guard unit past an aligned end
        (:meth:`_unit_span`); under ``unaccepted_memory_lock`` (counted in
        ``counts["unaccepted_memory_lock"]``) an overlap with a range on ``accepting_list``
        would spin until that range is done; the range joins the list; every run of set bits is
        accepted with the lock dropped (``arch_accept_memory``), the lock taken again and the
        bits cleared after. Returns the units accepted."""
        self._check_alive()
        span = self._unit_span(start, end)
        if span is None:
            return 0
        us, ue = span
        self.counts["unaccepted_memory_lock"] += 1
        for a, b in self.accepting_list:
            if not (b <= us or a >= ue):
                raise RuntimeError(f"accept_memory: units [{us}, {ue}) overlap [{a}, {b}) being accepted; "
                                   "the kernel would spin on the lock until that acceptance ends")
        self.accepting_list.append(span)
        done = 0
        try:
            for a, b in _runs(self.unaccepted[us:ue]):
                unit = EFI_UNACCEPTED_UNIT_SIZE
                self.arch_accept_memory(self.phys_base + (us + a) * unit, self.phys_base + (us + b) * unit,
                                        cpu=cpu)
                self.counts["unaccepted_memory_lock"] += 1
                self.unaccepted[us + a:us + b] = False
                done += b - a
        finally:
            self.accepting_list.remove(span)
        self.counts["accept_memory"] += 1
        return done

    def arch_accept_memory(self, start: int, end: int, *, cpu: int = 0) -> None:
        """``arch_accept_memory`` (arch/x86/include/asm/unaccepted_memory.h) on an SNP guest:
        ``snp_accept_memory`` -> ``set_pages_state(PRIVATE)``."""
        self.note("accept", start, end - start)
        self.set_pages_state(start, end - start, SNP_PAGE_STATE_PRIVATE, cpu=cpu)

    def _accept_calls_fast(self, gpa: int, size: int, step: int, cpu: int):
        """The ``accept_memory`` calls of :meth:`accept` as range operations, when their
        outcome is known in advance; None otherwise (the calls then run one by one).

        Conditions: the Linux behaviour itself, the stock VMM (pre-faulting or not) and SNP arch ops, userspace-owned
        attributes with the hypercall exit enabled, the GHCB protocol; ``gpa`` and ``step`` whole
        units, ``size`` whole steps inside the bitmap, one descriptor per call; every unit the
        calls reach unaccepted but for at most the first call's worth at the start (a previous
        call's guard unit) and no acceptance in flight; one guest_memfd slot of 2M folios aligned
        with the gfns. Then call 0 accepts its units and the guard unit after them, and every
        later call the units after the one it finds accepted, plus its own guard: one run, one
        descriptor of 2M entries, one VMGEXIT, one coalesced ``KVM_HC_MAP_GPA_RANGE`` exit and one
        ``KVM_SET_MEMORY_ATTRIBUTES`` answer per call, then the PVALIDATEs and their #NPFs. The
        VMM's answers are stored as one range update; the cost events are those of the calls one
        by one."""
        vm, unit = self.vm, EFI_UNACCEPTED_UNIT_SIZE
        if (type(self.behaviour) is not Linux or type(self.vmm) is not Vmm or not self.snp or not self.ghcb
                or type(vm.x86_ops) is not SnpX86Ops or vm.attribute_owner != "userspace"
                or not vm.exit_hypercalls & (1 << U.KVM_HC_MAP_GPA_RANGE)
                or self.accepting_list or not len(self.unaccepted)):
            return None
        k = step // unit
        if gpa % unit or step % unit or size % step or k + 1 > VMGEXIT_PSC_MAX_ENTRY or gpa < self.phys_base:
            return None
        ncalls = size // step
        us = (gpa - self.phys_base) // unit
        if us + ncalls * k > len(self.unaccepted):       # calls past the bitmap accept nothing
            return None
        ue = min(us + ncalls * k + 1, len(self.unaccepted))
        seg = self.unaccepted[us:ue]
        pre = int(seg.argmax()) if len(seg) else 0        # units a previous call's guard accepted
        if not len(seg) or pre > k or not seg[pre:].all():
            return None
        first, units = self.phys_base + (us + pre) * unit, ue - us - pre
        gfn, end_gfn = first >> PAGE_SHIFT, (first + units * unit) >> PAGE_SHIFT
        slot = vm.slot_for_gfn(gfn)
        if (slot is None or slot.gmem is None or end_gfn > slot.end_gfn or folio_order(slot.gmem) != PMD_ORDER
                or slot.gmem_index(gfn) % PAGES_PER_2M):
            return None
        host = vm.kvm.host
        ledger = host.ledger
        # accept_memory: the lock, then again after each call's one run
        self.counts["unaccepted_memory_lock"] += 2 * ncalls
        self.counts["accept_memory"] += ncalls
        self.counts["vmgexit_psc"] += ncalls
        self.note("accept", first, units * unit, f"{ncalls} accept_memory calls of {step} bytes")
        # PSC private: one exit per call, answered by the VMM (KVM_SET_MEMORY_ATTRIBUTES)
        before = {e: ledger.totals.get(e, 0) for e in ("vm_exit", "user_exit", "set_attributes")}
        ret = self.vmm.convert(first, units * unit, True)
        if ret:
            raise KvmError(errno.EINVAL, f"the VMM refused a conversion it accepts one by one ({ret})")
        self.vmm.ioctls += ncalls - 1
        ledger.record("psc", **{e: ncalls - (ledger.totals.get(e, 0) - v) for e, v in before.items()})
        self.note("psc", first, units * unit, f"op {SNP_PAGE_STATE_PRIVATE}, {ncalls} requests answered 0/0")
        if self.vmm.prefault:              # the VMM pre-faults each call's range after converting it
            self.vmm.pre_fault(first, units * unit, self._vcpu(cpu))
            self.vmm.pre_faults += ncalls - 1
        # PVALIDATE (2M) of every unit: its #NPF faults the folio in (unless the VMM pre-faulted
        # it), then the instruction succeeds
        for g, n in _unmapped_units(vm, gfn, units):
            snp.snp_fault_in_private_2m(vm, g, n)
        codes = snp.guest_pvalidate_2m_run(vm, first, units)
        self.note("pvalidate", first, units * unit, f"validate=1, {units} entries")
        if not any(codes):                                 # the common case: every unit validated
            self.validated.set(gfn, end_gfn, 1)
            self.unaccepted[us + pre:ue] = False           # bitmap_clear after the acceptance
            return units
        vcpu, done = self._vcpu(cpu), []
        for i, rc in enumerate(codes):
            g = gfn + i * UNIT_PAGES
            if rc == 0:
                done.append((g, UNIT_PAGES))
            elif rc == PVALIDATE_FAIL_SIZEMISMATCH:
                self.note("pvalidate_4k_fallback", g << PAGE_SHIFT, unit)
                done += self._pval_4k(vcpu, g, UNIT_PAGES, True, cpu)
            else:
                self._set_validated(done, 1)
                done = []
                self.behaviour.on_pvalidate_error(self, g << PAGE_SHIFT, PAGE_2M, rc, cpu)
        self._set_validated(done, 1)
        self.unaccepted[us + pre:ue] = False
        return units
