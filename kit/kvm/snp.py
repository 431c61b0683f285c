"""SNP on top of guest_memfd: the RMP hooks of the arch-ops table, RMP #NPF handling, GHCB
page-state change and launch (arch/x86/kvm/svm/sev.c, virt/kvm/guest_memfd.c).

- :class:`SnpX86Ops`: the table SNP VMs get (``svm_x86_ops``' ``gmem_prepare``,
  ``gmem_invalidate``, ``private_max_mapping_level``, ``vcpu_create``/``vcpu_free`` for the
  VMSA, and the RMP #NPF hook); generic code reaches this module only through it.
- Folios: ``Kvm(gmem_hugepages=...)`` (:func:`kit.kvm.gmem.folio_order`). Upstream
  ``kvm_gmem_get_pfn`` hands out order-0 folios (``*max_order = 0``); the 2M-folio guest_memfd
  series is what the measured workloads used. The choice is a named parameter.
- ``sev_gmem_prepare``: nothing if the pfn is already assigned; else ``rmp_make_private`` at 2M
  when the folio is 2M and all its pfns are unassigned (``is_large_rmp_possible``), else 4K;
  a failure is -EINVAL.
- ``sev_gmem_invalidate``: per assigned pfn, a 2M ``rmp_make_shared`` when aligned, fully
  covered and the entry is 2M; otherwise PSMASH first, then 4K.
- ``sev_handle_rmp_fault``: for a private gfn whose entry is 2M: PSMASH, then zap the 2M of gfns.
- The guest's private accesses (:func:`snp_check_private_access`): after KVM's fault-in the
  RMP entry must be assigned to the VM's ASID at the GPA and validated, else #VC
  [APM2 15.36.10]. PVALIDATE (:func:`guest_pvalidate`) on a page not mapped private is a #NPF
  that goes through KVM's fault path and the VM's #NPF policy.
- GHCB PSC (:func:`snp_vmgexit_psc`, stateful as ``snp_begin_psc`` / ``snp_complete_one_psc``
  / ``snp_complete_psc``): the descriptor is processed in place, one coalesced
  ``KVM_HC_MAP_GPA_RANGE`` exit at a time; ``cur_entry > end_entry`` is success with no exit;
  end_entry >= 253 -> INVALID_HDR; a bad entry -> INVALID_ENTRY; userspace's non-zero ``ret``
  or the hypercall exit not enabled -> GENERIC. Where the guest owns the attributes KVM
  converts inside. The RMP is untouched at PSC time (GHCB specification, "Page State Change";
  the guest side in arch/x86/coco/sev/core.c ``vmgexit_psc``). The MSR protocol:
  :func:`snp_vmgexit_msr_psc`. Rules and deviations: docs/kvm-model.md.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass, field

import numpy as np

from ..errors import (errno_name, PFERR_GUEST_SIZEM_MASK, SVM_EXIT_PAGE_NOT_VALIDATED, KvmError,
                      NestedPageFault, VmmCommunicationException)
from ..host.ranges import check_pfn_range, pfn_runs
from ..host.rmp import PVALIDATE_FAIL_SIZEMISMATCH
from ..units import PAGE_2M, PAGE_4K, PAGE_SHIFT, PAGES_PER_1G, PAGES_PER_2M, check_bool, check_int, check_level
from . import uapi as U
# the GHCB protocol's names, kept importable from here (their home is .ghcb)
from .ghcb import (GHCB_HV_RESP_NO_ACTION, GHCB_MSR_INFO_MASK, GHCB_MSR_PSC_GFN_MASK,  # noqa: F401
                   GHCB_MSR_PSC_GFN_POS, GHCB_MSR_PSC_OP_MASK, GHCB_MSR_PSC_OP_POS, GHCB_MSR_PSC_REQ,
                   GHCB_MSR_PSC_RESP, GHCB_MSR_PSC_RESP_ERROR, GHCB_MSR_TERM_REQ, GHCB_SEV_ES_GEN_REQ,
                   GHCB_TERM_PSC, GHCB_TERM_PVALIDATE, PSC_OPS, RMP_PG_SIZE_2M, RMP_PG_SIZE_4K,
                   SEV_TERM_SET_GEN, SEV_TERM_SET_LINUX, SNP_PAGE_STATE_PRIVATE, SNP_PAGE_STATE_PSMASH,
                   SNP_PAGE_STATE_SHARED, SNP_PAGE_STATE_UNSMASH, VMGEXIT_PSC_ERROR_GENERIC,
                   VMGEXIT_PSC_ERROR_INVALID_ENTRY, VMGEXIT_PSC_ERROR_INVALID_HDR, VMGEXIT_PSC_MAX_COUNT,
                   VMGEXIT_PSC_MAX_ENTRY,
                   PscDesc, PscEntry, ghcb_msr_psc_req, psc_pagesize_2m)
from .gmem import PMD_ORDER, PUD_ORDER, folio_order
from .injection import injected, launch_fw_error
from .limits import MAX_GPA_BITS, UNIT_BY_UNIT, VALIDATE_PAGES
from .mmu import MAP_PRIVATE
from .sev import SevX86Ops, sev_mem_enc_check
from .uapi import KVM_MAP_GPA_RANGE_ENCRYPTED, KVM_MAP_GPA_RANGE_PAGE_SZ_2M, Exit, Hypercall, check_field

R = PAGES_PER_2M                  # 4K pages (and RMP entries) in a 2M region
# old spellings of the kernel's names (CHANGELOG.md, "Moved")
PSC_MAX_ENTRY = VMGEXIT_PSC_MAX_COUNT
GHCB_HV_RESP_INVALID_HDR = VMGEXIT_PSC_ERROR_INVALID_HDR
GHCB_HV_RESP_INVALID_ENTRY = VMGEXIT_PSC_ERROR_INVALID_ENTRY


# ----------------------------------------------------------------- guest_memfd frames
def gmem_pfn(f, index: int, *, allocate: bool = True):
    """``kvm_gmem_get_pfn`` (:meth:`kit.kvm.gmem.GuestMemfd.get_pfn`, kept under its old name)."""
    return f.get_pfn(index, allocate=allocate)


def gmem_allocate(f, start: int, end: int) -> None:
    """``kvm_gmem_allocate`` on a file with host frames
    (:meth:`kit.kvm.gmem.GuestMemfd.allocate_folios`, kept under its old name)."""
    f.allocate_folios(start, end)


def sev_gmem_prepare(vm, pfn: int, gfn: int, order: int) -> int:
    """``sev_gmem_prepare``: 0, or -EINVAL when ``rmp_make_private`` fails. An entry already
    assigned is left alone (0, nothing changes); else ``rmp_make_private`` (Validated=0: the
    guest must PVALIDATE). The fault path calls it once per page of a folio
    (:attr:`kit.kvm.gmem.GuestMemfd.prepared`, ``kvm_gmem_get_pfn`` preparing a folio that is
    not up to date): a page the host made shared again afterwards is not re-assigned by a
    later fault, so the guest's next private access gets #VC."""
    pfn, gfn = check_field(pfn, "pfn"), check_field(gfn, "gfn")
    order = check_int(order, "order", 0, PUD_ORDER)
    host = vm.kvm.host
    assigned, _ = host.snp_lookup_rmpentry(pfn)
    if assigned:
        return 0
    if order >= PMD_ORDER and pfn % R == gfn % R:
        base_pfn, base_gfn = pfn - pfn % R, gfn - gfn % R
        large = not host.rmp.region_has_assigned([base_pfn // R])[0]      # is_large_rmp_possible
        if large:
            rc = host.rmp_make_private(base_pfn, base_gfn << PAGE_SHIFT, PAGE_2M, vm.asid, False)
            return -errno.EINVAL if rc else 0
    rc = host.rmp_make_private(pfn, gfn << PAGE_SHIFT, PAGE_4K, vm.asid, False)
    return -errno.EINVAL if rc else 0


def snp_fault_in_private_2m(vm, gfn: int, nunits: int) -> None:
    """The private #NPF path of :meth:`~kit.kvm.mmu.Vcpu.access` (``kvm_mmu_faultin_pfn_gmem``
    -> ``kvm_gmem_get_pfn`` -> ``sev_gmem_prepare`` -> 2M NPT map) for ``nunits`` consecutive
    2M-aligned units of private memory, as range operations: the same state and the same
    cost events as faulting each unit in on its own. Needs 2M guest_memfd folios aligned with
    the gfns (``Kvm(gmem_hugepages=True)``); anything else goes unit by unit through the vCPU
    path (at most :data:`~kit.kvm.limits.UNIT_BY_UNIT`'s bound). Records one ``vm_exit`` and
    one ``npt_map`` per unit. The range form applies SNP's own rules (:func:`sev_gmem_prepare`),
    not a member a user replaced in ``vm.x86_ops``. ``[gfn, gfn + nunits * 512)`` must lie in
    one memslot (ValueError)."""
    host = vm.kvm.host
    gfn = check_field(gfn, "gfn")
    nunits, slot = _units_in_slot(vm, gfn, nunits, "gfn")
    end = gfn + nunits * R
    fast = (slot is not None and slot.gmem is not None and gfn % R == 0 and end <= slot.end_gfn
            and folio_order(slot.gmem) == PMD_ORDER and slot.gmem_index(gfn) % R == 0
            and vm.attributes.has(gfn, end, U.KVM_MEMORY_ATTRIBUTE_PRIVATE))
    if not fast:
        UNIT_BY_UNIT.check(nunits)
        vcpu = next(iter(vm.vcpus.values()))
        for g in range(gfn, end, R):            # per 2M unit: KVM's fault path records its events
            out = vcpu.fault_in(g << PAGE_SHIFT, private=True)
            if out is not None:
                raise KvmError(errno.EFAULT, f"private fault at gfn {g:#x} exited: {out.reason}")
        return
    pfns = slot.gmem.get_folios(slot.gmem_index(gfn) >> PMD_ORDER, nunits)
    todo = ~host.rmp.region_has_assigned(pfns // R)
    # runs of units whose folios are consecutive in host memory: one RMPUPDATE range each
    idx = np.flatnonzero(todo)
    if len(idx):
        breaks = np.flatnonzero((np.diff(idx) != 1) | (np.diff(pfns[idx]) != R)) + 1
        for run in np.split(idx, breaks):
            first = int(run[0])
            rc = host.rmp_make_private(int(pfns[first]), (gfn + first * R) << PAGE_SHIFT, PAGE_2M,
                                       vm.asid, False, npages=len(run) * R)
            if rc:
                raise KvmError(errno.EINVAL, f"sev_gmem_prepare failed for gfn {gfn + first * R:#x}")
    first = slot.gmem_index(gfn)
    slot.gmem.prepared.set(first, first + nunits * R, 1)
    vm.sptes.set(gfn, end, MAP_PRIVATE)
    host.ledger.record("kvm_fault", vm_exit=nunits, npt_map=nunits)


def _units_in_slot(vm, gfn: int, nunits, name: str):
    """The memslot holding the ``nunits`` 2M units from ``gfn`` (a range form's operands)."""
    nunits = check_field(nunits, "nunits")
    slot = vm.slot_for_gfn(gfn)
    if nunits < 1 or slot is None or gfn + nunits * R > slot.end_gfn:
        raise ValueError(f"{name}, nunits: {nunits} 2M units from gfn {gfn:#x} do not lie in one memslot")
    return nunits, slot


def guest_pvalidate_2m_run(vm, gpa: int, nunits: int) -> list[int]:
    """The guest's PVALIDATE(2M, validate) of ``nunits`` consecutive 2M pages (see
    :meth:`kit.host.rmp.Rmp.pvalidate_2m_run`), split into runs of consecutive host frames,
    when KVM maps them all private with 2M folios; otherwise one by one through
    :func:`guest_pvalidate` (vCPU 0), whose #NPF goes through KVM's fault path: an entry of the
    result is then a return code or that unit's :class:`~kit.kvm.uapi.Exit`. ``gpa`` is
    2M-aligned and the run lies in one memslot (ValueError)."""
    gpa = check_field(gpa, "gpa")
    if gpa % PAGE_2M:
        raise ValueError(f"gpa: a 2M PVALIDATE takes a 2M-aligned gpa, got {gpa:#x}")
    gfn = gpa >> PAGE_SHIFT
    nunits, slot = _units_in_slot(vm, gfn, nunits, "gpa")
    f = slot.gmem if slot is not None else None
    if (f is None or folio_order(f) != PMD_ORDER
            or not vm.sptes.has(gfn, gfn + nunits * R, MAP_PRIVATE)):   # one by one
        UNIT_BY_UNIT.check(nunits)
        vcpu = next(iter(vm.vcpus.values()))
        return [guest_pvalidate(vcpu, gpa + i * PAGE_2M, PAGE_2M, True) for i in range(nunits)]
    pfns = f.folio_pfns(slot.gmem_index(gpa >> PAGE_SHIFT) >> PMD_ORDER, nunits)
    out = []
    breaks = np.flatnonzero(np.diff(pfns) != R) + 1
    for run in np.split(np.arange(nunits), breaks):
        out += vm.kvm.host.rmp.pvalidate_2m_run(int(pfns[run[0]]), len(run), asid=vm.asid,
                                                gpa=gpa + int(run[0]) * PAGE_2M)
    return out


def sev_gmem_invalidate(host, start: int, end: int) -> None:
    """``sev_gmem_invalidate``: frames [start, end) leave a guest_memfd and become shared.
    The range is one folio's (``kvm_gmem_free_folio``): at most a 1G folio's frames."""
    start, end = check_field(start, "start"), check_field(end, "end")
    if not start < end <= host.nr_pages or end - start > PAGES_PER_1G:
        raise ValueError(f"start, end: [{start:#x}, {end:#x}) is not one folio's frames of host memory")
    pfn = start
    while pfn < end:
        assigned, level = host.snp_lookup_rmpentry(pfn)
        if not assigned:
            pfn += 1
            continue
        use_2m = pfn % R == 0 and end >= pfn + R and level == PAGE_2M
        if level == PAGE_2M and not use_2m:
            host.rmp.psmash(pfn - pfn % R)
        host.rmp_make_shared(pfn, PAGE_2M if use_2m else PAGE_4K)
        pfn += R if use_2m else 1


def gmem_free_range(f, start: int, end: int) -> None:
    """Truncate pages [start, end) of the file (:meth:`kit.kvm.gmem.GuestMemfd.free_folios`,
    kept under its old name)."""
    f.free_folios(start, end)


def sev_max_mapping_level(host, pfn: int) -> int:
    """``sev_private_max_mapping_level`` (later ``sev_gmem_max_mapping_level``): the RMP
    level; 4K when unassigned."""
    assigned, level = host.snp_lookup_rmpentry(pfn)
    return level if assigned else PAGE_4K


# ----------------------------------------------------------------- RMP #NPF
def sev_handle_rmp_fault(vm, gpa: int, error_code: int) -> None:
    """``sev_handle_rmp_fault``: a size mismatch on a private page backed by a 2M RMP entry:
    PSMASH the entry and zap the 2M of gfns, so that the retried access maps 4K."""
    gpa, error_code = check_field(gpa, "gpa"), check_field(error_code, "error_code")
    gfn = gpa >> PAGE_SHIFT
    if not vm.memory_attributes(gfn) & U.KVM_MEMORY_ATTRIBUTE_PRIVATE:
        return
    slot = vm.slot_for_gfn(gfn)
    if slot is None or slot.gmem is None:
        return
    pfn, _ = slot.gmem.get_pfn(slot.gmem_index(gfn), allocate=False)
    if pfn is None:
        return
    assigned, level = vm.kvm.host.snp_lookup_rmpentry(pfn)
    if not assigned or level == PAGE_4K:
        return
    vm.kvm.host.rmp.psmash(pfn - pfn % R)
    base = gfn - gfn % R
    vm.zap_gfn_range(base, base + R, "all")


def guest_pvalidate(vcpu, gpa: int, pagesize: int, validate: bool):
    """The guest's PVALIDATE of its private page ``gpa``.

    A page KVM does not map private is first a #NPF (the C-bit access of the instruction):
    KVM's fault path (:meth:`kit.kvm.mmu.Vcpu.fault_in`, ``npf_interception`` ->
    ``kvm_mmu_page_fault``) with the VM's #NPF policy: ``exit`` (the attribute is shared)
    returns the ``KVM_EXIT_MEMORY_FAULT`` :class:`~kit.kvm.uapi.Exit` and allocates no
    guest_memfd folio; ``auto-convert`` converts, faults the folio in
    (``sev_gmem_prepare``) and the instruction is retried. Then the RMP checks: a size-mismatch
    #NPF goes to ``sev_handle_rmp_fault`` (a ``vm_exit``; PSMASH and zap) and the instruction
    is retried once, faulting the page in again at 4K. A 2M request whose backing cannot be a
    2M page (an order-0 folio whose frame is not 2M-aligned, so KVM maps it 4K) returns
    FAIL_SIZEMISMATCH: the page size of the request does not match the nested mapping
    [APM2 15.36.6, PVALIDATE]; the Linux guest then retries it as 4K pages (``pval_pages``).

    Returns the instruction's return code (0 or ``PVALIDATE_FAIL_*``) or the fault's exit. An
    RMP #NPF KVM leaves unresolved (``sev_handle_rmp_fault`` returns early, e.g. the host made
    the page shared: the vCPU would fault forever) is raised as the
    :class:`~kit.errors.NestedPageFault` instead of hanging."""
    vcpu.check_runnable()
    pagesize = check_level(pagesize, name="pagesize")
    gpa = check_int(gpa, "gpa", 0, (1 << MAX_GPA_BITS) - 1)
    if gpa % pagesize:
        raise ValueError(f"gpa: must be aligned to the page size {pagesize:#x}, got {gpa:#x}")
    validate = check_bool(validate, "validate")
    vm = vcpu.vm
    gfn = gpa >> PAGE_SHIFT
    for attempt in (0, 1):
        if vm.sptes.get(gfn) != MAP_PRIVATE:
            out = vcpu.fault_in(gpa, private=True)
            if out is not None:
                return out
        slot = vm.slot_for_gfn(gfn)
        pfn, _ = slot.gmem.get_pfn(slot.gmem_index(gfn), allocate=False)
        if pagesize == PAGE_2M and pfn % R:
            return PVALIDATE_FAIL_SIZEMISMATCH
        try:
            return vm.kvm.host.rmp.pvalidate(pfn, pagesize=pagesize, validate=validate,
                                             asid=vm.asid, gpa=gpa)
        except NestedPageFault as e:
            if attempt or not e.error_code & PFERR_GUEST_SIZEM_MASK:
                raise
            vm.kvm.host.ledger.record("npf", vm_exit=1)
            vm.x86_ops.handle_rmp_fault(vcpu, gpa, e.error_code)


def guest_validate(vcpu, gpa: int, npages: int) -> list:
    """The guest validates ``npages`` 4K pages from ``gpa`` after converting them to private
    (arch/x86/coco/sev/core.c ``pval_pages``: PVALIDATE, 4K, validate=1, page by page; a
    helper for notebooks and probes, not a hot path): the list of :func:`guest_pvalidate`
    results. A VM without an RMP (not SNP) has nothing to validate: []. ``npages`` is at most
    :data:`~kit.kvm.limits.VALIDATE_PAGES`'s bound."""
    npages = VALIDATE_PAGES.check(npages)
    gpa = check_int(gpa, "gpa", 0, (1 << MAX_GPA_BITS) - npages * PAGE_4K)
    if gpa % PAGE_4K:
        raise ValueError(f"gpa: must be page aligned, got {gpa:#x}")
    if vcpu.vm.type != U.KVM_X86_SNP_VM:
        return []
    return [guest_pvalidate(vcpu, gpa + i * PAGE_4K, PAGE_4K, True) for i in range(npages)]


def snp_check_private_access(vcpu, gpa: int) -> None:
    """The hardware's check of a guest access with the C-bit set, once KVM mapped the page
    [APM2 15.36.10]: the RMP entry of the frame must be assigned, to this VM's ASID, at this
    GPA (for a 2M entry: at the 2M page holding it), and validated. Otherwise the guest gets
    #VC (:class:`~kit.errors.VmmCommunicationException`) with ``SVM_EXIT_PAGE_NOT_VALIDATED``
    and ``detail`` naming the failed condition.

    The APM raises this #VC for an assigned entry with Validated=0; an entry that is not
    assigned to the guest at this GPA is an RMP #NPF in hardware, which KVM's
    ``sev_handle_rmp_fault`` leaves unresolved (the entry is not assigned), so the guest never
    completes the access: the model reports both as this #VC. The Linux guest has no handler
    for the exit code (arch/x86/coco/sev/vc-handle.c ``vc_handle_exitcode``), so it terminates
    (``SEV_TERM_SET_GEN``, ``GHCB_SEV_ES_GEN_REQ``)."""
    vm = vcpu.vm
    gfn = gpa >> PAGE_SHIFT
    slot = vm.slot_for_gfn(gfn)
    pfn, _ = slot.gmem.get_pfn(slot.gmem_index(gfn), allocate=False)
    e = vm.kvm.host.rmp.rmpread(pfn)
    want = (gfn - pfn % R if e.pagesize == PAGE_2M else gfn) << PAGE_SHIFT
    why = None
    if not e.assigned:
        why = "RMP entry not assigned"
    elif e.asid != vm.asid:
        why = f"RMP entry belongs to ASID {e.asid}, not {vm.asid}"
    elif e.gpa != want:
        why = f"RMP entry maps gpa {e.gpa:#x}, not {want:#x}"
    elif not e.validated:
        why = "Validated=0"
    if why:
        raise VmmCommunicationException(SVM_EXIT_PAGE_NOT_VALIDATED, gpa, why)


# ----------------------------------------------------------------- GHCB page-state change
@dataclass
class PscState:
    """The page-state change KVM holds for a vCPU (``struct vcpu_sev_es_state``: ``ghcb_sa``,
    ``psc_idx``, ``psc_inflight``, ``psc_2m``) and, once KVM answered, ``result``:
    (sw_exit_info_1, sw_exit_info_2)."""

    desc: PscDesc
    idx: int = 0
    inflight: int = 0
    huge: bool = False
    result: tuple | None = None
    exits: list = field(default_factory=list)


def _psc_next_range(desc: PscDesc):
    """``snp_begin_psc`` from ``next_range``: skip the entries already done (advancing
    ``cur_entry``), check the first one with pages left, coalesce the entries after it.
    Returns ``(error, None)`` to answer with, ``(0, None)`` when nothing is left, or
    ``(0, (idx, count, gfn, npages, op, pagesize_2m))`` for the run to hand out.

    The kernel's checks, in order: ``end_entry >= VMGEXIT_PSC_MAX_COUNT`` -> INVALID_HDR;
    per entry ``cur_page > npages`` or a gfn not aligned to the entry's size -> INVALID_ENTRY.
    A partly done entry is finished as 4K pages from ``gfn + cur_page``. Entries join the run
    while they have the same operation, ``cur_page == 0``, the same size, and a gfn equal to
    the first entry's *own* gfn plus the pages so far (the kernel compares
    ``entry_start.gfn + npages``: after a partly done 2M entry this is not the page after the
    run). Model rules the kernel does not need: an entry list shorter than ``end_entry + 1``
    -> INVALID_HDR; an operation outside 1..4 or a page size the entry cannot encode ->
    INVALID_ENTRY (the kernel completes unknown operations as no-ops)."""
    entries = desc.entries
    idx_start, idx_end = desc.cur_entry, desc.end_entry
    if idx_end >= VMGEXIT_PSC_MAX_COUNT:
        return VMGEXIT_PSC_ERROR_INVALID_HDR, None
    if idx_start <= idx_end and idx_end >= len(entries):
        return VMGEXIT_PSC_ERROR_INVALID_HDR, None
    idx = idx_start
    while idx <= idx_end:
        e = entries[idx]
        huge = psc_pagesize_2m(e.pagesize)
        if huge is None or e.op not in PSC_OPS:
            return VMGEXIT_PSC_ERROR_INVALID_ENTRY, None
        npages = R if huge else 1
        if not 0 <= e.cur_page <= npages or e.gfn % npages:
            return VMGEXIT_PSC_ERROR_INVALID_ENTRY, None
        gfn = e.gfn
        if e.cur_page:                          # a partly done 2M entry: the rest as 4K
            npages -= e.cur_page
            gfn += e.cur_page
            huge = False
        if npages:
            break
        idx += 1
        desc.cur_entry += 1
    if idx > idx_end:
        return 0, None
    start, count = entries[idx], 1
    j = idx + 1
    while j <= idx_end:
        e = entries[j]
        if (e.op != start.op or e.gfn != start.gfn + npages or e.cur_page
                or psc_pagesize_2m(e.pagesize) is not huge):
            break
        count += 1
        npages += R if huge else 1
        j += 1
    return 0, (idx, count, gfn, npages, start.op, bool(psc_pagesize_2m(start.pagesize)))


def _psc_complete_inflight(state: PscState) -> None:
    """``__snp_complete_one_psc``: every in-flight entry done (``cur_page`` = its pages),
    ``cur_entry`` past them."""
    desc = state.desc
    for i in range(state.idx, state.idx + state.inflight):
        desc.entries[i].cur_page = desc.entries[i].npages
    desc.cur_entry = state.idx + state.inflight
    state.inflight = 0


def _snp_complete_psc(state: PscState, ret: int) -> None:
    """``snp_complete_psc``: nothing in flight any more; "no action" in sw_exit_info_1 and the
    PSC return code in sw_exit_info_2 (``svm_vmgexit_no_action``)."""
    state.inflight, state.idx, state.huge = 0, 0, False
    state.result = (GHCB_HV_RESP_NO_ACTION, ret)
    return None


def snp_guest_owned_convert(vm, gfn: int, npages: int, private: bool) -> int:
    """The conversion KVM makes itself for a VM whose guest owns the attributes (the pKVM
    proposal, thread "[RFC PATCH v12 11/33] KVM: Introduce per-page memory attributes", 2023:
    every request "either immediately succeeds or terminates the guest"):
    ``kvm_vm_set_mem_attributes`` on ``[gfn, gfn + npages)``, recorded in ``kvm_conversions``
    and as ``set_attributes``. Returns 0, -EINVAL when private memory is asked for that no
    open guest_memfd slot backs (KVM could never fault it in), or the update's -errno (e.g.
    -ENOMEM when ``xa_reserve`` fails); a failure changes nothing. ``[gfn, gfn + npages)``
    must be guest frames (below 2**52: ValueError otherwise)."""
    gfn, npages = check_field(gfn, "gfn"), check_field(npages, "npages")
    if gfn + npages > 1 << (MAX_GPA_BITS - PAGE_SHIFT):
        raise ValueError(f"gfn, npages: [{gfn:#x}, {gfn + npages:#x}) goes past the widest guest "
                         f"physical address (2**{MAX_GPA_BITS})")
    private = check_bool(private, "private")
    if private and not vm.gmem_backed(gfn, gfn + npages):
        return -errno.EINVAL
    value = U.KVM_MEMORY_ATTRIBUTE_PRIVATE if private else 0
    try:
        vm.kvm_vm_set_mem_attributes(gfn << PAGE_SHIFT, npages << PAGE_SHIFT, value)
    except KvmError as e:
        return -e.errno
    vm.kvm_conversions.append((gfn, gfn + npages, value))
    vm.kvm.host.ledger.record("kvm_set_mem_attributes", set_attributes=1)
    return 0


def _snp_begin_psc(vm, state: PscState):
    """``snp_begin_psc``: the next coalesced run of ``state.desc`` as a ``KVM_HC_MAP_GPA_RANGE``
    exit (``args``: gpa, pages, ENCRYPTED/DECRYPTED | the first entry's size flag), or None
    with ``state.result`` set. Without the hypercall exit enabled (``user_exit_on_hypercall``)
    -> GENERIC. PSMASH/UNSMASH runs complete without an exit. Where the guest owns the
    attributes, each run is converted inside KVM (:func:`snp_guest_owned_convert`): no exit,
    GENERIC if a conversion cannot be made."""
    guest_owned = vm.attribute_owner == "guest"
    if not guest_owned and not vm.exit_hypercalls & (1 << U.KVM_HC_MAP_GPA_RANGE):
        return _snp_complete_psc(state, VMGEXIT_PSC_ERROR_GENERIC)
    while True:
        if state.inflight:                      # WARN_ON_ONCE(psc_inflight)
            return _snp_complete_psc(state, VMGEXIT_PSC_ERROR_GENERIC)
        err, run = _psc_next_range(state.desc)
        if err or run is None:
            return _snp_complete_psc(state, err)
        idx, count, gfn, npages, op, size2m = run
        state.idx, state.inflight, state.huge = idx, count, size2m
        if op not in (SNP_PAGE_STATE_PRIVATE, SNP_PAGE_STATE_SHARED):
            _psc_complete_inflight(state)       # PSMASH/UNSMASH: done, no exit
            continue
        if guest_owned:
            if snp_guest_owned_convert(vm, gfn, npages, op == SNP_PAGE_STATE_PRIVATE):
                return _snp_complete_psc(state, VMGEXIT_PSC_ERROR_GENERIC)
            _psc_complete_inflight(state)
            continue
        attrs = (KVM_MAP_GPA_RANGE_ENCRYPTED if op == SNP_PAGE_STATE_PRIVATE else 0) | \
            (KVM_MAP_GPA_RANGE_PAGE_SZ_2M if size2m else 0)
        ex = Exit(U.KVM_EXIT_HYPERCALL, hypercall=Hypercall(
            U.KVM_HC_MAP_GPA_RANGE, (gfn << PAGE_SHIFT, npages, attrs), U.KVM_EXIT_HYPERCALL_LONG_MODE))
        state.exits.append(ex)
        return ex


def _snp_complete_one_psc(vm, state: PscState, ret: int):
    """``snp_complete_one_psc``: userspace's ``ret`` non-zero -> GENERIC (the in-flight entries
    stay as they were); else they are done and the next run is handed out."""
    if ret:
        return _snp_complete_psc(state, VMGEXIT_PSC_ERROR_GENERIC)
    _psc_complete_inflight(state)
    return _snp_begin_psc(vm, state)


def _psc_answer(vcpu, state: PscState, out):
    """Leave the completion for userspace's answer, or hand KVM's answer to the guest."""
    if out is None:
        vcpu.psc_result, vcpu.psc = state.result, None
        return None
    vcpu.complete_userspace_io = lambda ret: _psc_answer(vcpu, state, _snp_complete_one_psc(vcpu.vm, state, ret))
    return out


def snp_vmgexit_psc(vcpu, desc: PscDesc):
    """``sev_handle_vmgexit`` for ``SVM_VMGEXIT_PSC`` on an SNP guest (what
    :meth:`kit.kvm.mmu.Vcpu.vmgexit_psc` reaches): KVM works on ``desc`` in place
    (:func:`_snp_begin_psc`). Returns the exit for userspace, whose answer goes to
    :meth:`~kit.kvm.mmu.Vcpu.complete_hypercall`, or None with ``vcpu.psc_result`` set;
    ``vcpu.psc`` is the :class:`PscState` while one is in flight."""
    if not isinstance(desc, PscDesc):
        raise TypeError(f"desc: expected a PscDesc, got {type(desc).__name__}")
    state = PscState(desc)
    vcpu.psc = state
    return _psc_answer(vcpu, state, _snp_begin_psc(vcpu.vm, state))


def _psc_entry(i: int, e) -> PscEntry:
    if isinstance(e, PscEntry):
        return e
    if not isinstance(e, (tuple, list)) or not 3 <= len(e) <= 4:
        raise TypeError(f"entries[{i}]: expected (gfn, op, pagesize) or a PscEntry, got {e!r}")
    try:
        return PscEntry(*e)
    except (TypeError, ValueError) as err:
        raise type(err)(f"entries[{i}]: {err}") from None


def snp_begin_psc(vcpu, entries, *, cur_entry: int = 0, end_entry: int | None = None):
    """The page-state change of ``entries`` ((gfn, op, pagesize PAGE_4K/PAGE_2M) tuples or
    :class:`PscEntry`) as one call: the exits KVM would hand out in turn if userspace answered
    each with ret 0, and KVM's answer. Returns ``(result, exits)``: ``result`` is
    sw_exit_info_2 (0 or ``VMGEXIT_PSC_ERROR_*``). Nothing is converted and no vCPU state or
    cost event changes where userspace owns the attributes (the caller answers the exits);
    where the guest owns them KVM converts inside, as :func:`snp_vmgexit_psc` does. The
    stateful form is :meth:`kit.kvm.mmu.Vcpu.vmgexit_psc`."""
    if isinstance(entries, (str, bytes, dict)) or not hasattr(entries, "__iter__"):
        raise TypeError(f"entries: expected a list of (gfn, op, pagesize) or PscEntry, got {entries!r}")
    desc = PscDesc([_psc_entry(i, e) for i, e in enumerate(entries)], cur_entry, end_entry)
    state = PscState(desc)
    out = _snp_begin_psc(vcpu.vm, state)
    while out is not None:
        out = _snp_complete_one_psc(vcpu.vm, state, 0)
    return state.result[1], state.exits


# ----------------------------------------------------------------- GHCB MSR protocol
def snp_begin_psc_msr(vcpu, ghcb_msr: int):
    """``snp_begin_psc_msr``: one 4K page, private or shared only (PSMASH/UNSMASH are not
    supported over the MSR protocol); a bad operation, or the hypercall exit not enabled, puts
    GHCB_MSR_PSC_RESP_ERROR in the MSR and resumes the guest. Otherwise one
    ``KVM_HC_MAP_GPA_RANGE`` exit of one 4K page. Returns ``(msr_response, exit or None)``
    (the response once userspace answered 0: ``snp_complete_psc_msr``)."""
    ghcb_msr = check_field(ghcb_msr, "ghcb_msr")
    if ghcb_msr & GHCB_MSR_INFO_MASK != GHCB_MSR_PSC_REQ:
        raise ValueError(f"ghcb_msr: not a page-state-change request ({ghcb_msr:#x})")
    gfn = (ghcb_msr >> GHCB_MSR_PSC_GFN_POS) & GHCB_MSR_PSC_GFN_MASK
    op = (ghcb_msr >> GHCB_MSR_PSC_OP_POS) & GHCB_MSR_PSC_OP_MASK
    if op not in (SNP_PAGE_STATE_PRIVATE, SNP_PAGE_STATE_SHARED):
        return GHCB_MSR_PSC_RESP_ERROR, None
    if not vcpu.vm.exit_hypercalls & (1 << U.KVM_HC_MAP_GPA_RANGE):
        return GHCB_MSR_PSC_RESP_ERROR, None
    attrs = KVM_MAP_GPA_RANGE_ENCRYPTED if op == SNP_PAGE_STATE_PRIVATE else 0
    return GHCB_MSR_PSC_RESP, Exit(U.KVM_EXIT_HYPERCALL, hypercall=Hypercall(
        U.KVM_HC_MAP_GPA_RANGE, (gfn << PAGE_SHIFT, 1, attrs), U.KVM_EXIT_HYPERCALL_LONG_MODE))


def snp_complete_psc_msr(vcpu, ret: int) -> None:
    """``snp_complete_psc_msr``: ``GHCB_MSR_PSC_RESP`` in the MSR if userspace's ``ret`` is 0,
    else ``GHCB_MSR_PSC_RESP_ERROR``; the guest resumes."""
    vcpu.ghcb_msr = GHCB_MSR_PSC_RESP_ERROR if ret else GHCB_MSR_PSC_RESP
    return None


def snp_vmgexit_msr_psc(vcpu, msr: int):
    """``GHCB_MSR_PSC_REQ`` in ``sev_handle_vmgexit_msr_protocol`` of an SNP guest
    (:func:`snp_begin_psc_msr`; the completion :func:`snp_complete_psc_msr`). Where the guest
    owns the attributes KVM converts the page inside (:func:`snp_guest_owned_convert`) and
    answers at once. The response is in ``vcpu.ghcb_msr`` once KVM answered."""
    vcpu.ghcb_msr = msr
    vm = vcpu.vm
    if vm.attribute_owner == "guest":
        gfn = (msr >> GHCB_MSR_PSC_GFN_POS) & GHCB_MSR_PSC_GFN_MASK
        op = (msr >> GHCB_MSR_PSC_OP_POS) & GHCB_MSR_PSC_OP_MASK
        ok = (op in (SNP_PAGE_STATE_PRIVATE, SNP_PAGE_STATE_SHARED)
              and not snp_guest_owned_convert(vm, gfn, 1, op == SNP_PAGE_STATE_PRIVATE))
        vcpu.ghcb_msr = GHCB_MSR_PSC_RESP if ok else GHCB_MSR_PSC_RESP_ERROR
        return None
    resp, ex = snp_begin_psc_msr(vcpu, msr)
    if ex is None:
        vcpu.ghcb_msr = resp
        return None
    vcpu.complete_userspace_io = lambda ret: snp_complete_psc_msr(vcpu, ret)
    return ex


# ----------------------------------------------------------------- launch
SNP_PAGE_TYPE_NORMAL, SNP_PAGE_TYPE_VMSA, SNP_PAGE_TYPE_ZERO = 1, 2, 3
SNP_PAGE_TYPE_UNMEASURED, SNP_PAGE_TYPE_SECRETS, SNP_PAGE_TYPE_CPUID = 4, 5, 6
LAUNCH_PAGE_TYPES = (SNP_PAGE_TYPE_NORMAL, SNP_PAGE_TYPE_ZERO, SNP_PAGE_TYPE_UNMEASURED,
                     SNP_PAGE_TYPE_SECRETS, SNP_PAGE_TYPE_CPUID)


def sev_legacy_command(vm, cmd="KVM_SEV_LAUNCH_UPDATE_DATA") -> int:
    """A ``KVM_MEMORY_ENCRYPT_OP`` command the kit does not model further (``cmd``: its number
    or name): only ``sev_mem_enc_ioctl``'s common checks (:func:`kit.kvm.sev.sev_mem_enc_check`),
    e.g. a legacy SEV command on an SNP VM -> EPERM, anything but the four mirror commands
    from a mirror -> EINVAL. Returns 0 when the command would be dispatched."""
    if isinstance(cmd, str):
        if not cmd.startswith("KVM_SEV_") or not isinstance(getattr(U, cmd, None), int):
            raise ValueError(f"cmd: unknown command {cmd!r}; allowed: {', '.join(U.SEV_CMD_NAMES.values())}")
        cmd = getattr(U, cmd)
    elif isinstance(cmd, bool) or not isinstance(cmd, int):
        raise ValueError(f"cmd: expected a KVM_SEV_* number or name, got {cmd!r}")
    sev_mem_enc_check(vm, cmd)
    return 0


SEV_RET_INVALID_GUEST_STATE, SEV_RET_INVALID_PARAM = 0x02, 0x16   # include/uapi/linux/psp-sev.h
CPUID_CORRECTED_BYTE = 0xCF   # model token: "the firmware's corrected CPUID table" in a page


@dataclass(frozen=True)
class LaunchUpdateParams:
    """``struct kvm_sev_snp_launch_update`` as KVM writes it back: advanced past the pages
    it populated (``uaddr`` too, except for ZERO pages)."""

    gfn_start: int
    len: int
    uaddr: int
    count: int


def snp_page_reclaim(vm, pfn: int) -> int:
    """``snp_page_reclaim``: SNP_PAGE_RECLAIM (the firmware returns the page from Pre-Guest to
    a state the hypervisor may update), then ``kvm_rmp_make_shared``. If the command fails:
    ``KVM_BUG`` (the VM is bugged) and ``snp_leak_pages``; returns -EIO.
    The fault-injection knob ``page_reclaim_fails`` (:mod:`kit.kvm.injection`) makes the
    firmware command fail."""
    host = vm.kvm.host
    pfn = check_pfn_range(pfn, 1, host.nr_pages)[0]
    if injected(vm, "page_reclaim_fails"):
        vm.bugged = True
        host.snp_leak_pages(pfn, 1)
        return -errno.EIO
    host.rmp.firmware_set(pfn, 1, validated=False, immutable=False)
    if host.rmp_make_shared(pfn, PAGE_4K):
        return -errno.EIO
    return 0


def snp_launch_update(vm, gfn_start: int, npages: int, page_type: int, flags: int = 0, *,
                      uaddr: int = 0) -> LaunchUpdateParams:
    """``KVM_SEV_SNP_LAUNCH_UPDATE`` (arch/x86/kvm/svm/sev.c ``snp_launch_update`` ->
    virt/kvm/guest_memfd.c ``kvm_gmem_populate`` -> ``sev_gmem_post_populate``), page by page.

    Before any page: not an SNP VM in its launch phase (no context) -> EINVAL; flags, or a page
    type other than NORMAL/ZERO/UNMEASURED/SECRETS/CPUID -> EINVAL; ``gfn_start`` not in a
    private-capable (guest_memfd) slot -> EINVAL; ``npages`` negative -> EINVAL. The range is
    clipped to the slot. Then for each page in order: already prepared/assigned in the RMP ->
    -EEXIST, attribute not PRIVATE -> -EINVAL, else the source page (``uaddr``, the VMM's memory;
    none for ZERO) is copied in, ``rmp_make_private(4K, immutable=true)`` and the firmware
    measures it. A firmware error: ``snp_page_reclaim`` of that page and, for a CPUID page
    rejected with INVALID_PARAM, the firmware-corrected page is copied back to ``uaddr``.
    The first failing page stops the loop. If no page was done the ioctl fails with **EIO**
    (whatever the per-page error; ``.fw_error`` holds the firmware's code or 0); otherwise
    it succeeds and returns the parameters advanced by the pages done (userspace retries the
    rest). After LAUNCH_FINISH the firmware rejects the page (INVALID_GUEST_STATE).
    Firmware rejections are fault-injection knobs: ``vm.launch_fw_errors = {gfn: code}``
    (:mod:`kit.kvm.injection`)."""
    gfn_start, uaddr = check_field(gfn_start, "gfn_start"), check_field(uaddr, "uaddr")
    npages = check_int(npages, "npages", None, U.U64 >> PAGE_SHIFT)     # len: u64 bytes
    page_type, flags = check_field(page_type, "page_type", 8), check_field(flags, "flags", 16)
    sev_mem_enc_check(vm, U.KVM_SEV_SNP_LAUNCH_UPDATE)
    if vm.type != U.KVM_X86_SNP_VM or not vm.sev_active:
        raise KvmError(errno.EINVAL, "not an initialised SNP VM")
    if flags or page_type not in LAUNCH_PAGE_TYPES:
        raise KvmError(errno.EINVAL, "flags must be 0 and the type a launch page type")
    slot = vm.slot_for_gfn(gfn_start) if gfn_start >= 0 else None
    if npages < 0 or slot is None or not slot.flags & U.KVM_MEM_GUEST_MEMFD:
        raise KvmError(errno.EINVAL, "gfn_start is not in a private-capable memslot")
    if slot.gmem is None:
        raise KvmError(errno.EIO, "guest_memfd closed (kvm_gmem_populate: -EFAULT)")
    host, f = vm.kvm.host, slot.gmem
    asked, npages = npages, min(npages, slot.end_gfn - gfn_start)
    user = vm.kvm.user_memory.data
    done, err, fw_error = 0, 0, 0
    for i in range(npages):
        gfn = gfn_start + i
        index = slot.gmem_index(gfn)
        pfn, _ = f.get_pfn(index, allocate=False)
        if pfn is not None and host.snp_lookup_rmpentry(pfn)[0]:
            err = -errno.EEXIST
            break
        if not vm.memory_attributes(gfn) & U.KVM_MEMORY_ATTRIBUTE_PRIVATE:
            err = -errno.EINVAL
            break
        pfn, _ = f.get_pfn(index)
        src_page = (uaddr >> PAGE_SHIFT) + i
        f.data.fill(index, 1, 0 if page_type == SNP_PAGE_TYPE_ZERO else user.page(src_page))
        if host.rmp_make_private(pfn, gfn << PAGE_SHIFT, PAGE_4K, vm.asid, True):
            err = -errno.EINVAL
            break
        fw_error = SEV_RET_INVALID_GUEST_STATE if vm.sev.snp_launched else launch_fw_error(vm, gfn)
        if fw_error:
            err = -errno.EIO
            if (not snp_page_reclaim(vm, pfn) and page_type == SNP_PAGE_TYPE_CPUID
                    and fw_error == SEV_RET_INVALID_PARAM):
                f.data.fill(index, 1, CPUID_CORRECTED_BYTE)      # the firmware's corrections
                user.fill(src_page, 1, CPUID_CORRECTED_BYTE)     # copy_to_user(src + i * PAGE_SIZE)
            break
        vm.sev.launch_pages.append(pfn)
        f.prepared.set(index, index + 1, 1)         # kvm_gmem_populate: the folio is up to date
        done += 1
    if err and not done:
        e = KvmError(errno.EIO, f"kvm_gmem_populate failed at gfn {gfn_start:#x}: "
                     f"{errno_name(-err)} (fw_error {fw_error:#x})")
        e.fw_error = fw_error
        raise e
    return LaunchUpdateParams(gfn_start + done, (asked - done) << PAGE_SHIFT,
                              uaddr if page_type == SNP_PAGE_TYPE_ZERO else uaddr + (done << PAGE_SHIFT),
                              done)


SNP_INITIAL_VMSA_GPA = 0xFFFFFFFFF000


def snp_alloc_vmsa(host) -> int:
    """``snp_safe_alloc_page_node`` (arch/x86/kvm/svm/sev.c): never a 2M-aligned page, the
    workaround for the SNP erratum where a 2M or 1G host mapping colliding with the RMP entry
    of a 2M-aligned VMCB, VMSA or AVIC page gives a spurious RMP #PF (thread "[PATCH Part2 v5
    21/45] KVM: SVM: Make AVIC backing, VMSA and VMCB memory allocation SNP safe", 2021)."""
    pfn = int(host.memory.alloc(0, "kernel")[0])
    if pfn % R == 0:
        other = int(host.memory.alloc(0, "kernel")[0])
        host.memory.free(pfn)
        pfn = other
    return pfn


def sev_free_vcpu(vcpu) -> None:
    """``sev_free_vcpu``: make the VMSA shared again; on failure ``KVM_BUG_ON`` and
    ``snp_leak_pages``: the page is never freed. Otherwise it goes back to the host."""
    host = vcpu.vm.kvm.host
    if host.rmp_make_shared(vcpu.vmsa_pfn, PAGE_4K):
        host.snp_leak_pages(vcpu.vmsa_pfn, 1)
        vcpu.vm.bugged = True
    else:
        host.memory.free(vcpu.vmsa_pfn)
    vcpu.vmsa_pfn = None


def snp_launch_finish(vm) -> int:
    """``snp_launch_finish``: first ``snp_launch_update_vmsa`` (each vCPU's VMSA made private,
    immutable, at GPA 0xFFFFFFFFF000, and measured), then SNP_LAUNCH_FINISH; the firmware
    turns the launch pages from Pre-Guest into Guest-Valid (validated, no longer immutable);
    ``pre_fault_allowed`` set."""
    sev_mem_enc_check(vm, U.KVM_SEV_SNP_LAUNCH_FINISH)
    if vm.type != U.KVM_X86_SNP_VM or not vm.sev_active or vm.sev.snp_launched:
        raise KvmError(errno.EINVAL, "not an initialised SNP VM in its launch phase")
    host = vm.kvm.host
    vmsas = []
    for vcpu in vm.vcpus.values():          # snp_launch_update_vmsa, before LAUNCH_FINISH
        if host.rmp_make_private(vcpu.vmsa_pfn, SNP_INITIAL_VMSA_GPA, PAGE_4K, vm.asid, True):
            raise KvmError(errno.EINVAL, f"rmp_make_private failed for the VMSA of vCPU {vcpu.id}")
        vmsas.append(vcpu.vmsa_pfn)
    # the firmware's per-page changes (VMSA bit; then Pre-Guest -> Guest-Valid) touch no other
    # page and nothing reads them in between, so they are applied once per run of frames
    for pfn, n in pfn_runs(vmsas):
        host.rmp.firmware_set(pfn, n, vmsa=True)
    for vcpu in vm.vcpus.values():
        vcpu.vmsa_protected = True
    vm.sev.launch_pages.extend(vmsas)
    for pfn, n in pfn_runs(vm.sev.launch_pages):
        host.rmp.firmware_set(pfn, n, validated=True, immutable=False)
    vm.sev.snp_launched = True
    vm.pre_fault_allowed = True
    return 0


# ----------------------------------------------------------------- the arch-ops table
class SnpX86Ops(SevX86Ops):
    """The arch ops of SNP VMs: :class:`kit.kvm.sev.SevX86Ops` plus SNP's members of
    ``svm_x86_ops`` (arch/x86/kvm/svm/svm.c). Subclass it to try another rule, e.g. a
    different ``private_max_mapping_level``, and pass it to ``Kvm(x86_ops=...)``."""

    gmem_host_frames = True           # the RMP tracks which frame backs each private page

    def vcpu_create(self, vcpu) -> None:
        """``svm_vcpu_create``: the VMSA page (:func:`snp_alloc_vmsa`)."""
        vcpu.vmsa_pfn = snp_alloc_vmsa(vcpu.vm.kvm.host)

    def vcpu_free(self, vcpu) -> None:
        """``svm_vcpu_free`` -> :func:`sev_free_vcpu`, for a vCPU that still has its VMSA."""
        if vcpu.vmsa_pfn is not None:
            sev_free_vcpu(vcpu)

    def gmem_prepare(self, vm, pfn, gfn: int, order: int) -> int:
        return sev_gmem_prepare(vm, pfn, gfn, order)

    def gmem_invalidate(self, host, start: int, end: int) -> None:
        sev_gmem_invalidate(host, start, end)

    def private_max_mapping_level(self, vm, pfn) -> int:
        return sev_max_mapping_level(vm.kvm.host, pfn)

    def handle_rmp_fault(self, vcpu, gpa: int, error_code: int) -> None:
        sev_handle_rmp_fault(vcpu.vm, gpa, error_code)

    def check_private_access(self, vcpu, gpa: int) -> None:
        snp_check_private_access(vcpu, gpa)

    def vmgexit_msr(self, vcpu, msr: int):
        """The MSR protocol of an SNP guest: ``GHCB_MSR_PSC_REQ`` is :func:`snp_vmgexit_msr_psc`,
        the rest as for SEV-ES (:func:`kit.kvm.sev.sev_handle_vmgexit_msr_protocol`)."""
        if msr & GHCB_MSR_INFO_MASK == GHCB_MSR_PSC_REQ:
            return snp_vmgexit_msr_psc(vcpu, msr)
        return super().vmgexit_msr(vcpu, msr)

    def vmgexit_psc(self, vcpu, desc):
        return snp_vmgexit_psc(vcpu, desc)
