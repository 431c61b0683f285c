"""KVM's sizes and counts, each one :class:`~kit.units.Param` with its documented bound.

Where the kernel has the limit, the model keeps the kernel's answer past it (``KVM_CREATE_VCPU``
past ``KVM_MAX_VCPUS`` vCPUs or with an id at or past ``KVM_MAX_VCPU_IDS`` is EINVAL, as in
virt/kvm/kvm_main.c ``kvm_vm_ioctl_create_vcpu``; memslots past ``KVM_USER_MEM_SLOTS`` or
``KVM_MEM_MAX_NR_PAGES`` pages are EINVAL, :mod:`kit.kvm.memslot`; a guest_memfd size that is
negative as an ``loff_t`` is EINVAL, ``kvm_gmem_create``). The bounds here are the model's own:
calls that go page by page through KVM's fault path, and the VMM's patience.

:func:`kit.host.limits.bounds_table` renders them for docs/host-model.md ("Bounds").
"""
from __future__ import annotations

from ..host.rmp import MAX_ASID
from ..units import KVM_MAX_VCPUS, MiB, PAGE_4K, Param

#: ``KVM_MAX_VCPU_IDS`` on x86: ``KVM_MAX_VCPUS * KVM_VCPU_ID_RATIO`` (4), since a vCPU id is
#: an APIC id that encodes the topology (arch/x86/include/asm/kvm_host.h).
KVM_VCPU_ID_RATIO = 4
KVM_MAX_VCPU_IDS = KVM_MAX_VCPUS * KVM_VCPU_ID_RATIO

#: The widest guest physical address on x86-64: MAXPHYADDR is at most 52 bits (CPUID
#: 0x80000008 EAX[7:0]); a guest access beyond it never reaches KVM.
MAX_GPA_BITS = 52

MIN_SEV_ASID = Param(
    "min_sev_asid", "int", min=1, max=MAX_ASID + 1, default=100,
    help="CPUID 0x8000001F EDX: the first ASID of plain SEV guests (SEV-ES/SNP use 1..min-1)",
    why="the RMP entry's 10-bit ASID field (max + 1: no plain-SEV ASIDs); ASID 0 is the host")

MAX_SEV_ASID = Param(
    "max_sev_asid", "int", min=0, max=MAX_ASID, default=509,
    help="CPUID 0x8000001F ECX: the last ASID",
    why="the RMP entry's 10-bit ASID field (arch/x86/virt/svm/sev.c struct rmpentry_raw)")

PAGE_BY_PAGE = Param(
    "length", "size", min=0, max=64 * MiB, multiple=1, unit="bytes",
    help="bytes a guest fill, a guest read or a userspace read covers in one call",
    why="the call goes page by page through KVM's fault path (about 0.1 ms a page): "
        "16384 pages, a second or two")

VALIDATE_PAGES = Param(
    "npages", "int", min=0, max=PAGE_BY_PAGE.max // PAGE_4K, unit="pages",
    help="4K pages kit.kvm.snp.guest_validate validates in one call",
    why="PVALIDATE page by page through KVM's fault path, as a fill")

VMM_MAX_EXITS = Param(
    "max_exits", "int", min=1, max=1 << 16, unit="exits", default=8,
    help="exits the VMM answers for one guest access before it calls the access stuck",
    why="each answer is a conversion (a KVM_SET_MEMORY_ATTRIBUTES call); an access that needs "
        "more is stuck, whatever the count")

VCPUS_PER_VM = Param(
    "vcpus", "int", min=1, max=KVM_MAX_VCPUS, unit="vCPUs",
    help="vCPUs one VM may create (more: KVM_CREATE_VCPU fails with EINVAL)",
    why="kvm->max_vcpus = KVM_MAX_VCPUS (virt/kvm/kvm_main.c kvm_create_vm, kvm_vm_ioctl_create_vcpu)")

VCPU_ID = Param(
    "id", "int", min=0, max=KVM_MAX_VCPU_IDS - 1,
    help="a vCPU id (its APIC id; at or past the limit KVM_CREATE_VCPU fails with EINVAL)",
    why="KVM_MAX_VCPU_IDS = KVM_MAX_VCPUS * KVM_VCPU_ID_RATIO (arch/x86/include/asm/kvm_host.h)")

GMEM_FOLIOS = Param(
    "folios", "int", min=0, max=1 << 22, unit="folios",
    help="host folios one guest_memfd file holds (files whose VM's arch needs host frames, SNP)",
    why="the file keeps its folios one by one, about 100 bytes each: 4 Mi folios is 8 TiB of "
        "2M folios (the largest guest) but 16 GiB of upstream's 4K folios")

UNIT_BY_UNIT = Param(
    "nunits", "int", min=1, max=4096, unit="2M units",
    help="2M units a range form (kit.kvm.snp) takes one by one through KVM's fault path when "
         "its fast path does not apply",
    why="each unit is a fault through KVM's fault path, a fraction of a millisecond: 8 GiB in a "
        "second or two")

KVM_PARAMS = (VCPUS_PER_VM, VCPU_ID, MIN_SEV_ASID, MAX_SEV_ASID, PAGE_BY_PAGE, VALIDATE_PAGES, VMM_MAX_EXITS,
              GMEM_FOLIOS, UNIT_BY_UNIT)
