"""The cost ledger: what each semantic operation cost, as countable events.

Semantic operations (rmpupdate, a direct-map split, a host write ...) say *what happened*; the
timing engines turn these counts into time. Events are recorded per call, aggregated over the
range the call covered, never per 4K page.

Event vocabulary (the name is the resource or the piece of work, the value a count or bytes):

=====================  =============================================================================
``cpa_lock``           acquisitions of the global ``cpa_lock`` (one per ``__change_page_attr`` chunk,
                       plus a re-acquisition per split: ``split_large_page`` drops it around
                       ``alloc_pages``) -- arch/x86/mm/pat/set_memory.c ``__change_page_attr_set_clr``
``pgd_lock``           acquisitions of ``pgd_lock`` (each split and each collapse holds it)
``split_1g``           1G->2M splits (vmstat ``direct_map_level3_splits``)
``split_2m``           2M->4K splits (vmstat ``direct_map_level2_splits``)
``collapse_2m``        4K->2M collapses (``direct_map_level2_collapses``)
``collapse_1g``        2M->1G collapses (``direct_map_level3_collapses``)
``pgtable_alloc``      page-table pages allocated by splits
``flush_tlb_all``      global TLB flushes: an IPI to every online CPU
``flush_tlb_range``    ranged flushes (``cpa_flush`` below the ceiling): an IPI to every online CPU
``invlpg``             pages flushed by ``cpa_flush``'s ``on_each_cpu`` INVLPG path (per CPU)
``adjust_direct_map``  calls of ``adjust_direct_map`` (lookup of the direct-map level)
``rmpupdate``          RMPUPDATE instructions executed
``psmash``             PSMASH instructions executed
``pvalidate``          PVALIDATE instructions executed
``rmpadjust``          RMPADJUST instructions executed
``bytes_zeroed``       bytes cleared (folio zeroing)
``host_rmp_fault``     host #PF with X86_PF_RMP
``host_np_fault``      host #PF on a not-present direct-map page
``wbinvd``             WBINVD executed (one per CPU when ASIDs are recycled, ``sev_flush_asids``)
``df_flush``           SEV firmware DF_FLUSH / SNP_DF_FLUSH commands
``vm_exit``            guest exits handled in KVM (#NPF, VMGEXIT)
``user_exit``          exits to the userspace VMM (``KVM_EXIT_HYPERCALL``/``MEMORY_FAULT``)
``set_attributes``     ``KVM_SET_MEMORY_ATTRIBUTES`` ioctls (per-VM ``slots_lock``)
``npt_map``            NPT mappings installed by KVM faults
``pre_fault``          mappings ``KVM_PRE_FAULT_MEMORY`` installed (``kvm_arch_vcpu_pre_fault_memory``
                       steps): the fault path without a VM exit, run by the VMM's thread
``pre_fault_bytes``    bytes of folios ``KVM_PRE_FAULT_MEMORY`` cleared (a part of ``bytes_zeroed``)
=====================  =============================================================================
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..units import check_int

EVENTS = (
    "cpa_lock", "pgd_lock", "split_1g", "split_2m", "collapse_2m", "collapse_1g",
    "pgtable_alloc", "flush_tlb_all", "flush_tlb_range", "invlpg", "adjust_direct_map", "rmpupdate", "psmash",
    "pvalidate", "rmpadjust", "bytes_zeroed", "host_rmp_fault", "host_np_fault", "wbinvd",
    "df_flush", "vm_exit", "user_exit", "set_attributes", "npt_map",
    "pre_fault", "pre_fault_bytes",
)


#: the largest count one call may record for one event (a signed 64-bit counter)
MAX_COUNT = (1 << 63) - 1


@dataclass
class Ledger:
    """Append-only record of cost events; ``rows`` hold ``(op, {event: count})`` per call."""

    rows: list = field(default_factory=list)
    totals: Counter = field(default_factory=Counter)

    def record(self, op: str, **events: int) -> None:
        """Record one call ``op`` (a name) with its events: counts (ints >= 0) by event name
        (:data:`EVENTS`); zero counts are dropped. A bad name or count raises before anything
        is recorded."""
        if not isinstance(op, str):
            raise TypeError(f"op: expected the operation's name, got {type(op).__name__} {op!r}")
        ev = {}
        for k, v in events.items():
            if k not in EVENTS:
                raise ValueError(f"event: unknown cost event {k!r}; known: {', '.join(EVENTS)}")
            v = check_int(v, k, 0, MAX_COUNT)
            if v:
                ev[k] = v
        if not ev:
            return
        self.rows.append((op, ev))
        self.totals.update(ev)

    def mark(self) -> int:
        """A position to diff against later with :meth:`since`."""
        return len(self.rows)

    def _check_mark(self, mark) -> int:
        return check_int(mark, "mark", 0, len(self.rows))

    def since(self, mark: int) -> Counter:
        mark = self._check_mark(mark)
        out: Counter = Counter()
        for _, ev in self.rows[mark:]:
            out.update(ev)
        return out

    def rollback(self, mark: int) -> None:
        """Forget the rows after ``mark`` (used when a call fails: it changes nothing).
        ``mark`` is a position :meth:`mark` returned: 0..len(rows)."""
        mark = self._check_mark(mark)
        for _, ev in self.rows[mark:]:
            self.totals.subtract(ev)
        del self.rows[mark:]
        self.totals = +self.totals

    def summary(self) -> dict:
        return {k: int(self.totals.get(k, 0)) for k in EVENTS}
