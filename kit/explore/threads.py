"""The thread library: the kernel's, the guest's and the VMM's code paths as generators of steps
on the kit's model.

Each function here is a thread (or a part of one, used with ``yield from``) that yields a
:class:`~kit.explore.Step` wherever another thread could observe it: a lock, an SRCU
section, a counter load or store, a direct-map change, an RMPUPDATE or PVALIDATE, a host access
through a mapping, one part of an ioctl. Every step calls the model (:class:`kit.host.Host`,
:class:`kit.kvm.vm.VM`, :mod:`kit.kvm.sev`, :class:`kit.kvm.gmem.GuestMemfd`); the model's state
is what the threads share. The threads follow the engine's rule (docs/explore.md): what a step
reads or changes happens in its action, and a thread's body decides only from what its steps
returned. Actions reach the model through the world object ``w`` when they run (``w.host``,
``w.vm``), never through a reference a thread kept, so that a restored snapshot is what the
next step sees.

``w`` is a world of :mod:`kit.explore.scenarios`: the model objects, fixed facts (``gfn``,
``gpa``, ``pfn``: the guest's private frame, ``shared_pfn``: the frame KVM's host writes reach,
``asid``), the primitives of the scheme (``w.p``) and ``w.b``, the bookkeeping the invariants
read (live maps, faults, oopses). Schemes (:mod:`kit.explore.schemes`) supply the steps where
the kernel's code differs between designs; the threads call their hooks.

Sources: the races of "[PATCH Part2 v5 39/45] KVM: SVM: Introduce ops for the post gfn map and
unmap" (linux-kernel / kvm lists, B. Singh, S. Christopherson, M. Roth, October 2021), the
direct-map review of "[PATCH v1 11/26] x86/sev: Invalidate pages from the direct map when
adding them to the RMP table" (Message-ID 20231230161954.569267-12-michael.roth@amd.com), and
"[RFC] KVM: x86: Support KVM VMs sharing SEV context" (N. Tempelman, S. Christopherson, 2021).

Footprint keys (what two steps must not both touch to commute): ``("rmp", region)`` and
``("dm", region)`` for the RMP and the direct map of a 2M region, ``("maps", pfn)`` for the
host's live maps of a frame, ``("attrs", gfn)``, ``("spte", gfn)``, ``("gmem", index)``,
``GUEST`` (the guest's belief), ``BUG``, ``SEQ`` (``mmu_invalidate_seq`` and
``mmu_invalidate_in_progress``), and for the mirror ioctls ``("vm", name)``, ``("mip", name)``
(``migration_in_progress``) and ``("vcpus", name)``.
"""
from __future__ import annotations

import errno

from ..errors import HostOops, KvmError, NestedPageFault
from ..kvm import sev as kvm_sev
from ..kvm import uapi as U
from ..kvm.mmu import MAP_PRIVATE
from ..units import PAGE_4K, PAGES_PER_2M
from .step import Step

GUEST = ("guest",)
BUG = ("kernel-bug",)
SEQ = ("mmu_invalidate_seq",)


def rmp_key(pfn: int) -> tuple:
    return ("rmp", pfn // PAGES_PER_2M)


def dm_key(pfn: int) -> tuple:
    return ("dm", pfn // PAGES_PER_2M)


def maps_key(pfn: int) -> tuple:
    return ("maps", pfn)


def attrs_key(gfn: int) -> tuple:
    return ("attrs", gfn)


def spte_key(gfn: int) -> tuple:
    return ("spte", gfn)


def gmem_key(index: int) -> tuple:
    return ("gmem", index)


def _errno(exc: OSError) -> int:
    return -(exc.errno or errno.EIO)


# ===================================================================== host maps and accesses
def add_map(w, pfn: int, delta: int, guarded: bool) -> None:
    """Bookkeeping of the host's live maps of ``pfn``: (guarded, plain) counts. A map is
    *guarded* when the scheme's map call promised the page stays shared while it is mapped
    (``post_map_gfn`` in the reviewed patch); a plain ``kmap`` promises nothing."""
    g, p = w.b.maps.get(pfn, (0, 0))
    w.b.maps = {**w.b.maps, pfn: (g + delta, p) if guarded else (g, p + delta)}


def kmap(w, pfn: int, *, guarded: bool, label: str | None = None) -> Step:
    """``kmap``/``kvm_vcpu_map`` of a frame (on x86-64 an address in the direct map): a live
    host map of ``pfn`` from now on."""
    def act(thread):
        add_map(w, pfn, +1, guarded)
    return Step(label or f"kmap pfn {pfn:#x}", writes=(maps_key(pfn),), action=act)


def kunmap(w, pfn: int, *, guarded: bool, label: str | None = None) -> Step:
    """``kunmap``/``kvm_vcpu_unmap``: the map of ``pfn`` is gone."""
    def act(thread):
        add_map(w, pfn, -1, guarded)
    return Step(label or f"kunmap pfn {pfn:#x}", writes=(maps_key(pfn),), action=act)


def lookup_rmpentry(w, pfn: int, label: str | None = None) -> Step:
    """``snp_lookup_rmpentry(pfn)`` (arch/x86/virt/svm/sev.c): returns whether the frame is
    assigned (private) in the RMP now."""
    return Step(label or f"snp_lookup_rmpentry pfn {pfn:#x}", reads=(rmp_key(pfn),),
                action=lambda thread: bool(w.host.snp_lookup_rmpentry(pfn)[0]))


def write_step(w, pfn: int) -> Step:
    """The host's write to ``pfn`` through the direct map: the hardware checks it now
    (:meth:`kit.host.Host.raise_fault`) and returns the #PF it raises, or None. Bookkeeping: a
    fault while a guarded map of the page is live, and a fault on a page assigned to the guest
    (the host touched the guest's private page, which the flip-back proposal treats as the
    host's bug: the guest is told by its Validated bit). A not-present fault after the
    kernel-bug thread ran is that bug's, not the map's."""
    def act(thread):
        fault = w.host.raise_fault(pfn, 1, write=True)
        if fault is not None:
            if w.b.maps.get(pfn, (0, 0))[0] > 0 and (fault.kind == "rmp" or not w.b.bug_ran):
                w.b.guarded_faults += 1
            if fault.entry.assigned and fault.entry.asid == w.asid:
                w.b.touched_private = True
        return fault
    return Step(f"host write pfn {pfn:#x}", reads=(rmp_key(pfn), dm_key(pfn), maps_key(pfn), BUG), action=act)


def handler_step(w, fault) -> Step:
    """The host #PF handler (``exc_page_fault`` -> the host fault policy), run in the faulting
    thread's context as a step of its own: it reads the RMP and the direct map when it runs
    (:meth:`kit.host.Host.handle_fault`), which may be after another thread's handler fixed
    the page (CASE1 of the Part2 v5 39/45 thread). Returns ``"retry"`` or ``"oops"``; an oops
    is recorded, as *excused* when the kernel-bug thread had run before it."""
    def act(thread):
        try:
            w.host.handle_fault(fault)
        except HostOops:
            w.b.oopsed = w.b.oopsed | {thread}
            if not w.b.bug_ran:
                w.b.unexcused_oops = True
            return "oops"
        return "retry"
    pfn = fault.pfn
    return Step(f"#PF handler pfn {pfn:#x} ({fault.kind})", reads=(BUG,),
                writes=(rmp_key(pfn), dm_key(pfn)), action=act)


def host_write(w, pfn: int):
    """``done = yield from host_write(w, pfn)``: a host write that completes, or faults and
    has the handler run, then retries; False when the host died (oops) or the access faulted
    ``w.max_faults`` times without completing (recorded: the livelock invariant). The
    retry loop is ``Host.write``'s, with the fault and the handler as separate steps."""
    faults = 0
    while True:
        fault = yield write_step(w, pfn)
        if fault is None:
            return True
        if (yield handler_step(w, fault)) == "oops":
            return False
        faults += 1
        if faults >= w.max_faults:
            def give_up(thread):
                w.b.livelocked = w.b.livelocked | {thread}
            yield Step(f"host write pfn {pfn:#x}: {faults} faults, not done", action=give_up)
            return False


def kvm_host_writer(w, scheme, writes: int = 1):
    """A KVM host writer: ``kvm_vcpu_map()`` (virt/kvm/kvm_main.c: gfn -> pfn, then ``kmap``;
    the scheme's ``map_gfn`` adds its check or tracking, as ``post_map_gfn`` did in
    "[PATCH Part2 v5 39/45]"), a write to the page, ``kvm_vcpu_unmap()`` (the scheme's
    ``unmap_gfn``), ``writes`` times. A map the scheme refuses (-EBUSY: the page is private) is
    skipped. The thread ends when the host dies or the write does not complete."""
    for _ in range(writes):
        handle = yield from scheme.map_gfn(w)
        if handle is None:
            continue
        if not (yield from host_write(w, handle[0])):
            return
        yield from scheme.unmap_gfn(w, handle)


def kernel_bug(w):
    """CASE2 of the Part2 v5 39/45 thread: "broken kernel breaks directmap/init-mm, not related
    to SEV": the page KVM writes is dropped from the direct map
    (``set_direct_map_invalid_noflush``), and the next write to it is a not-present #PF on a
    page that is not private."""
    pfn = w.shared_pfn

    def act(thread):
        w.host.directmap.set_direct_map_invalid_noflush(pfn)
        w.b.bug_ran = True
    yield Step(f"kernel bug: set_direct_map_invalid_noflush pfn {pfn:#x}", writes=(dm_key(pfn), BUG), action=act)


# ===================================================================== the conversion
def set_attributes_step(w, private: bool) -> Step:
    """KVM's ``kvm_vm_set_mem_attributes`` for the guest's page (the conversion's first step:
    the page is private from KVM's point of view; the NPT mappings of the old kind are zapped)."""
    value = U.KVM_MEMORY_ATTRIBUTE_PRIVATE if private else 0

    def act(thread):
        return w.vm.kvm_vm_set_mem_attributes(w.gpa, PAGE_4K, value)
    return Step(f"set attributes gfn {w.gfn:#x} {'private' if private else 'shared'}",
                writes=(attrs_key(w.gfn), spte_key(w.gfn)), action=act)


def rmpupdate_steps(w, pfn: int, *, private: bool):
    """``rc = yield from rmpupdate_steps(w, pfn, private=...)``: ``rmp_make_private`` /
    ``rmp_make_shared`` as the three steps of ``rmpupdate()`` (arch/x86/virt/svm/sev.c): the
    direct-map step (``adjust_direct_map``: the host's policy splits or unmaps), the
    RMPUPDATE, and the after step (``restore_direct_map`` of a page made shared). The
    RMPUPDATE to private notes whether a guarded host map of the frame was live (the
    invariant "no RMPUPDATE to private while mapped"). Returns 0 or a negative errno."""
    how = "private" if private else "shared"
    keys = (rmp_key(pfn), dm_key(pfn))

    def pre(thread):
        return w.host.rmpupdate_pre(pfn, PAGE_4K, assigned=private)

    def insn(thread):
        if private and w.b.maps.get(pfn, (0, 0))[0] > 0:
            w.b.update_while_mapped = True
        if private:
            return w.host.rmpupdate_insn(pfn, PAGE_4K, assigned=True, asid=w.asid, gpa=w.gpa)
        return w.host.rmpupdate_insn(pfn, PAGE_4K, assigned=False)

    def post(thread):
        w.host.rmpupdate_post(pfn, PAGE_4K, assigned=private)

    rc = yield Step(f"direct-map step ({w.dm_policy_name}) pfn {pfn:#x}", reads=keys, writes=(dm_key(pfn),),
                    action=pre)
    if rc:
        return rc
    rc = yield Step(f"RMPUPDATE pfn {pfn:#x} -> {how}", reads=(maps_key(pfn),), writes=(rmp_key(pfn),),
                    action=insn)
    if rc:
        return rc
    yield Step(f"after RMPUPDATE pfn {pfn:#x}", reads=keys, writes=(dm_key(pfn),), action=post)
    return 0


def pvalidate_step(w, pfn: int | None = None) -> Step:
    """The guest's ``PVALIDATE`` (validate=1) of its page, 4K, after the page-state change to
    private (arch/x86/coco/sev/core.c ``__set_pages_state`` then ``pvalidate_pages``): on the
    frame the NPT maps there (:meth:`kit.host.rmp.Rmp.pvalidate`). Returns its code, or
    ``"#NPF"`` when the entry is not the guest's (the page was made shared again). On success
    the guest believes the page validated. ``pfn``: the frame the NPT maps (default: the
    guest's private frame)."""
    pfn = w.pfn if pfn is None else pfn

    def act(thread):
        try:
            rc = w.host.rmp.pvalidate(pfn, pagesize=PAGE_4K, validate=True, asid=w.asid, gpa=w.gpa)
        except NestedPageFault:
            return "#NPF"
        if rc == 0:
            w.b.guest_validated = True
        return rc
    return Step(f"guest PVALIDATE gpa {w.gpa:#x}", reads=(rmp_key(pfn),), writes=(rmp_key(pfn), GUEST), action=act)


def guest_conversion(w, scheme):
    """The guest's page-state change of its page to private and KVM's conversion path: the
    scheme's :meth:`~kit.explore.schemes.ConversionScheme.convert` (attributes, the scheme's
    synchronisation, the direct-map step, RMPUPDATE, the after step, then the guest's
    PVALIDATE)."""
    yield from scheme.convert(w)


# ===================================================================== guest_memfd (upstream)
def invalidate_begin_step(w) -> Step:
    """``kvm_mmu_invalidate_begin`` (virt/kvm/kvm_main.c), under ``mmu_lock``:
    ``mmu_invalidate_in_progress++``."""
    def act(thread):
        w.b.inval_in_progress += 1
    return Step("mmu_invalidate_begin", writes=(SEQ,), action=act)


def invalidate_end_step(w) -> Step:
    """``kvm_mmu_invalidate_end``, under ``mmu_lock``: ``mmu_invalidate_seq++``,
    ``mmu_invalidate_in_progress--``."""
    def act(thread):
        w.b.inval_seq += 1
        w.b.inval_in_progress -= 1
    return Step("mmu_invalidate_end", writes=(SEQ,), action=act)


def vmm_set_memory_attributes(w, private: bool = True):
    """The VMM's ``KVM_SET_MEMORY_ATTRIBUTES`` for the guest's page, after the guest's request
    exited to it (virt/kvm/kvm_main.c ``kvm_vm_set_mem_attributes``): the invalidation begins
    under ``mmu_lock``, the old mappings are zapped and the attribute stored
    (:meth:`kit.kvm.vm.VM.kvm_vm_set_mem_attributes`), the invalidation ends under
    ``mmu_lock``. Returns 0 or a negative errno."""
    mmu = w.p["mmu_lock"]
    yield mmu.acquire()
    yield invalidate_begin_step(w)
    yield mmu.release()
    value = U.KVM_MEMORY_ATTRIBUTE_PRIVATE if private else 0

    def act(thread):
        try:
            return w.vm.set_memory_attributes(w.gpa, PAGE_4K, value)
        except KvmError as e:
            return _errno(e)
    rc = yield Step(f"KVM_SET_MEMORY_ATTRIBUTES gfn {w.gfn:#x} {'private' if private else 'shared'}",
                    writes=(attrs_key(w.gfn), spte_key(w.gfn)), action=act)
    yield mmu.acquire()
    yield invalidate_end_step(w)
    yield mmu.release()
    return rc


def kvm_private_fault(w):
    """KVM's private #NPF on the guest's page with guest_memfd (arch/x86/kvm/mmu/mmu.c
    ``kvm_mmu_faultin_pfn_gmem``, virt/kvm/guest_memfd.c ``kvm_gmem_get_pfn``): note
    ``mmu_invalidate_seq``; under the file's invalidate lock get the folio and prepare it once
    (``sev_gmem_prepare``: RMPUPDATE to private, as the three steps of ``rmpupdate()``); then
    under ``mmu_lock`` map it unless an invalidation ran meanwhile
    (``mmu_invalidate_retry_gfn``), else start again. The frame mapped is recorded
    (``w.b.spte_pfn``) for the invariant that no NPT mapping outlives its folio. Returns the
    frame mapped, or None when the fault cannot complete (the attribute is not private: the
    fault exits to userspace)."""
    inval, mmu = w.p["invalidate_lock"], w.p["mmu_lock"]
    while True:
        seq = yield Step("fault->mmu_seq = mmu_invalidate_seq", reads=(SEQ,), action=lambda t: w.b.inval_seq)
        yield inval.acquire()

        def get_pfn(thread):
            try:
                pfn, _ = w.gmem.get_pfn(w.index)
            except KvmError as e:
                return _errno(e)
            if pfn != w.pfn:   # the steps' footprints name the frame's 2M region
                raise RuntimeError(f"guest_memfd gave pfn {pfn:#x}, not the guest's frame {w.pfn:#x}")
            return pfn
        pfn = yield Step(f"kvm_gmem_get_pfn index {w.index}", writes=(gmem_key(w.index),), action=get_pfn)
        if pfn < 0:
            yield inval.release()
            return None
        prepared = yield Step("folio prepared?", reads=(gmem_key(w.index),),
                              action=lambda t: bool(w.gmem.prepared.get(w.index)))
        if not prepared:
            assigned = yield lookup_rmpentry(w, pfn, "sev_gmem_prepare: snp_lookup_rmpentry")
            if not assigned:
                yield from rmpupdate_steps(w, pfn, private=True)

            def mark(thread):
                w.gmem.prepared.set(w.index, w.index + 1, 1)
            yield Step("kvm_gmem_mark_prepared", writes=(gmem_key(w.index),), action=mark)
        yield inval.release()
        yield mmu.acquire()

        def install(thread, seq=seq, pfn=pfn):
            if w.b.inval_in_progress or w.b.inval_seq != seq:
                return "retry"
            if not w.vm.memory_attributes(w.gfn) & U.KVM_MEMORY_ATTRIBUTE_PRIVATE:
                return "exit"
            w.vm.sptes.set(w.gfn, w.gfn + 1, MAP_PRIVATE)
            w.b.spte_pfn = pfn
            return "mapped"
        out = yield Step(f"map gfn {w.gfn:#x} unless mmu_invalidate_retry_gfn",
                         reads=(SEQ, attrs_key(w.gfn)), writes=(spte_key(w.gfn),), action=install)
        yield mmu.release()
        if out != "retry":
            return pfn if out == "mapped" else None


def gmem_punch_hole(w):
    """The VMM's ``fallocate(FALLOC_FL_PUNCH_HOLE)`` of the guest's page in guest_memfd
    (virt/kvm/guest_memfd.c ``kvm_gmem_punch_hole``): under the file's invalidate lock,
    ``kvm_gmem_invalidate_begin`` (``mmu_lock``, the invalidation begins, the private mappings
    zapped), the folio truncated (``kvm_gmem_free_folio`` -> ``sev_gmem_invalidate``: the frame
    is made shared and goes back to the host), ``kvm_gmem_invalidate_end``. A page the guest
    still has private when it is punched is recorded: the VMM discarded the guest's memory."""
    inval, mmu = w.p["invalidate_lock"], w.p["mmu_lock"]
    yield inval.acquire()
    yield mmu.acquire()
    yield invalidate_begin_step(w)

    def zap(thread):
        w.vm.zap_gfn_range(w.gfn, w.gfn + 1, "private")
        if w.vm.sptes.get(w.gfn) == 0:
            w.b.spte_pfn = None
    yield Step(f"kvm_gmem_invalidate_begin: zap gfn {w.gfn:#x}", writes=(spte_key(w.gfn),), action=zap)
    yield mmu.release()

    def truncate(thread):
        if w.vm.memory_attributes(w.gfn) & U.KVM_MEMORY_ATTRIBUTE_PRIVATE:
            w.b.vmm_discarded = True
        w.gmem.free_folios(w.index, w.index + 1)
        w.gmem.allocated.set(w.index, w.index + 1, 0)
    pfn = w.pfn
    yield Step(f"truncate index {w.index}: sev_gmem_invalidate, free pfn {pfn:#x}",
               reads=(attrs_key(w.gfn),), writes=(gmem_key(w.index), rmp_key(pfn), dm_key(pfn)), action=truncate)
    yield mmu.acquire()
    yield invalidate_end_step(w)
    yield mmu.release()
    yield inval.release()


# ===================================================================== mirror ioctls
def vm_key(name: str) -> tuple:
    return ("vm", name)


def mip_key(name: str) -> tuple:
    return ("mip", name)


def vcpus_key(name: str) -> tuple:
    return ("vcpus", name)


def ioctl_step(w, label: str, fn, *, reads=(), writes=()) -> Step:
    """A step of an ioctl: ``fn()`` on the model; a :class:`~kit.errors.KvmError` it raises is
    the ioctl's negative errno (returned), as the kernel returns it."""
    def act(thread):
        try:
            out = fn()
        except KvmError as e:
            return _errno(e)
        return 0 if out is None else out
    return Step(label, reads=reads, writes=writes, action=act)


def create_vcpu(w, name: str, vcpu_id: int = 0):
    """``KVM_CREATE_VCPU`` on VM ``name`` (virt/kvm/kvm_main.c ``kvm_vm_ioctl_create_vcpu``):
    under ``kvm->lock`` ``created_vcpus++`` (:meth:`kit.kvm.vm.VM.vcpu_precreate`); without it
    the arch's creation (:meth:`~kit.kvm.vm.VM.vcpu_arch_create`, which reads the VM's SEV state
    as it is then); under ``kvm->lock`` again the vCPU is installed
    (:meth:`~kit.kvm.vm.VM.vcpu_install`). Returns 0 or a negative errno."""
    lock = w.p[f"{name}->lock"]

    def precreate():
        w.vms[name].vcpu_precreate()
    yield lock.acquire()
    rc = yield ioctl_step(w, f"{name}: created_vcpus++", precreate, reads=(vm_key(name),), writes=(vcpus_key(name),))
    yield lock.release()
    if rc:
        return rc

    def arch_create():
        w.pending[(name, vcpu_id)] = w.vms[name].vcpu_arch_create(vcpu_id)
    yield ioctl_step(w, f"{name}: kvm_arch_vcpu_create {vcpu_id}", arch_create, reads=(vm_key(name),),
                     writes=(("pending", name),))
    yield lock.acquire()

    def install():
        w.vms[name].vcpu_install(w.pending.pop((name, vcpu_id)))
    rc = yield ioctl_step(w, f"{name}: install vCPU {vcpu_id}", install,
                          writes=(vcpus_key(name), ("pending", name)))
    yield lock.release()
    return rc


def mirror_set_step(w, dst: str, src: str, *, move: bool) -> Step:
    """The change of a copy (:func:`kit.kvm.sev.copy_enc_context_set`) or a move
    (:func:`kit.kvm.sev.move_enc_context_set`) of ``src``'s context into ``dst``, whatever
    checks ran before it; a destination that had vCPUs when it became a mirror is recorded."""
    def act():
        d, s = w.vms[dst], w.vms[src]
        if move:
            kvm_sev.move_enc_context_set(d, s)
        else:
            if d.created_vcpus:
                w.b.mirrored_with_vcpus = w.b.mirrored_with_vcpus | {dst}
            kvm_sev.copy_enc_context_set(d, s)
    what = "sev_migrate_from" if move else "enc_context_owner, asid, active"
    return ioctl_step(w, f"{dst} <- {src}: {what}", act, reads=(vcpus_key(dst),),
                      writes=(vm_key(dst), vm_key(src)))


def copy_enc_context(w, scheme, dst: str, src: str):
    """``KVM_CAP_VM_COPY_ENC_CONTEXT_FROM``: ``dst`` becomes a mirror of ``src`` in the
    scheme's order of locks and checks (:meth:`~kit.explore.schemes.MirrorScheme.copy`)."""
    return (yield from scheme.copy(w, dst, src))


def move_enc_context(w, scheme, dst: str, src: str):
    """``KVM_CAP_VM_MOVE_ENC_CONTEXT_FROM``: ``dst`` takes ``src``'s context
    (:meth:`~kit.explore.schemes.MirrorScheme.move`)."""
    return (yield from scheme.move(w, dst, src))


__all__ = ["GUEST", "BUG", "SEQ", "rmp_key", "dm_key", "maps_key", "attrs_key", "spte_key", "gmem_key",
           "vm_key", "mip_key", "vcpus_key", "add_map", "kmap", "kunmap", "lookup_rmpentry", "write_step",
           "handler_step", "host_write", "kvm_host_writer", "kernel_bug", "set_attributes_step",
           "rmpupdate_steps", "pvalidate_step", "guest_conversion", "vmm_set_memory_attributes",
           "kvm_private_fault", "gmem_punch_hole", "ioctl_step", "create_vcpu", "mirror_set_step",
           "copy_enc_context", "move_enc_context"]
