"""The vendor module: builds the arch-ops tables for an AMD host and installs them, as
arch/x86/kvm/svm/svm.c fills ``svm_x86_ops`` and hands ``svm_init_ops`` to
``kvm_x86_vendor_init`` when kvm_amd loads.

One table per VM type: default and SW_PROTECTED VMs get the generic table
(:data:`kit.kvm.x86_ops.GENERIC_X86_OPS`), SEV and SEV-ES VMs :class:`kit.kvm.sev.SevX86Ops`,
SNP VMs :class:`kit.kvm.snp.SnpX86Ops`. ``hardware_setup`` is ``sev_hardware_setup``: the ASID
space of each :class:`~kit.kvm.vm.Kvm`. Importing :mod:`kit.kvm` installs this vendor.
"""
from __future__ import annotations

from . import uapi as U
from .sev import SevX86Ops, sev_hardware_setup
from .snp import SnpX86Ops
from .x86_ops import GENERIC_X86_OPS, KvmX86InitOps, kvm_x86_vendor_init

SEV_X86_OPS = SevX86Ops()
SNP_X86_OPS = SnpX86Ops()

#: ``svm_x86_ops``, per VM type.
svm_x86_ops = {
    U.KVM_X86_DEFAULT_VM: GENERIC_X86_OPS,
    U.KVM_X86_SW_PROTECTED_VM: GENERIC_X86_OPS,
    U.KVM_X86_SEV_VM: SEV_X86_OPS,
    U.KVM_X86_SEV_ES_VM: SEV_X86_OPS,
    U.KVM_X86_SNP_VM: SNP_X86_OPS,
}


class SvmInitOps(KvmX86InitOps):
    """``svm_init_ops``: ``svm_hardware_setup`` (here its SEV part) and :data:`svm_x86_ops`."""

    def hardware_setup(self, kvm) -> None:
        sev_hardware_setup(kvm)


svm_init_ops = SvmInitOps(svm_x86_ops)
kvm_x86_vendor_init(svm_init_ops)
