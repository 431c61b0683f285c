"""Probes of the KVM model as userspace sees it: what one ioctl returned, what ``KVM_RUN``
handed back, where a guest's private access ends up, which state each ASID is in.

Notebooks and tests call these to turn the model's answers into names a kernel engineer reads
(errno names, exit reasons, ``-KVM_E*`` hypercall returns); the rules themselves stay in the
model.
"""
from __future__ import annotations

from ..errors import KvmError, VmmCommunicationException, errno_name
from ..host import Host
from ..units import PAGE_2M, PAGE_SHIFT, check_bool, check_int
from . import Kvm
from . import uapi as U
from .limits import MAX_SEV_ASID
from .mmu import KVM_MAP_GPA_RANGE_ENCRYPTED
from .vmm import Vmm

#: exit reasons the model produces (``KVM_EXIT_*``, include/uapi/linux/kvm.h)
EXIT_REASONS = {U.KVM_EXIT_HYPERCALL: "KVM_EXIT_HYPERCALL", U.KVM_EXIT_MEMORY_FAULT: "KVM_EXIT_MEMORY_FAULT",
                U.KVM_EXIT_MMIO: "KVM_EXIT_MMIO", U.KVM_EXIT_SYSTEM_EVENT: "KVM_EXIT_SYSTEM_EVENT"}
#: ``kvm_run.system_event.type`` values the model produces
SYSTEM_EVENTS = {U.KVM_SYSTEM_EVENT_SEV_TERM: "KVM_SYSTEM_EVENT_SEV_TERM"}
#: a hypercall's return value in the guest's RAX (include/uapi/linux/kvm_para.h ``KVM_E*``,
#: negated by ``____kvm_emulate_hypercall``)
HYPERCALL_RETURNS = {-U.KVM_ENOSYS: "-KVM_ENOSYS", -U.KVM_EPERM: "-KVM_EPERM", -U.KVM_EINVAL: "-KVM_EINVAL", 0: "0"}


def ioctl(fn, *args, **kw) -> str:
    """One call into the model: ``"0"`` if it succeeds, else the name of the errno it fails
    with (``KvmError``, an ``OSError`` with the kernel's errno)."""
    try:
        fn(*args, **kw)
        return "0"
    except KvmError as e:
        return errno_name(e.errno)


def hypercall_return(ret: int):
    """A hypercall's return value by name (``-KVM_EINVAL``), or the number if it has none."""
    return HYPERCALL_RETURNS.get(ret, ret)


def exit_info(ex, *, plain: bool = False):
    """What ``KVM_RUN`` handed to userspace, with names (``struct kvm_run``).

    ``None`` when the access completed in KVM; a hypercall the guest got an answer to (an
    ``int`` in its RAX) by :func:`hypercall_return`; else a dict: ``reason``, then how
    ``KVM_RUN`` returned (``"0"``, or ``"-1/EFAULT"`` for ``KVM_EXIT_MEMORY_FAULT``:
    ``kvm_mmu_prepare_memory_fault_exit``, arch/x86/kvm/mmu/mmu_internal.h) under ``KVM_RUN``
    and the memory fault's ``flags`` (``"PRIVATE"`` or ``"0"``); with ``plain`` the errno's
    name alone under ``errno`` and the PRIVATE flag as a bool under ``private``. A memory
    fault adds ``gpa`` (hex) and ``size``; a hypercall exit ``nr`` and ``args`` (hex); a system
    event its ``type`` by name and ``data`` (hex: for SEV_TERM the guest's GHCB MSR)."""
    if ex is None:
        return None
    if isinstance(ex, int):
        return hypercall_return(ex)
    out = {"reason": EXIT_REASONS[ex.reason]}
    if plain:
        out["errno"] = errno_name(ex.errno) if ex.errno else "0"
    else:
        out["KVM_RUN"] = "-1/" + errno_name(ex.errno) if ex.errno else "0"
    if ex.memory_fault:
        private = bool(ex.memory_fault.flags & U.KVM_MEMORY_EXIT_FLAG_PRIVATE)
        out.update(gpa=hex(ex.memory_fault.gpa), size=ex.memory_fault.size)
        if plain:
            out["private"] = private
        else:
            out["flags"] = "PRIVATE" if private else "0"
    if ex.hypercall:
        out.update(nr=ex.hypercall.nr, args=[hex(a) for a in ex.hypercall.args])
    if ex.system_event:
        kind, data = ex.system_event
        out.update(type=SYSTEM_EVENTS.get(kind, kind), data=hex(data))
    return out


def vc_outcome(e: VmmCommunicationException) -> str:
    """A #VC the guest got, as an outcome: ``"#VC (<why>)"``."""
    return f"#VC ({e.detail})" if e.detail else "#VC"


def access_outcome(vmm, vcpu, gpa: int, *, private: bool | None = True) -> tuple[list, str]:
    """:meth:`kit.kvm.vmm.Vmm.access` (the VMM answering every exit of one guest access) and how
    the access ended: ``(exits answered, outcome)``, the outcome ``completed``, ``#VC (...)``
    when the hardware's check of the private access fails (an SNP page not validated,
    :meth:`kit.kvm.mmu.Vcpu.access`), ``stuck (EFAULT)`` or the errno the VMM met."""
    first = len(vmm.log)
    try:
        vmm.access(vcpu, gpa, private=private)
        outcome = "completed"
    except VmmCommunicationException as e:
        outcome = vc_outcome(e)
    except KvmError as e:
        outcome = errno_name(e.errno)
        outcome = f"stuck ({outcome})" if "stuck" in e.detail else outcome
    return vmm.log[first:], outcome


# ------------------------------------------------------------------ conversions
#: VM types with private memory, by the names notebooks take as parameters
CONVERSION_VM_TYPES = {"sw-protected": U.KVM_X86_SW_PROTECTED_VM, "snp": U.KVM_X86_SNP_VM}
#: the conversion set-up: one memslot, slot 10 as in
#: tools/testing/selftests/kvm/x86/private_mem_conversions_test.c, of two 2M pages at GPA
#: 0xc0000000; shared accesses use the VMM's memory at ``CONVERSION_UADDR``
CONVERSION_SLOT, CONVERSION_GPA, CONVERSION_SIZE, CONVERSION_UADDR = 10, 0xC0000000, 2 * PAGE_2M, 1 << 30
BACKINGS = ("guest_memfd", "anonymous")
#: what the guest does: asks first (``KVM_HC_MAP_GPA_RANGE``), or just touches the page
GUEST_BEHAVIOURS = ("asks first", "just touches")


def conversion_vm(vm_type="sw-protected", *, owner: str = "userspace", npf: str = "exit",
                  backing: str = "guest_memfd", exit_hypercall: bool = True, max_exits: int = 8):
    """A VM of ``vm_type`` (a :data:`CONVERSION_VM_TYPES` name or a ``KVM_X86_*`` number) on a
    small host, with the conversion memslot backed by a guest_memfd (``KVM_MEM_GUEST_MEMFD``)
    or by anonymous memory only. On a userspace-owned VM the VMM enables
    ``KVM_CAP_EXIT_HYPERCALL`` for ``KVM_HC_MAP_GPA_RANGE`` (unless ``exit_hypercall`` is false);
    on a guest-owned one KVM handles the hypercall itself. Returns (vm, vCPU 0, a
    :class:`~kit.kvm.vmm.Vmm` answering up to ``max_exits`` exits per access)."""
    if isinstance(vm_type, str):
        if vm_type not in CONVERSION_VM_TYPES:
            raise ValueError(f"vm_type: unknown {vm_type!r}; allowed: {', '.join(CONVERSION_VM_TYPES)} "
                             "(or a KVM_X86_* number)")
        vm_type = CONVERSION_VM_TYPES[vm_type]
    elif isinstance(vm_type, bool) or not isinstance(vm_type, int) or vm_type not in U.VM_TYPE_NAMES:
        raise ValueError(f"vm_type: expected one of {', '.join(CONVERSION_VM_TYPES)} or a KVM_X86_* number, "
                         f"got {vm_type!r}")
    if backing not in BACKINGS:
        raise ValueError(f"backing: unknown {backing!r}; allowed: {', '.join(BACKINGS)}")
    exit_hypercall = check_bool(exit_hypercall, "exit_hypercall")
    vm = Kvm(Host(mem="2GiB", cores=4)).create_vm(vm_type, attribute_owner=owner, npf_policy=npf)
    if vm_type == U.KVM_X86_SNP_VM:
        vm.sev_init()
    if backing == "guest_memfd":
        vm.set_user_memory_region2(CONVERSION_SLOT, U.KVM_MEM_GUEST_MEMFD, CONVERSION_GPA, CONVERSION_SIZE,
                                   CONVERSION_UADDR, 0, vm.create_guest_memfd(CONVERSION_SIZE))
    else:
        vm.set_user_memory_region2(CONVERSION_SLOT, 0, CONVERSION_GPA, CONVERSION_SIZE, CONVERSION_UADDR)
    if owner == "userspace" and exit_hypercall:
        vm.enable_cap(U.KVM_CAP_EXIT_HYPERCALL, 1 << U.KVM_HC_MAP_GPA_RANGE)
    return vm, vm.create_vcpu(0), Vmm(vm, max_exits=max_exits)


def conversion_outcome(vm_type="sw-protected", *, owner: str = "userspace", npf: str = "exit",
                       backing: str = "guest_memfd", guest: str = "asks first", pages: int = 1,
                       max_exits: int = 8, validate=None) -> dict:
    """Where one private access of a guest ends up, on a fresh :func:`conversion_vm`.

    A guest that asks first makes the ``KVM_HC_MAP_GPA_RANGE`` hypercall for ``pages`` pages
    (the VMM answers the exit), then accesses privately if the hypercall succeeded and shared
    if it was refused; a guest that just touches the page accesses privately. The VMM answers
    every exit (``kvm_convert_memory``). ``validate(vcpu, gpa, pages)``, if given, is what the
    guest does after a successful request (e.g. :func:`kit.kvm.snp.guest_validate`: an SNP
    guest PVALIDATEs the pages). Outcome: ``completed`` (``(shared)`` when refused),
    ``#VC (...)`` when the private access fails the hardware's RMP check (SNP: a page never
    validated), the errno the VMM met (``EPERM``: it may not set the attribute), or
    ``stuck (EFAULT)`` when the access still exits after ``max_exits`` answers; with the exits
    to userspace, ``KVM_SET_MEMORY_ATTRIBUTES`` ioctls and conversions KVM made itself."""
    if guest not in GUEST_BEHAVIOURS:
        raise ValueError(f"guest: unknown {guest!r}; allowed: {', '.join(GUEST_BEHAVIOURS)}")
    pages = check_int(pages, "pages", 0, U.U64)          # the hypercall's npages register
    vm, vcpu, vmm = conversion_vm(vm_type, owner=owner, npf=npf, backing=backing, max_exits=max_exits)
    private = True
    if guest == "asks first":
        r = vcpu.hypercall(U.KVM_HC_MAP_GPA_RANGE, CONVERSION_GPA, pages, KVM_MAP_GPA_RANGE_ENCRYPTED)
        if not isinstance(r, int):
            r = vmm.handle(r)
        private = r == 0
        if private and validate is not None:
            validate(vcpu, CONVERSION_GPA, pages)
    _, outcome = access_outcome(vmm, vcpu, CONVERSION_GPA, private=private)
    if outcome == "completed" and not private:
        outcome += " (shared)"
    exits = [EXIT_REASONS[x.reason] for x in vmm.log]          # every exit the VMM answered
    return {"owner": owner, "npf_policy": npf, "backing": backing, "guest": guest, "outcome": outcome,
            "exits": len(exits), "exit reasons": sorted(set(exits)), "ioctls": vmm.ioctls,
            "kvm_conversions": len(vm.kvm_conversions)}


def outcome_matrix(vm_type="sw-protected", *, owners=("userspace", "guest"), npf_policies=("exit", "auto-convert"),
                   pages: int = 1, max_exits: int = 8, validate=None) -> list[dict]:
    """:func:`conversion_outcome` for every attribute owner x #NPF policy x backing x guest
    behaviour: who converts, and where each combination gets stuck."""
    return [conversion_outcome(vm_type, owner=owner, npf=npf, backing=backing, guest=guest, pages=pages,
                               max_exits=max_exits, validate=validate)
            for owner in owners for npf in npf_policies for backing in BACKINGS for guest in GUEST_BEHAVIOURS]


def gfn(gpa: int) -> int:
    """The frame number of a guest physical address (``gpa_to_gfn``)."""
    return check_int(gpa, "gpa", 0, U.U64) >> PAGE_SHIFT


# ------------------------------------------------------------------ ASIDs
ASID_STATES = ("in use", "to reclaim", "leaked", "free")


def asid_states(kvm, last: int | None = None) -> dict[int, str]:
    """The state of each ASID ``1..last`` (default ``max_sev_asid``), as arch/x86/kvm/svm/sev.c
    keeps them: ``in use`` (``sev_asid_new``), ``to reclaim`` (freed by ``sev_asid_free`` into
    the reclaim bitmap; free again after the next ``__sev_recycle_asids`` flush), ``leaked``
    (``sev_vm_destroy`` returns without freeing it when ``snp_decommission_context`` fails), or
    ``free``."""
    last = kvm.max_sev_asid if last is None else check_int(last, "last", 0, MAX_SEV_ASID.max)

    def state(a: int) -> str:
        if a in kvm.leaked_asids:
            return "leaked"
        if a in kvm.asids.used:
            return "in use"
        return "to reclaim" if a in kvm.asids.reclaim else "free"
    return {a: state(a) for a in range(1, last + 1)}


def asid_kvm(min_sev_asid: int, max_sev_asid: int, *, cores: int, mem: str = "2GiB", **kw):
    """``/dev/kvm`` on a fresh host of ``cores`` CPUs with these CPUID 0x8000001F ASID values
    (``min_sev_asid``: EDX, ``max_sev_asid``: ECX); ``kw`` as :class:`~kit.kvm.Kvm` takes them."""
    return Kvm(Host(mem=mem, cores=cores), min_sev_asid=min_sev_asid, max_sev_asid=max_sev_asid, **kw)
