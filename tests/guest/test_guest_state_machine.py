"""kit.guest against KVM and the host, step by step.

A hypothesis RuleBasedStateMachine builds, per run, a small host (its host-fault policy
``oops`` or ``auto-convert``), an SNP VM (#NPF policy, attribute owner) with guest_memfd RAM and
a guest of one behaviour, then mixes: guest operations (``accept``; ``convert`` both ways with
each protocol; ``touch``; a raw ``pvalidate`` when the behaviour misbehaves), host writes
(``Host.write`` on the frames backing guest pages), and VMM actions (``KVM_SET_MEMORY_ATTRIBUTES``,
punching guest_memfd). After every step it checks:

(a) no page is private and validated without its owner's request: every RMP entry validated for
    the guest backs a page the guest asked to validate (the test tracks the requests: an
    acceptance, a conversion to private, a raw PVALIDATE, a #VC the ``Revalidating`` guest
    answers by validating; a punched frame forgets them);
(b) every validated RMP entry (but the vCPUs' VMSAs) is private, with the guest's ASID and the
    GPA of the guest_memfd page it backs;
(c) a terminated guest does nothing more: every operation raises ``GuestTerminated`` and changes
    no state (guest, attributes, ledger);
(d) the guest's view and KVM's attributes agree whenever no conversion is in flight: on every
    page the guest has accepted or converted with a request that completed, unless someone
    changed the attributes behind its back (the VMM, a guest's raw PVALIDATE exiting to it) or
    a request of the guest failed part way (a conversion left in flight). ``Unenlightened``
    never asks, so it has no such pages.

Runs use 2M guest_memfd folios (the hugepage series): a 2M acceptance is then one PVALIDATE, not
one per 4K page, and MSR-protocol conversions (one request per page, the early boot's few pages)
cover at most two pages; this keeps the default profile's 300 runs near half a minute. 4K
PVALIDATEs still meet 2M RMP entries (PSMASH) through conversions, touches and raw PVALIDATEs.
"""
from __future__ import annotations

import errno

import hypothesis.strategies as st
import numpy as np
from hypothesis import event, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from kit.errors import HostOops, KvmError, VmmCommunicationException
from kit.guest import (PROTOCOLS, GuestStuck, GuestTerminated, Linux, Malicious, PscLivelock, Revalidating,
                       Unenlightened)
from kit.guest.outcomes import RAM_GPA, DeniesFirst, build_guest, view_agrees
from kit.host.rmptable import F_2M, F_ASSIGNED, F_DETAIL, F_VALIDATED, F_VMSA
from kit.kvm import uapi as U
from kit.kvm.gmem import folio_order
from kit.kvm.vmm import Vmm
from kit.units import MiB, PAGE_2M, PAGE_4K, PAGE_SHIFT, PAGES_PER_2M

RAM = 6 * MiB                                   # three acceptance units: the guard unit stays inside
NPAGES = RAM >> PAGE_SHIFT
BASE = RAM_GPA >> PAGE_SHIFT
BEHAVIOURS = (Linux, Revalidating, Malicious, Unenlightened)
FAILURES = (GuestTerminated, GuestStuck, PscLivelock, VmmCommunicationException, KvmError, ValueError)

#: page offsets the steps aim at: unit starts and ends, so that 2M entries, PSMASH and the guard
#: unit are met; a two-page step on the last page reaches past the RAM
pages = st.sampled_from([0, 1, 2, PAGES_PER_2M - 1, PAGES_PER_2M, PAGES_PER_2M + 3, 2 * PAGES_PER_2M,
                         3 * PAGES_PER_2M - 1])
sizes = st.sampled_from([PAGE_4K, 2 * PAGE_4K, PAGE_2M, 2 * PAGE_2M])


class GuestVsKvm(RuleBasedStateMachine):

    @initialize(behaviour=st.sampled_from(BEHAVIOURS), npf=st.sampled_from(["exit", "auto-convert"]),
                owner=st.sampled_from(["userspace", "guest"]), host_fault=st.sampled_from(["oops", "auto-convert"]),
                vmm=st.sampled_from([Vmm, Vmm, DeniesFirst]))
    def build(self, behaviour, npf, owner, host_fault, vmm):
        self.g = build_guest(behaviour, npf_policy=npf, owner=owner, guest_mem=RAM, gmem_hugepages=True,
                             host_fault_policy=host_fault, max_exits=4,
                             vmm=lambda vm, **kw: vmm(vm, fallocate=False, **kw))
        self.vm, self.host = self.g.vm, self.g.vm.kvm.host
        self.slot = self.vm.slot_for_gfn(BASE)
        self.asked = np.zeros(NPAGES, dtype=bool)      # (a): the guest asked to validate the page
        self.synced = np.zeros(NPAGES, dtype=bool)     # (d): view and attributes must agree here

    # ------------------------------------------------------------ helpers
    def _mark(self, arr, gpa, size, value):
        lo, hi = max((gpa >> PAGE_SHIFT) - BASE, 0), min(((gpa + size) >> PAGE_SHIFT) - BASE, NPAGES)
        if lo < hi:
            arr[lo:hi] = value

    def _snapshot(self):
        g = self.g
        return (tuple(g.validated.ranges(0, 1 << 52)), tuple(g.view.ranges(0, 1 << 52)), g.unaccepted.tobytes(),
                len(g.log), len(g.vcs), tuple(self.vm.attributes.ranges(0, 1 << 52)),
                dict(self.host.ledger.totals), len(g.vmm.log), g.terminated)

    def _guest_op(self, fn, gpa, size):
        """Run a guest operation. A terminated guest must refuse it and change nothing (c); an
        operation that fails part way (an exception, or an error ``Malicious`` ignored) leaves
        its range out of (d) until a later request completes over it. Returns True when it
        completed."""
        if self.g.terminated is not None:
            before = self._snapshot()
            try:
                fn()
            except GuestTerminated as e:
                assert e.termination is self.g.terminated
            else:
                raise AssertionError("a terminated guest completed an operation")
            assert self._snapshot() == before, "a terminated guest changed state"
            event("a terminated guest refused an operation")
            return False
        log = len(self.g.log)
        try:
            fn()
        except FAILURES as e:
            event(f"a guest operation raised {type(e).__name__}")
            self._mark(self.synced, gpa, size, False)
            return False
        if any(s.name.endswith("_error_ignored") for s in self.g.log[log:]):    # Malicious went on
            self._mark(self.synced, gpa, size, False)
            return False
        return True

    def _unit_span(self, gpa, size):
        """The units ``accept_memory`` reaches (the guard unit past an aligned end), in bytes."""
        start, end = gpa - gpa % PAGE_2M, gpa + size
        end = end - end % PAGE_2M + PAGE_2M      # rounded up, or one guard unit past an aligned end
        return start, end - start

    def _frame(self, page):
        pfn, _ = self.slot.gmem.get_pfn(self.slot.gmem_index(BASE + page), allocate=False)
        return pfn

    # ------------------------------------------------------------ guest operations
    @rule(page=pages, size=sizes)
    def accept(self, page, size):
        gpa = RAM_GPA + page * PAGE_4K
        span = self._unit_span(gpa, size)
        accepting = self.g.terminated is None and type(self.g.behaviour) is not Unenlightened
        if accepting:
            self._mark(self.asked, *span, True)
        before = self.g.unaccepted.copy()
        if self._guest_op(lambda: self.g.accept(gpa, size), *span) and accepting:
            # the units it accepted are private now: in sync where the guest maps them private (a
            # page it made shared before accepting, which Linux's page allocator never lets
            # happen, now differs)
            for u in np.flatnonzero(before & ~self.g.unaccepted):
                lo = (self.g.phys_base >> PAGE_SHIFT) + int(u) * PAGES_PER_2M - BASE
                view = self.g.view.ranges(BASE + lo, BASE + lo + PAGES_PER_2M)
                self.synced[lo:lo + PAGES_PER_2M] = False
                for s, e, v in view:
                    self.synced[s - BASE:e - BASE] = bool(v)

    @rule(page=pages, size=sizes, private=st.booleans(), protocol=st.sampled_from(PROTOCOLS))
    def convert(self, page, size, private, protocol):
        gpa = RAM_GPA + page * PAGE_4K
        if protocol == "msr":             # one request per 4K page: the early boot's few pages
            size = min(size, 2 * PAGE_4K)
        b = self.g.behaviour
        if private and self.g.terminated is None:
            self._mark(self.asked, gpa, size, True)
        rets = []
        done = self._guest_op(lambda: rets.append(self.g.convert(gpa, size, private=private, protocol=protocol)),
                              gpa, size)
        if not done or rets != [0]:        # -EIO: refused after the C-bit changed (vmm_fail): in flight
            self._mark(self.synced, gpa, size, False)
            return
        self._mark(self.synced, gpa, size, type(b) is not Unenlightened)
        if not private and type(b) in (Linux, Revalidating):     # they rescinded validation first
            self._mark(self.asked, gpa, size, False)

    @rule(page=pages, write=st.booleans())
    def touch(self, page, write):
        gpa = RAM_GPA + page * PAGE_4K
        if type(self.g.behaviour) is Revalidating and self.g.terminated is None:
            self._mark(self.asked, gpa, PAGE_4K, True)        # its #VC handler validates the page
        self._guest_op(lambda: self.g.touch(gpa, write=write), gpa, PAGE_4K)

    @precondition(lambda self: type(self.g.behaviour) is not Linux)
    @rule(page=pages, huge=st.booleans(), validate=st.booleans())
    def raw_pvalidate(self, page, huge, validate):
        size = PAGE_2M if huge else PAGE_4K
        page -= page % (size >> PAGE_SHIFT)
        gpa = RAM_GPA + page * PAGE_4K
        if validate and self.g.terminated is None:
            self._mark(self.asked, gpa, size, True)
        codes = []
        done = self._guest_op(lambda: codes.append(self.g.pvalidate(gpa, size, validate)), gpa, size)
        # its #NPF may have exited to the VMM, which converted behind the guest's view
        self._mark(self.synced, gpa, size, False)
        if done and codes == [0] and not validate:
            self._mark(self.asked, gpa, size, False)

    # ------------------------------------------------------------ the host and the VMM
    @rule(page=pages)
    def host_write(self, page):
        pfn = self._frame(page) if page < NPAGES else None
        if pfn is None:
            return
        try:
            self.host.write(pfn)
        except HostOops:
            assert self.host.host_fault_policy.name == "oops" or self.host.rmp.rmpread(pfn).immutable

    @rule(page=pages, size=sizes, private=st.booleans())
    def vmm_set_attributes(self, page, size, private):
        gpa = RAM_GPA + page * PAGE_4K
        try:
            self.vm.set_memory_attributes(gpa, size, U.KVM_MEMORY_ATTRIBUTE_PRIVATE if private else 0)
        except KvmError as e:
            assert self.vm.attribute_owner == "guest" and e.errno == errno.EPERM
            return
        self._mark(self.synced, gpa, size, False)

    @rule(page=pages, size=sizes)
    def vmm_punch_hole(self, page, size):
        gmem = self.slot.gmem
        index = self.slot.gmem_index(BASE + page)
        before = dict(gmem.folios)
        gmem.fallocate(U.FALLOC_FL_KEEP_SIZE | U.FALLOC_FL_PUNCH_HOLE, index << PAGE_SHIFT, size)
        order = folio_order(gmem)
        for fidx in set(before) - set(gmem.folios):          # frames freed: their validation is gone
            self.asked[fidx << order:(fidx + 1) << order] = False

    # ------------------------------------------------------------ invariants
    def _validated_frames(self):
        """(pfn, asid, gfn, is_2m) of every validated RMP entry of the host, VMSAs excepted."""
        table = self.host.rmp.table
        out = []
        forms = table.region_forms(slice(None))
        for r in np.flatnonzero(forms & (F_DETAIL | F_VALIDATED)).tolist():   # 4K entries, or validated
            flags, asid, gfn = table.entries(r)
            assert not np.any((flags & F_VALIDATED).astype(bool) & ~(flags & F_ASSIGNED).astype(bool))
            hit = np.flatnonzero((flags & F_VALIDATED).astype(bool) & ~(flags & F_VMSA).astype(bool))
            is2m = bool(table.region_form(r) & F_2M)
            out += [(r * PAGES_PER_2M + int(i), int(asid[i]), int(gfn[i]), is2m) for i in hit]
        return out

    def _page_of_frame(self):
        """pfn -> the gfn of the guest page it backs, from guest_memfd's folios (one dict entry
        per folio, looked up by the folio's first frame)."""
        gmem = self.slot.gmem
        order = folio_order(gmem)
        first = {pfn: self.slot.base_gfn + (fidx << order) - self.slot.gmem_pgoff for fidx, pfn in gmem.folios.items()}

        def page(pfn):
            base = pfn - pfn % (1 << order)
            return first[base] + pfn - base if base in first else None
        return page

    @invariant()
    def validated_pages_are_requested_and_private_at_their_gpa(self):
        if not hasattr(self, "g"):
            return
        page_of = self._page_of_frame()
        for pfn, asid, gfn, is2m in self._validated_frames():
            page_gfn = page_of(pfn)
            assert page_gfn is not None, f"pfn {pfn:#x} validated but backs no page of the guest"
            assert asid == self.vm.asid, f"pfn {pfn:#x} validated with ASID {asid}"
            want = page_gfn - (pfn % PAGES_PER_2M) if is2m else page_gfn
            assert gfn == want, f"pfn {pfn:#x} validated at gfn {gfn:#x}, backs {want:#x}"            # (b)
            assert self.asked[page_gfn - BASE], f"gfn {page_gfn:#x} validated without the guest's request"  # (a)

    @invariant()
    def view_and_attributes_agree_when_nothing_is_in_flight(self):
        if not hasattr(self, "g") or self.g.terminated is not None:
            return
        for lo, hi in _runs(self.synced):
            assert view_agrees(self.g, RAM_GPA + lo * PAGE_4K, (hi - lo) * PAGE_4K), \
                f"pages {lo}..{hi}: the guest's view and KVM's attributes differ"


def _runs(mask):
    d = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist())


GuestVsKvm.TestCase.settings = settings(settings.default, stateful_step_count=25)
TestGuestVsKvm = GuestVsKvm.TestCase
