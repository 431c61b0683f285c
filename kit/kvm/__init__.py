"""KVM behind its uAPI, shaped like the kernel.

Generic code: ``Kvm`` (/dev/kvm) and ``VM`` (:mod:`.vm`), memslots (:mod:`.memslot`),
guest_memfd (:mod:`.gmem`), the fault path and vCPUs (:mod:`.mmu`), exits and constants
(:mod:`.uapi`), failure knobs (:mod:`.injection`). It reaches SEV and SNP only through the
arch-ops table (:mod:`.x86_ops`, the analogue of ``struct kvm_x86_ops``): SEV ASIDs, mirrors
and moves (:mod:`.sev`), SNP's guest_memfd hooks, RMP faults, GHCB page-state change and launch
(:mod:`.snp`), installed per VM type by the vendor module (:mod:`.svm`). TDX's shared bit and
MapGPA conversions, with an Intel host's tables to pass to ``Kvm``: :mod:`.tdx`. A QEMU-style
VMM: :mod:`.vmm`. Errors are ``KvmError`` with the kernel's errno.
"""
from ..units import deferred_attributes
from . import svm, uapi  # noqa: F401  (svm installs the vendor's arch ops)
from .gmem import GuestMemfd
from .injection import FaultInjection
from .memslot import Memslot
from .sev import SevInfo
from .vm import VM, Kvm
from .x86_ops import KvmX86Ops

__all__ = ["Kvm", "VM", "GuestMemfd", "Memslot", "uapi", "KvmX86Ops", "SevInfo",
           "FaultInjection"]


#: submodules loaded on first use (docs/architecture.md, "Deferred loading"): an AMD host (every
#: simulation) never needs the Intel vendor's tables, and ``kit simulate`` starts faster without
#: them. ``from kit.kvm import tdx`` and ``kit.kvm.tdx`` both work.
DEFERRED = {"tdx": "kit.kvm.tdx"}


__getattr__, __dir__ = deferred_attributes(globals(), {}, submodules=tuple(DEFERRED))

