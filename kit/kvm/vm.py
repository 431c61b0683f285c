"""KVM behind its uAPI: the system scope (``/dev/kvm``) and VMs: memory attributes, memslots,
guest_memfd files, vCPUs and caps, failing with the kernel's errno in the kernel's order.

Sources: virt/kvm/kvm_main.c (``kvm_vm_ioctl``, ``kvm_vm_ioctl_set_mem_attributes``,
``kvm_vm_set_mem_attributes``, ``kvm_vm_ioctl_set_memory_region``, ``kvm_vm_ioctl_create_vcpu``,
``kvm_vm_ioctl_check_extension_generic``), virt/kvm/guest_memfd.c (``kvm_gmem_create``),
arch/x86/kvm/x86.c (``kvm_arch_init_vm``, ``kvm_vm_ioctl_enable_cap``, ``kvm_arch_vm_ioctl``
for ``KVM_MEMORY_ENCRYPT_*``), arch/x86/kvm/mmu/mmu.c (``kvm_unmap_gfn_range``,
``kvm_zap_gfn_range``), include/linux/kvm_host.h (``kvm_gmem_get_supported_flags``).

This module is the generic part: it reaches SEV and SNP only through the VM's arch-ops table
(:mod:`kit.kvm.x86_ops`), never by import. Memslot checks are in :mod:`.memslot`, guest_memfd
in :mod:`.gmem`, the fault path in :mod:`.mmu`, the exit structures in :mod:`.uapi`.

Every call either succeeds completely or raises :class:`~kit.errors.KvmError` having changed
nothing.
"""
from __future__ import annotations

import errno

from ..errors import KvmError
from ..host.host import Host
from ..host.ranges import RangeStore
from ..units import PAGE_4K, PAGE_SHIFT, PAGES_PER_1G, PAGES_PER_2M, check_bool  # noqa: F401  (PAGE_SHIFT: old name)
from . import uapi as U
from .content import UserMemory
from .gmem import (LOFF_T_MAX, MADV_COLLAPSE, MADV_DONTNEED, MADV_HUGEPAGE, MADV_NOHUGEPAGE,  # noqa: F401
                   MADV_NORMAL, MADV_RANDOM, MADV_REMOVE, MADV_SEQUENTIAL, MADV_WILLNEED,
                   MPOL_BIND, MPOL_DEFAULT, MPOL_INTERLEAVE, MPOL_LOCAL, MPOL_MAX, MPOL_PREFERRED,
                   MPOL_PREFERRED_MANY, MPOL_WEIGHTED_INTERLEAVE, GuestMemfd, Stat,
                   kvm_gmem_bind, kvm_gmem_unbind)
from .injection import FaultInjection
from .limits import KVM_MAX_VCPU_IDS, MAX_SEV_ASID, MIN_SEV_ASID, VCPUS_PER_VM
from .memslot import (Memslot, check_memory_region, check_memslot_move,  # noqa: F401
                      check_memslot_overlap, hugepage_extend, slot_for_gfn)
from .mmu import MAP_PRIVATE, MAP_SHARED, Vcpu
from .uapi import TASK_SIZE_MAX, U64, check_field  # noqa: F401
from .x86_ops import KvmX86InitOps, KvmX86Ops, kvm_x86_vendor

_ZAP_FILTERS = {"shared": (MAP_SHARED,), "private": (MAP_PRIVATE,), "all": (MAP_SHARED, MAP_PRIVATE)}
HUGE_LEVEL_PAGES = (PAGES_PER_2M, PAGES_PER_1G)   # the pages of a 2M and of a 1G page


class Kvm:
    """``/dev/kvm``: system-scope capabilities and VM creation.

    ``vm_types`` are the x86 VM types this host supports (``kvm_caps.supported_vm_types``);
    ``min_sev_asid``/``max_sev_asid`` are CPUID 0x8000001F EDX/ECX (used by SEV VMs).
    ``block_snp_mirror``: the 2026 patch rejecting SNP sources for mirror/move ("[PATCH v3 1/4]
    KVM: SEV: Do not allow intra-host migration/mirroring of SNP VMs", A. Patra).
    ``gmem_hugepages``: guest_memfd hands out 2M folios (the hugepage series) instead of
    upstream's order-0 folios (:func:`kit.kvm.gmem.folio_order`).

    ``x86_ops``: the arch-ops table per VM type, starting from the vendor's
    (:func:`kit.kvm.x86_ops.kvm_x86_vendor`, or ``init_ops``) with the given types replaced;
    :meth:`create_vm` picks from it. ``fault_injection``: host-wide failure knobs
    (:class:`kit.kvm.injection.FaultInjection`).
    """

    def __init__(self, host, *, min_sev_asid: int = 100, max_sev_asid: int = 509,
                 vm_types=(U.KVM_X86_DEFAULT_VM, U.KVM_X86_SW_PROTECTED_VM, U.KVM_X86_SEV_VM,
                           U.KVM_X86_SEV_ES_VM, U.KVM_X86_SNP_VM), block_snp_mirror: bool = True,
                 gmem_hugepages: bool = False, x86_ops: dict | None = None,
                 init_ops: KvmX86InitOps | None = None,
                 fault_injection: FaultInjection | None = None):
        if not isinstance(host, Host):
            raise TypeError(f"host: expected a kit.host.Host, got {type(host).__name__} {host!r}")
        vm_types = _vm_types(vm_types)
        if x86_ops is not None and not isinstance(x86_ops, dict):
            raise TypeError(f"x86_ops: expected a dict of VM type -> KvmX86Ops, got {type(x86_ops).__name__}")
        bad = [t for t in (x86_ops or {}) if not _is_vm_type(t)]
        if bad:
            raise ValueError(f"x86_ops: unknown VM types {bad}; known: {sorted(U.VM_TYPE_NAMES)}")
        bad = [t for t, ops in (x86_ops or {}).items() if not isinstance(ops, KvmX86Ops)]
        if bad:
            raise TypeError(f"x86_ops: the ops of VM types {bad} are not KvmX86Ops tables")
        for value, name, cls in ((init_ops, "init_ops", KvmX86InitOps),
                                 (fault_injection, "fault_injection", FaultInjection)):
            if value is not None and not isinstance(value, cls):
                raise TypeError(f"{name}: expected a {cls.__name__} or None, got {type(value).__name__}")
        min_sev_asid, max_sev_asid = MIN_SEV_ASID.check(min_sev_asid), MAX_SEV_ASID.check(max_sev_asid)
        block_snp_mirror = check_bool(block_snp_mirror, "block_snp_mirror")
        gmem_hugepages = check_bool(gmem_hugepages, "gmem_hugepages")
        self.host = host
        self.min_sev_asid = min_sev_asid
        self.max_sev_asid = max_sev_asid
        self.vm_types = vm_types
        self.vms: list[VM] = []
        self.block_snp_mirror = block_snp_mirror
        self.gmem_hugepages = gmem_hugepages
        self.fault_injection = fault_injection if fault_injection is not None else FaultInjection()
        self.user_memory = UserMemory()       # the VMM process's memory behind userspace_addr
        vendor = init_ops if init_ops is not None else kvm_x86_vendor()
        self.x86_ops: dict[int, KvmX86Ops] = {**vendor.runtime_ops, **(x86_ops or {})}
        missing = [U.VM_TYPE_NAMES[t] for t in self.vm_types if t not in self.x86_ops]
        if missing:
            raise ValueError(f"vm_types: no arch ops for {missing}")
        self.asids = None                     # the vendor's ASID space (its hardware_setup)
        vendor.hardware_setup(self)

    # the fault-injection knobs under their old names
    snp_decommission_fails = property(
        lambda self: self.fault_injection.snp_decommission_fails,
        lambda self, v: setattr(self.fault_injection, "snp_decommission_fails", v),
        doc="``fault_injection.snp_decommission_fails`` (SNP_DECOMMISSION fails: the ASID leaks).")
    page_reclaim_fails = property(
        lambda self: self.fault_injection.page_reclaim_fails,
        lambda self, v: setattr(self.fault_injection, "page_reclaim_fails", v),
        doc="``fault_injection.page_reclaim_fails`` (SNP_PAGE_RECLAIM fails).")

    @property
    def leaked_asids(self) -> set[int]:
        """ASIDs never freed because SNP_DECOMMISSION failed (``asids.leaked``)."""
        return self.asids.leaked

    def check_extension(self, cap: int) -> int:
        """``KVM_CHECK_EXTENSION`` on /dev/kvm (``kvm`` is NULL: private features reported as
        available)."""
        return _check_extension(self, None, check_field(cap, "cap"))

    def create_vm(self, type: int = U.KVM_X86_DEFAULT_VM, *, attribute_owner: str = "userspace",
                  npf_policy: str = "exit", x86_ops: KvmX86Ops | None = None) -> "VM":
        """``KVM_CREATE_VM``: an unsupported type is EINVAL (``kvm_arch_init_vm``). The VM gets
        the arch ops of its type (``self.x86_ops[type]``, or ``x86_ops`` for this VM only).

        Model options: ``attribute_owner`` ``"userspace"`` (upstream: the VMM decides with
        KVM_SET_MEMORY_ATTRIBUTES after a hypercall exit) or ``"guest"`` (the pKVM proposal in
        the thread "[RFC PATCH v12 11/33] KVM: Introduce per-page memory attributes", 2023: the
        guest's MAP_GPA_RANGE hypercall sets the attribute in KVM and userspace may only
        follow); ``npf_policy`` ``"exit"`` (upstream: an implicit conversion by a guest access
        is a KVM_EXIT_MEMORY_FAULT) or ``"auto-convert"`` (the 2021 agreement in the thread
        "[PATCH Part2 RFC v4 37/40] KVM: SVM: Add support to handle the RMP nested page fault":
        KVM converts on a guest access, never on a host access)."""
        type = check_field(type, "type")
        if attribute_owner not in ("userspace", "guest"):
            raise ValueError(f"attribute_owner: must be 'userspace' or 'guest', got {attribute_owner!r}")
        if npf_policy not in ("exit", "auto-convert"):
            raise ValueError(f"npf_policy: must be 'exit' or 'auto-convert', got {npf_policy!r}")
        if x86_ops is not None and not isinstance(x86_ops, KvmX86Ops):
            raise TypeError(f"x86_ops: expected a KvmX86Ops table or None, got {x86_ops.__class__.__name__}")
        if type not in self.vm_types:
            raise KvmError(errno.EINVAL, f"VM type {type} is not supported")
        vm = VM(self, type, x86_ops if x86_ops is not None else self.x86_ops[type])
        vm.attribute_owner, vm.npf_policy = attribute_owner, npf_policy
        self.vms.append(vm)
        return vm


def _u64_fields(*values) -> bool:
    """Whether every value is a plain int that fits a u64 uAPI field: an ioctl's fields in the
    common case, checked at once (otherwise :func:`check_field`, field by field, names the
    first that does not)."""
    for x in values:
        if type(x) is not int or x < 0 or x > U64:
            return False
    return True


def _is_vm_type(t) -> bool:
    return isinstance(t, int) and not isinstance(t, bool) and t in U.VM_TYPE_NAMES


def _vm_types(vm_types) -> tuple:
    """``Kvm(vm_types=...)``: a sequence of known VM type numbers (bools refused)."""
    if isinstance(vm_types, (str, bytes, dict)) or not hasattr(vm_types, "__iter__"):
        raise TypeError(f"vm_types: expected a sequence of VM type numbers, got {vm_types!r}")
    vm_types = tuple(vm_types)
    bad = [t for t in vm_types if not _is_vm_type(t)]
    if bad:
        raise ValueError(f"vm_types: unknown VM types {bad}; known: {sorted(U.VM_TYPE_NAMES)}")
    return vm_types


def _check_extension(kvm: Kvm, vm: "VM | None", cap: int) -> int:
    """``kvm_vm_ioctl_check_extension_generic`` and the x86 part, for the caps the model knows."""
    private = vm is None or vm.has_private_mem
    if cap == U.KVM_CAP_NR_MEMSLOTS:
        return U.KVM_USER_MEM_SLOTS
    if cap == U.KVM_CAP_MEMORY_ATTRIBUTES:       # kvm_supported_mem_attributes
        return U.KVM_MEMORY_ATTRIBUTE_PRIVATE if private else 0
    if cap == U.KVM_CAP_GUEST_MEMFD:
        return 1
    if cap == U.KVM_CAP_GUEST_MEMFD_FLAGS:       # kvm_gmem_get_supported_flags
        flags = U.GUEST_MEMFD_FLAG_MMAP
        if vm is None or not vm.has_private_mem:
            flags |= U.GUEST_MEMFD_FLAG_INIT_SHARED
        return flags
    if cap == U.KVM_CAP_VM_TYPES:
        return sum(1 << t for t in kvm.vm_types)
    if cap == U.KVM_CAP_PRE_FAULT_MEMORY:        # x86.c: tdp_enabled (the model's MMU is TDP)
        return 1
    if cap in (U.KVM_CAP_USER_MEMORY2, U.KVM_CAP_MEMORY_FAULT_INFO, U.KVM_CAP_EXIT_HYPERCALL,
               U.KVM_CAP_VM_COPY_ENC_CONTEXT_FROM, U.KVM_CAP_VM_MOVE_ENC_CONTEXT_FROM):
        return 1
    return 0


def _sev_field(name: str, default, doc: str, settable: bool = False) -> property:
    """A VM attribute kept under its old name, read from the VM's SEV state (``vm.sev``)."""
    def get(self):
        return default() if self.sev is None else getattr(self.sev, name)

    def put(self, value):
        if self.sev is None:
            raise AttributeError(f"{name}: this VM has no SEV state (its arch ops are not SEV's)")
        setattr(self.sev, name, value)
    return property(get, put if settable else None, doc=doc)


class VM:
    """A VM: memslots, memory attributes and guest_memfd files, by the kernel's rules.

    ``x86_ops`` is its arch-ops table (:mod:`kit.kvm.x86_ops`); ``sev`` its SEV state
    (:class:`kit.kvm.sev.SevInfo`, None unless the arch ops are SEV's); ``fault_injection``
    the VM's failure knobs (:class:`kit.kvm.injection.FaultInjection`)."""

    def __init__(self, kvm: Kvm, type: int, x86_ops: KvmX86Ops | None = None):
        self.kvm = kvm
        self.type = type
        self.x86_ops = x86_ops if x86_ops is not None else kvm.x86_ops[type]
        # x86.c kvm_arch_init_vm: SW_PROTECTED VMs have private memory (the SEV types' private
        # memory and protected state are set by the arch's vm_init, svm_vm_init)
        self.has_private_mem = type == U.KVM_X86_SW_PROTECTED_VM
        self.has_protected_state = False
        # kvm_arch_init_vm: KVM_PRE_FAULT_MEMORY is allowed at once for the default and
        # SW_PROTECTED types; the vendor decides for the others (svm_vm_init; SNP at
        # snp_launch_finish, TDX at KVM_TDX_FINALIZE_VM)
        self.pre_fault_allowed = type in (U.KVM_X86_DEFAULT_VM, U.KVM_X86_SW_PROTECTED_VM)
        self.attributes = RangeStore()
        self.memslots: dict[tuple[int, int], Memslot] = {}
        self.gmem_files: set[GuestMemfd] = set()
        self.dead = False
        self.bugged = False        # KVM_BUG_ON fired (e.g. a VMSA could not be made shared)
        self.zaps: list[tuple[int, int, str]] = []   # (start gfn, end gfn, filter) invalidations
        self.sptes = RangeStore()   # gfn -> MAP_SHARED / MAP_PRIVATE: what the NPT maps
        self.faults_in: list[tuple[int, int, bool]] = []   # (gfn, level, private) per fault-in
        self.vcpus: dict = {}
        self.created_vcpus = 0     # kvm->created_vcpus: counted before the vCPU exists
        self.exit_hypercalls = 0
        self.attribute_owner = "userspace"
        self.npf_policy = "exit"
        self.kvm_conversions: list[tuple[int, int, int]] = []   # (start gfn, end gfn, attrs) made by KVM
        self.fault_injection = FaultInjection()
        self.sev = None
        self.x86_ops.vm_init(self)

    def __repr__(self) -> str:
        return f"<VM {U.VM_TYPE_NAMES[self.type]}, {len(self.memslots)} memslots>"

    def _repr_html_(self) -> str:
        from ..viz.html import vm_html
        return vm_html(self)

    # the per-VM SEV state (struct kvm_sev_info) and the knobs under their old names
    asid = _sev_field("asid", int, "The SEV ASID (``sev.asid``); 0 without SEV.")
    sev_active = _sev_field("active", bool, "``sev.active``: an SEV guest (initialised, or a mirror).")
    mirror_of = _sev_field("enc_context_owner", lambda: None,
                           "``sev.enc_context_owner``: the VM whose context this mirror shares.")
    mirrors = _sev_field("mirror_vms", list, "``sev.mirror_vms``: the VMs mirroring this one.")
    enc_regions = _sev_field("regions_list", list,
                             "``sev.regions_list``: (addr, size) of KVM_MEMORY_ENCRYPT_REG_REGION.")
    migration_in_progress = _sev_field("migration_in_progress", bool,
                                       "``sev.migration_in_progress`` (a knob: set it to hold "
                                       "the VM as a migration does).", settable=True)
    snp_launched = _sev_field("snp_launched", bool, "``sev.snp_launched``: SNP_LAUNCH_FINISH done.")
    launch_pages = _sev_field("launch_pages", list,
                              "``sev.launch_pages``: pfns SNP_LAUNCH_UPDATE put in the launch.")
    xa_reserve_fails = property(
        lambda self: self.fault_injection.xa_reserve_fails,
        lambda self, v: setattr(self.fault_injection, "xa_reserve_fails", v),
        doc="``fault_injection.xa_reserve_fails`` (KVM_SET_MEMORY_ATTRIBUTES gets -ENOMEM).")

    @property
    def launch_fw_errors(self) -> dict[int, int]:
        """``fault_injection.launch_fw_errors``: gfn -> SNP_LAUNCH_UPDATE firmware error."""
        return self.fault_injection.launch_fw_errors

    @launch_fw_errors.setter
    def launch_fw_errors(self, value: dict[int, int]) -> None:
        self.fault_injection.launch_fw_errors = value

    def check_alive(self) -> None:
        """Every VM ioctl: EIO once the VM is dead (``kvm_vm_ioctl``)."""
        if self.dead:
            raise KvmError(errno.EIO, "the VM is dead")

    def check_extension(self, cap: int) -> int:
        self.check_alive()
        return _check_extension(self.kvm, self, check_field(cap, "cap"))

    # ------------------------------------------------------------------ attributes
    def supported_mem_attributes(self) -> int:
        return U.KVM_MEMORY_ATTRIBUTE_PRIVATE if self.has_private_mem else 0

    def set_memory_attributes(self, address: int, size: int, attributes: int, flags: int = 0) -> int:
        """``KVM_SET_MEMORY_ATTRIBUTES`` (``kvm_vm_ioctl_set_mem_attributes``): refused with
        EPERM where the guest owns the attributes (the pKVM model option), otherwise
        :meth:`kvm_vm_set_mem_attributes`."""
        self.check_alive()
        if not _u64_fields(address, size, attributes, flags):
            address, size = check_field(address, "address"), check_field(size, "size")
            attributes, flags = check_field(attributes, "attributes"), check_field(flags, "flags")
        if self.attribute_owner == "guest":
            raise KvmError(errno.EPERM, "attributes are owned by the guest on this VM (pKVM style)")
        return self._set_mem_attributes(address, size, attributes, flags)

    def kvm_vm_set_mem_attributes(self, address: int, size: int, attributes: int, flags: int = 0) -> int:
        """The checks of ``kvm_vm_ioctl_set_mem_attributes`` and ``kvm_vm_set_mem_attributes``:
        what the ioctl does, and what KVM does when it converts by itself (a guest-owned
        hypercall, an auto-converting #NPF). EINVAL, in order: flags != 0; an unsupported
        attribute; size 0 or address+size wraps; address or size not page aligned. A range
        that already has the value returns 0 with no zap (``kvm_range_has_memory_attributes``).
        Otherwise existing mappings of the *old* kind in overlapping memslots are invalidated
        (``kvm_arch_pre_set_memory_attributes``) and the value is stored (reserve-then-store:
        all or nothing; ``xa_reserve`` failing is -ENOMEM)."""
        address, size = check_field(address, "address"), check_field(size, "size")
        attributes, flags = check_field(attributes, "attributes"), check_field(flags, "flags")
        return self._set_mem_attributes(address, size, attributes, flags)

    def _set_mem_attributes(self, address: int, size: int, attributes: int, flags: int) -> int:
        """:meth:`kvm_vm_set_mem_attributes` on fields already checked as uAPI integers."""
        if flags:
            raise KvmError(errno.EINVAL, "flags must be 0")
        if attributes and attributes & ~self.supported_mem_attributes():
            raise KvmError(errno.EINVAL, f"attributes {attributes:#x} not supported by this VM")
        if size == 0 or address + size > U64:
            raise KvmError(errno.EINVAL, "size is 0 or address+size wraps")
        if address % PAGE_4K or size % PAGE_4K:
            raise KvmError(errno.EINVAL, "address and size must be page aligned")
        start, end = address >> PAGE_SHIFT, (address + size) >> PAGE_SHIFT
        if (self.attributes.get(start) == attributes if end == start + 1
                else self.attributes.has(start, end, attributes)):
            return 0
        if self.fault_injection.xa_reserve_fails or self.kvm.fault_injection.xa_reserve_fails:
            raise KvmError(errno.ENOMEM, "xa_reserve failed")
        going_private = bool(attributes & U.KVM_MEMORY_ATTRIBUTE_PRIVATE)
        for slot in self.memslots.values():
            s, e = max(start, slot.base_gfn), min(end, slot.end_gfn)
            if s < e:
                s, e = hugepage_extend(slot, s, e)
                self.zap_gfn_range(s, e, "shared" if going_private else "private")
        self.attributes.set(start, end, attributes)
        return 0

    def memory_attributes(self, gfn: int) -> int:
        """``kvm_get_memory_attributes(kvm, gfn)``."""
        return self.attributes.get(check_field(gfn, "gfn"))

    def lpage_mixed(self, gfn: int, level_pages: int) -> bool:
        """Whether the ``level_pages``-aligned huge page around ``gfn`` holds gfns with different
        attributes: ``KVM_LPAGE_MIXED_FLAG`` (``hugepage_has_attrs``), which caps the mapping
        level. Computed from the range store on demand. ``level_pages``: the pages of a 2M
        or a 1G page."""
        gfn, level_pages = check_field(gfn, "gfn"), check_field(level_pages, "level_pages")
        if level_pages not in HUGE_LEVEL_PAGES:
            raise ValueError(f"level_pages: must be {' or '.join(map(str, HUGE_LEVEL_PAGES))} "
                             f"(a 2M or a 1G page), got {level_pages!r}")
        base = gfn - gfn % level_pages
        return not self.attributes.has(base, base + level_pages, self.attributes.get(base))

    # ------------------------------------------------------------------ the NPT
    def zap_gfn_range(self, start: int, end: int, kind: str = "all") -> None:
        """Drop the NPT mappings of gfns [start, end) (arch/x86/kvm/mmu/mmu.c: ``kvm_zap_gfn_range``
        for ``kind="all"``, ``kvm_unmap_gfn_range`` with the range's ``attr_filter`` for
        ``"shared"`` / ``"private"``). A huge mapping straddling the range goes whole: it is
        rebuilt on the next fault. Recorded in :attr:`zaps`."""
        start, end = check_field(start, "start"), check_field(end, "end")
        if end < start:
            raise ValueError(f"start, end: an empty or reversed range [{start:#x}, {end:#x})")
        if not isinstance(kind, str) or kind not in _ZAP_FILTERS:
            raise ValueError(f"kind: must be one of {', '.join(_ZAP_FILTERS)}, got {kind!r}")
        self.zaps.append((start, end, kind))
        drop = _ZAP_FILTERS[kind]
        for s, e, v in self.sptes.ranges(start, end):
            if v in drop:
                self.sptes.set(s, e, 0)

    # ------------------------------------------------------------------ guest_memfd
    def create_guest_memfd(self, size: int, flags: int = 0) -> GuestMemfd:
        """``KVM_CREATE_GUEST_MEMFD`` (``kvm_gmem_create``): unsupported flags first, then
        size <= 0 or not page aligned: EINVAL. ``size`` is a ``u64`` field read as an ``loff_t``
        (``loff_t size = args->size``), so from 2**63 on it is negative: EINVAL too."""
        self.check_alive()
        size, flags = check_field(size, "size"), check_field(flags, "flags")
        if flags & ~_check_extension(self.kvm, self, U.KVM_CAP_GUEST_MEMFD_FLAGS):
            raise KvmError(errno.EINVAL, f"guest_memfd flags {flags:#x} not supported")
        if size == 0 or size > LOFF_T_MAX or size % PAGE_4K:
            raise KvmError(errno.EINVAL, "size must be a positive multiple of the page size")
        f = GuestMemfd(self, size, flags)
        self.gmem_files.add(f)
        return f

    # ------------------------------------------------------------------ memslots
    def set_user_memory_region(self, slot: int, flags: int, guest_phys_addr: int,
                               memory_size: int, userspace_addr: int) -> int:
        """``KVM_SET_USER_MEMORY_REGION`` (v1): only LOG_DIRTY_PAGES|READONLY flags (EINVAL)."""
        self.check_alive()
        if check_field(flags, "flags", 32) & ~(U.KVM_MEM_LOG_DIRTY_PAGES | U.KVM_MEM_READONLY):
            raise KvmError(errno.EINVAL, "v1 memslot flags are LOG_DIRTY_PAGES|READONLY only")
        return self._set_memory_region(slot, flags, guest_phys_addr, memory_size, userspace_addr, 0, None)

    def set_user_memory_region2(self, slot: int, flags: int, guest_phys_addr: int, memory_size: int,
                                userspace_addr: int = 0, guest_memfd_offset: int = 0,
                                guest_memfd=None) -> int:
        """``KVM_SET_USER_MEMORY_REGION2``."""
        self.check_alive()
        return self._set_memory_region(slot, flags, guest_phys_addr, memory_size, userspace_addr,
                                       guest_memfd_offset, guest_memfd)

    def _set_memory_region(self, slot, flags, gpa, size, uaddr, gmem_offset, gmem) -> int:
        """``kvm_set_memory_region`` after :func:`kit.kvm.memslot.check_memory_region`: delete
        (size 0), move / change flags, or create (binding the guest_memfd)."""
        r = check_memory_region(self, slot, flags, gpa, size, uaddr, gmem_offset)
        old = self.memslots.get((r.as_id, r.id))
        if r.npages == 0:                                  # delete
            if old is None:
                raise KvmError(errno.EINVAL, "deleting a memslot that does not exist")
            if old.gmem is not None:
                kvm_gmem_unbind(old)
            self.zap_gfn_range(old.base_gfn, old.end_gfn, "all")
            del self.memslots[(r.as_id, r.id)]
            return 0
        if old is not None:                                # modify: move or flags-only
            check_memslot_move(old, r.flags, r.base_gfn, r.npages, r.userspace_addr)
            if r.base_gfn == old.base_gfn and r.flags == old.flags:
                return 0
            if r.base_gfn != old.base_gfn:
                check_memslot_overlap(self.memslots, r.as_id, r.id, r.base_gfn, r.npages)
                self.zap_gfn_range(old.base_gfn, old.end_gfn, "all")
            old.base_gfn, old.flags = r.base_gfn, r.flags
            return 0
        check_memslot_overlap(self.memslots, r.as_id, r.id, r.base_gfn, r.npages)   # create
        new = Memslot(r.id, r.as_id, r.flags, r.base_gfn, r.npages, r.userspace_addr)
        if r.flags & U.KVM_MEM_GUEST_MEMFD:
            kvm_gmem_bind(self, new, gmem, r.gmem_offset)
        self.memslots[(r.as_id, r.id)] = new
        return 0

    def slot_for_gfn(self, gfn: int, as_id: int = 0) -> Memslot | None:
        return slot_for_gfn(self.memslots, check_field(gfn, "gfn"), check_field(as_id, "as_id", 16))

    def gmem_backed(self, start: int, end: int) -> bool:
        """Whether every gfn of ``[start, end)`` lies in a memslot whose guest_memfd can back
        private memory (``KVM_MEM_GUEST_MEMFD`` and the file still open): what
        ``kvm_mmu_faultin_pfn_gmem`` needs for a private fault to succeed."""
        start, end = check_field(start, "start"), check_field(end, "end")
        covered = 0
        for slot in self.memslots.values():
            s, e = max(start, slot.base_gfn), min(end, slot.end_gfn)
            if s < e:
                if not slot.flags & U.KVM_MEM_GUEST_MEMFD or slot.gmem is None:
                    return False
                covered += e - s
        return covered == end - start

    # ------------------------------------------------------------------ vCPUs and caps
    def create_vcpu(self, id: int) -> Vcpu:
        """``KVM_CREATE_VCPU`` (``kvm_vm_ioctl_create_vcpu``): an id at or past
        ``KVM_MAX_VCPU_IDS``, or a VM that has ``KVM_MAX_VCPUS`` vCPUs, is EINVAL; an id already
        in use is EEXIST; then the arch's ``vcpu_create`` (SNP: the VMSA page). The whole ioctl:
        :meth:`vcpu_precreate`, :meth:`vcpu_arch_create` and :meth:`vcpu_install`, the checks
        made first so that a failing call changes nothing."""
        self.check_alive()
        id = check_field(id, "id")
        if id >= KVM_MAX_VCPU_IDS:
            raise KvmError(errno.EINVAL, f"vCPU id {id} >= KVM_MAX_VCPU_IDS ({KVM_MAX_VCPU_IDS})")
        if len(self.vcpus) >= VCPUS_PER_VM.max:
            raise KvmError(errno.EINVAL, f"the VM has KVM_MAX_VCPUS ({VCPUS_PER_VM.max}) vCPUs")
        if id in self.vcpus:
            raise KvmError(errno.EEXIST, f"vCPU {id} exists")
        self.vcpu_precreate()
        return self.vcpu_install(self.vcpu_arch_create(id))

    # kvm_vm_ioctl_create_vcpu (virt/kvm/kvm_main.c) in its three parts: the first and the last
    # run under kvm->lock, the arch's creation between them without it.
    def vcpu_precreate(self) -> int:
        """Under ``kvm->lock``: ``kvm->created_vcpus++`` (the count ``sev_vm_copy_enc_context_from``
        checks); returns the new count."""
        self.check_alive()
        self.created_vcpus += 1
        return self.created_vcpus

    def vcpu_arch_create(self, id: int) -> Vcpu:
        """Without the lock: ``kvm_arch_vcpu_create`` (the arch's ``vcpu_create``: SNP allocates
        the VMSA page), reading the VM's state as it is now."""
        vcpu = Vcpu(self, check_field(id, "id", 32))
        self.x86_ops.vcpu_create(vcpu)
        return vcpu

    def vcpu_install(self, vcpu: Vcpu) -> Vcpu:
        """Under ``kvm->lock`` again: an id already in use is EEXIST, and the vCPU is destroyed
        (``kvm_arch_vcpu_destroy``) and ``created_vcpus`` dropped; else the vCPU is added to the
        VM (``xa_insert``, ``online_vcpus++``)."""
        if vcpu.id in self.vcpus:
            self.x86_ops.vcpu_free(vcpu)
            self.created_vcpus -= 1
            raise KvmError(errno.EEXIST, f"vCPU {vcpu.id} exists")
        self.vcpus[vcpu.id] = vcpu
        return vcpu

    def enable_cap(self, cap: int, *args) -> int:
        """``KVM_ENABLE_CAP``. ``KVM_CAP_EXIT_HYPERCALL``: args[0] is a mask of hypercalls to
        exit to userspace for; bits outside ``KVM_EXIT_HYPERCALL_VALID_MASK`` (only
        ``KVM_HC_MAP_GPA_RANGE``) -> EINVAL. ``KVM_CAP_VM_COPY/MOVE_ENC_CONTEXT_FROM``: args[0]
        must be a VM (EBADF), then the source VM's arch ops decide. Other caps: EINVAL (not
        modelled yet)."""
        self.check_alive()
        cap = check_field(cap, "cap")
        if cap in (U.KVM_CAP_VM_COPY_ENC_CONTEXT_FROM, U.KVM_CAP_VM_MOVE_ENC_CONTEXT_FROM):
            if not args:
                raise KvmError(errno.EBADF, "no source VM given")
            src = args[0]
            if not isinstance(src, VM):
                raise KvmError(errno.EBADF, f"{type(src).__name__} is not a VM file")
            if cap == U.KVM_CAP_VM_COPY_ENC_CONTEXT_FROM:
                return src.x86_ops.vm_copy_enc_context_from(self, src)
            return src.x86_ops.vm_move_enc_context_from(self, src)
        if cap == U.KVM_CAP_EXIT_HYPERCALL:
            mask = check_field(args[0] if args else 0, "args[0]")
            if mask & ~(1 << U.KVM_HC_MAP_GPA_RANGE):
                raise KvmError(errno.EINVAL, "hypercall mask has bits outside the valid mask")
            self.exit_hypercalls = mask
            return 0
        raise KvmError(errno.EINVAL, f"capability {cap} cannot be enabled here")

    # ------------------------------------------------------------------ KVM_MEMORY_ENCRYPT_*
    def sev_init(self) -> int:
        """Initialise SEV/SEV-ES/SNP for this VM (``KVM_SEV_INIT2`` through the arch's
        ``mem_enc_ioctl``): allocates its ASID (:func:`kit.kvm.sev.sev_init`)."""
        self.check_alive()
        return self.x86_ops.mem_enc_ioctl(self, U.KVM_SEV_INIT2)

    def memory_encrypt_reg_region(self, addr: int, size: int) -> int:
        """``KVM_MEMORY_ENCRYPT_REG_REGION`` (the arch's ``mem_enc_register_region``,
        :func:`kit.kvm.sev.register_region`)."""
        self.check_alive()
        return self.x86_ops.mem_enc_register_region(self, check_field(addr, "addr"),
                                                    check_field(size, "size"))

    def memory_encrypt_unreg_region(self, addr: int, size: int) -> int:
        """``KVM_MEMORY_ENCRYPT_UNREG_REGION`` (the arch's ``mem_enc_unregister_region``,
        :func:`kit.kvm.sev.unregister_region`)."""
        self.check_alive()
        return self.x86_ops.mem_enc_unregister_region(self, check_field(addr, "addr"),
                                                      check_field(size, "size"))

    def destroy(self) -> None:
        """Userspace dropped the VM (``kvm_destroy_vm``): the arch frees every vCPU
        (``vcpu_free``) and the VM (``vm_destroy``: SEV gives the ASID to reclaim, or unlinks a
        mirror); the VM is dead; its guest_memfd files keep their memory."""
        if not self.dead:
            for vcpu in self.vcpus.values():
                self.x86_ops.vcpu_free(vcpu)
            self.x86_ops.vm_destroy(self)
        self.dead = True
