"""Fault injection: the model's knobs that make one kernel or firmware step fail, so that the
error path behind it can be exercised (on a real host each of these failures is rare).

A :class:`~kit.kvm.vm.Kvm` holds one :class:`FaultInjection` for all its VMs and every
:class:`~kit.kvm.vm.VM` one of its own; a knob set on either applies to the VM
(:func:`injected`). The knobs' old spellings stay: ``vm.xa_reserve_fails``,
``vm.launch_fw_errors``, ``kvm.snp_decommission_fails``, ``kvm.page_reclaim_fails``.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FaultInjection:
    """Which steps fail. Each knob names the kernel function whose failure it models.

    - ``xa_reserve_fails``: the ``xa_reserve()`` of ``kvm_vm_set_mem_attributes``
      (virt/kvm/kvm_main.c) fails, so ``KVM_SET_MEMORY_ATTRIBUTES`` returns -ENOMEM before
      anything changed.
    - ``snp_decommission_fails``: SNP_DECOMMISSION fails in ``snp_decommission_context``
      (arch/x86/kvm/svm/sev.c), so ``sev_vm_destroy`` warns and leaks the ASID.
    - ``page_reclaim_fails``: SNP_PAGE_RECLAIM fails in ``snp_page_reclaim``
      (arch/x86/kvm/svm/sev.c): ``KVM_BUG`` and the page is leaked (``snp_leak_pages``).
    - ``launch_fw_errors``: gfn -> the firmware error SNP_LAUNCH_UPDATE returns for that page
      (``sev_gmem_post_populate``), e.g. ``SEV_RET_INVALID_PARAM`` for a CPUID page the
      firmware corrects.
    - ``signal_after``: a signal is pending for the calling thread after this many mappings of
      one ``KVM_PRE_FAULT_MEMORY`` call (``signal_pending`` in virt/kvm/kvm_main.c
      ``kvm_vcpu_pre_fault_memory``): at 0 the call fails with -EINTR, later it returns with
      the rest of the range left. None: no signal.
    """

    xa_reserve_fails: bool = False
    snp_decommission_fails: bool = False
    page_reclaim_fails: bool = False
    launch_fw_errors: dict[int, int] = field(default_factory=dict)
    signal_after: int | None = None


def injected(vm, knob: str) -> bool:
    """Whether boolean ``knob`` is set for ``vm``: on the VM or on its Kvm."""
    return bool(getattr(vm.fault_injection, knob) or getattr(vm.kvm.fault_injection, knob))


def launch_fw_error(vm, gfn: int) -> int:
    """The firmware error injected for SNP_LAUNCH_UPDATE of ``gfn`` (the VM's knob first), or 0."""
    return vm.fault_injection.launch_fw_errors.get(gfn) or vm.kvm.fault_injection.launch_fw_errors.get(gfn, 0)


def signal_after(vm) -> int | None:
    """Mappings of a ``KVM_PRE_FAULT_MEMORY`` call before a signal is pending (the VM's knob
    first, then its Kvm's), or None."""
    n = vm.fault_injection.signal_after
    return n if n is not None else vm.kvm.fault_injection.signal_after
