"""Direct-map policies and host RMP-fault policies: small interfaces with named built-ins.

A **direct-map policy** decides what happens to the host direct map when pages change RMP
ownership. The kernel's ``rmpupdate()`` (arch/x86/virt/svm/sev.c) calls
``adjust_direct_map()`` before the RMPUPDATE instruction; the kit calls the policy's
:meth:`DirectMapPolicy.before_rmpupdate` at exactly that point and
:meth:`DirectMapPolicy.after_rmpupdate` once the instruction succeeded. Write your own by
subclassing :class:`DirectMapPolicy` in a notebook cell and pass an instance to
``Host(directmap_policy=...)``::

    class SplitOnlyKernelRanges(DirectMapPolicy):
        name = "split-kernel-ranges"
        def before_rmpupdate(self, host, pfn, npages, level, assigned):
            ...  # use host.directmap.* (set_memory_4k, split_regions, ...) and return 0 or -errno

A **host fault policy** decides what a host kernel #PF on a direct-map access does
(:class:`HostFaultPolicy`); built-ins ``oops`` and ``auto-convert``.
"""
from __future__ import annotations

import numpy as np

from ..errors import HostOops
from ..units import PAGE_2M, PAGE_4K, PAGES_PER_2M
from .ranges import region_span
from .directmap import LVL_4K


class DirectMapPolicy:
    """Base class: does nothing (the ``none`` policy).

    ``safe`` is what the policy claims: no host write to a host-owned page can take an RMP
    fault. The test suite checks the claim of every built-in policy.
    """

    name = "none"
    safe = False
    description = "no direct-map handling: unsafe, a host write through a 2M mapping over a private 4K page is an RMP #PF"

    def boot(self, host) -> None:
        """Called once when the host boots with this policy (or it is switched to)."""

    def before_rmpupdate(self, host, pfn: int, npages: int, level: int, assigned: bool) -> int:
        """Where ``rmpupdate()`` calls ``adjust_direct_map()``; 0 or a negative errno (the
        helper then fails with -EFAULT, as the kernel does)."""
        return 0

    def after_rmpupdate(self, host, pfn: int, npages: int, level: int, assigned: bool) -> None:
        """After the RMPUPDATE(s) succeeded."""

    def __repr__(self) -> str:
        return f"<direct-map policy {self.name!r}>"


class SplitOnDemand(DirectMapPolicy):
    """What was merged (tip 661b1c6169e2, ``adjust_direct_map``): a 2M RMP entry needs nothing,
    since even 1G mappings are RMP-checked as 2M; a 4K entry whose direct-map mapping is 2M or
    1G gets it split with ``set_memory_4k(vaddr, 1)``; a 4K mapping is left alone. Never
    re-merged."""

    name = "split-on-demand"
    safe = True
    description = "split the enclosing large mapping with set_memory_4k when a 4K page changes; 2M pages need nothing"

    def before_rmpupdate(self, host, pfn, npages, level, assigned):
        host.ledger.record("adjust_direct_map", adjust_direct_map=npages if level == PAGE_4K else npages // PAGES_PER_2M)
        if level == PAGE_2M:
            return 0
        r0, r1, _, _ = region_span(pfn, npages)
        regions = np.arange(r0, r1 + 1)
        large = regions[host.directmap.lvl[regions] != LVL_4K]
        if len(large):
            host.directmap.split_regions(large)
        return 0


class PresplitFourK(SplitOnDemand):
    """The whole direct map split to 4K once, at boot (``set_memory_4k`` over all RAM); the
    ``adjust_direct_map`` lookups then always find 4K. Measured 12.9 / 12.1 GB/s guest
    fault-in ("DirectMap4K", unpinned / pinned): M. Roth, 2024-01-16, in the review of
    "[PATCH v1 11/26] x86/sev: Invalidate pages from the direct map when adding them to the RMP
    table" (lore Message-ID 20231230161954.569267-12-michael.roth@amd.com)."""

    name = "presplit-4k"
    description = "split the whole direct map to 4K up front; nothing to do at conversion time"

    def boot(self, host):
        host.directmap.set_memory_4k(0, host.nr_pages)


class Invalidate4K(DirectMapPolicy):
    """The v1 patch ("x86/sev: Invalidate pages from the direct map when adding them to the RMP
    table", 2023-12-30): ``invalidate_direct_map`` removes each page made private from the
    direct map one page at a time with ``set_direct_map_invalid_noflush`` (2M entries too: 512
    calls), ``restore_direct_map`` puts it back with ``set_direct_map_default_noflush`` after it
    was made shared. No TLB flush. Measured 8.0 / 8.9 GB/s ("DirectMap2M+split" in the same
    review, M. Roth, 2024-01-16)."""

    name = "invalidate-4k"
    safe = True
    flush = False
    description = "unmap each page made private one 4K page at a time (v1 patch), restore when shared; no TLB flush"

    def before_rmpupdate(self, host, pfn, npages, level, assigned):
        if assigned:
            host.directmap.set_direct_map_invalid_noflush(pfn, npages)
            if self.flush:
                self._flush(host, npages, level)
        return 0

    def after_rmpupdate(self, host, pfn, npages, level, assigned):
        if not assigned:
            host.directmap.set_direct_map_default_noflush(pfn, npages)
            if self.flush:
                self._flush(host, npages, level)

    #: what one flush covers when ``flush`` is set: ``"page"``, each page's change is flushed
    #: on its own (``flush_tlb_kernel_range`` of one page: an IPI to every online CPU running
    #: INVLPG); ``"entry"``, one ``cpa_flush`` of the RMP entry's pages after the loop (a
    #: 2M entry's 512 pages exceed ``tlb_single_page_flush_ceiling``: ``flush_tlb_all``).
    flush_unit = "page"

    def _flush(self, host, npages, level):
        """Record the flushes of one RMP entry's change (arch/x86/mm/tlb.c
        ``flush_tlb_kernel_range``; arch/x86/mm/pat/set_memory.c ``cpa_flush``): a range of at
        most ``tlb_single_page_flush_ceiling`` pages is one IPI to every CPU running one INVLPG
        per page, a longer one is ``flush_tlb_all``."""
        per_flush = PAGES_PER_2M if (self.flush_unit == "entry" and level == PAGE_2M) else 1
        flushes = npages // per_flush
        if per_flush > host.directmap.tlb_single_page_flush_ceiling:
            host.ledger.record("cpa_flush", flush_tlb_all=flushes)
        else:
            host.ledger.record("cpa_flush", flush_tlb_range=flushes, invlpg=flushes * per_flush)


class Invalidate4KFlush(Invalidate4K):
    """``invalidate-4k`` with the TLB flush its ``_noflush`` helpers leave to the caller, after
    each change: what the review asked for ("where _is_ the TLB flushing here?", D. Hansen,
    2024-01-16, on "[PATCH v1 11/26] x86/sev: Invalidate pages from the direct map when adding
    them to the RMP table") and what an earlier revision did, which "completely cratered
    performance" (M. Roth's reply, 20240116161909.msbdwiyux7wsxw2i@amd.com, pointing at
    20221219150026.bltiyk72pmdc2ic3@amd.com; no figures published).

    That revision (SNP hypervisor series v7, arch/x86/kernel/sev.c ``invalidate_direct_map``)
    called ``set_memory_np(pfn_to_kaddr(pfn), npages)`` per RMP entry, whose ``cpa_flush``
    flushes the entry's pages. Guests of that time asked for 4K page-state changes only (2M
    requests came with commit 15d9088779b8 "x86/sev: Use large PSC requests if applicable",
    v6.5), so every entry was one 4K page and every page changed cost one IPI to every online
    CPU: ``flush_unit = "page"`` (the default). ``flush_unit = "entry"`` is the same code with
    today's 2M entries: one ``flush_tlb_all`` per 2M entry, 512 times fewer flushes."""

    name = "invalidate-4k-flush"
    flush = True
    description = "invalidate-4k plus a TLB flush (an IPI to every CPU) after each page's change"


class SplitOnDemandCollapse(SplitOnDemand):
    """What-if, never merged for this path: ``split-on-demand``, and once no 4K page of a split
    2M region is private any more, re-merge it (``cpa_collapse_large_pages``, commit
    41d88484c71c; Shutemov's 2020 RFC "Restore large pages after fragmentation")."""

    name = "split-on-demand-collapse"
    description = "split-on-demand, and re-merge a 2M mapping once no 4K page under it is private"

    def after_rmpupdate(self, host, pfn, npages, level, assigned):
        if assigned:
            return
        r0, r1, _, _ = region_span(pfn, npages)
        regions = np.arange(r0, r1 + 1)
        regions = regions[host.directmap.lvl[regions] == LVL_4K]
        if len(regions):
            regions = regions[~host.rmp.region_has_assigned(regions)]
            host.directmap.collapse(regions)


DIRECTMAP_POLICIES = {c.name: c for c in (DirectMapPolicy, Invalidate4K, Invalidate4KFlush,
                                          PresplitFourK, SplitOnDemand, SplitOnDemandCollapse)}


def get_directmap_policy(policy) -> DirectMapPolicy:
    if isinstance(policy, DirectMapPolicy):
        return policy
    if isinstance(policy, type) and issubclass(policy, DirectMapPolicy):
        return policy()
    if isinstance(policy, str) and policy in DIRECTMAP_POLICIES:
        return DIRECTMAP_POLICIES[policy]()
    raise ValueError(f"directmap_policy: unknown policy {policy!r}; built-ins: "
                     f"{', '.join(DIRECTMAP_POLICIES)} (or a DirectMapPolicy instance)")


# ===================================================================== host faults
class HostFaultPolicy:
    """What the host kernel does on a #PF from a kernel-mode direct-map access.

    :meth:`handle` runs when the handler runs (:meth:`~kit.host.host.Host.handle_fault`),
    which may be after another handler fixed the same page: ``fault.entry`` is the RMP entry
    read then, and the direct map is read then too. It returns True when the access may be
    retried or raises :class:`~kit.errors.HostOops`.
    """

    name = "oops"
    description = "upstream: show_fault_oops -> snp_dump_hva_rmpentry, then the kernel dies"

    def handle(self, host, fault) -> bool:
        """Upstream: ``page_fault_oops`` dumps the RMP entry (``show_fault_oops`` ->
        ``snp_dump_hva_rmpentry``, arch/x86/mm/fault.c) and the kernel dies."""
        raise HostOops(fault)


class AutoConvert(HostFaultPolicy):
    """The 2021 proposal (M. Roth, October 2021, in the thread "[PATCH Part2 v5 39/45] KVM: SVM:
    Introduce ops for the post gfn map and unmap", linux-kernel and kvm lists): on a host RMP
    #PF for a page that is private, make it shared again (``rmp_make_shared``: Validated is
    cleared, so the guest sees a #VC and can terminate), then retry. The handler decides on
    the RMP and the direct map as they are when it runs:

    - RMP fault (X86_PF_RMP), entry immutable: oops. Entry assigned: make it shared, notify
      the guest, retry. Entry not assigned, and the page still under a large mapping over a
      2M region holding an assigned entry: split the mapping (``set_memory_4k``, as Part2 v6
      ``handle_user_rmp_page_fault`` did) and retry. Otherwise another handler already fixed
      the cause (the thread's CASE1): retry with nothing done. With X86_PF_RMP set this retry
      is safe, which is the thread's argument for splitting over unmapping.
    - Not-present fault on a private page (an unmapping policy): restore the mapping and make
      it shared (CASE1, recoverable). On a page that is not private it cannot be told apart
      from a kernel bug that broke the direct map (CASE2), so oops: the pessimistic path,
      taken also when the page is not private because another handler just converted it.
    """

    name = "auto-convert"
    description = "on a host RMP #PF make the page shared again (guest sees Validated cleared); oops on ambiguous not-present faults"

    def handle(self, host, fault) -> bool:
        e = fault.entry
        base = fault.pfn - fault.pfn % PAGES_PER_2M if e.pagesize == PAGE_2M else fault.pfn
        if fault.kind == "rmp":
            if e.immutable:
                raise HostOops(fault)
            if e.assigned:
                return self._make_shared(host, fault, base)
            region = fault.pfn // PAGES_PER_2M
            if (host.directmap.lvl[region] != LVL_4K
                    and host.rmp.region_has_assigned(np.array([region]))[0]):
                host.directmap.set_memory_4k(fault.pfn, 1)
            return True
        if e.assigned:  # CASE1
            host.directmap.set_direct_map_default_noflush(fault.pfn)
            return self._make_shared(host, fault, base)
        raise HostOops(fault)  # CASE2

    @staticmethod
    def _make_shared(host, fault, base) -> bool:
        e = fault.entry
        if host.rmp_make_shared(base, e.pagesize):
            raise HostOops(fault)
        host.guest_notices.append(("validated-cleared", base, e.asid, e.gpa, e.pagesize))
        return True


HOST_FAULT_POLICIES = {c.name: c for c in (HostFaultPolicy, AutoConvert)}


def get_host_fault_policy(policy) -> HostFaultPolicy:
    if isinstance(policy, HostFaultPolicy):
        return policy
    if isinstance(policy, str) and policy in HOST_FAULT_POLICIES:
        return HOST_FAULT_POLICIES[policy]()
    raise ValueError(f"host_fault_policy: unknown policy {policy!r}; built-ins: "
                     f"{', '.join(HOST_FAULT_POLICIES)} (or a HostFaultPolicy instance)")
