"""One machine: frames, the RMP, the direct map, host accesses, and the kernel's SNP helpers.

The kernel helpers keep the names, arguments and return conventions of
arch/x86/virt/svm/sev.c: ``rmp_make_private``/``rmp_make_shared`` return 0 or a negative
errno; ``snp_lookup_rmpentry`` returns ``(assigned, level)`` or raises the kernel's errno.
Each also takes ``npages`` (default one entry): the same call for consecutive entries, as a
caller's loop would make it, checked as a whole first so that a failure changes nothing.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass, replace

import numpy as np

from ..errors import X86_PF_PROT, X86_PF_RMP, X86_PF_WRITE, HostOops, KernelError, RmpUpdateLivelock
from ..units import PAGE_2M, PAGE_4K, LEVEL_NAMES, PAGES_PER_2M, check_bool, check_level, format_size
from .ranges import check_pfn_range, region_span
from .directmap import LVL_4K, DirectMap
from .ledger import Ledger
from .limits import HOST_CORES, HOST_MEM, HOST_SEED, OVERLAP_RETRIES, RMP_RANGES_LIMIT, TLB_FLUSH_CEILING
from .memory import PLACEMENTS, PhysicalMemory, SeededRng
from .policies import get_directmap_policy, get_host_fault_policy
from .rmp import F_ASSIGNED, F_IMMUTABLE, RMPUPDATE_FAIL_OVERLAP, Rmp, RmpEntry, RmpRules
from .views import RmpRanges, rmp_ranges


@dataclass(frozen=True)
class HostFault:
    """A host kernel #PF on a direct-map access, as raised: what the hardware reports (pfn,
    write, error code, the kind of fault, the mapping level the access went through) and
    ``entry``, the RMP entry of ``pfn`` at that moment (for display).

    Raising a fault and running its handler are two steps (:meth:`Host.raise_fault`,
    :meth:`Host.handle_fault`): the handler reads the RMP and the direct map when it runs, so
    a handler that runs after another one fixed the same page sees what that one did."""

    pfn: int
    write: bool
    error_code: int
    kind: str          # "rmp" (X86_PF_RMP set) or "not-present"
    level: int         # direct-map mapping level the access went through
    entry: RmpEntry    # the RMP entry of pfn (when raised; the handler's copy: when it runs)

    def describe(self) -> str:
        what = "RMP violation" if self.kind == "rmp" else "not-present page"
        return (f"supervisor {'write' if self.write else 'read'} access in kernel mode, "
                f"error_code({self.error_code:#x}) - {what}; pfn {self.pfn:#x}, direct map "
                f"{LEVEL_NAMES[self.level]}; RMP entry: assigned={int(self.entry.assigned)} "
                f"pagesize={LEVEL_NAMES[self.entry.pagesize]} immutable={int(self.entry.immutable)} "
                f"asid={self.entry.asid} gpa={self.entry.gpa:#x}")


class Host:
    """A host with SEV-SNP enabled.

    ``mem`` (e.g. "1.5TiB"; whole 2M regions), ``cores`` (online CPUs: each global TLB flush
    interrupts all of them), ``directmap_policy`` (name or :class:`DirectMapPolicy`),
    ``host_fault_policy`` (``"oops"`` or ``"auto-convert"`` or an instance), ``seed`` (all
    randomness). Named model parameters: ``snp`` (SNP host support on), ``direct_gbpages``
    (1G direct-map mappings at boot), ``rmp_rules`` (:class:`RmpRules`), ``overlap_retries``
    (None: the kernel's unbounded FAIL_OVERLAP retry, raising :class:`RmpUpdateLivelock` for an
    overlap nothing will clear; an int: give up with -EFAULT after that many, as the bounded
    retry of older trees did: github.com/AMDESE/AMDSEV issue 143), ``placement`` (frame
    allocator placement: ``"lowest"`` or ``"random"``), ``tlb_single_page_flush_ceiling`` (the
    kernel tunable). Every argument is checked before anything is built (``ValueError`` or
    ``TypeError`` naming it); the bounds are :mod:`kit.host.limits`.
    """

    def __init__(self, mem="1.5TiB", cores=512, directmap_policy="split-on-demand",
                 host_fault_policy="oops", seed=0, *, snp=True, direct_gbpages=True,
                 rmp_rules: RmpRules | None = None, overlap_retries: int | None = None,
                 placement="lowest", tlb_single_page_flush_ceiling=33):
        mem_bytes = HOST_MEM.check(mem)
        cores = HOST_CORES.check(cores)
        seed = HOST_SEED.check(seed)
        if overlap_retries is not None:
            overlap_retries = OVERLAP_RETRIES.check(overlap_retries)
        if rmp_rules is not None and not isinstance(rmp_rules, RmpRules):
            raise TypeError(f"rmp_rules: expected an RmpRules, got {type(rmp_rules).__name__}")
        snp, direct_gbpages = check_bool(snp, "snp"), check_bool(direct_gbpages, "direct_gbpages")
        tlb_single_page_flush_ceiling = TLB_FLUSH_CEILING.check(tlb_single_page_flush_ceiling)
        if placement not in PLACEMENTS:
            raise ValueError(f"placement: must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
        dm_policy = get_directmap_policy(directmap_policy)
        fault_policy = get_host_fault_policy(host_fault_policy)
        self.mem = mem_bytes
        self.nr_pages = mem_bytes // PAGE_4K
        self.cores = cores
        self.seed = seed
        self.snp = snp
        self.overlap_retries = overlap_retries
        self._rng = SeededRng(seed)   # made on first use (the rng property)
        self.ledger = Ledger()
        self.rmp = Rmp(self.nr_pages, ledger=self.ledger, rules=rmp_rules)
        self.directmap = DirectMap(self.nr_pages, ledger=self.ledger, gbpages=direct_gbpages,
                                   tlb_single_page_flush_ceiling=tlb_single_page_flush_ceiling)
        self.memory = PhysicalMemory(self.nr_pages, rng=self._rng, placement=placement)
        self.host_fault_policy = fault_policy
        self.faults: list[HostFault] = []
        self.guest_notices: list[tuple] = []
        self.dmesg: list[str] = []
        self.snp_nr_leaked_pages = 0
        self._dm_policy = dm_policy
        dm_policy.boot(self)

    @property
    def rng(self):
        """The host's random generator, ``numpy.random.default_rng(seed)``, made when first
        asked for (the same draws as one made at boot: nothing draws before; a run that never
        draws, ``kit simulate``'s, does not load ``numpy.random``)."""
        return self._rng()

    # ------------------------------------------------------------------ policies
    @property
    def directmap_policy(self):
        return self._dm_policy

    @directmap_policy.setter
    def directmap_policy(self, policy):
        """Switching policy runs its ``boot`` step (e.g. ``presplit-4k`` splits everything)."""
        policy = get_directmap_policy(policy)
        self._dm_policy = policy
        policy.boot(self)

    def __repr__(self) -> str:
        return (f"Host(mem={format_size(self.mem)!r}, cores={self.cores}, "
                f"directmap_policy={self._dm_policy.name!r}, "
                f"host_fault_policy={self.host_fault_policy.name!r}, seed={self.seed})")

    def _repr_html_(self) -> str:
        from ..viz.html import host_html
        return host_html(self)

    def rmp_ranges(self, pfn: int = 0, npages: int | None = None, *, limit: int = RMP_RANGES_LIMIT.default) -> RmpRanges:
        """Runs of identical RMP entries over ``[pfn, pfn+npages)`` (displayable):
        :func:`kit.host.views.rmp_ranges`."""
        return rmp_ranges(self, pfn, npages, limit=limit)

    @property
    def nbytes(self) -> int:
        """Bytes of model state (RMP + direct map + frame ownership)."""
        return self.rmp.nbytes + self.directmap.nbytes + self.memory.nbytes

    # ------------------------------------------------------------------ kernel helpers
    def _rmpupdate(self, pfn, npages, level, *, assigned, asid=0, gpa=0, immutable=False) -> int:
        """``rmpupdate()``: -ENODEV without SNP; ``adjust_direct_map`` (here: the policy) first,
        -EFAULT if it fails; RMPUPDATE retried while FAIL_OVERLAP; any other failure is logged
        with the entry and returns -EFAULT. The kit checks the RMPUPDATE first, so a failing
        call changes nothing, not even the split the kernel would have left behind."""
        args = self._rmpupdate_operands(pfn, npages, level, assigned, asid, gpa, immutable)
        if not self.snp:
            return -errno.ENODEV
        rc = self._rmpupdate_check(args, level)
        if rc:
            return rc
        pfn, npages, size2m, assigned = args[:4]
        mark = self.ledger.mark()
        rc = self._dm_policy.before_rmpupdate(self, pfn, npages, level, assigned)
        if rc:
            self.ledger.rollback(mark)
            return -errno.EFAULT
        self._rmpupdate_apply(args)
        self._dm_policy.after_rmpupdate(self, pfn, npages, level, assigned)
        return 0

    def _rmpupdate_operands(self, pfn, npages, level, assigned, asid, gpa, immutable) -> tuple:
        level = check_level(level)
        if npages is None:
            npages = level // PAGE_4K
        return self.rmp.rmpupdate_args(pfn, assigned, level, immutable, asid, gpa, npages)

    def _rmpupdate_check(self, args, level) -> int:
        """0, or -EFAULT with the kernel's dmesg line for a failing RMPUPDATE (FAIL_OVERLAP:
        the unbounded retry raises :class:`RmpUpdateLivelock`; a bounded one gives up)."""
        pfn, npages, size2m, assigned, immutable, asid, gpa = args
        code, bad = self.rmp.check_rmpupdate(pfn, npages, assigned=assigned, size2m=size2m, asid=asid)
        if code == RMPUPDATE_FAIL_OVERLAP:
            if self.overlap_retries is None:
                raise RmpUpdateLivelock(bad, level)
            code = -1  # bounded retry gave up
        if code:
            self.dmesg.append(f"SEV-SNP: RMPUPDATE failed for PFN {bad:x}, pg_level: "
                              f"{1 if level == PAGE_4K else 2}, ret: {code}")
            return -errno.EFAULT
        return 0

    def _rmpupdate_apply(self, args) -> None:
        pfn, npages, size2m, assigned, immutable, asid, gpa = args
        self.rmp.apply_rmpupdate(pfn, npages, assigned, size2m, immutable, asid, gpa)
        self.ledger.record("rmpupdate", rmpupdate=npages // PAGES_PER_2M if size2m else npages)

    # The three steps of rmpupdate() one at a time, for callers in which another thread may run
    # between them (kit.explore). Unlike the whole call, a failure of the instruction after
    # the direct-map step leaves that step's work in place, as the kernel does.
    def rmpupdate_pre(self, pfn, level, *, assigned, npages=None) -> int:
        """The first step of ``rmpupdate()`` (arch/x86/virt/svm/sev.c) alone: -ENODEV without
        SNP, then ``adjust_direct_map`` (the direct-map policy's ``before_rmpupdate``: split
        or unmap); -EFAULT if it fails. The RMP is not read or changed."""
        args = self._rmpupdate_operands(pfn, npages, level, assigned, 0, 0, False)
        if not self.snp:
            return -errno.ENODEV
        pfn, npages = args[0], args[1]
        return -errno.EFAULT if self._dm_policy.before_rmpupdate(self, pfn, npages, level, args[3]) else 0

    def rmpupdate_insn(self, pfn, level, *, assigned, asid=0, gpa=0, immutable=False, npages=None) -> int:
        """The second step of ``rmpupdate()`` alone: the RMPUPDATE instruction(s) on the RMP as
        it is now, with the kernel's handling of a failure (FAIL_OVERLAP retried, anything else
        logged and -EFAULT: nothing changes). No direct-map work."""
        args = self._rmpupdate_operands(pfn, npages, level, assigned, asid, gpa, immutable)
        if not self.snp:
            return -errno.ENODEV
        rc = self._rmpupdate_check(args, level)
        if not rc:
            self._rmpupdate_apply(args)
        return rc

    def rmpupdate_post(self, pfn, level, *, assigned, npages=None) -> None:
        """The last step of ``rmpupdate()`` alone: the direct-map policy's
        ``after_rmpupdate`` (e.g. ``restore_direct_map`` of a page made shared)."""
        args = self._rmpupdate_operands(pfn, npages, level, assigned, 0, 0, False)
        self._dm_policy.after_rmpupdate(self, args[0], args[1], level, args[3])

    def rmp_make_private(self, pfn, gpa, level, asid, immutable, *, npages=None) -> int:
        """``rmp_make_private(pfn, gpa, level, asid, immutable)``: assign to ``asid`` at ``gpa``."""
        return self._rmpupdate(pfn, npages, level, assigned=True, asid=asid, gpa=gpa,
                               immutable=immutable)

    def rmp_make_shared(self, pfn, level, *, npages=None) -> int:
        """``rmp_make_shared(pfn, level)``: back to the hypervisor (gpa, asid, immutable = 0)."""
        return self._rmpupdate(pfn, npages, level, assigned=False)

    def snp_lookup_rmpentry(self, pfn) -> tuple[bool, int]:
        """``snp_lookup_rmpentry``: (assigned of the pfn's entry, level of the 2M-aligned entry).
        Raises ``KernelError(ENODEV)`` without SNP (the kernel returns -ENODEV)."""
        pfn = check_pfn_range(pfn, 1, self.nr_pages)[0]
        if not self.snp:
            raise KernelError(errno.ENODEV, "SNP host support is not enabled")
        e = self.rmp.rmpread(pfn)
        return e.assigned, e.pagesize

    def snp_leak_pages(self, pfn, npages) -> None:
        """``snp_leak_pages``: the pages go on ``snp_leaked_pages_list`` and are never freed;
        ``snp_nr_leaked_pages`` counts them."""
        pfn, npages = check_pfn_range(pfn, npages, self.nr_pages)
        self.memory.leak(pfn, npages)
        self.snp_nr_leaked_pages += npages
        self.dmesg.append(f"SEV-SNP: Leaking PFN range 0x{pfn:x}-0x{pfn + npages:x}")

    # ------------------------------------------------------------------ host accesses
    def write(self, pfn, npages=1) -> None:
        """A host kernel write through the direct map to ``[pfn, pfn+npages)``."""
        self._access(pfn, npages, write=True)

    def read(self, pfn, npages=1) -> None:
        """A host kernel read: no RMP check (the data is ciphertext); only not-present faults."""
        self._access(pfn, npages, write=False)

    def _access(self, pfn, npages, *, write: bool) -> None:
        """The access, page by page: the first faulting page raises a fault, its handler runs
        at once, and the access resumes at that page."""
        pfn, npages = check_pfn_range(pfn, npages, self.nr_pages)
        cur, end, last, repeats = pfn, pfn + npages, -1, 0
        while cur < end:
            fault = self.raise_fault(cur, end - cur, write=write)
            if fault is None:
                return
            repeats = repeats + 1 if fault.pfn == last else 0
            last = fault.pfn
            if repeats >= 2:  # third fault in a row on the same page: the fix does not hold
                raise HostOops(fault)
            self.handle_fault(fault)
            cur = fault.pfn

    def raise_fault(self, pfn, npages=1, *, write: bool = True) -> HostFault | None:
        """The first step of a faulting access: the hardware checks the access to
        ``[pfn, pfn+npages)`` and raises a #PF on the first page that faults. The fault is
        recorded (``faults``, ledger ``host_rmp_fault``/``host_np_fault``) and returned; its
        handler has not run (:meth:`handle_fault`). None: the access completes.

        Two steps so that another thread's work can come between them, as in the thread
        "[PATCH Part2 v5 39/45] KVM: SVM: Introduce ops for the post gfn map and unmap"
        (M. Roth, October 2021: CASE1, two threads fault on the same page)."""
        pfn, npages = check_pfn_range(pfn, npages, self.nr_pages)
        write = check_bool(write, "write")
        fault = self._first_fault(pfn, npages, write)
        if fault is not None:
            self.faults.append(fault)
            self.ledger.record("host_fault", **{"host_rmp_fault" if fault.kind == "rmp" else "host_np_fault": 1})
        return fault

    def handle_fault(self, fault: HostFault) -> bool:
        """The second step: the #PF handler runs (``exc_page_fault`` -> the host fault
        policy). It reads the RMP now (``snp_lookup_rmpentry``, ``snp_dump_hva_rmpentry`` in
        the kernel), not the entry the fault was raised with: the policy gets the fault with
        ``entry`` re-read. Returns True (the access may be retried) or raises
        :class:`~kit.errors.HostOops`."""
        if not isinstance(fault, HostFault):
            raise TypeError(f"fault: expected a HostFault (from raise_fault), got {type(fault).__name__}")
        now = replace(fault, entry=self.rmp.rmpread(fault.pfn))
        return self.host_fault_policy.handle(self, now)

    def _fault(self, pfn: int, write: bool, kind: str) -> HostFault:
        lvl = self.directmap.level(pfn)
        code = (X86_PF_WRITE if write else 0) | ((X86_PF_PROT | X86_PF_RMP) if kind == "rmp" else 0)
        return HostFault(pfn=pfn, write=write, error_code=code, kind=kind, level=lvl,
                         entry=self.rmp.rmpread(pfn))

    def _first_fault(self, pfn: int, npages: int, write: bool) -> HostFault | None:
        """The first page of the range whose access faults, by the hardware's rules
        [APM2 15.36.10]: through a 4K PTE the page must be present and, for a write, its entry
        unassigned and not immutable; through a 2M or 1G PTE (1G is checked as 2M) a write also
        needs all 512 entries of the 2M region unassigned."""
        r0, r1, off0, off1 = region_span(pfn, npages)
        regions = np.arange(r0, r1 + 1)
        split = self.directmap.lvl[regions] == LVL_4K
        suspect = np.zeros(len(regions), dtype=bool)
        if split.any():
            suspect[split] = self.directmap.any_not_present(regions[split])
        if write and self.snp:
            suspect |= self.rmp.region_has_assigned(regions)
            suspect |= self.rmp.table.range_any(pfn, npages, F_IMMUTABLE)
        for i in np.flatnonzero(suspect):
            r = r0 + int(i)
            lo = off0 if r == r0 else 0
            hi = off1 if r == r1 else PAGES_PER_2M
            np_mask = ~self.directmap.present_mask(r)[lo:hi]
            rmp_mask = np.zeros(hi - lo, dtype=bool)
            if write and self.snp:
                flags = self.rmp.table.page_bits(r)
                if split[i]:
                    rmp_mask = (flags[lo:hi] & (F_ASSIGNED | F_IMMUTABLE)) != 0
                elif np.any(flags & F_ASSIGNED):
                    rmp_mask[:] = True
                else:
                    rmp_mask = (flags[lo:hi] & F_IMMUTABLE) != 0
            bad = np_mask | rmp_mask
            if bad.any():
                j = int(np.argmax(bad))
                return self._fault(r * PAGES_PER_2M + lo + j, write,
                                   "not-present" if np_mask[j] else "rmp")
        return None
