"""KVM behind its uAPI: ``Kvm`` (/dev/kvm), ``VM``, memslots, memory attributes, guest_memfd.

Work in progress towards the full KVM model: vCPUs and the fault path, SNP (gmem prepare and
invalidate, RMP faults, page-state change), ASIDs and mirrors are not modelled yet.
"""
from . import uapi
from .vm import VM, GuestMemfd, Kvm, Memslot

__all__ = ["Kvm", "VM", "GuestMemfd", "Memslot", "uapi"]
