"""SEV: per-VM state, ASIDs, encryption-context mirroring and migration, and the SEV members of
the arch-ops table (arch/x86/kvm/svm/sev.c, arch/x86/kvm/svm/svm.h).

- Per-VM state: :class:`SevInfo`, as ``struct kvm_sev_info`` (``vm.sev``).
- Ranges (``sev_hardware_setup``): SEV uses [min_sev_asid, max_sev_asid], SEV-ES and SNP use
  [1, min_sev_asid - 1]; ASID 0 is the host.
- ``sev_asid_new``: min > max -> -ENOTTY; a full range triggers ``__sev_recycle_asids`` once
  (WBINVD on every CPU, then DF_FLUSH / SNP_DF_FLUSH, under ``sev_deactivate_lock``), then
  -EBUSY. ``sev_asid_free`` only marks the ASID for reclaim.
- ``sev_vm_copy_enc_context_from`` / ``sev_vm_move_enc_context_from``: their checks and errnos
  in the kernel's order (``sev_lock_two_vms`` first), including the 2026 patch rejecting SNP
  sources ("[PATCH v3 1/4] KVM: SEV: Do not allow intra-host migration/mirroring of SNP VMs",
  A. Patra; named parameter ``Kvm.block_snp_mirror``). Mirroring as first proposed and
  reviewed: thread "[RFC] KVM: x86: Support KVM VMs sharing SEV context" (2021). A move from
  a mirror makes the destination a mirror of the same owner (``sev_migrate_from``).
- ASIDs are not reference counted: a mirror keeps its owner (and so the ASID) alive, and only
  a VM that is not a mirror frees the ASID when it goes (``sev_vm_destroy``).
- ``sev_mem_enc_ioctl``'s common checks (:func:`sev_mem_enc_check`): a mirror may only issue
  LAUNCH_UPDATE_VMSA, GUEST_STATUS, DBG_DECRYPT and DBG_ENCRYPT; an SNP VM only SNP commands.
  ``KVM_MEMORY_ENCRYPT_REG_REGION`` / ``UNREG_REGION`` (``sev_mem_enc_register_region``,
  ``sev_mem_enc_unregister_region``): the regions a VMM pins for the guest.
- :class:`SevX86Ops`: the table SEV and SEV-ES VMs get (``svm_x86_ops``' SEV members);
  :mod:`kit.kvm.snp` extends it for SNP VMs and :mod:`kit.kvm.svm` installs both.
- The GHCB MSR protocol of SEV-ES guests (``sev_handle_vmgexit_msr_protocol``): a termination
  request is ``KVM_EXIT_SYSTEM_EVENT`` / ``KVM_SYSTEM_EVENT_SEV_TERM``.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass, field

from ..errors import KvmError
from ..units import check_int
from . import uapi as U
from .ghcb import (GHCB_ERR_MISSING_INPUT, GHCB_HV_RESP_MALFORMED_INPUT, GHCB_MSR_INFO_MASK,
                   GHCB_MSR_PSC_REQ, GHCB_MSR_TERM_REQ, ghcb_msr_term_reason)
from .injection import injected
from .limits import MAX_SEV_ASID
from .uapi import check_field
from .x86_ops import KvmX86Ops

SEV_TYPES = (U.KVM_X86_SEV_VM, U.KVM_X86_SEV_ES_VM, U.KVM_X86_SNP_VM)


@dataclass(eq=False)
class SevInfo:
    """``struct kvm_sev_info`` (arch/x86/kvm/svm/svm.h), the fields the model uses; ``vm.sev``.

    ``active``/``es_active``/``snp_active``: ``sev_guest()``, ``sev_es_guest()``,
    ``sev_snp_guest()`` (set by ``KVM_SEV_INIT2``, or copied by mirroring);
    ``enc_context_owner``: the VM whose context a mirror shares (``vm.mirror_of``);
    ``mirror_vms``: the VMs mirroring this one (``vm.mirrors``); ``regions_list``: (addr, size)
    of the registered regions (``vm.enc_regions``); ``migration_in_progress``: held by
    ``sev_lock_two_vms``. SNP launch state (the firmware's, kept here): ``snp_launched`` after
    SNP_LAUNCH_FINISH and ``launch_pages``, the pfns SNP_LAUNCH_UPDATE measured."""

    active: bool = False
    es_active: bool = False
    snp_active: bool = False
    asid: int = 0
    enc_context_owner: object = None
    mirror_vms: list = field(default_factory=list)
    regions_list: list = field(default_factory=list)
    migration_in_progress: bool = False
    snp_launched: bool = False
    launch_pages: list = field(default_factory=list)


class AsidSpace:
    """The ASID bitmaps of one host (``sev_asid_bitmap``, ``sev_reclaim_asid_bitmap``), set up
    by :func:`sev_hardware_setup` as ``kvm.asids``."""

    def __init__(self, kvm, min_sev_asid: int, max_sev_asid: int):
        self.kvm = kvm
        self.min_sev_asid, self.max_sev_asid = min_sev_asid, max_sev_asid
        self.used: set[int] = set()
        self.reclaim: set[int] = set()
        self.leaked: set[int] = set()        # never freed: SNP_DECOMMISSION failed
        self.recycles = 0

    def range_for(self, vm_type: int) -> tuple[int, int]:
        if isinstance(vm_type, bool) or vm_type not in SEV_TYPES:
            raise ValueError(f"vm_type: an SEV VM type ({', '.join(U.VM_TYPE_NAMES[t] for t in SEV_TYPES)}), "
                             f"got {vm_type!r}")
        if vm_type == U.KVM_X86_SEV_VM:
            return self.min_sev_asid, self.max_sev_asid
        return 1, self.min_sev_asid - 1

    def alloc(self, vm_type: int) -> int:
        """``sev_asid_new``."""
        lo, hi = self.range_for(vm_type)
        if lo > hi:
            raise KvmError(errno.ENOTTY, f"no ASIDs for this VM type (range [{lo}, {hi}])")
        for attempt in (0, 1):
            for asid in range(lo, hi + 1):
                if asid not in self.used and asid not in self.reclaim:
                    self.used.add(asid)
                    return asid
            if attempt == 0 and not self._recycle(lo, hi):
                break
        raise KvmError(errno.EBUSY, f"all ASIDs in [{lo}, {hi}] are in use")

    def _recycle(self, lo: int, hi: int) -> bool:
        """``__sev_recycle_asids``: flush (WBINVD on all CPUs + DF_FLUSH) and make reclaimable
        ASIDs free again; False when there was nothing to reclaim in the range."""
        if not any(lo <= a <= hi for a in self.reclaim):
            return False
        self.kvm.host.ledger.record("sev_flush_asids", wbinvd=self.kvm.host.cores, df_flush=1)
        self.reclaim.clear()
        self.recycles += 1
        return True

    def free(self, asid: int) -> None:
        """``sev_asid_free``: only marks the ASID for reclaim."""
        asid = check_int(asid, "asid", 1, MAX_SEV_ASID.max)
        self.used.discard(asid)
        self.reclaim.add(asid)


def sev_hardware_setup(kvm) -> None:
    """``sev_hardware_setup``: the host's ASID space from CPUID 0x8000001F (``kvm.min_sev_asid``,
    ``kvm.max_sev_asid``)."""
    kvm.asids = AsidSpace(kvm, kvm.min_sev_asid, kvm.max_sev_asid)


# is_cmd_allowed_from_mirror (arch/x86/kvm/svm/sev.c)
MIRROR_COMMANDS = frozenset({U.KVM_SEV_LAUNCH_UPDATE_VMSA, U.KVM_SEV_GUEST_STATUS,
                             U.KVM_SEV_DBG_DECRYPT, U.KVM_SEV_DBG_ENCRYPT})


def sev_mem_enc_check(vm, cmd: int) -> None:
    """The checks ``sev_mem_enc_ioctl`` makes before dispatching sub-command ``cmd``, in its
    order: an unknown command -> EINVAL (the switch's default; checked here first, which
    no errno distinguishes); a mirror issuing anything but :data:`MIRROR_COMMANDS` -> EINVAL
    ("only the enc_context_owner handles some memory enc operations"); an SNP VM issuing a
    command below ``KVM_SEV_SNP_LAUNCH_START`` -> EPERM."""
    vm.check_alive()
    if cmd not in U.SEV_CMD_NAMES:
        raise KvmError(errno.EINVAL, f"unknown KVM_MEMORY_ENCRYPT_OP command {cmd}")
    if vm.mirror_of is not None and cmd not in MIRROR_COMMANDS:
        raise KvmError(errno.EINVAL, f"{U.SEV_CMD_NAMES[cmd]} is not allowed from a mirror VM")
    if vm.type == U.KVM_X86_SNP_VM and vm.sev_active and cmd < U.KVM_SEV_SNP_LAUNCH_START:
        raise KvmError(errno.EPERM, f"{U.SEV_CMD_NAMES[cmd]} is not allowed on an SNP VM")


def _context_owner(vm) -> None:
    """The first checks of both region ioctls: not an SEV guest -> ENOTTY; a mirror -> EINVAL
    (``is_mirroring_enc_context``: the mirror is not responsible for the context)."""
    if not vm.sev_active:
        raise KvmError(errno.ENOTTY, "not an SEV guest")
    if vm.mirror_of is not None:
        raise KvmError(errno.EINVAL, "a mirror VM has no encrypted regions of its own")


def register_region(vm, addr: int, size: int) -> int:
    """``KVM_MEMORY_ENCRYPT_REG_REGION`` (``sev_mem_enc_register_region``): not an SEV VM ->
    ENOTTY; a mirror -> EINVAL (it is not responsible for the context); ``sev_pin_memory``:
    size 0 or a range that wraps -> EINVAL. The region (the VMM's pages pinned for the guest)
    is added to the VM's list. Pinning itself is not modelled (the VMM's memory is not host
    frames of the model)."""
    addr, size = check_field(addr, "addr"), check_field(size, "size")
    _context_owner(vm)
    if size == 0 or addr + size > 1 << 64:
        raise KvmError(errno.EINVAL, "size 0 or a range that wraps")
    vm.sev.regions_list.append((addr, size))
    return 0


def unregister_region(vm, addr: int, size: int) -> int:
    """``KVM_MEMORY_ENCRYPT_UNREG_REGION`` (``sev_mem_enc_unregister_region``): not an SEV VM
    -> ENOTTY; a mirror -> EINVAL; no region with exactly this address and size
    (``find_enc_region``) -> EINVAL."""
    addr, size = check_field(addr, "addr"), check_field(size, "size")
    _context_owner(vm)
    if (addr, size) not in vm.sev.regions_list:
        raise KvmError(errno.EINVAL, f"no registered region at {addr:#x} of {size:#x} bytes")
    vm.sev.regions_list.remove((addr, size))
    return 0


def sev_init(vm) -> int:
    """``KVM_SEV_INIT2``-like: the ioctl's common checks (a mirror -> EINVAL), then only
    SEV/SEV-ES/SNP VMs (EINVAL otherwise), once (EINVAL), and before vCPUs exist (EINVAL);
    allocates the ASID."""
    sev_mem_enc_check(vm, U.KVM_SEV_INIT2)
    if vm.type not in SEV_TYPES or vm.sev_active:
        raise KvmError(errno.EINVAL, "not an SEV VM type, or already initialised")
    if vm.created_vcpus:               # kvm->created_vcpus
        raise KvmError(errno.EINVAL, "vCPUs already created")
    sev = vm.sev
    sev.asid = vm.kvm.asids.alloc(vm.type)
    sev.active = True
    sev.es_active = vm.type in (U.KVM_X86_SEV_ES_VM, U.KVM_X86_SNP_VM)
    sev.snp_active = vm.type == U.KVM_X86_SNP_VM
    return 0


def _lock_two_vms(dst, src) -> None:
    """``sev_lock_two_vms``: the same VM twice -> EINVAL; a migration in progress -> EBUSY."""
    if dst is src:
        raise KvmError(errno.EINVAL, "source and destination are the same VM")
    if dst.migration_in_progress or src.migration_in_progress:
        raise KvmError(errno.EBUSY, "a migration is in progress")


def _sev_of(vm) -> SevInfo:
    """The SEV state of a VM that takes an encryption context: a VM created without SEV ops
    (a default VM as a mirror's destination) gets SEV state and, from then on, the Kvm's SEV
    table, as ``sev_guest()`` turns true for it in the kernel."""
    if vm.sev is None:
        vm.sev = SevInfo()
        vm.x86_ops = vm.kvm.x86_ops[U.KVM_X86_SEV_VM]
    return vm.sev


def copy_enc_context_from(dst, src) -> int:
    """``KVM_CAP_VM_COPY_ENC_CONTEXT_FROM`` (``sev_vm_copy_enc_context_from``; a source that is
    not a VM is EBADF in :meth:`kit.kvm.vm.VM.enable_cap`): the lock checks; then EINVAL if the
    destination is already SEV, the source is not SEV, the source is itself a mirror, the
    destination has vCPUs, or (2026 patch) the source is SNP. The mirror shares the source's
    ASID (and its ``es_active``) and holds a reference on it. The checks and the change are
    :func:`copy_enc_context_check` and :func:`copy_enc_context_set`, which the kernel runs
    with both VMs locked (``sev_lock_two_vms``)."""
    _lock_two_vms(dst, src)
    copy_enc_context_check(dst, src)
    copy_enc_context_set(dst, src)
    return 0


def copy_enc_context_check(dst, src) -> None:
    """The checks of ``sev_vm_copy_enc_context_from`` after ``sev_lock_two_vms``: EINVAL if the
    destination is already SEV, the source is not SEV, the source is itself a mirror
    (``is_mirroring_enc_context``), the destination has vCPUs (``kvm->created_vcpus``), or
    (2026 patch) the source is SNP. Changes nothing."""
    if dst.sev_active or not src.sev_active or src.mirror_of is not None or dst.created_vcpus:
        raise KvmError(errno.EINVAL, "mirror rules: dst not SEV, src SEV and not a mirror, dst without vCPUs")
    if dst.kvm.block_snp_mirror and src.type == U.KVM_X86_SNP_VM:
        raise KvmError(errno.EINVAL, "SNP state cannot be mirrored")


def copy_enc_context_set(dst, src) -> None:
    """What ``sev_vm_copy_enc_context_from`` changes once its checks passed, whatever they
    were: ``kvm_get_kvm(source)``, the destination on the source's ``mirror_vms``, and the
    mirror's ``enc_context_owner``, ``asid``, ``active`` and ``es_active`` from the source as
    they are now."""
    mirror = _sev_of(dst)
    mirror.asid, mirror.active, mirror.es_active = src.sev.asid, True, src.sev.es_active
    mirror.enc_context_owner = src
    src.sev.mirror_vms.append(dst)


def move_enc_context_from(dst, src) -> int:
    """``KVM_CAP_VM_MOVE_ENC_CONTEXT_FROM`` (``sev_vm_move_enc_context_from``; not a VM ->
    EBADF in :meth:`kit.kvm.vm.VM.enable_cap`): lock checks; EINVAL for different VM types, an
    SEV destination or a non-SEV source, (2026 patch) an SNP source; for an SEV-ES source
    (``sev_es_guest``) the vCPU counts must match and every source VMSA be protected
    (``sev_check_source_vcpus``). Then ``sev_migrate_from`` and ``kvm_vm_dead`` on the source
    (its ioctls fail with EIO from then on): :func:`move_enc_context_check` and
    :func:`move_enc_context_set`, run by the kernel with both VMs locked."""
    _lock_two_vms(dst, src)
    move_enc_context_check(dst, src)
    move_enc_context_set(dst, src)
    return 0


def move_enc_context_check(dst, src) -> None:
    """The checks of ``sev_vm_move_enc_context_from`` after ``sev_lock_two_vms`` (see
    :func:`move_enc_context_from`). Changes nothing."""
    if dst.type != src.type or dst.sev_active or not src.sev_active:
        raise KvmError(errno.EINVAL, "same VM type, non-SEV destination, SEV source required")
    if dst.kvm.block_snp_mirror and src.type == U.KVM_X86_SNP_VM:
        raise KvmError(errno.EINVAL, "SNP state cannot be moved")
    if src.sev.es_active:
        if len(dst.vcpus) != len(src.vcpus) or not all(v.vmsa_protected for v in src.vcpus.values()):
            raise KvmError(errno.EINVAL, "SEV-ES: vCPU counts differ or a VMSA is not protected")


def move_enc_context_set(dst, src) -> None:
    """What ``sev_vm_move_enc_context_from`` changes once its checks passed:
    :func:`sev_migrate_from`, then ``kvm_vm_dead`` on the source."""
    sev_migrate_from(dst, src)
    src.dead = True


def sev_migrate_from(dst, src) -> None:
    """``sev_migrate_from`` (arch/x86/kvm/svm/sev.c): the destination takes the source's
    context (``active``, ``asid``, ``enc_context_owner``, ``es_active``; here also the model's
    ``snp_active``), its registered regions and its mirrors (each mirror's owner becomes the
    destination); the source's fields are cleared. A source that is itself a mirror leaves its
    owner's ``mirror_vms`` and the destination joins it at the tail (``list_del`` +
    ``list_add_tail``): the destination is a mirror of the same owner, sharing the owner's
    ASID, and the owner's reference carries over. The selftest ``test_sev_move_copy``
    (tools/testing/selftests/kvm/x86/sev_migrate_tests.c) moves mirrors this way."""
    d, s = _sev_of(dst), src.sev
    d.asid, d.active, d.es_active, d.snp_active = s.asid, True, s.es_active, s.snp_active
    d.enc_context_owner = s.enc_context_owner
    d.regions_list, s.regions_list = s.regions_list, []
    d.mirror_vms, s.mirror_vms = s.mirror_vms, []
    for m in d.mirror_vms:
        m.sev.enc_context_owner = dst
    if d.enc_context_owner is not None:             # is_mirroring_enc_context(dst)
        owner = d.enc_context_owner.sev
        owner.mirror_vms.remove(src)
        owner.mirror_vms.append(dst)
    s.asid, s.active, s.es_active, s.snp_active, s.enc_context_owner = 0, False, False, False, None


def sev_vm_destroy(vm) -> None:
    """``sev_vm_destroy``: not an SEV guest (never initialised, or the source of a move) ->
    nothing. A mirror only unlinks itself from its owner's list and drops its reference: it
    never frees the ASID it shares. Otherwise (SNP: after ``snp_decommission_context``; if
    that fails the ASID leaks) the ASID is freed for reclaim (``sev_asid_free``). An owner with
    live mirrors is kept alive by their references (``kvm_get_kvm``) and freed with the last."""
    sev = vm.sev
    if sev is None or not sev.active:
        return
    if sev.enc_context_owner is not None:
        src, sev.enc_context_owner = sev.enc_context_owner, None
        src.sev.mirror_vms.remove(vm)
        if src.dead and not src.sev.mirror_vms:
            sev_vm_destroy(src)
        sev.active = False
        return
    if sev.mirror_vms:
        return                      # the mirrors' kvm_get_kvm references keep the context
    if vm.type == U.KVM_X86_SNP_VM and injected(vm, "snp_decommission_fails"):
        vm.kvm.asids.leaked.add(sev.asid)
    else:
        vm.kvm.asids.free(sev.asid)
    sev.active = False


class SevX86Ops(KvmX86Ops):
    """The arch ops of SEV and SEV-ES VMs: the SEV members of ``svm_x86_ops``
    (arch/x86/kvm/svm/svm.c). Memory hooks stay generic (no RMP); :class:`kit.kvm.snp.SnpX86Ops`
    adds SNP's."""

    def vm_init(self, vm) -> None:
        """``svm_vm_init`` for an SEV type: SEV state; protected state for SEV-ES and SNP;
        private memory for SNP; ``KVM_PRE_FAULT_MEMORY`` allowed unless the VM has private
        memory (``pre_fault_allowed = !has_private_mem``: an SNP VM gets it at
        ``snp_launch_finish``)."""
        vm.sev = SevInfo()
        vm.has_protected_state = vm.type in (U.KVM_X86_SEV_ES_VM, U.KVM_X86_SNP_VM)
        vm.has_private_mem = vm.type == U.KVM_X86_SNP_VM
        vm.pre_fault_allowed = not vm.has_private_mem

    def vm_destroy(self, vm) -> None:
        """``svm_vm_destroy`` -> :func:`sev_vm_destroy`."""
        sev_vm_destroy(vm)

    def mem_enc_ioctl(self, vm, cmd: int) -> int:
        """``sev_mem_enc_ioctl``: ``KVM_SEV_INIT2`` is :func:`sev_init`; other commands get the
        common checks only (:func:`sev_mem_enc_check`) and return 0."""
        if cmd == U.KVM_SEV_INIT2:
            return sev_init(vm)
        sev_mem_enc_check(vm, cmd)
        return 0

    def mem_enc_register_region(self, vm, addr: int, size: int) -> int:
        return register_region(vm, addr, size)

    def mem_enc_unregister_region(self, vm, addr: int, size: int) -> int:
        return unregister_region(vm, addr, size)

    def vm_copy_enc_context_from(self, dst, src) -> int:
        return copy_enc_context_from(dst, src)

    def vm_move_enc_context_from(self, dst, src) -> int:
        return move_enc_context_from(dst, src)

    def vmgexit_msr(self, vcpu, msr: int):
        """``sev_handle_vmgexit_msr_protocol`` (:func:`sev_handle_vmgexit_msr_protocol`)."""
        return sev_handle_vmgexit_msr_protocol(vcpu, msr)

    def vmgexit_psc(self, vcpu, desc):
        """``SVM_VMGEXIT_PSC`` from an SEV-ES guest: ``sev_es_validate_vmgexit`` accepts it
        only from an SNP guest, so the request is malformed (``svm_vmgexit_bad_input``:
        sw_exit_info_1 = 2, sw_exit_info_2 = ``GHCB_ERR_MISSING_INPUT``) and the guest
        resumes. :class:`kit.kvm.snp.SnpX86Ops` handles it for SNP guests."""
        _check_ghcb(vcpu)
        vcpu.psc_result = (GHCB_HV_RESP_MALFORMED_INPUT, GHCB_ERR_MISSING_INPUT)
        return None


def _check_ghcb(vcpu) -> None:
    """Only SEV-ES and SNP guests have a GHCB; an SEV guest's VMGEXIT is a plain VMMCALL."""
    if not vcpu.vm.has_protected_state:
        raise ValueError("VMGEXIT: this VM is not an SEV-ES/SNP guest (no GHCB protocol)")


def sev_es_terminate_exit(vcpu, msr: int) -> U.Exit:
    """``out_terminate`` of ``sev_handle_vmgexit_msr_protocol``: ``KVM_EXIT_SYSTEM_EVENT`` of
    type ``KVM_SYSTEM_EVENT_SEV_TERM`` with ``ndata`` 1 and ``data[0]`` the GHCB MSR."""
    return U.Exit(U.KVM_EXIT_SYSTEM_EVENT, system_event=(U.KVM_SYSTEM_EVENT_SEV_TERM, msr))


def sev_handle_vmgexit_msr_protocol(vcpu, msr: int):
    """``sev_handle_vmgexit_msr_protocol`` for the requests the model knows, the GHCB MSR
    holding ``msr``:

    - ``GHCB_MSR_TERM_REQ``: the host logs "SEV-ES guest requested termination: set:code" and
      KVM exits with ``KVM_EXIT_SYSTEM_EVENT`` / ``KVM_SYSTEM_EVENT_SEV_TERM`` (data: the MSR);
    - ``GHCB_MSR_PSC_REQ`` from a guest that is not SNP: ``out_terminate`` too
      (:class:`kit.kvm.snp.SnpX86Ops` handles it for SNP guests).

    Other requests (SEV_INFO, CPUID, AP reset hold, HV features, GHCB GPA registration) are
    not modelled: ValueError."""
    _check_ghcb(vcpu)
    vcpu.ghcb_msr = msr
    info = msr & GHCB_MSR_INFO_MASK
    if info == GHCB_MSR_TERM_REQ:
        reason_set, reason_code = ghcb_msr_term_reason(msr)
        vcpu.vm.kvm.host.dmesg.append(
            f"kvm_amd: SEV-ES guest requested termination: {reason_set:#x}:{reason_code:#x}")
        return sev_es_terminate_exit(vcpu, msr)
    if info == GHCB_MSR_PSC_REQ and vcpu.vm.type != U.KVM_X86_SNP_VM:
        return sev_es_terminate_exit(vcpu, msr)
    raise ValueError(f"msr: GHCB MSR request {info:#x} is not modelled")
