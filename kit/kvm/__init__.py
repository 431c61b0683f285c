"""KVM behind its uAPI: ``Kvm`` (/dev/kvm), ``VM``, memslots, memory attributes, guest_memfd,
vCPUs and the fault path (:mod:`.mmu`), SEV ASIDs, mirrors and moves (:mod:`.sev`), SNP
(guest_memfd prepare/invalidate, RMP faults, GHCB page-state change, launch: :mod:`.snp`) and a
QEMU-style VMM (:mod:`.vmm`). Errors are ``KvmError`` with the kernel's errno.
"""
from . import uapi
from .vm import VM, GuestMemfd, Kvm, Memslot

__all__ = ["Kvm", "VM", "GuestMemfd", "Memslot", "uapi"]
