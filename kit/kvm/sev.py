"""SEV ASIDs, encryption-context mirroring and migration (arch/x86/kvm/svm/sev.c).

- Ranges (``sev_hardware_setup``): SEV uses [min_sev_asid, max_sev_asid], SEV-ES and SNP use
  [1, min_sev_asid - 1]; ASID 0 is the host.
- ``sev_asid_new``: min > max -> -ENOTTY; a full range triggers ``__sev_recycle_asids`` once
  (WBINVD on every CPU, then DF_FLUSH / SNP_DF_FLUSH, under ``sev_deactivate_lock``), then
  -EBUSY. ``sev_asid_free`` only marks the ASID for reclaim.
- ``sev_vm_copy_enc_context_from`` / ``sev_vm_move_enc_context_from``: the checks and errnos of
  the kit's reference notes (snp-rmp.md §5), including the 2026 patch rejecting SNP sources
  (named parameter ``Kvm.block_snp_mirror``).
- ``sev_mem_enc_ioctl``'s common checks (:func:`sev_mem_enc_check`): a mirror may only issue
  LAUNCH_UPDATE_VMSA, GUEST_STATUS, DBG_DECRYPT and DBG_ENCRYPT; an SNP VM only SNP commands.
  ``KVM_MEMORY_ENCRYPT_REG_REGION`` / ``UNREG_REGION`` (``sev_mem_enc_register_region``,
  ``sev_mem_enc_unregister_region``): the regions a VMM pins for the guest.
"""
from __future__ import annotations

import errno

from ..errors import KvmError
from . import uapi as U

SEV_TYPES = (U.KVM_X86_SEV_VM, U.KVM_X86_SEV_ES_VM, U.KVM_X86_SNP_VM)


class AsidSpace:
    """The ASID bitmaps of one host (``sev_asid_bitmap``, ``sev_reclaim_asid_bitmap``)."""

    def __init__(self, kvm, min_sev_asid: int, max_sev_asid: int):
        self.kvm = kvm
        self.min_sev_asid, self.max_sev_asid = min_sev_asid, max_sev_asid
        self.used: set[int] = set()
        self.reclaim: set[int] = set()
        self.recycles = 0

    def range_for(self, vm_type: int) -> tuple[int, int]:
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
        self.used.discard(asid)
        self.reclaim.add(asid)


# is_cmd_allowed_from_mirror (arch/x86/kvm/svm/sev.c)
MIRROR_COMMANDS = frozenset({U.KVM_SEV_LAUNCH_UPDATE_VMSA, U.KVM_SEV_GUEST_STATUS,
                             U.KVM_SEV_DBG_DECRYPT, U.KVM_SEV_DBG_ENCRYPT})


def sev_mem_enc_check(vm, cmd: int) -> None:
    """The checks ``sev_mem_enc_ioctl`` makes before dispatching sub-command ``cmd``, in its
    order: an unknown command -> EINVAL (the switch's default; checked here first, which
    no errno distinguishes); a mirror issuing anything but :data:`MIRROR_COMMANDS` -> EINVAL
    ("only the enc_context_owner handles some memory enc operations"); an SNP VM issuing a
    command below ``KVM_SEV_SNP_LAUNCH_START`` -> EPERM."""
    vm._alive()
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
    _context_owner(vm)
    if size == 0 or addr + size > 1 << 64:
        raise KvmError(errno.EINVAL, "size 0 or a range that wraps")
    vm.enc_regions.append((addr, size))
    return 0


def unregister_region(vm, addr: int, size: int) -> int:
    """``KVM_MEMORY_ENCRYPT_UNREG_REGION`` (``sev_mem_enc_unregister_region``): not an SEV VM
    -> ENOTTY; a mirror -> EINVAL; no region with exactly this address and size
    (``find_enc_region``) -> EINVAL."""
    _context_owner(vm)
    if (addr, size) not in vm.enc_regions:
        raise KvmError(errno.EINVAL, f"no registered region at {addr:#x} of {size:#x} bytes")
    vm.enc_regions.remove((addr, size))
    return 0


def sev_init(vm) -> int:
    """``KVM_SEV_INIT2``-like: the ioctl's common checks (a mirror -> EINVAL), then only
    SEV/SEV-ES/SNP VMs (EINVAL otherwise), once (EINVAL), and before vCPUs exist (EINVAL);
    allocates the ASID."""
    sev_mem_enc_check(vm, U.KVM_SEV_INIT2)
    if vm.type not in SEV_TYPES or vm.sev_active:
        raise KvmError(errno.EINVAL, "not an SEV VM type, or already initialised")
    if vm.vcpus:
        raise KvmError(errno.EINVAL, "vCPUs already created")
    vm.asid = vm.kvm.asids.alloc(vm.type)
    vm.sev_active = True
    return 0


def _lock_two_vms(dst, src) -> None:
    """``sev_lock_two_vms``: the same VM twice -> EINVAL; a migration in progress -> EBUSY."""
    if dst is src:
        raise KvmError(errno.EINVAL, "source and destination are the same VM")
    if dst.migration_in_progress or src.migration_in_progress:
        raise KvmError(errno.EBUSY, "a migration is in progress")


def _as_vm(source):
    from .vm import VM
    if not isinstance(source, VM):
        raise KvmError(errno.EBADF, f"{type(source).__name__} is not a VM file")
    return source


def copy_enc_context_from(dst, source) -> int:
    """``KVM_CAP_VM_COPY_ENC_CONTEXT_FROM`` (``sev_vm_copy_enc_context_from``): not a VM ->
    EBADF; then the lock checks; then EINVAL if the destination is already SEV, the source is
    not SEV, the source is itself a mirror, the destination has vCPUs, or (2026 patch) the
    source is SNP. The mirror shares the source's ASID and holds a reference on it."""
    src = _as_vm(source)
    _lock_two_vms(dst, src)
    if dst.sev_active or not src.sev_active or src.mirror_of is not None or dst.vcpus:
        raise KvmError(errno.EINVAL, "mirror rules: dst not SEV, src SEV and not a mirror, dst without vCPUs")
    if dst.kvm.block_snp_mirror and src.type == U.KVM_X86_SNP_VM:
        raise KvmError(errno.EINVAL, "SNP state cannot be mirrored")
    dst.asid, dst.sev_active, dst.mirror_of = src.asid, True, src
    src.mirrors.append(dst)
    return 0


def move_enc_context_from(dst, source) -> int:
    """``KVM_CAP_VM_MOVE_ENC_CONTEXT_FROM`` (``sev_vm_move_enc_context_from``): not a VM ->
    EBADF; lock checks; EINVAL for different VM types, an SEV destination or a non-SEV source,
    (2026 patch) an SNP source; for SEV-ES the vCPU counts must match and every source VMSA be
    protected (``sev_check_source_vcpus``). Moves the ASID, the registered regions and the
    mirrors; the source dies."""
    src = _as_vm(source)
    _lock_two_vms(dst, src)
    if dst.type != src.type or dst.sev_active or not src.sev_active:
        raise KvmError(errno.EINVAL, "same VM type, non-SEV destination, SEV source required")
    if dst.kvm.block_snp_mirror and src.type == U.KVM_X86_SNP_VM:
        raise KvmError(errno.EINVAL, "SNP state cannot be moved")
    if src.type == U.KVM_X86_SEV_ES_VM:
        if len(dst.vcpus) != len(src.vcpus) or not all(v.vmsa_protected for v in src.vcpus.values()):
            raise KvmError(errno.EINVAL, "SEV-ES: vCPU counts differ or a VMSA is not protected")
    dst.asid, dst.sev_active = src.asid, True
    dst.enc_regions, src.enc_regions = src.enc_regions, []      # sev_migrate_from: regions_list
    dst.mirrors, src.mirrors = src.mirrors, []
    for m in dst.mirrors:
        m.mirror_of = dst
    src.asid, src.sev_active = 0, False
    src.dead = True
    return 0


def sev_vm_destroy(vm) -> None:
    """``sev_vm_destroy``: a mirror only unlinks itself and drops its reference; otherwise
    (SNP: after ``snp_decommission_context``; if that fails the ASID leaks) the ASID is freed
    for reclaim. A source with live mirrors is kept alive by their references."""
    if not vm.sev_active:
        return
    if vm.mirror_of is not None:
        vm.mirror_of.mirrors.remove(vm)
        src, vm.mirror_of = vm.mirror_of, None
        if src.dead and not src.mirrors:
            sev_vm_destroy(src)
        vm.sev_active = False
        return
    if vm.mirrors:
        return                      # the mirrors' kvm_get_kvm references keep the context
    if vm.type == U.KVM_X86_SNP_VM and vm.kvm.snp_decommission_fails:
        vm.kvm.leaked_asids.add(vm.asid)
    else:
        vm.kvm.asids.free(vm.asid)
    vm.sev_active = False
