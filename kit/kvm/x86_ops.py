"""The arch-ops table: the model's ``struct kvm_x86_ops`` (arch/x86/include/asm/kvm_host.h).

The kernel's generic and x86 code never calls SEV or SNP code by name: it calls through
``kvm_x86_ops``, which the vendor module fills (``svm_x86_ops`` in arch/x86/kvm/svm/svm.c,
handed over by ``kvm_x86_vendor_init``), and the SEV functions in it check ``sev_guest()`` /
``sev_snp_guest()`` themselves. The model does the same, one table per VM type:
:meth:`kit.kvm.vm.Kvm.create_vm` picks ``kvm.x86_ops[type]`` and the VM keeps it as
``vm.x86_ops``. The generic modules (:mod:`.vm`, :mod:`.memslot`, :mod:`.gmem`, :mod:`.mmu`)
import only this module; :mod:`.sev` and :mod:`.snp` subclass :class:`KvmX86Ops`, and
:mod:`.svm` builds the per-type table and registers it (:func:`kvm_x86_vendor_init`).

A user can replace a member for an experiment: subclass the table a VM type has and pass it,
``Kvm(host, x86_ops={U.KVM_X86_SNP_VM: MyOps()})``, or set ``vm.x86_ops`` on one VM.

Members, and where the generic code calls each (kernel caller in parentheses):

============================= =================================================================
``vm_init(vm)``               :class:`~kit.kvm.vm.VM` creation (``kvm_arch_init_vm`` ->
                              ``svm_vm_init``: protected state, private memory by type)
``vm_destroy(vm)``            :meth:`VM.destroy` (``kvm_arch_destroy_vm`` -> ``svm_vm_destroy``
                              -> ``sev_vm_destroy``)
``vcpu_create(vcpu)``         :meth:`VM.create_vcpu` (``kvm_arch_vcpu_create`` ->
                              ``svm_vcpu_create``: the VMSA page)
``vcpu_free(vcpu)``           :meth:`VM.destroy` (``kvm_arch_vcpu_destroy`` -> ``svm_vcpu_free``
                              -> ``sev_free_vcpu``)
``gmem_prepare(...)``         the private fault path, :meth:`~kit.kvm.mmu.Vcpu.access`
                              (``kvm_gmem_get_pfn`` -> ``kvm_gmem_prepare_folio`` ->
                              ``kvm_arch_gmem_prepare``, arch/x86/kvm/x86.c)
``gmem_invalidate(...)``      freeing guest_memfd folios, :meth:`GuestMemfd.free_folios`
                              (``kvm_gmem_free_folio`` -> ``kvm_arch_gmem_invalidate``)
``private_max_mapping_level`` the private fault path (``kvm_max_private_mapping_level``,
                              arch/x86/kvm/mmu/mmu.c; renamed ``gmem_max_mapping_level`` later)
``handle_rmp_fault(...)``     an RMP #NPF (``npf_interception`` -> ``sev_handle_rmp_fault``)
``fault_gpa(vm, gpa, private)`` the fault path, :meth:`~kit.kvm.mmu.Vcpu.access`: the GPA and
                              kind of the access as KVM's fault path derives them (TDX strips
                              the shared bit, ``kvm_mmu_page_fault``/``tdx_is_private_gpa``)
``gfn_direct_bits(vm)``        :meth:`~kit.kvm.mmu.Vcpu.pre_fault_memory` (``kvm_gfn_direct_bits``:
                              TDX's shared bit as a gfn bit; ``kvm_is_gfn_alias``)
``check_private_access(...)`` (model) the hardware's RMP check of a guest access with the C-bit
                              set, after KVM's fault-in [APM2 15.36.10]: SNP raises #VC
``vmgexit_msr(vcpu, msr)``    a VMGEXIT with the GHCB MSR protocol (``sev_handle_vmgexit`` ->
                              ``sev_handle_vmgexit_msr_protocol``), :meth:`Vcpu.vmgexit_msr`
``vmgexit_psc(vcpu, desc)``   a VMGEXIT for a GHCB page-state change (``sev_handle_vmgexit``,
                              ``SVM_VMGEXIT_PSC`` -> ``snp_begin_psc``), :meth:`Vcpu.vmgexit_psc`
``mem_enc_ioctl(vm, cmd)``    :meth:`VM.sev_init` (``KVM_MEMORY_ENCRYPT_OP``)
``mem_enc_register_region``   :meth:`VM.memory_encrypt_reg_region`
``mem_enc_unregister_region`` :meth:`VM.memory_encrypt_unreg_region`
``vm_copy_enc_context_from``  :meth:`VM.enable_cap` (``KVM_CAP_VM_COPY_ENC_CONTEXT_FROM``)
``vm_move_enc_context_from``  :meth:`VM.enable_cap` (``KVM_CAP_VM_MOVE_ENC_CONTEXT_FROM``)
``gmem_host_frames``          (model) whether guest_memfd files of the VM hold host frames
============================= =================================================================

``handle_rmp_fault`` is not a ``kvm_x86_ops`` member in the kernel (svm.c's exit handler calls
``sev_handle_rmp_fault`` directly); it sits in the table so that the #NPF path reaches SNP code
without importing it. The same holds for the two VMGEXIT members (svm.c's ``sev_handle_vmgexit``
is reached through ``svm_exit_handlers``) and for ``check_private_access``, which is hardware,
not KVM: the table is where the model keeps what differs by VM type. The two encryption-context
caps are dispatched through the *source* VM's table: the context copied or moved is the
source's, and a VM without SEV ops has none.
"""
from __future__ import annotations

import errno

from ..errors import KvmError
from . import uapi as U


class KvmX86Ops:
    """The generic table (default and SW_PROTECTED VMs): no encryption, nothing to prepare,
    no mapping-level limit. Each member documents the kernel function it stands for."""

    #: Model: guest_memfd files of this VM are backed by host frames. Only needed where
    #: something tracks which frame backs a page (the RMP); other files count pages only.
    gmem_host_frames = False

    def vm_init(self, vm) -> None:
        """``kvm_x86_ops.vm_init``, called at the end of VM creation."""

    def vm_destroy(self, vm) -> None:
        """``kvm_x86_ops.vm_destroy``."""

    def vcpu_create(self, vcpu) -> None:
        """``kvm_x86_ops.vcpu_create``."""

    def vcpu_free(self, vcpu) -> None:
        """``kvm_x86_ops.vcpu_free``."""

    def gmem_prepare(self, vm, pfn, gfn: int, order: int) -> int:
        """``kvm_x86_ops.gmem_prepare``: 0 or a negative errno (the fault then fails)."""
        return 0

    def gmem_invalidate(self, host, start: int, end: int) -> None:
        """``kvm_x86_ops.gmem_invalidate``: host frames [start, end) leave a guest_memfd."""

    def private_max_mapping_level(self, vm, pfn) -> int:
        """``kvm_x86_ops.private_max_mapping_level``: a page level capping the private mapping
        of ``pfn``, or 0 for no limit."""
        return 0

    def handle_rmp_fault(self, vcpu, gpa: int, error_code: int) -> None:
        """The RMP #NPF hook (``sev_handle_rmp_fault``): nothing without an RMP."""

    def fault_gpa(self, vm, gpa: int, private: bool | None) -> tuple[int, bool | None]:
        """The fault's GPA and kind: ``(gpa, private)`` unchanged here. TDX's table strips the
        shared bit and takes the kind from it (:mod:`kit.kvm.tdx`): in the kernel the fault
        path masks ``kvm_gfn_direct_bits`` off the faulting gfn and TDX's EPT-violation
        handler marks the access private when the bit is clear."""
        return gpa, private

    def gfn_direct_bits(self, vm) -> int:
        """``kvm_gfn_direct_bits``: the gfn bits that make a shared alias of a private gfn
        (``kvm->arch.gfn_direct_bits``); 0 here. A gfn carrying them is an alias
        (``kvm_is_gfn_alias``), which ``KVM_PRE_FAULT_MEMORY`` refuses."""
        return 0

    def check_private_access(self, vcpu, gpa: int) -> None:
        """The hardware's check of a guest access with the C-bit set to ``gpa``, after KVM
        mapped it: nothing without an RMP."""

    def vmgexit_msr(self, vcpu, msr: int):
        """A VMGEXIT with the GHCB MSR protocol: a VM without SEV-ES has no GHCB (the
        instruction is a plain VMMCALL there), so the call is the caller's error."""
        raise ValueError("VMGEXIT: this VM is not an SEV-ES/SNP guest (no GHCB protocol)")

    def vmgexit_psc(self, vcpu, desc):
        """A VMGEXIT for a GHCB page-state change: none without SEV-ES (see :meth:`vmgexit_msr`)."""
        raise ValueError("VMGEXIT: this VM is not an SEV-ES/SNP guest (no GHCB protocol)")

    def mem_enc_ioctl(self, vm, cmd: int) -> int:
        """``KVM_MEMORY_ENCRYPT_OP`` on a VM type without SEV: the model's host is an SEV host,
        so ``sev_mem_enc_ioctl`` answers: an unknown command or ``KVM_SEV_INIT2`` on a type
        that is not SEV/SEV-ES/SNP -> EINVAL (``sev_init2``), anything else -> ENOTTY
        (``!sev_guest(kvm)``)."""
        if cmd == U.KVM_SEV_INIT2 or cmd not in U.SEV_CMD_NAMES:
            raise KvmError(errno.EINVAL, "not an SEV VM type, or an unknown command")
        raise KvmError(errno.ENOTTY, "not an SEV guest")

    def mem_enc_register_region(self, vm, addr: int, size: int) -> int:
        """``sev_mem_enc_register_region`` on a VM that is not an SEV guest: ENOTTY."""
        raise KvmError(errno.ENOTTY, "not an SEV guest")

    def mem_enc_unregister_region(self, vm, addr: int, size: int) -> int:
        """``sev_mem_enc_unregister_region`` on a VM that is not an SEV guest: ENOTTY."""
        raise KvmError(errno.ENOTTY, "not an SEV guest")

    def vm_copy_enc_context_from(self, dst, src) -> int:
        """Copy ``src``'s encryption context: a source without SEV has none -> EINVAL."""
        if dst is src:
            raise KvmError(errno.EINVAL, "source and destination are the same VM")
        raise KvmError(errno.EINVAL, "the source VM is not an SEV guest")

    def vm_move_enc_context_from(self, dst, src) -> int:
        """Move ``src``'s encryption context: a source without SEV has none -> EINVAL."""
        return self.vm_copy_enc_context_from(dst, src)


class KvmX86InitOps:
    """``struct kvm_x86_init_ops``: the vendor's ``hardware_setup`` and its runtime tables
    (here one :class:`KvmX86Ops` per VM type)."""

    def __init__(self, runtime_ops: dict[int, KvmX86Ops]):
        self.runtime_ops = dict(runtime_ops)

    def hardware_setup(self, kvm) -> None:
        """Per-host vendor state, once per :class:`~kit.kvm.vm.Kvm` (``svm_hardware_setup``)."""


GENERIC_X86_OPS = KvmX86Ops()
_vendor = KvmX86InitOps({U.KVM_X86_DEFAULT_VM: GENERIC_X86_OPS,
                         U.KVM_X86_SW_PROTECTED_VM: GENERIC_X86_OPS})


def kvm_x86_vendor_init(init_ops: KvmX86InitOps) -> None:
    """Install the vendor's tables (``kvm_x86_vendor_init``, from the vendor module's init)."""
    global _vendor
    _vendor = init_ops


def kvm_x86_vendor() -> KvmX86InitOps:
    """The installed vendor tables (what a new :class:`~kit.kvm.vm.Kvm` starts from)."""
    return _vendor
