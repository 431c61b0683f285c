"""Workloads run on the semantic model: the operations change the host, KVM and guest state and
record cost events; the trace keeps, per batch of work, what the events were.

``lazy-accept`` (questions.md §1, measurements.csv): every guest's vCPUs run
``stress --vm <vcpus> --vm-bytes 5G --vm-keep``; each page the workers touch comes from the
guest's page allocator, which accepts unaccepted memory ``ACCEPT_CHUNK`` (4 MiB,
``MAX_PAGE_ORDER``, mm/page_alloc.c ``try_to_accept_memory_one``) at a time in address order,
the bitmap unit being 2 MiB (``EFI_UNACCEPTED_UNIT_SIZE``). Accepting one chunk
(arch/x86/coco/sev/core.c ``snp_accept_memory`` -> ``set_pages_state`` -> ``vmgexit_psc``; then
``pvalidate_pages``):

1. a GHCB page-state-change request of two 2M entries (``snp_begin_psc``), coalesced into one
   ``KVM_HC_MAP_GPA_RANGE`` exit;
2. the VMM answers (QEMU ``kvm_convert_memory``): ``KVM_SET_MEMORY_ATTRIBUTES`` PRIVATE;
3. PVALIDATE of each 2M page faults (#NPF): KVM faults the guest_memfd folio in (a zeroed 2M
   folio), ``sev_gmem_prepare`` -> ``rmp_make_private`` (2M) -> the direct-map policy, and maps
   it 2M in the NPT;
4. PVALIDATE (2M) succeeds; the worker writes the memory.

The trace runs these steps on the real model objects, as range operations over batches of
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
from ..host import Host
from ..host.ledger import EVENTS
from ..host.rmp import PVALIDATE_FAIL_SIZEMISMATCH
from ..kvm import snp
from ..kvm import uapi as U
from ..kvm.vm import Kvm
from ..kvm.vmm import Vmm
from ..units import GiB, PAGE_2M, PAGE_4K

ACCEPT_CHUNK = 4 << 20          # bytes accepted per try_to_accept_memory_one (MAX_PAGE_ORDER)
ACCEPT_UNIT = PAGE_2M           # EFI_UNACCEPTED_UNIT_SIZE
STRESS_BYTES = 5 * GiB          # stress --vm-bytes 5G per worker
BATCH_CHUNKS = 64               # chunks per semantic batch (256 MiB)
GUEST_BASE_GPA = 4 * GiB        # guest RAM above the 32-bit hole
UADDR = 0x100000000000          # the VMM's mapping of guest RAM (16 TiB)
WORKLOADS = ("lazy-accept", "conversions")


@dataclass
class Batch:
    guest: int
    chunks: int                  # acceptance chunks (lazy-accept) or conversions
    bytes: int                   # bytes faulted in (guest_memfd folios zeroed)
    events: dict                 # cost events of the whole batch
    directmap: dict              # /proc/meminfo DirectMap lines after the batch (kB)


@dataclass
class Trace:
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
    def __init__(self, kvm: Kvm, vcpus: int, mem: int, gmem_hugepages: bool):
        before = dict(kvm.host.ledger.totals)
        self.vm = kvm.create_vm(U.KVM_X86_SNP_VM)
        self.vm.sev_init()
        self.gmem = self.vm.create_guest_memfd(mem)
        self.vm.set_user_memory_region2(0, U.KVM_MEM_GUEST_MEMFD, GUEST_BASE_GPA, mem, UADDR, 0, self.gmem)
        self.vm.enable_cap(U.KVM_CAP_EXIT_HYPERCALL, 1 << U.KVM_HC_MAP_GPA_RANGE)
        self.vcpus = [self.vm.create_vcpu(i) for i in range(vcpus)]
        snp.snp_launch_finish(self.vm)          # VMSAs become private 4K pages (kernel frames)
        self.vmm = Vmm(self.vm, fallocate=False)
        self.mem = mem
        self.next_chunk = 0
        self.validated: dict[int, bool] = {}     # conversions: 4K pages the guest validated
        self.launch = _diff(kvm.host.ledger.totals, before)   # events of this guest's launch


def _diff(now, before) -> dict:
    """Ledger events recorded since ``before`` (a copy of ``ledger.totals``), nonzero only."""
    return {k: int(now.get(k, 0) - before.get(k, 0)) for k in EVENTS if now.get(k, 0) != before.get(k, 0)}


def _setup(host, guests) -> tuple[dict, dict]:
    """(boot, launch): the ledger's events before the workload starts, split into the
    guests' launches and the rest (the direct-map policy's boot step)."""
    launch: dict = {}
    for g in guests:
        for k, v in getattr(g, "launch", {}).items():
            launch[k] = launch.get(k, 0) + v
    boot = {k: int(host.ledger.totals.get(k, 0)) - launch.get(k, 0) for k in EVENTS}
    return {k: v for k, v in boot.items() if v}, launch


def build(host_mem: int, host_cores: int, policy, guests, seed: int, *, gmem_hugepages=True):
    host = Host(mem=host_mem, cores=host_cores, directmap_policy=policy, seed=seed)
    kvm = Kvm(host, gmem_hugepages=gmem_hugepages, min_sev_asid=max(len(guests) + 1, 100))
    return host, kvm, [_Guest(kvm, v, m, gmem_hugepages) for v, m in guests]


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
    for pfn in np.unique(np.asarray(live[-4 * npages:]) // 512):
        # one write per touched 2M region of kernel pages (the write checks the whole region)
        mine = [p for p in live[-4 * npages:] if p // 512 == pfn]
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
    rng = np.random.default_rng(seed)
    boot, launch = _setup(host, guests)
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
    """Accept ``nchunks`` chunks from ``gpa``: steps 1-4 of the module doc, as range operations."""
    vm, cpu = g.vm, g.vcpus[0]
    gfn = gpa >> 12
    entries = [(gfn, snp.SNP_PAGE_STATE_PRIVATE, PAGE_2M), (gfn + 512, snp.SNP_PAGE_STATE_PRIVATE, PAGE_2M)]
    res, exits = snp.snp_begin_psc(cpu, entries)      # one chunk's request: its exits
    if res or len(exits) != 1:
        raise RuntimeError(f"page-state change of one chunk gave {res:#x}, {len(exits)} exits")
    size = nchunks * ACCEPT_CHUNK
    # the VMM's answers, one KVM_SET_MEMORY_ATTRIBUTES per chunk: stored as one range update
    vm.set_memory_attributes(gpa, size, U.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    vm.kvm.host.ledger.record("psc", vm_exit=nchunks, user_exit=nchunks, set_attributes=nchunks)
    units = size // ACCEPT_UNIT
    snp.snp_fault_in_private_2m(vm, gfn, units)
    codes = snp.guest_pvalidate_2m_run(vm, gpa, units)
    for i, code in enumerate(codes):
        if code == PVALIDATE_FAIL_SIZEMISMATCH:
            # 4K RMP entries (order-0 folios): the guest retries the 2M page as 512 x 4K
            # (arch/x86/coco/sev/core.c pvalidate_pages -> pval_pages); each 4K page faults in
            base = gpa + i * ACCEPT_UNIT
            for off in range(0, ACCEPT_UNIT, PAGE_4K):
                if cpu.fault_in(base + off, private=True) is not None:
                    raise RuntimeError(f"private fault at {base + off:#x} exited")
                code = snp.guest_pvalidate(cpu, base + off, PAGE_4K, True)
                if code:
                    raise RuntimeError(f"PVALIDATE 4K failed during acceptance at {base + off:#x}: {code}")
        elif code:
            raise RuntimeError(f"PVALIDATE failed during acceptance at {gpa + i * ACCEPT_UNIT:#x}: {code}")


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
    boot, launch = _setup(host, guests)
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
        page, size = int(rng.integers(npages // 512)) * 512, PAGE_2M
    gfn = (GUEST_BASE_GPA >> 12) + page
    private = bool(vm.memory_attributes(gfn) & U.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    if size == PAGE_2M and not vm.attributes.has(gfn, gfn + 512, U.KVM_MEMORY_ATTRIBUTE_PRIVATE if private else 0):
        size = PAGE_4K                          # mixed 2M range: convert its first page only
    op = snp.SNP_PAGE_STATE_SHARED if private else snp.SNP_PAGE_STATE_PRIVATE
    if private:                                 # the guest un-validates what it validated
        for e in range(gfn, gfn + size // PAGE_4K):
            if g.validated.pop(e, None):
                snp.guest_pvalidate(cpu, e << 12, PAGE_4K, False)
    res, exits = snp.snp_begin_psc(cpu, [(gfn, op, size)])
    for e in exits:
        g.vmm.handle(e)
        if private:                              # QEMU discards the private copy: punch guest_memfd
            slot = vm.slot_for_gfn(gfn)
            off = (slot.gmem_pgoff + gfn - slot.base_gfn) << 12
            g.gmem.fallocate(U.FALLOC_FL_KEEP_SIZE | U.FALLOC_FL_PUNCH_HOLE, off, size)
    # the VMM's KVM_SET_MEMORY_ATTRIBUTES are recorded on its path (kit.kvm.vmm)
    vm.kvm.host.ledger.record("psc", vm_exit=1, user_exit=len(exits))
    if not private:
        out = cpu.fault_in(gfn << 12, private=True)    # KVM's fault path records its events
        if out is not None:
            raise RuntimeError(f"private fault at gfn {gfn:#x} exited: {out.reason}")
        snp.guest_pvalidate(cpu, gfn << 12, PAGE_4K, True)
        g.validated[gfn] = True
