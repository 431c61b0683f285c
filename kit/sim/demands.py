"""From recorded cost events to resource demands: the one place where events meet cost
parameters, shared by both timing engines.

Resources (what they are in the kernel; how each engine treats them):

==============  ==========================================================================
``cores``       host CPUs running vCPU threads; vCPU threads time-share them when more are
                runnable than there are cores (a spinning waiter is runnable; a thread
                sleeping on a mutex is not); flush IPIs take time from every core
``guest_lock``  per guest: the guest kernel's ``unaccepted_memory_lock`` (a spinlock taken around
                the bitmap bookkeeping of each accepted range): waiters spin on their vCPU,
                so on a host core; a holder whose vCPU thread is preempted holds it longer
``vm_lock``     per VM: the VMM's serialisation of conversion exits (QEMU handles the
                page-state-change hypercall under its big lock, then ``KVM_SET_MEMORY_ATTRIBUTES``
                takes ``kvm->slots_lock``): a mutex, its holder can be preempted
``cpa_lock``    global spinlock around each ``__change_page_attr`` (set_memory.c); holders do
                not get preempted, waiters spin on a core
``pgd_lock``    global spinlock held across a split and its ``flush_tlb_all``
``membw``       memory bandwidth for clearing folios, shared by every core zeroing at once
==============  ==========================================================================
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..host.ledger import EVENTS

E = {k: i for i, k in enumerate(EVENTS)}


@dataclass(frozen=True)
class ChunkDemand:
    """Demands of one unit of work (one accepted chunk) of one guest, in microseconds (bytes for
    zeroing)."""

    cpu_us: float        # core time outside locks (exits, instructions, guest writes, flush waits)
    guest_lock_us: float  # hold of the guest's unaccepted_memory_lock
    vm_lock_us: float    # hold of the VM's conversion lock (before the dm4k factor)
    cpa_us: float        # cpa_lock hold
    pgd_us: float        # pgd_lock hold
    zero_bytes: float    # bytes of folios cleared
    ipi_core_us: float   # core time taken from every core by this chunk's flushes, summed over cores


def demand(events: np.ndarray, chunks: int, p, cores: int, dm4k_fraction: float,
           work_bytes: float, accept: bool = True) -> ChunkDemand:
    """Mean demand per chunk from a vector of event totals over ``chunks`` chunks.
    ``dm4k_fraction``: the share of the direct map mapped 4K while the work ran (its TLB
    cost, ``dm4k_slowdown``); ``work_bytes``: bytes the guest writes per chunk."""
    e = events / max(chunks, 1)
    instr = e[E["rmpupdate"]] + e[E["psmash"]] + e[E["pvalidate"]] + e[E["rmpadjust"]]
    flushes = e[E["flush_tlb_all"]] + e[E["flush_tlb_range"]]
    splits = e[E["split_1g"]] + e[E["split_2m"]] + e[E["collapse_2m"]] + e[E["collapse_1g"]]
    # a split (or collapse) flushes under pgd_lock; every other flush is cpa_flush's, outside it
    other_flushes = max(e[E["flush_tlb_all"]] - splits, 0.0) + e[E["flush_tlb_range"]]
    cpu = (e[E["vm_exit"]] * p["exit_us"] + instr * p["instr_us"]
           + work_bytes / (p["guest_write_gbps_core"] * 1e3)
           + other_flushes * p["flush_wait_us"])
    slow = 1.0 + p["dm4k_slowdown"] * dm4k_fraction
    return ChunkDemand(
        cpu_us=cpu,
        guest_lock_us=p["guest_lock_us"] if accept else 0.0,
        vm_lock_us=e[E["user_exit"]] * p["convert_us"] * slow,
        cpa_us=e[E["cpa_lock"]] * p["cpa_hold_us"],
        pgd_us=e[E["pgd_lock"]] * p["split_us"] + min(splits, e[E["flush_tlb_all"]]) * p["flush_wait_us"],
        zero_bytes=e[E["bytes_zeroed"]],
        ipi_core_us=flushes * cores * p["ipi_us"] + e[E["invlpg"]] * cores * p["invlpg_us"],
    )


def dm4k_fraction(directmap: dict) -> float:
    total = sum(directmap.values())
    return directmap.get("DirectMap4k", 0) / total if total else 0.0


def zero_us(nbytes: float, p, concurrent: float) -> float:
    """Time to clear ``nbytes`` when ``concurrent`` cores clear at once: each at most
    ``zero_gbps_core``, together at most ``zero_bw_gbps`` (GB/s = 1e3 bytes/us)."""
    rate = min(p["zero_gbps_core"], p["zero_bw_gbps"] / max(concurrent, 1.0))
    return nbytes / (rate * 1e3)
