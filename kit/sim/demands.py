"""From recorded cost events to resource demands: the one place where events meet cost
parameters, shared by both timing engines (:mod:`kit.sim.mva`, :mod:`kit.sim.des`).

Resources (what they are in the kernel; how each engine treats them):

==============  ==========================================================================
``cores``       host CPUs (logical: ``smt_threads`` per physical core) running vCPU threads
                and flush IPIs; see :func:`schedule` for time slices, SMT and preemption
``guest_lock``  per guest: the guest kernel's ``unaccepted_memory_lock`` (a spinlock around the
                bitmap bookkeeping of each accepted range): waiters spin on their vCPU, so on
                a host CPU; a holder whose vCPU thread is preempted keeps it until it runs again
``vm_lock``     per VM: the serialisation of conversion exits (``KVM_SET_MEMORY_ATTRIBUTES``
                takes ``kvm->slots_lock`` and ``mmu_lock`` for write, virt/kvm/kvm_main.c
                ``kvm_vm_set_mem_attributes``; a VMM may hold a lock of its own around the
                exit too); its holder can be preempted; a share
                ``accept_spin_share`` of the vCPUs waiting for it spin in the guest (below)
``cpa_lock``    global spinlock around each ``__change_page_attr`` (set_memory.c); holders run
                with preemption off (never descheduled) but take interrupts: flush IPIs from
                other CPUs stretch a hold; a split's ``flush_tlb_all`` runs inside it
``pgd_lock``    global spinlock held across a split and its ``flush_tlb_all``
``membw``       the host's DRAM bandwidth (``dram_gbps_per_socket`` per socket), shared by the
                folio zeroing and the guests' writes
==============  ==========================================================================

Mechanisms and where their cost sits (each a named field of :class:`ChunkDemand`):

- **TLB shootdowns** (:func:`flush_costs`). ``flush_tlb_all`` (arch/x86/mm/tlb.c) runs
  ``on_each_cpu``: the initiator queues a call to every online CPU, sends the IPIs and waits
  for all of them, so its wait grows with the CPUs it reaches (``flush_ack_us`` plus
  ``ipi_send_ns`` per CPU). Each reached CPU runs the handler and refills its TLB
  (``ipi_us`` + ``tlb_refill_us``); a CPU running a vCPU first takes a VM exit (``exit_us``).
  Where the initiator waits: ``cpa_flush`` runs after ``__change_page_attr_set_clr`` has
  dropped ``cpa_lock`` (arch/x86/mm/pat/set_memory.c ``change_page_attr_set_clr``), so its
  wait is the caller's own time (``flush_wait_us``); ``__split_large_page`` calls
  ``flush_tlb_all`` with ``pgd_lock`` held, inside the ``cpa_lock`` its caller
  ``__change_page_attr`` holds ("We do this global tlb flush inside the cpa_lock"), so a
  split's wait is part of both holds (``split_flush_us``). With broadcast invalidation
  (``invlpgb`` = 1, a what-if: R. van Riel, "AMD broadcast TLB invalidation",
  20250223194943.3518952-1-riel@surriel.com) no CPU is interrupted: the initiator waits for
  ``TLBSYNC`` (``tlbsync_us``) and each CPU only refills.
- **A 4K direct map** (``dm4k_walk_ns``): each 4K page the kernel reaches through a 4K
  direct-map entry costs a TLB miss and a page walk, where a 2M or 1G entry would have covered
  it. The kernel reaches the chunk's memory twice: when it clears the new folios
  (``folio_zero_user``/``clear_highpage`` through the direct map, the faulting vCPU's time:
  ``dm4k_zero_us``) and in the conversion exit, which visits the chunk's range one gfn at a
  time (``kvm_vm_set_mem_attributes`` stores each gfn's attribute; under the VM's lock:
  ``dm4k_convert_us``). Counted in 4K pages of the share of the direct map mapped 4K.
- **Pre-faulting** (a VMM that calls ``KVM_PRE_FAULT_MEMORY`` on each converted range, QEMU
  commit 4cdc489eb9c2): each mapping it installs costs ``map_us`` of the vCPU thread's own time
  instead of an #NPF exit's ``exit_us``; its clearing is zeroing as before. KVM runs the ioctl
  under the vCPU's mutex and ``mmu_lock`` for read (virt/kvm/kvm_main.c
  ``kvm_vcpu_pre_fault_memory``, arch/x86/kvm/mmu/mmu.c ``kvm_tdp_map_page``), so it is not
  serialised per VM; a VMM that held a lock of its own around it would serialise it (not
  modelled).
- **vCPU scheduling** (:func:`schedule`): applied by the engines to the core-time fields and
  to the holds of the preemptible locks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..host.ledger import EVENTS
from ..units import PAGE_4K

E = {k: i for i, k in enumerate(EVENTS)}


@dataclass(frozen=True)
class ChunkDemand:
    """Demands of one unit of work (one accepted chunk) of one guest, in microseconds (bytes for
    zeroing and writes). Every mechanism has its own field, so a breakdown can list it."""

    cpu_us: float          # core time outside locks: exits, instructions, guest writes
    guest_lock_us: float   # hold of the guest's unaccepted_memory_lock
    vm_lock_us: float      # the VMM's conversion work under the VM's lock (without its page walks)
    cpa_us: float          # cpa_lock hold of the PTE changes (without split flushes)
    pgd_us: float          # pgd_lock hold of the split work (without its flush)
    zero_bytes: float      # bytes of folios cleared
    ipi_core_us: float     # flush IPIs: handler + refill on every reached CPU, summed over CPUs
    flush_wait_us: float = 0.0    # cpa_flush initiator waiting for acknowledgements (no lock held)
    split_flush_us: float = 0.0   # a split's flush_tlb_all wait, inside cpa_lock and pgd_lock
    ipi_exit_us: float = 0.0      # VM exits of the vCPUs the flush IPIs interrupt, summed
    dm4k_zero_us: float = 0.0     # page walks of clearing the folios through a 4K direct map
    dm4k_convert_us: float = 0.0  # page walks of the conversion exit (under the VM's lock)
    write_bytes: float = 0.0      # bytes the guest writes (DRAM traffic beside the zeroing)

    @property
    def core_us(self) -> float:
        """Core time outside locks, before any stretch: what ``cpu`` stands for in the engines."""
        return self.cpu_us + self.flush_wait_us + self.dm4k_zero_us

    @property
    def vm_hold_us(self) -> float:
        return self.vm_lock_us + self.dm4k_convert_us

    @property
    def cpa_hold_us(self) -> float:
        return self.cpa_us + self.split_flush_us

    @property
    def pgd_hold_us(self) -> float:
        return self.pgd_us + self.split_flush_us

    @property
    def ipi_load_us(self) -> float:
        """CPU time the chunk's flushes take from other CPUs (handlers, refills, VM exits)."""
        return self.ipi_core_us + self.ipi_exit_us


def flush_costs(p, cores: int, vcpus: int) -> tuple[float, float, float]:
    """One ``flush_tlb_all`` reaching ``cores`` CPUs, ``vcpus`` of them (at most) running vCPUs:
    (initiator's wait, CPU time lost on the reached CPUs, VM-exit time of the interrupted
    vCPUs), in microseconds."""
    running = min(vcpus, cores)
    if p["invlpgb"] >= 0.5:
        return p["tlbsync_us"], cores * p["tlb_refill_us"], 0.0
    wait = p["flush_ack_us"] + cores * p["ipi_send_ns"] / 1e3 + (p["exit_us"] if running else 0.0)
    return wait, cores * (p["ipi_us"] + p["tlb_refill_us"]), running * p["exit_us"]


def demand(events: np.ndarray, chunks: int, p, cores: int, dm4k_fraction: float,
           work_bytes: float, accept: bool = True, vcpus: int = 0) -> ChunkDemand:
    """Mean demand per chunk from a vector of event totals over ``chunks`` chunks.
    ``dm4k_fraction``: the share of the direct map mapped 4K while the work ran;
    ``work_bytes``: bytes the guest writes per chunk; ``vcpus``: vCPUs of all guests (the
    flush IPIs' VM exits)."""
    e = events / max(chunks, 1)
    instr = e[E["rmpupdate"]] + e[E["psmash"]] + e[E["pvalidate"]] + e[E["rmpadjust"]]
    splits = e[E["split_1g"]] + e[E["split_2m"]] + e[E["collapse_2m"]] + e[E["collapse_1g"]]
    # a split (or collapse) flushes under pgd_lock; every other full flush is cpa_flush's
    split_flushes = min(splits, e[E["flush_tlb_all"]])
    cpa_flushes = max(e[E["flush_tlb_all"]] - splits, 0.0)
    ranges = e[E["flush_tlb_range"]]
    wait, lost, exits = flush_costs(p, cores, vcpus)
    # a ranged flush (at most tlb_single_page_flush_ceiling pages) sends the same IPIs; its
    # handler runs INVLPG per page instead of a full flush and nothing is refilled
    broadcast = p["invlpgb"] >= 0.5
    range_lost = 0.0 if broadcast else cores * p["ipi_us"]
    invlpg_lost = 0.0 if broadcast else e[E["invlpg"]] * cores * p["invlpg_us"]
    walk_us = p["dm4k_walk_ns"] / 1e3 * dm4k_fraction
    # the gfns a conversion exit visits: the chunk's pages (lazy-accept), else one per exit
    chunk_pages = max(e[E["bytes_zeroed"]], work_bytes) / PAGE_4K or e[E["user_exit"]]
    # a pre-faulting VMM's KVM_PRE_FAULT_MEMORY maps pages in the vCPU's thread without an exit
    # each (its clearing is in bytes_zeroed, its RMPUPDATEs in instr)
    cpu = (e[E["vm_exit"]] * p["exit_us"] + instr * p["instr_us"] + e[E["pre_fault"]] * p["map_us"]
           + work_bytes / (p["guest_write_gbps_core"] * 1e3))
    return ChunkDemand(
        cpu_us=cpu,
        guest_lock_us=p["guest_lock_us"] if accept else 0.0,
        vm_lock_us=e[E["user_exit"]] * p["convert_us"],
        cpa_us=e[E["cpa_lock"]] * p["cpa_hold_us"],
        pgd_us=e[E["pgd_lock"]] * p["split_us"],
        zero_bytes=e[E["bytes_zeroed"]],
        ipi_core_us=(cpa_flushes + split_flushes) * lost + ranges * range_lost + invlpg_lost,
        flush_wait_us=(cpa_flushes + ranges) * wait,
        split_flush_us=split_flushes * wait,
        ipi_exit_us=(cpa_flushes + split_flushes + ranges) * exits,
        dm4k_zero_us=e[E["bytes_zeroed"]] / PAGE_4K * walk_us,
        dm4k_convert_us=(chunk_pages * walk_us) if e[E["user_exit"]] else 0.0,
        write_bytes=work_bytes,
    )


def dm4k_fraction(directmap: dict) -> float:
    total = sum(directmap.values())
    return directmap.get("DirectMap4k", 0) / total if total else 0.0


# ---------------------------------------------------------------------------- scheduling
@dataclass(frozen=True)
class Sched:
    """How the host's CPUs serve ``runnable`` threads (:func:`schedule`)."""

    runnable: float     # runnable threads (flush IPI load counted in CPUs)
    speed: float        # speed of one running thread relative to a thread alone on its core (SMT)
    share: float        # share of a CPU each runnable thread gets (time slices; 1 when not over-subscribed)
    stretch: float      # wall time per unit of a thread's own CPU work (1 / (speed x share) plus switches)
    handoff_us: float   # mean delay before a lock handed to a waiter is used: the waiter's vCPU
    #                     thread is off its CPU (lock-waiter preemption)
    irq: float          # stretch of work that cannot be preempted but takes interrupts (cpa_lock)


def slice_us(p, cores: int) -> float:
    """The scheduler's base slice on a host of ``cores`` CPUs: ``sched_slice_us`` (the
    normalised ``sysctl_sched_base_slice``, 0.75 ms) times ``1 + ilog2(min(cores, 8))``
    (kernel/sched/fair.c ``get_update_sysctl_factor``, ``SCHED_TUNABLESCALING_LOG``, the
    default): 3 ms from 8 CPUs up."""
    return p["sched_slice_us"] * (1 + int(math.log2(min(max(cores, 1), 8))))


def schedule(runnable: float, cores: int, p, ipi_load: float = 0.0) -> Sched:
    """vCPU threads on the host's logical CPUs (``cores``; ``smt_threads`` per physical core).

    - **SMT**: the scheduler spreads runnable threads over idle physical cores first
      (kernel/sched/fair.c ``select_idle_sibling``/``select_idle_core``); past one thread per
      core, two threads share a core, which then runs ``smt_yield`` times one thread's work.
    - **Time slices**: past one thread per CPU, threads take turns: EEVDF gives each a slice of
      ``sysctl_sched_base_slice`` (:func:`slice_us`) and each runs ``cores / runnable`` of the
      time; every slice boundary costs a context switch (``ctx_switch_us``: the vCPU thread's
      VM exit, the switch and the refill of its caches and TLB).
    - **Preempted holders and waiters**: a lock holder whose vCPU thread is descheduled keeps
      the lock until it runs again; on average that stretches its hold by the same factor as
      any work (``stretch``). A lock handed to a waiter whose vCPU thread is off its CPU
      (probability ``1 - cores/runnable``) is unusable until the waiter runs: on average half
      of the ``runnable/cores - 1`` slices it waits for (``handoff_us``). The DES draws these.
    - **Interrupts**: ``ipi_load`` CPUs' worth of flush-IPI handling is spread over all CPUs;
      work that is never descheduled (a ``cpa_lock`` hold) is stretched by ``irq``.
    """
    C = float(max(cores, 1))
    R = max(float(runnable) + ipi_load, 0.0)
    k = max(p["smt_threads"], 1.0)
    phys = C / k
    busy = min(R, C)
    if busy <= phys or k <= 1.0:
        speed = 1.0
    else:
        capacity = phys + (busy - phys) * (p["smt_yield"] - 1.0) / (k - 1.0)
        speed = capacity / busy
    if R > C:
        share = C / R
        sl = slice_us(p, cores)
        switch = 1.0 + p["ctx_switch_us"] / sl
        handoff = (1.0 - share) * (R / C - 1.0) * sl / 2.0
    else:
        share, switch, handoff = 1.0, 1.0, 0.0
    irq = 1.0 / max(1.0 - min(ipi_load / C, 0.9), 0.1)
    return Sched(R, speed, share, switch / (speed * share), handoff, irq)


def dram_gbps(p, cores: int) -> float:
    """DRAM bandwidth of a host of ``cores`` logical CPUs: whole sockets of ``cpus_per_socket``."""
    return math.ceil(max(cores, 1) / p["cpus_per_socket"]) * p["dram_gbps_per_socket"]


def zero_us(nbytes: float, p, concurrent: float, stretch: float = 1.0, bw_gbps: float = 0.0) -> float:
    """Time to clear ``nbytes`` when ``concurrent`` threads clear at once: each at most
    ``zero_gbps_core`` on its own core (slowed by ``stretch``), together at most the DRAM
    bandwidth ``bw_gbps`` (GB/s = 1e3 bytes/us)."""
    rate = p["zero_gbps_core"] / stretch
    if bw_gbps > 0:
        rate = min(rate, bw_gbps / max(concurrent, 1.0))
    return nbytes / (rate * 1e3)
