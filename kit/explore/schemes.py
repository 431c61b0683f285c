"""Schemes: how the kernel protects a race, as small classes whose methods are the steps that
differ between designs.

A scheme names its scenarios (``scenarios``), the host policies it runs with and its own
primitives (:meth:`Scheme.primitives`: fresh :class:`~kit.explore.Lock`,
:class:`~kit.explore.Srcu` or :class:`~kit.explore.Counter` objects for every run), and
overrides the hooks the scenario's threads call (:mod:`kit.explore.threads`). Write your own in
a notebook cell by subclassing one and overriding the step you change::

    class SrcuAroundTheUpdate(Srcu):
        '''synchronize_srcu_expedited after the RMPUPDATE as well.'''
        def after_rmpupdate(self, w):
            yield from w.p["psc_srcu"].synchronize(expedited=True)

    explore_named("host-write-vs-conversion", SrcuAroundTheUpdate)

Conversion schemes (scenario ``host-write-vs-conversion``), from the thread "[PATCH Part2 v5
39/45] KVM: SVM: Introduce ops for the post gfn map and unmap" (October 2021) and the merged
design: :class:`Srcu` (``srcu``), :class:`HostWriteTrack` (``host_write_track``),
:class:`HostWriteTrackLocked` (``host_write_track_locked``), :class:`FlipBackUnmap`
(``flip_back_unmap``), :class:`FlipBackSplit` (``flip_back_split``), :class:`Upstream`
(``upstream``). Mirror schemes (scenario ``mirror-setup``), from "[RFC] KVM: x86: Support KVM
VMs sharing SEV context" (2021) and arch/x86/kvm/svm/sev.c: :class:`Mirror2021`
(``mirror-2021``), :class:`MirrorMerged` (``mirror-merged``).
"""
from __future__ import annotations

import errno

from ..kvm import sev as kvm_sev
from .primitives import Counter, Lock
from .primitives import Srcu as SrcuPrimitive
from .step import Step
from . import threads as T


class Scheme:
    """Base of every scheme: a name, the scenarios it applies to, a description with its
    source, and the primitives a run of it needs."""

    name = "scheme"
    scenarios: tuple = ()
    description = ""

    def primitives(self) -> dict:
        """Fresh primitives for one run, by name (``w.p[name]`` in the threads)."""
        return {}

    def __repr__(self) -> str:
        return f"<scheme {self.name!r}>"


# ===================================================================== conversion schemes
class ConversionScheme(Scheme):
    """A design for KVM's host writes to guest memory against the guest's conversion of that
    memory to private. The defaults are the plain code with no protection: ``kvm_vcpu_map``
    is gfn -> pfn then ``kmap``, and the conversion is attributes, the direct-map step,
    RMPUPDATE, the after step and the guest's PVALIDATE.

    - ``directmap_policy``, ``host_fault_policy``: the host's policies
      (:mod:`kit.host.policies`) the scheme runs with;
    - ``in_place``: the guest's page is one frame, converted in place (the 2021 designs);
      False: private memory is a guest_memfd frame, and KVM's host writes reach a separate
      shared frame (upstream);
    - ``guards_maps``: the map call promises the page stays shared while mapped (its maps are
      *guarded*: the invariants "no RMP #PF on a mapped page" and "no RMPUPDATE to private
      while mapped" hold it to that promise); a plain ``kmap`` promises nothing, the fault
      handler answers instead;
    - ``counter``: the name of a tracking counter in :meth:`primitives` (None: none), held to
      "tracking counter equals live maps".
    """

    scenarios = ("host-write-vs-conversion",)
    directmap_policy = "invalidate-4k"
    host_fault_policy = "oops"
    in_place = True
    guards_maps = False
    counter: str | None = None

    # ---------------------------------------------------------------- KVM's host writes
    def map_gfn(self, w):
        """``handle = yield from scheme.map_gfn(w)``: ``kvm_vcpu_map()`` of the guest's page;
        the handle is ``(pfn, token)``, or None when the map is refused (-EBUSY)."""
        yield T.kmap(w, w.shared_pfn, guarded=self.guards_maps, label=f"kvm_vcpu_map: gfn {w.gfn:#x} -> kmap")
        return (w.shared_pfn, None)

    def unmap_gfn(self, w, handle):
        """``yield from scheme.unmap_gfn(w, handle)``: ``kvm_vcpu_unmap()``."""
        yield T.kunmap(w, handle[0], guarded=self.guards_maps, label="kvm_vcpu_unmap: kunmap")

    # ---------------------------------------------------------------- the conversion
    def before_rmpupdate(self, w):
        """``ok = yield from scheme.before_rmpupdate(w)``: the scheme's synchronisation before
        the direct-map step; False refuses the page-state change (the guest may retry)."""
        return True
        yield  # a generator

    def after_rmpupdate(self, w, rc: int):
        """``yield from scheme.after_rmpupdate(w, rc)``: after the RMPUPDATE's after step (or
        its failure, ``rc``)."""
        return
        yield  # a generator

    def convert(self, w):
        """The guest's page-state change to private and KVM's path
        (arch/x86/kvm/svm/sev.c ``snp_handle_page_state_change`` in the Part2 series): the
        attributes, :meth:`before_rmpupdate` (retried ``w.psc_retries`` times when it refuses),
        the three steps of ``rmpupdate()``, :meth:`after_rmpupdate`, then the guest's
        PVALIDATE (arch/x86/coco/sev/core.c: page-state change, then PVALIDATE)."""
        yield T.set_attributes_step(w, True)
        for _ in range(w.psc_retries + 1):
            if (yield from self.before_rmpupdate(w)):
                break
        else:
            return False
        rc = yield from T.rmpupdate_steps(w, w.pfn, private=True)
        yield from self.after_rmpupdate(w, rc)
        if rc:
            return False
        yield T.pvalidate_step(w)
        return True


class Srcu(ConversionScheme):
    """SRCU around KVM's host maps, ``synchronize_srcu_expedited`` in the conversion path: the
    reviewed patch ("[PATCH Part2 v5 39/45] KVM: SVM: Introduce ops for the post gfn map and
    unmap", B. Singh, August 2021): ``sev_post_map_gfn`` takes ``srcu_read_lock(&psc_srcu)`` and
    refuses a page the RMP has private; ``sev_post_unmap_gfn`` drops it; the page-state change
    waits for a grace period, then runs RMPUPDATE. The review (S. Christopherson, 2021-10-13):
    "SRCU isn't protecting anything. The synchronize_srcu_expedited() in the PSC code forces it
    to wait for existing maps to go away, but it doesn't prevent new maps from being created
    while the actual RMP updates are in-flight." Direct map as in v5: private pages unmapped."""

    name = "srcu"
    description = "SRCU read section around kvm_vcpu_map, synchronize_srcu_expedited before the RMPUPDATE (Part2 v5)"
    guards_maps = True

    def primitives(self):
        return {"psc_srcu": SrcuPrimitive("kvm->psc_srcu")}

    def map_gfn(self, w):
        srcu = w.p["psc_srcu"]
        token = yield srcu.read_lock()
        if (yield T.lookup_rmpentry(w, w.shared_pfn, "post_map_gfn: snp_lookup_rmpentry")):
            yield srcu.read_unlock(token)
            return None
        yield T.kmap(w, w.shared_pfn, guarded=True, label=f"kvm_vcpu_map: gfn {w.gfn:#x} -> kmap")
        return (w.shared_pfn, token)

    def unmap_gfn(self, w, handle):
        yield T.kunmap(w, handle[0], guarded=True, label="kvm_vcpu_unmap: kunmap")
        yield w.p["psc_srcu"].read_unlock(handle[1])

    def before_rmpupdate(self, w):
        yield from w.p["psc_srcu"].synchronize(expedited=True)
        return True


class HostWriteTrack(ConversionScheme):
    """Per-gfn tracking of KVM's host maps, lockless: B. Singh's earlier proposal recalled in
    the Part2 v5 39/45 thread (2021-10-15): ``kvm_vcpu_map()`` checks that the page is not
    private and increments ``host_write_track[gfn]``; ``kvm_vcpu_unmap()`` decrements it; a
    page-state change that finds it non-zero returns and lets the guest retry. The review
    (S. Christopherson): "it doesn't hold a lock when updating host_write_track, e.g. the count
    can be corrupted if writers collide, and nothing blocks writers on in-progress readers."
    The increment is a load and a store (a plain ``++`` on shared memory)."""

    name = "host_write_track"
    description = "per-gfn host_write_track counter, incremented and checked without a lock"
    guards_maps = True
    counter = "host_write_track"

    def primitives(self):
        return {"host_write_track": Counter("host_write_track[gfn]")}

    def track_store(self, w, value: int, delta: int, pfn: int) -> Step:
        """The store of the tracking counter, which registers (``delta`` +1) or drops (-1) the
        map: the tracker's view of a live map changes with it."""
        counter = w.p[self.counter]

        def act(thread):
            counter.value = value
            w.b.tracked += delta
            T.add_map(w, pfn, delta, True)
        what = "kmap" if delta > 0 else "kunmap"
        return Step(f"store {counter.name} = {value} ({what})", writes=(counter.key, T.maps_key(pfn)), action=act)

    def track(self, w, pfn: int, delta: int):
        counter = w.p[self.counter]
        value = yield counter.load()
        yield self.track_store(w, value + delta, delta, pfn)

    def map_gfn(self, w):
        if (yield T.lookup_rmpentry(w, w.shared_pfn, "kvm_vcpu_map: snp_lookup_rmpentry")):
            return None
        yield from self.track(w, w.shared_pfn, +1)
        return (w.shared_pfn, None)

    def unmap_gfn(self, w, handle):
        yield from self.track(w, handle[0], -1)

    def before_rmpupdate(self, w):
        return (yield w.p[self.counter].load()) == 0


class HostWriteTrackLocked(HostWriteTrack):
    """:class:`HostWriteTrack` with the check and the counter updates under one lock, and the
    page-state change's check and RMPUPDATE under it too: the scheme "that blocks PSC while KVM
    is reading" the reviewer was not opposed to (Part2 v5 39/45 thread, 2021-10-15)."""

    name = "host_write_track_locked"
    description = "host_write_track with the map's check and count, and the PSC's check and RMPUPDATE, under one lock"

    def primitives(self):
        return {**super().primitives(), "track_lock": Lock("kvm->host_write_track_lock")}

    def map_gfn(self, w):
        lock = w.p["track_lock"]
        yield lock.acquire()
        handle = yield from super().map_gfn(w)
        yield lock.release()
        return handle

    def unmap_gfn(self, w, handle):
        lock = w.p["track_lock"]
        yield lock.acquire()
        yield from super().unmap_gfn(w, handle)
        yield lock.release()

    def before_rmpupdate(self, w):
        lock = w.p["track_lock"]
        yield lock.acquire()
        if (yield w.p[self.counter].load()) == 0:
            return True
        yield lock.release()
        return False

    def after_rmpupdate(self, w, rc):
        yield w.p["track_lock"].release()


class FlipBackUnmap(ConversionScheme):
    """No tracking: on a host #PF on a page the RMP has private, the handler makes it shared
    again (the guest finds its Validated bit cleared), with private pages unmapped from the
    direct map, as the Part2 series did from v5 (M. Roth, 2021-10-15, in the Part2 v5 39/45
    thread). Two threads faulting on the same page (CASE1) cannot be told from a kernel bug
    that broke the direct map (CASE2): "we have to take the pessimistic approach due to CASE2,
    which means that if CASE1 pops up, we'll still have a case where guest can cause a
    crash/loop." Host policies: ``invalidate-4k`` and ``auto-convert``."""

    name = "flip_back_unmap"
    description = "host #PF handler flips a private page back to shared; private pages unmapped from the direct map"
    directmap_policy = "invalidate-4k"
    host_fault_policy = "auto-convert"


class FlipBackSplit(FlipBackUnmap):
    """:class:`FlipBackUnmap` with the direct map split instead of unmapped (the approach "as of
    v4"), so every host fault on a private page carries X86_PF_RMP: "then we can limit the #PF
    handling to only have to deal with cases where there's an RMP violation and X86_PF_RMP is
    set, which makes it safe to retry to handle spurious cases like case #1" (M. Roth, same
    message). Host policies: ``split-on-demand`` and ``auto-convert``."""

    name = "flip_back_split"
    description = "host #PF handler flips a private page back to shared; the direct map split, so faults carry X86_PF_RMP"
    directmap_policy = "split-on-demand"


class Upstream(ConversionScheme):
    """What was merged: private memory only in guest_memfd, never mapped by the host; KVM's
    host writes (``kvm_vcpu_map`` through the memslot's userspace address) reach the shared
    frame, a different page. A conversion is the VMM's ``KVM_SET_MEMORY_ATTRIBUTES``, which
    invalidates and zaps under ``mmu_lock`` (``mmu_invalidate_begin``/``end``); the private
    fault takes the folio under the file's invalidate lock and prepares it (``sev_gmem_prepare``:
    RMPUPDATE), then maps it unless an invalidation ran (``mmu_invalidate_retry_gfn``);
    punching a hole takes the invalidate lock too (virt/kvm/guest_memfd.c
    ``kvm_gmem_punch_hole``). Host policies: ``split-on-demand`` (``adjust_direct_map``,
    arch/x86/virt/svm/sev.c) and ``oops``."""

    name = "upstream"
    description = "private memory only in guest_memfd; conversions invalidate and zap under mmu_lock and the invalidate lock"
    directmap_policy = "split-on-demand"
    in_place = False
    guards_maps = True

    def primitives(self):
        return {"mmu_lock": Lock("kvm->mmu_lock"), "invalidate_lock": Lock("filemap_invalidate_lock")}

    def convert(self, w):
        """The guest's request exits to the VMM, which sets the attribute; the guest's
        PVALIDATE then faults the page in privately (:func:`kit.explore.threads.kvm_private_fault`)
        and runs."""
        if (yield from T.vmm_set_memory_attributes(w, True)):
            return False
        pfn = yield from T.kvm_private_fault(w)
        if pfn is None:
            return False
        yield T.pvalidate_step(w, pfn)
        return True


# ===================================================================== mirror schemes
class MirrorScheme(Scheme):
    """A design for ``KVM_CAP_VM_COPY_ENC_CONTEXT_FROM`` / ``MOVE``: :meth:`copy` and
    :meth:`move` make VM ``dst`` a mirror of (or the new owner of) ``src``'s context; each
    returns 0 or a negative errno. Every VM has its ``kvm->lock`` (``w.p[name + "->lock"]``)."""

    scenarios = ("mirror-setup",)
    has_move = True

    def copy(self, w, dst: str, src: str):
        raise ValueError(f"{self.name}: no COPY path")
        yield  # a generator

    def move(self, w, dst: str, src: str):
        raise ValueError(f"{self.name}: no MOVE path")
        yield  # a generator


class Mirror2021(MirrorScheme):
    """The 2021 proposal as reviewed ("[RFC] KVM: x86: Support KVM VMs sharing SEV context", N.
    Tempelman, February 2021: ``svm_vm_copy_asid_to``, the ioctl issued on the owner with the
    mirror's fd): the owner must be an SEV guest (checked unlocked), then under the owner's
    ``kvm->lock`` it must not be a mirror, and the mirror must not be the owner nor a mirror
    itself - "This is_mirroring_enc_context() check needs to be after mirror_kvm->lock is
    acquired, else there's a TOCTOU race." (S. Christopherson, 2021-02-24); then the owner's
    lock is dropped, the mirror's taken, and the mirror set up. As posted it neither checks
    that the mirror is not already an SEV guest nor its vCPUs ("Feels like that flow and this one
    should check kvm->created_vcpus"). It has no MOVE (``has_move`` False)."""

    name = "mirror-2021"
    description = "RFC 2021: 'already a mirror?' checked on the mirror before taking its lock (TOCTOU); no vCPU check"
    has_move = False

    def copy(self, w, dst, src):
        lsrc, ldst = w.p[f"{src}->lock"], w.p[f"{dst}->lock"]

        def owner_is_sev():
            w.vms[src].check_alive()
            if not w.vms[src].sev_active:
                return -errno.ENOTTY
        rc = yield T.ioctl_step(w, f"{src}: sev_guest({src})?", owner_is_sev, reads=(T.vm_key(src),))
        if rc:
            return rc
        yield lsrc.acquire()
        rc = yield T.ioctl_step(w, f"{src}: is_mirroring_enc_context({src})?",
                                lambda: -errno.ENOTTY if w.vms[src].mirror_of is not None else 0,
                                reads=(T.vm_key(src),))
        if not rc:
            rc = yield T.ioctl_step(w, f"{src}: {dst} == {src} || is_mirroring_enc_context({dst})? ({dst} not locked)",
                                    lambda: -errno.ENOTTY if (dst == src or w.vms[dst].mirror_of is not None) else 0,
                                    reads=(T.vm_key(dst),))
        yield lsrc.release()
        if rc:
            return rc
        yield ldst.acquire()
        yield T.mirror_set_step(w, dst, src, move=False)
        yield ldst.release()
        return 0


class MirrorMerged(MirrorScheme):
    """The merged ordering (arch/x86/kvm/svm/sev.c ``sev_vm_copy_enc_context_from``,
    ``sev_vm_move_enc_context_from``): ``sev_lock_two_vms`` first - each VM's
    ``migration_in_progress`` taken with ``atomic_cmpxchg_acquire`` (-EBUSY if either is
    taken: "Bail if these VMs are already involved in a migration to avoid deadlock between
    two VMs trying to migrate to/from each other"), then the destination's and the source's
    ``kvm->lock`` - and only then the checks (:func:`kit.kvm.sev.copy_enc_context_check`:
    the destination not SEV and without vCPUs, the source SEV and not a mirror), the change,
    and ``sev_unlock_two_vms``."""

    name = "mirror-merged"
    description = "sev_lock_two_vms (migration_in_progress, both kvm->lock), then the checks, then the change"

    def cmpxchg(self, w, name: str, *, ioctl_vm: str | None = None) -> Step:
        """``atomic_cmpxchg_acquire(&sev->migration_in_progress, 0, 1)``: True when taken.
        The first one also stands for ``kvm_vm_ioctl``'s check that the VM is alive (EIO)."""
        def act(thread):
            if ioctl_vm is not None and w.vms[ioctl_vm].dead:
                return -errno.EIO
            vm = w.vms[name]
            if vm.migration_in_progress:
                return False
            vm.migration_in_progress = True
            return True
        keys = (T.mip_key(name),) + ((T.vm_key(ioctl_vm),) if ioctl_vm else ())
        return Step(f"atomic_cmpxchg {name}.migration_in_progress 0 -> 1", reads=keys, writes=(T.mip_key(name),),
                    action=act)

    def release_mip(self, w, name: str) -> Step:
        def act(thread):
            w.vms[name].migration_in_progress = False
        return Step(f"atomic_set_release {name}.migration_in_progress = 0", writes=(T.mip_key(name),), action=act)

    def lock_two_vms(self, w, dst, src):
        """``rc = yield from scheme.lock_two_vms(w, dst, src)``: ``sev_lock_two_vms``."""
        if dst == src:
            return -errno.EINVAL
        ok = yield self.cmpxchg(w, dst, ioctl_vm=dst)
        if ok is not True:
            return -errno.EBUSY if ok is False else ok
        if not (yield self.cmpxchg(w, src)):
            yield self.release_mip(w, dst)
            return -errno.EBUSY
        yield w.p[f"{dst}->lock"].acquire()
        yield w.p[f"{src}->lock"].acquire()
        return 0

    def unlock_two_vms(self, w, dst, src):
        """``sev_unlock_two_vms``."""
        yield w.p[f"{dst}->lock"].release()
        yield w.p[f"{src}->lock"].release()
        yield self.release_mip(w, dst)
        yield self.release_mip(w, src)

    def _ioctl(self, w, dst, src, *, move: bool):
        rc = yield from self.lock_two_vms(w, dst, src)
        if rc:
            return rc
        check = kvm_sev.move_enc_context_check if move else kvm_sev.copy_enc_context_check
        rc = yield T.ioctl_step(w, f"{dst} <- {src}: checks", lambda: check(w.vms[dst], w.vms[src]),
                                reads=(T.vm_key(dst), T.vm_key(src), T.vcpus_key(dst), T.vcpus_key(src)))
        if not rc:
            yield T.mirror_set_step(w, dst, src, move=move)
        yield from self.unlock_two_vms(w, dst, src)
        return rc

    def copy(self, w, dst, src):
        return (yield from self._ioctl(w, dst, src, move=False))

    def move(self, w, dst, src):
        return (yield from self._ioctl(w, dst, src, move=True))


BUILTIN_SCHEMES = (Srcu, HostWriteTrack, HostWriteTrackLocked, FlipBackUnmap, FlipBackSplit, Upstream,
                   Mirror2021, MirrorMerged)


def as_scheme(scheme) -> Scheme:
    """A scheme instance from an instance or a :class:`Scheme` subclass (a name is looked up
    by :func:`kit.explore.catalog.explore_named`)."""
    if isinstance(scheme, Scheme):
        return scheme
    if isinstance(scheme, type) and issubclass(scheme, Scheme):
        return scheme()
    raise TypeError(f"scheme: expected a Scheme subclass or instance, got {scheme!r}")
