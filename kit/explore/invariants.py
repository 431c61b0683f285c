"""The domain's invariants: named properties of the model's state, checked after every step of
every schedule and named in every result.

Each takes the scenario (``s.w`` is its world: the model and the bookkeeping ``s.w.b`` the
threads keep, :mod:`kit.explore.threads`). Add your own in a notebook cell with
:class:`~kit.explore.Invariant`::

    explore_named("host-write-vs-conversion", "srcu",
                  invariants=[Invariant("at most one live map", lambda s: s.w.live_maps() <= 1)])

Conversion invariants (scenario ``host-write-vs-conversion``; the thread "[PATCH Part2 v5 39/45]
KVM: SVM: Introduce ops for the post gfn map and unmap", October 2021, is the source of each):

- :class:`NoFaultOnMappedPage`, :class:`NoOopsWithoutBug`, :class:`BoundedFaults`,
  :class:`CounterMatchesMaps`, :class:`NoUpdateWhileMapped`, :class:`ValidatedKept`,
  :class:`NoStaleMapping`.

Mirror invariants (scenario ``mirror-setup``; "[RFC] KVM: x86: Support KVM VMs sharing SEV
context", 2021, and arch/x86/kvm/svm/sev.c):

- :class:`NoAsidReuse`, :class:`NoMirrorOfMirror`, :class:`NoMirrorWithVcpus`.

The engine adds ``no-deadlock`` (with the lock graph), ``bounded-steps`` and ``no-exception``.
"""
from __future__ import annotations

from .scenario import Invariant


class NoFaultOnMappedPage(Invariant):
    """No host #PF on a page while a *guarded* map of it is live: the promise of a scheme's map
    call ("post_{map,unmap}_gfn() ops that can be used to verify that its safe to map a given
    guest page", the reviewed patch). Where private pages are unmapped from the direct map the
    RMP violation shows as a not-present #PF ("actually, we will get a !PRESENT fault", M. Roth
    in the same thread); both count, except a not-present fault once the kernel-bug thread
    (CASE2) has broken the direct map."""

    name = "no RMP #PF on a mapped page"

    def holds(self, s):
        return s.w.b.guarded_faults == 0


class NoOopsWithoutBug(Invariant):
    """The host does not oops unless the kernel-bug thread (CASE2) had broken the direct map
    before: an oops caused by the guest's conversion is the guest crashing the host
    ("if CASE1 pops up, we'll still have a case where guest can cause a crash/loop")."""

    name = "no oops unless the kernel bug ran"

    def holds(self, s):
        return not s.w.b.unexcused_oops


class BoundedFaults(Invariant):
    """Every host access completes within ``max_faults`` faults (no livelock: the handler's
    retry must make progress; ``Host.write`` oopses at the third fault in a row)."""

    name = "bounded faults per access"

    def holds(self, s):
        return not s.w.b.livelocked


class CounterMatchesMaps(Invariant):
    """A tracking counter equals the number of maps it has registered and is never negative
    ("the count can be corrupted if writers collide", S. Christopherson on
    ``host_write_track``). Holds trivially for a scheme without a counter."""

    name = "tracking counter equals live maps"

    def holds(self, s):
        c = s.w.counter()
        return c is None or (c.value == s.w.b.tracked and c.value >= 0)


class NoUpdateWhileMapped(Invariant):
    """No RMPUPDATE makes a frame private while a guarded host map of it is live ("it doesn't
    prevent new maps from being created while the actual RMP updates are in-flight")."""

    name = "no RMPUPDATE to private while mapped"

    def holds(self, s):
        return not s.w.b.update_while_mapped


class ValidatedKept(Invariant):
    """The guest loses its Validated bit only through a host bug or its own request: while the
    guest believes its page validated, the RMP entry stays assigned to it, at its GPA, with
    Validated set, unless the kernel-bug thread ran, a host write hit the page while it was
    private (the flip-back design's notice to the guest: "if this was a bug on the part of the
    host, then the guest will see the validated bit was cleared"), or the VMM discarded
    private memory."""

    name = "Validated lost only by host bug or guest request"

    def holds(self, s):
        w = s.w
        b = w.b
        if not b.guest_validated or b.bug_ran or b.touched_private or b.vmm_discarded:
            return True
        e = w.host.rmp.rmpread(w.pfn)
        return e.assigned and e.validated and e.asid == w.asid and e.gpa == w.gpa


class NoStaleMapping(Invariant):
    """A private NPT mapping of the guest's page maps the frame guest_memfd holds for it, and
    that frame is assigned to the guest: no mapping outlives its folio (virt/kvm/guest_memfd.c
    ``kvm_gmem_invalidate_begin``, ``mmu_invalidate_retry_gfn``). Holds trivially where no
    private fault runs."""

    name = "no NPT mapping of a freed frame"

    def holds(self, s):
        w = s.w
        pfn = w.b.spte_pfn
        if pfn is None or w.gmem is None:
            return True
        if w.gmem_frame() != pfn:
            return False
        return bool(w.host.rmp.rmpread(pfn).assigned)


CONVERSION_INVARIANTS = (NoFaultOnMappedPage, NoOopsWithoutBug, BoundedFaults, CounterMatchesMaps,
                         NoUpdateWhileMapped, ValidatedKept, NoStaleMapping)


class NoAsidReuse(Invariant):
    """No ASID is reused while referenced: every live SEV VM's ASID is allocated (not freed or
    waiting for reclaim), and two live VMs share an ASID only as owner and mirror
    (arch/x86/kvm/svm/sev.c ``sev_asid_free``, ``sev_vm_destroy``: a mirror never frees the
    ASID it shares, and holds a reference on its owner)."""

    name = "no ASID reused while referenced"

    def holds(self, s):
        w = s.w
        live = [(n, vm) for n, vm in w.vms.items() if not vm.dead and vm.sev is not None and vm.sev.active]
        used = w.kvm.asids.used
        seen: dict[int, object] = {}
        for _, vm in live:
            if vm.asid not in used:
                return False
            other = seen.setdefault(vm.asid, vm)
            if other is not vm and not (vm.mirror_of is other or other.mirror_of is vm
                                        or (vm.mirror_of is not None and vm.mirror_of is other.mirror_of)):
                return False
        return True


class NoMirrorOfMirror(Invariant):
    """No mirror of a mirror, and so no two VMs mirroring each other ("Mirrors of mirrors should
    work, but let's not get silly", the RFC; ``is_mirroring_enc_context(source_kvm)`` ->
    -EINVAL in ``sev_vm_copy_enc_context_from``)."""

    name = "no mirror of a mirror"

    def holds(self, s):
        for vm in s.w.vms.values():
            owner = vm.mirror_of if vm.sev is not None else None
            if owner is not None and owner.sev is not None and owner.mirror_of is not None:
                return False
        return True


class NoMirrorWithVcpus(Invariant):
    """No VM becomes a mirror when it already has vCPUs, which the merged kernel forbids
    (``kvm->created_vcpus`` -> -EINVAL in ``sev_vm_copy_enc_context_from``; asked for in the
    RFC's review: "what happens if the destination already has vCPUs that are currently
    running?")."""

    name = "no mirror of a VM with vCPUs"

    def holds(self, s):
        return not s.w.b.mirrored_with_vcpus


MIRROR_INVARIANTS = (NoAsidReuse, NoMirrorOfMirror, NoMirrorWithVcpus)

__all__ = ["NoFaultOnMappedPage", "NoOopsWithoutBug", "BoundedFaults", "CounterMatchesMaps", "NoUpdateWhileMapped",
           "ValidatedKept", "NoStaleMapping", "NoAsidReuse", "NoMirrorOfMirror", "NoMirrorWithVcpus",
           "CONVERSION_INVARIANTS", "MIRROR_INVARIANTS"]
