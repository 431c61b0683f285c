"""Workloads run on the semantic model: the operations change the host, KVM and guest state and
record cost events; the trace keeps, per batch of work, what the events were.

``lazy-accept`` (docs/sim-model.md, data/measurements.csv): every guest's vCPUs run
``stress --vm <vcpus> --vm-bytes 5G --vm-keep``; each page the workers touch comes from the
guest's page allocator, which accepts unaccepted memory ``ACCEPT_CHUNK`` (4 MiB,
``MAX_PAGE_ORDER``, mm/page_alloc.c ``__accept_page``) at a time in address order, the bitmap
unit being 2 MiB (``EFI_UNACCEPTED_UNIT_SIZE``). The guest is a :class:`kit.guest.Guest`; each
chunk is one of its ``accept_memory`` calls (:meth:`kit.guest.Guest.accept` with
``step=ACCEPT_CHUNK``: the guard unit past each call's aligned end, then
``snp_accept_memory`` -> ``set_pages_state`` -> ``vmgexit_psc``; then ``pvalidate_pages``):

1. a GHCB page-state-change request of the call's 2M entries (``snp_begin_psc``), coalesced
   into one ``KVM_HC_MAP_GPA_RANGE`` exit;
2. the VMM answers (QEMU ``kvm_convert_memory``): ``KVM_SET_MEMORY_ATTRIBUTES`` PRIVATE;
3. PVALIDATE of each 2M page faults (#NPF): KVM faults the guest_memfd folio in (a zeroed 2M
   folio), ``sev_gmem_prepare`` -> ``rmp_make_private`` (2M) -> the direct-map policy, and maps
   it 2M in the NPT;
4. PVALIDATE (2M) succeeds; the worker writes the memory.

With ``vmm="prefault"`` (:func:`build`) the VMM maps the range right after step 2 with
``KVM_PRE_FAULT_MEMORY`` (QEMU commit 4cdc489eb9c2, :class:`kit.kvm.vmm.Vmm`): step 3's folio,
prepare and mapping happen there, without the #NPF's ``vm_exit``.

The guest runs these steps on the real model objects, as range operations over batches of
consecutive chunks (the state and the event counts equal those of chunk-by-chunk calls; a
batch's events are shared evenly by its chunks). Between batches the host kernel allocates
and writes 4K pages through the direct map (``bg_kernel_pages`` per GiB accepted), so a policy
that leaves large mappings over private 4K pages (the VMSAs) shows its RMP faults.

``conversions``: a guest converting pages shared <-> private through the GHCB protocol and the
VMM, 4K pages (``GHCB``-like) and 2M ranges in a given mix, step by step through the vCPU,
VMM and guest_memfd paths (fragmentation over time).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import HostOops
from ..guest import Guest
from ..host import Host
from ..host.ledger import EVENTS
from ..host.memory import SeededRng
from ..host.ranges import distinct
from ..kvm import snp
from ..kvm import uapi as U
from ..kvm.vm import Kvm
from ..kvm.vmm import Vmm
from ..units import GiB, PAGE_2M, PAGE_4K, PAGE_SHIFT, PAGES_PER_2M

ACCEPT_CHUNK = 4 << 20          # bytes accepted per try_to_accept_memory_one (MAX_PAGE_ORDER)
ACCEPT_UNIT = PAGE_2M           # EFI_UNACCEPTED_UNIT_SIZE
STRESS_BYTES = 5 * GiB          # stress --vm-bytes 5G per worker
BATCH_CHUNKS = 64               # chunks per semantic batch (256 MiB)
GUEST_BASE_GPA = 4 * GiB        # guest RAM above the 32-bit hole
UADDR = 0x100000000000          # the VMM's mapping of guest RAM (16 TiB)
WORKLOADS = ("lazy-accept", "conversions")
#: How the guests' VMM answers a page-state change: ``default`` converts the range
#: (``KVM_SET_MEMORY_ATTRIBUTES``); ``prefault`` then maps it with ``KVM_PRE_FAULT_MEMORY``, as
#: QEMU does since commit 4cdc489eb9c2 (:class:`kit.kvm.vmm.Vmm`, ``prefault=True``).
VMMS = ("default", "prefault")


@dataclass
class Batch:
    """One guest's share of the work between two points of a trace: chunks, bytes, the events
    it recorded and the DirectMap lines after it."""

    guest: int
    chunks: int                  # acceptance chunks (lazy-accept) or conversions
    bytes: int                   # bytes faulted in (guest_memfd folios zeroed)
    events: dict                 # cost events of the whole batch
    directmap: dict              # /proc/meminfo DirectMap lines after the batch (kB)


@dataclass
class Trace:
    """A workload run on the semantic model: the guests, the batches of work in trace order, the
    set-up's events and DirectMap lines, and what went wrong on the way (RMP faults, oopses)."""

    workload: str
    guests: list                 # (vcpus, guest_mem bytes) per guest
    batches: list = field(default_factory=list)
    host_rmp_faults: int = 0
    oopses: int = 0
    directmap_boot: dict = field(default_factory=dict)   # DirectMap lines when the workload starts
    vmsa_pages: int = 0
    stopped: bool = False        # cut short by ``should_stop``
    boot: dict = field(default_factory=dict)     # events of the policy's boot step
    launch: dict = field(default_factory=dict)   # events of creating and launching the guests

    def chunks_of(self, g: int) -> int:
        return sum(b.chunks for b in self.batches if b.guest == g)

    def events_of(self, g: int) -> np.ndarray:
        """Total events of guest ``g`` as a vector over :data:`EVENTS`."""
        tot = np.zeros(len(EVENTS))
        for b in self.batches:
            if b.guest == g:
                tot += [b.events.get(k, 0) for k in EVENTS]
        return tot

    def totals(self) -> dict:
        """Events of the workload (the batches), the work the timing engines time."""
        out = dict.fromkeys(EVENTS, 0)
        for b in self.batches:
            for k, v in b.events.items():
                out[k] += v
        return out

    def setup_totals(self) -> dict:
        """Events before the workload: the host's boot step (``presplit-4k`` splits the
        whole direct map) and the guests' launch (each VMSA becomes a private 4K page:
        ``split-on-demand`` splits the mapping over it). Their splits show in the DirectMap
        lines as much as the workload's: ``setup_totals() + totals()`` is all the direct-map
        work the lines reflect."""
        out = dict.fromkeys(EVENTS, 0)
        for part in (self.boot, self.launch):
            for k, v in part.items():
                out[k] += v
        return out


def touched_bytes(vcpus: int, guest_mem: int) -> int:
    """What the stress workers fault in: ``vcpus`` x 5 GiB, at most the guest's memory
    (rounded down to whole acceptance chunks). A guest smaller than that (table B's 256 GiB
    guests with 128 workers) is simply filled: the measured rate is the fill rate."""
    return min(vcpus * STRESS_BYTES, guest_mem) // ACCEPT_CHUNK * ACCEPT_CHUNK


class _Guest:
    def __init__(self, kvm: Kvm, vcpus: int, mem: int, gmem_hugepages: bool, prefault: bool = False):
        before = dict(kvm.host.ledger.totals)
        self.vm = kvm.create_vm(U.KVM_X86_SNP_VM)
        self.vm.sev_init()
        self.gmem = self.vm.create_guest_memfd(mem)
        self.vm.set_user_memory_region2(0, U.KVM_MEM_GUEST_MEMFD, GUEST_BASE_GPA, mem, UADDR, 0, self.gmem)
        self.vm.enable_cap(U.KVM_CAP_EXIT_HYPERCALL, 1 << U.KVM_HC_MAP_GPA_RANGE)
        self.vcpus = [self.vm.create_vcpu(i) for i in range(vcpus)]
        snp.snp_launch_finish(self.vm)          # VMSAs become private 4K pages (kernel frames)
        self.vmm = Vmm(self.vm, fallocate=False, prefault=prefault)
        self.guest = Guest(self.vm, vcpus=self.vcpus, vmm=self.vmm)
        self.mem = mem
        self.next_chunk = 0
        self.validated: dict[int, bool] = {}     # conversions: 4K pages the guest validated
        self.launch = _diff(kvm.host.ledger.totals, before)   # events of this guest's launch


def _diff(now, before) -> dict:
    """Ledger events recorded since ``before`` (a copy of ``ledger.totals``), nonzero only."""
    return {k: int(now.get(k, 0) - before.get(k, 0)) for k in EVENTS if now.get(k, 0) != before.get(k, 0)}


def setup_events(host, guests) -> tuple[dict, dict]:
    """(boot, launch): the ledger's events before the workload starts, split into the
    guests' launches and the rest (the direct-map policy's boot step)."""
    launch: dict = {}
    for g in guests:
        for k, v in getattr(g, "launch", {}).items():
            launch[k] = launch.get(k, 0) + v
    boot = {k: int(host.ledger.totals.get(k, 0)) - launch.get(k, 0) for k in EVENTS}
    return {k: v for k, v in boot.items() if v}, launch


def build(host_mem: int, host_cores: int, policy, guests, seed: int, *, gmem_hugepages=True,
          vmm: str = "default"):
    """The host, KVM and the guests (``(vcpus, bytes)`` each), launched. ``vmm``: one of
    :data:`VMMS`, how the guests' VMM answers a page-state change."""
    if vmm not in VMMS:
        raise ValueError(f"vmm: expected one of {', '.join(VMMS)}, got {vmm!r}")
    host = Host(mem=host_mem, cores=host_cores, directmap_policy=policy, seed=seed)
    kvm = Kvm(host, gmem_hugepages=gmem_hugepages, min_sev_asid=max(len(guests) + 1, 100))
    return host, kvm, [_Guest(kvm, v, m, gmem_hugepages, vmm == "prefault") for v, m in guests]


def _background(host, rng, live: list, npages: int) -> tuple[int, int]:
    """Host kernel activity: allocate ``npages`` 4K pages, write them and the ones still live
    through the direct map, free the oldest half. Returns (RMP faults, oopses)."""
    faults = oopses = 0
    if npages <= 0:
        return 0, 0
    try:
        new = host.memory.alloc(0, "kernel", count=npages)
    except Exception:   # the host is full: no background allocations (OutOfMemory)
        return 0, 0
    live.extend(int(p) for p in new)
    before = len(host.faults)
    for pfn in distinct(np.asarray(live[-4 * npages:]) // PAGES_PER_2M):
        # one write per touched 2M region of kernel pages (the write checks the whole region)
        mine = [p for p in live[-4 * npages:] if p // PAGES_PER_2M == pfn]
        try:
            host.write(mine[0], 1)
        except HostOops:
            oopses += 1
    faults = len(host.faults) - before
    drop = len(live) // 2
    for p in live[:drop]:
        host.memory.free(p)
    del live[:drop]
    return faults, oopses


def lazy_accept(host, guests, *, seed: int = 0, bg_kernel_pages: int = 8,
                batch_chunks: int = BATCH_CHUNKS, touched=None, progress=None,
                should_stop=None) -> Trace:
    """Run lazy acceptance of every guest's touched memory (guests interleaved batch by batch,
    as they run concurrently) and return the trace."""
    rng = SeededRng(seed)
    boot, launch = setup_events(host, guests)
    trace = Trace("lazy-accept", [(len(g.vcpus), g.mem) for g in guests],
                  directmap_boot=host.directmap.counts(),
                  vmsa_pages=sum(len(g.vcpus) for g in guests), boot=boot, launch=launch)
    ledger = host.ledger
    live: list[int] = []
    want = [touched_bytes(len(g.vcpus), g.mem) // ACCEPT_CHUNK if touched is None else touched[i]
            for i, g in enumerate(guests)]
    total = sum(want)
    done = 0
    while True:
        active = [i for i, g in enumerate(guests) if g.next_chunk < want[i]]
        if not active:
            break
        for i in active:
            g = guests[i]
            n = min(batch_chunks, want[i] - g.next_chunk)
            before = dict(ledger.totals)
            gpa = GUEST_BASE_GPA + g.next_chunk * ACCEPT_CHUNK
            _accept(g, gpa, n)
            f, o = _background(host, rng, live, bg_kernel_pages * n * ACCEPT_CHUNK // GiB or
                               (1 if rng.random() < bg_kernel_pages * n * ACCEPT_CHUNK / GiB else 0))
            trace.host_rmp_faults += f
            trace.oopses += o
            ev = {k: ledger.totals.get(k, 0) - before.get(k, 0) for k in EVENTS}
            trace.batches.append(Batch(i, n, n * ACCEPT_CHUNK, {k: v for k, v in ev.items() if v},
                                       host.directmap.counts()))
            ledger.rows.clear()          # no marks are outstanding between batches
            g.next_chunk += n
            done += n
            if progress:
                progress(done / total)
            if should_stop and should_stop():
                trace.stopped = True
                return trace
    return trace


def _accept(g: _Guest, gpa: int, nchunks: int) -> None:
    """Accept ``nchunks`` chunks from ``gpa``: the guest's ``accept_memory`` calls, one per
    chunk (steps 1-4 of the module doc)."""
    g.guest.accept(gpa, nchunks * ACCEPT_CHUNK, step=ACCEPT_CHUNK)


def conversions(host, guests, *, steps: int = 2000, p4k: float = 0.9, seed: int = 0,
                region: int = 1 * GiB, bg_kernel_pages: int = 8, batch_steps: int = 100,
                progress=None, should_stop=None) -> Trace:
    """Guests on upstream guest_memfd (order-0 folios: build with ``gmem_hugepages=False``)
    convert pages shared <-> private at random inside their first ``region`` bytes (all shared
    at the start): a 4K page with probability ``p4k``, else a 2M range; each conversion goes
    GHCB PSC -> exit -> VMM (attributes; guest_memfd punched when going shared) and, going
    private, the fault and PVALIDATE of its first 4K page (the rest of a 2M range faults in
    when the guest touches it, which this workload does not model). Batches of
    ``batch_steps`` conversions; the direct map's fragmentation is recorded after each."""
    rng = np.random.default_rng(seed)
    boot, launch = setup_events(host, guests)
    trace = Trace("conversions", [(len(g.vcpus), g.mem) for g in guests],
                  directmap_boot=host.directmap.counts(),
                  vmsa_pages=sum(len(g.vcpus) for g in guests), boot=boot, launch=launch)
    ledger = host.ledger
    live: list[int] = []
    npages = min(region, min(g.mem for g in guests)) // PAGE_4K
    ledger.rows.clear()
    done = 0
    for start in range(0, steps, batch_steps):
        for i, g in enumerate(guests):
            before = dict(ledger.totals)
            n = min(batch_steps, steps - start)
            for _ in range(n):
                _convert_one(g, rng, npages, p4k)
            f, o = _background(host, rng, live, max(1, bg_kernel_pages * n // 100))
            trace.host_rmp_faults += f
            trace.oopses += o
            ev = {k: ledger.totals.get(k, 0) - before.get(k, 0) for k in EVENTS}
            trace.batches.append(Batch(i, n, 0, {k: v for k, v in ev.items() if v}, host.directmap.counts()))
            ledger.rows.clear()
        done += min(batch_steps, steps - start)
        if progress:
            progress(done / steps)
        if should_stop and should_stop():
            trace.stopped = True
            break
    return trace


def _convert_one(g: _Guest, rng, npages: int, p4k: float) -> None:
    vm, cpu = g.vm, g.vcpus[int(rng.integers(len(g.vcpus)))]
    if rng.random() < p4k:
        page, size = int(rng.integers(npages)), PAGE_4K
    else:
        page, size = int(rng.integers(npages // PAGES_PER_2M)) * PAGES_PER_2M, PAGE_2M
    gfn = (GUEST_BASE_GPA >> PAGE_SHIFT) + page
    private = bool(vm.memory_attributes(gfn) & U.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    if size == PAGE_2M and not vm.attributes.has(gfn, gfn + PAGES_PER_2M, U.KVM_MEMORY_ATTRIBUTE_PRIVATE if private else 0):
        size = PAGE_4K                          # mixed 2M range: convert its first page only
    op = snp.SNP_PAGE_STATE_SHARED if private else snp.SNP_PAGE_STATE_PRIVATE
    if private:                                 # the guest un-validates what it validated
        for e in range(gfn, gfn + size // PAGE_4K):
            if g.validated.pop(e, None):
                snp.guest_pvalidate(cpu, e << PAGE_SHIFT, PAGE_4K, False)
    res, exits = snp.snp_begin_psc(cpu, [(gfn, op, size)])
    for e in exits:
        g.vmm.handle(e)
        if private:                              # QEMU discards the private copy: punch guest_memfd
            slot = vm.slot_for_gfn(gfn)
            off = (slot.gmem_pgoff + gfn - slot.base_gfn) << PAGE_SHIFT
            g.gmem.fallocate(U.FALLOC_FL_KEEP_SIZE | U.FALLOC_FL_PUNCH_HOLE, off, size)
    # the VMM's KVM_SET_MEMORY_ATTRIBUTES are recorded on its path (kit.kvm.vmm)
    vm.kvm.host.ledger.record("psc", vm_exit=1, user_exit=len(exits))
    if not private:
        out = cpu.fault_in(gfn << PAGE_SHIFT, private=True)    # KVM's fault path records its events
        if out is not None:
            raise RuntimeError(f"private fault at gfn {gfn:#x} exited: {out.reason}")
        snp.guest_pvalidate(cpu, gfn << PAGE_SHIFT, PAGE_4K, True)
        g.validated[gfn] = True
