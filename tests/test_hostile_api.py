"""The Python API against careless and hostile input: every public call of ``kit.host`` and
``kit.kvm`` given a value of the wrong type or out of range is refused with a ``ValueError``
or ``TypeError`` naming the parameter (or, for a KVM-level call, the kernel's errno), and
the whole model state is exactly as before (:func:`tests.hostile.digest`). Never a
ZeroDivisionError, IndexError, numpy error, or silent acceptance.

Each :class:`Case` is one public callable with valid arguments; every parameter in turn gets
every hostile value (:data:`tests.hostile.HOSTILE`) and, in the property test, random ones.
Also here: the issue's named instances, the size parser's ASCII-only rule, and the bounds
checked before work.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from kit.errors import KvmError
from kit.host import Host
from kit.host import views
from kit.host.ledger import Ledger
from kit.host.directmap import DirectMap
from kit.host.memory import PhysicalMemory
from kit.host.rmp import Rmp, RmpRules
from kit.host.rmptable import RmpTable
from kit.kvm import Kvm, gmem, probe, snp, sev, tdx
from kit.kvm import uapi as U
from kit.kvm.ghcb import PscDesc, PscEntry, ghcb_msr_psc_req, ghcb_msr_term_req, SNP_PAGE_STATE_PRIVATE
from kit.kvm.vmm import Vmm
from kit.units import GiB, MiB, PAGE_2M, PAGE_4K, PAGES_PER_2M, parse_size
from tests.hostile import HOSTILE, digest, hostile_for, is_errno, refused

R = PAGES_PER_2M
MEM = GiB + 4 * MiB                      # one 1G direct-map chunk and a 2M-mapped tail
GMEM = U.KVM_MEM_GUEST_MEMFD
UADDR = 1 << 40
FILE = 8 * MiB


def world():
    """A small host with a SW_PROTECTED VM and an SNP VM, each with a guest_memfd slot, a vCPU
    and a VMM: every public call below has something real to act on."""
    host = Host(mem=MEM, cores=4)
    host.rmp_make_private(4 * R, 0, PAGE_2M, 1, False)             # a private 2M page
    host.rmp_make_private(6 * R + 3, 0x3000, PAGE_4K, 1, False)    # and a private 4K page
    kvm = Kvm(host, gmem_hugepages=True, min_sev_asid=4)
    sw = kvm.create_vm(U.KVM_X86_SW_PROTECTED_VM)
    sf = sw.create_guest_memfd(FILE)
    sw.set_user_memory_region2(0, GMEM, 0, FILE, UADDR, 0, sf)
    sw.set_memory_attributes(0, 2 * MiB, U.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    sw.enable_cap(U.KVM_CAP_EXIT_HYPERCALL, 1 << U.KVM_HC_MAP_GPA_RANGE)
    vcpu = sw.create_vcpu(0)
    spare = sw.create_guest_memfd(FILE)                # not bound yet
    plain = kvm.create_vm(U.KVM_X86_DEFAULT_VM)       # a VM whose guest_memfd userspace maps
    f = plain.create_guest_memfd(FILE, U.GUEST_MEMFD_FLAG_MMAP | U.GUEST_MEMFD_FLAG_INIT_SHARED)
    f.mmap(FILE)
    sn = kvm.create_vm(U.KVM_X86_SNP_VM)
    sn.sev_init()
    g = sn.create_guest_memfd(FILE)
    sn.set_user_memory_region2(0, GMEM, 0, FILE, UADDR, 0, g)
    sn.enable_cap(U.KVM_CAP_EXIT_HYPERCALL, 1 << U.KVM_HC_MAP_GPA_RANGE)
    sn.set_memory_attributes(0, 4 * MiB, U.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    svcpu = sn.create_vcpu(0)
    sev_vm = kvm.create_vm(U.KVM_X86_SEV_VM)
    sev_vm.sev_init()
    sev_vm.memory_encrypt_reg_region(UADDR, 4 * PAGE_4K)
    kernel_page = int(host.memory.alloc(0, "kernel")[0])
    vt = Kvm(Host(mem="64MiB", cores=4), init_ops=tdx.vt_init_ops, vm_types=tdx.VT_VM_TYPES)   # Intel, TDX
    td = vt.create_vm(U.KVM_X86_TDX_VM)
    tdvcpu = vt.create_vm(U.KVM_X86_TDX_VM).create_vcpu(0)
    tdvcpu.vm.enable_cap(U.KVM_CAP_EXIT_HYPERCALL, 1 << U.KVM_HC_MAP_GPA_RANGE)
    return SimpleNamespace(host=host, kvm=kvm, sw=sw, f=f, spare=spare, vcpu=vcpu, snp=sn, g=g, svcpu=svcpu,
                           sev=sev_vm, vmm=Vmm(sw), dm=host.directmap, rmp=host.rmp, mem=host.memory,
                           kernel_page=kernel_page, td=td, tdvcpu=tdvcpu, roots=(host, kvm, vt))


# kinds of parameter: which hostile values must be refused
INT, BOOL, OBJ, OPT_INT, OPT_BOOL, SIZE, SEQ, STR = "int", "bool", "obj", "int?", "bool?", "size", "seq", "str"
#: sequences no index or type list accepts
BAD_SEQS = ([-1], [1.5], [True], [[1]], [2 ** 64], ["x"], [None], [np.float64(1)])


def _valid_seq(v) -> bool:
    """[1], (1,), {1}: a well-formed sequence of one small int (valid where a SEQ is wanted)."""
    return isinstance(v, (list, tuple, set)) and len(v) == 1 and type(next(iter(v))) is int and next(iter(v)) == 1


@dataclass
class Case:
    label: str
    call: object                 # call(w, **overrides)
    params: dict                 # parameter -> kind
    codes: bool = False          # a non-zero return code is a refusal too
    names: dict = field(default_factory=dict)   # parameter -> the name its error carries
    ok: dict = field(default_factory=dict)      # parameter -> which of the hostile values are valid there

    def hostile(self, param):
        kind = self.params[param]
        values = list(HOSTILE)
        if kind == SEQ:
            values = [v for v in values if not _valid_seq(v)] + list(BAD_SEQS)
        if kind == STR:
            values = [v for v in values if not isinstance(v, str)]
        if kind in (BOOL, OPT_BOOL):
            values = [v for v in values if not isinstance(v, (bool, np.bool_))]
        if kind in (OPT_INT, OPT_BOOL):
            values = [v for v in values if v is not None]
        if kind == SIZE:
            values = [v for v in values if not (isinstance(v, str) and v == "1")]
        if param in self.ok:
            values = [v for v in values if not self.ok[param](v)]
        return values

    def __repr__(self):
        return self.label


def C(label, call, codes=False, names=None, ok=None, **params):
    return Case(label, call, params, codes, names or {}, ok or {})


# ------------------------------------------------------------------ the calls
CASES = [
    # ---------------------------------------------------------------- Host
    C("Host", lambda w, mem="64MiB", cores=4, seed=0, snp=True, direct_gbpages=True, overlap_retries=None,
      tlb_single_page_flush_ceiling=33, placement="lowest", directmap_policy="split-on-demand",
      host_fault_policy="oops", rmp_rules=None:
      Host(mem=mem, cores=cores, seed=seed, snp=snp, direct_gbpages=direct_gbpages,
           overlap_retries=overlap_retries, tlb_single_page_flush_ceiling=tlb_single_page_flush_ceiling,
           placement=placement, directmap_policy=directmap_policy, host_fault_policy=host_fault_policy,
           rmp_rules=rmp_rules),
      mem=SIZE, cores=INT, seed=INT, snp=BOOL, direct_gbpages=BOOL, overlap_retries=OPT_INT,
      tlb_single_page_flush_ceiling=INT, placement=OBJ, directmap_policy=OBJ, host_fault_policy=OBJ,
      rmp_rules=OPT_INT),
    C("Host.rmp_make_private", lambda w, pfn=8 * R, gpa=0, level=PAGE_2M, asid=1, immutable=False, npages=None:
      w.host.rmp_make_private(pfn, gpa, level, asid, immutable, npages=npages),
      pfn=INT, gpa=INT, level=INT, asid=INT, immutable=BOOL, npages=OPT_INT),
    C("Host.rmp_make_shared", lambda w, pfn=4 * R, level=PAGE_2M, npages=None:
      w.host.rmp_make_shared(pfn, level, npages=npages), pfn=INT, level=INT, npages=OPT_INT),
    C("Host.snp_lookup_rmpentry", lambda w, pfn=0: w.host.snp_lookup_rmpentry(pfn), pfn=INT),
    C("Host.snp_leak_pages", lambda w, pfn=10 * R, npages=1: w.host.snp_leak_pages(pfn, npages),
      pfn=INT, npages=INT),
    C("Host.write", lambda w, pfn=0, npages=1: w.host.write(pfn, npages), pfn=INT, npages=INT),
    C("Host.read", lambda w, pfn=0, npages=1: w.host.read(pfn, npages), pfn=INT, npages=INT),
    C("Host.raise_fault", lambda w, pfn=0, npages=1, write=True: w.host.raise_fault(pfn, npages, write=write),
      pfn=INT, npages=INT, write=BOOL),
    C("Host.handle_fault", lambda w, fault=None: w.host.handle_fault(fault) if fault is not None else None,
      fault=OPT_INT),
    C("Host.rmp_ranges", lambda w, pfn=0, npages=None, limit=200: w.host.rmp_ranges(pfn, npages, limit=limit),
      pfn=INT, npages=OPT_INT, limit=INT),
    C("Host.directmap_policy=", lambda w, policy="presplit-4k": setattr(w.host, "directmap_policy", policy),
      policy=OBJ, names={"policy": "directmap_policy"}),
    # ---------------------------------------------------------------- DirectMap
    C("DirectMap.level", lambda w, pfn=0: w.dm.level(pfn), pfn=INT),
    C("DirectMap.present", lambda w, pfn=0: w.dm.present(pfn), pfn=INT),
    C("DirectMap.present_mask", lambda w, region=0: w.dm.present_mask(region), region=INT),
    C("DirectMap.any_not_present", lambda w, regions=(0, 1): w.dm.any_not_present(regions), regions=SEQ),
    C("DirectMap.set_memory_4k", lambda w, pfn=0, npages=1: w.dm.set_memory_4k(pfn, npages), pfn=INT, npages=INT),
    C("DirectMap.split_regions", lambda w, regions=(0, 1): w.dm.split_regions(regions), regions=SEQ),
    C("DirectMap.split_regions[i]", lambda w, r=0: w.dm.split_regions([0, r]), r=INT, names={"r": "regions"}),
    C("DirectMap.set_direct_map_invalid_noflush", lambda w, pfn=0, npages=1:
      w.dm.set_direct_map_invalid_noflush(pfn, npages), pfn=INT, npages=INT),
    C("DirectMap.set_direct_map_default_noflush", lambda w, pfn=0, npages=1:
      w.dm.set_direct_map_default_noflush(pfn, npages), pfn=INT, npages=INT),
    C("DirectMap.cpa_flush", lambda w, npages=1: w.dm.cpa_flush(npages), npages=INT),
    C("DirectMap.collapse", lambda w, regions=(0,), gbpages=None: w.dm.collapse(regions, gbpages=gbpages),
      regions=SEQ, gbpages=OPT_BOOL),
    C("DirectMap.collapse[i]", lambda w, r=0: w.dm.collapse([r]), r=INT, names={"r": "regions"}),
    # ---------------------------------------------------------------- Rmp
    C("Rmp.rmpread", lambda w, pfn=0: w.rmp.rmpread(pfn), pfn=INT),
    C("Rmp.rmpupdate", lambda w, pfn=8 * R, assigned=True, pagesize=PAGE_2M, immutable=False, asid=1, gpa=0,
      npages=None: w.rmp.rmpupdate(pfn, assigned=assigned, pagesize=pagesize, immutable=immutable, asid=asid,
                                   gpa=gpa, npages=npages),
      pfn=INT, assigned=BOOL, pagesize=INT, immutable=BOOL, asid=INT, gpa=INT, npages=OPT_INT),
    C("Rmp.psmash", lambda w, pfn=4 * R: w.rmp.psmash(pfn), pfn=INT),
    C("Rmp.pvalidate", lambda w, pfn=4 * R, pagesize=PAGE_2M, validate=True, asid=1, gpa=0, vmpl=0:
      w.rmp.pvalidate(pfn, pagesize=pagesize, validate=validate, asid=asid, gpa=gpa, vmpl=vmpl),
      pfn=INT, pagesize=INT, validate=BOOL, asid=INT, gpa=INT, vmpl=INT),
    C("Rmp.pvalidate_2m_run", lambda w, pfn=4 * R, nregions=1, asid=1, gpa=0:
      w.rmp.pvalidate_2m_run(pfn, nregions, asid=asid, gpa=gpa), pfn=INT, nregions=INT, asid=INT, gpa=INT),
    C("Rmp.rmpadjust", lambda w, pfn=4 * R, pagesize=PAGE_2M, target_vmpl=1, perms=1, vmsa=False, asid=1,
      gpa=0, vmpl=0: w.rmp.rmpadjust(pfn, pagesize=pagesize, target_vmpl=target_vmpl, perms=perms, vmsa=vmsa,
                                     asid=asid, gpa=gpa, vmpl=vmpl),
      codes=True, pfn=INT, pagesize=INT, target_vmpl=INT, perms=INT, vmsa=BOOL, asid=INT, gpa=INT, vmpl=INT),
    C("Rmp.firmware_set", lambda w, pfn=6 * R, npages=1, validated=True, immutable=None, vmsa=None:
      w.rmp.firmware_set(pfn, npages, validated=validated, immutable=immutable, vmsa=vmsa),
      pfn=INT, npages=INT, validated=OPT_BOOL, immutable=OPT_BOOL, vmsa=OPT_BOOL),
    C("Rmp.mark_in_use", lambda w, pfn=0, in_use=True: w.rmp.mark_in_use(pfn, in_use), pfn=INT, in_use=BOOL),
    C("Rmp.assigned_mask", lambda w, region=0: w.rmp.assigned_mask(region), region=INT),
    C("Rmp.region_has_assigned", lambda w, regions=(0, 1): w.rmp.region_has_assigned(regions), regions=SEQ),
    C("Rmp.check_rmpupdate", lambda w, pfn=0, npages=1, assigned=True, size2m=False, asid=1:
      w.rmp.check_rmpupdate(pfn, npages, assigned=assigned, size2m=size2m, asid=asid),
      pfn=INT, npages=INT, assigned=BOOL, size2m=BOOL, asid=INT),
    # ---------------------------------------------------------------- PhysicalMemory
    C("PhysicalMemory.alloc", lambda w, order=0, owner="kernel", count=1: w.mem.alloc(order, owner, count),
      order=INT, owner=OBJ, count=INT),
    C("PhysicalMemory.free", lambda w, pfn=None, order=0: w.mem.free(w.kernel_page if pfn is None else pfn, order),
      pfn=OPT_INT, order=INT),
    C("PhysicalMemory.owner", lambda w, pfn=0: w.mem.owner(pfn), pfn=INT),
    C("PhysicalMemory.owners", lambda w, region=0: w.mem.owners(region), region=INT),
    C("PhysicalMemory.set_owner", lambda w, pfn=20 * R, npages=1, owner="firmware": w.mem.set_owner(pfn, npages, owner),
      pfn=INT, npages=INT, owner=OBJ),
    C("PhysicalMemory.leak", lambda w, pfn=20 * R, npages=1: w.mem.leak(pfn, npages), pfn=INT, npages=INT),
    # ---------------------------------------------------------------- Ledger, views
    C("Ledger.record", lambda w, op="x", n=1: w.host.ledger.record(op, cpa_lock=n), op=STR, n=INT,
      names={"n": "cpa_lock"}),
    C("Ledger.since", lambda w, mark=0: w.host.ledger.since(mark), mark=INT),
    C("Ledger.rollback", lambda w, mark=None: w.host.ledger.rollback(len(w.host.ledger.rows) if mark is None else mark),
      mark=OPT_INT),
    C("views.region_detail", lambda w, region=0: views.region_detail(w.host, region), region=INT),
    C("views.grid", lambda w, width=8: views.grid(np.zeros(16, np.uint8), width), width=INT),
    C("views.rmp_ranges", lambda w, pfn=0, npages=None, limit=10: views.rmp_ranges(w.host, pfn, npages, limit=limit),
      pfn=INT, npages=OPT_INT, limit=INT),
    # ---------------------------------------------------------------- Kvm
    C("Kvm", lambda w, host=None, min_sev_asid=100, max_sev_asid=509, block_snp_mirror=True, gmem_hugepages=False,
      vm_types=(0, 1, 2), x86_ops=None, init_ops=None, fault_injection=None:
      Kvm(w.host if host is None else host, min_sev_asid=min_sev_asid, max_sev_asid=max_sev_asid,
          block_snp_mirror=block_snp_mirror, gmem_hugepages=gmem_hugepages, vm_types=vm_types,
          x86_ops=x86_ops, init_ops=init_ops, fault_injection=fault_injection),
      host=OPT_INT, min_sev_asid=INT, max_sev_asid=INT, block_snp_mirror=BOOL, gmem_hugepages=BOOL,
      vm_types=SEQ, x86_ops=OPT_INT, init_ops=OPT_INT, fault_injection=OPT_INT,
      ok={"x86_ops": lambda v: isinstance(v, dict) and not v}),
    C("Kvm.create_vm", lambda w, type=0, attribute_owner="userspace", npf_policy="exit", x86_ops=None:
      w.kvm.create_vm(type, attribute_owner=attribute_owner, npf_policy=npf_policy, x86_ops=x86_ops),
      type=INT, attribute_owner=OBJ, npf_policy=OBJ, x86_ops=OPT_INT),
    C("Kvm.check_extension", lambda w, cap=U.KVM_CAP_GUEST_MEMFD: w.kvm.check_extension(cap), cap=INT),
    # ---------------------------------------------------------------- VM
    C("VM.check_extension", lambda w, cap=U.KVM_CAP_GUEST_MEMFD: w.sw.check_extension(cap), cap=INT),
    C("VM.set_memory_attributes", lambda w, address=4 * MiB, size=PAGE_4K, attributes=U.KVM_MEMORY_ATTRIBUTE_PRIVATE,
      flags=0: w.sw.set_memory_attributes(address, size, attributes, flags),
      address=INT, size=INT, attributes=INT, flags=INT),
    C("VM.kvm_vm_set_mem_attributes", lambda w, address=4 * MiB, size=PAGE_4K,
      attributes=U.KVM_MEMORY_ATTRIBUTE_PRIVATE, flags=0: w.sw.kvm_vm_set_mem_attributes(address, size, attributes, flags),
      address=INT, size=INT, attributes=INT, flags=INT),
    C("VM.memory_attributes", lambda w, gfn=0: w.sw.memory_attributes(gfn), gfn=INT),
    C("VM.lpage_mixed", lambda w, gfn=0, level_pages=R: w.sw.lpage_mixed(gfn, level_pages), gfn=INT, level_pages=INT),
    C("VM.zap_gfn_range", lambda w, start=0, end=R, kind="all": w.sw.zap_gfn_range(start, end, kind),
      start=INT, end=INT, kind=OBJ),
    C("VM.create_guest_memfd", lambda w, size=FILE, flags=0: w.sw.create_guest_memfd(size, flags), size=INT, flags=INT),
    C("VM.set_user_memory_region", lambda w, slot=1, flags=0, guest_phys_addr=GiB, memory_size=2 * MiB,
      userspace_addr=UADDR: w.sw.set_user_memory_region(slot, flags, guest_phys_addr, memory_size, userspace_addr),
      slot=INT, flags=INT, guest_phys_addr=INT, memory_size=INT, userspace_addr=INT),
    C("VM.set_user_memory_region2", lambda w, slot=1, flags=GMEM, guest_phys_addr=GiB, memory_size=2 * MiB,
      userspace_addr=UADDR, guest_memfd_offset=0, guest_memfd=None:
      w.sw.set_user_memory_region2(slot, flags, guest_phys_addr, memory_size, userspace_addr, guest_memfd_offset,
                                   w.spare if guest_memfd is None else guest_memfd),
      slot=INT, flags=INT, guest_phys_addr=INT, memory_size=INT, userspace_addr=INT, guest_memfd_offset=INT,
      guest_memfd=OPT_INT),
    C("VM.slot_for_gfn", lambda w, gfn=0, as_id=0: w.sw.slot_for_gfn(gfn, as_id), gfn=INT, as_id=INT),
    C("VM.gmem_backed", lambda w, start=0, end=1: w.sw.gmem_backed(start, end), start=INT, end=INT),
    C("VM.create_vcpu", lambda w, id=1: w.sw.create_vcpu(id), id=INT),
    C("VM.enable_cap", lambda w, cap=U.KVM_CAP_EXIT_HYPERCALL, arg=0: w.sw.enable_cap(cap, arg), cap=INT, arg=INT,
      names={"arg": "args[0]"}),
    C("VM.memory_encrypt_reg_region", lambda w, addr=UADDR, size=PAGE_4K: w.sev.memory_encrypt_reg_region(addr, size),
      addr=INT, size=INT),
    C("VM.memory_encrypt_unreg_region", lambda w, addr=UADDR, size=4 * PAGE_4K:
      w.sev.memory_encrypt_unreg_region(addr, size), addr=INT, size=INT),
    # ---------------------------------------------------------------- guest_memfd
    C("GuestMemfd.fallocate", lambda w, mode=U.FALLOC_FL_KEEP_SIZE, offset=0, length=PAGE_4K:
      w.f.fallocate(mode, offset, length), mode=INT, offset=INT, length=INT),
    C("GuestMemfd.mmap", lambda w, length=FILE, offset=0, shared=True: w.f.mmap(length, offset, shared=shared),
      length=INT, offset=INT, shared=BOOL),
    C("GuestMemfd.user_access", lambda w, offset=0: w.f.user_access(offset), offset=INT),
    C("GuestMemfd.user_fill", lambda w, offset=0, length=PAGE_4K, value=1: w.f.user_fill(offset, length, value),
      offset=INT, length=INT, value=INT),
    C("GuestMemfd.user_read", lambda w, offset=0, length=1: w.f.user_read(offset, length), offset=INT, length=INT),
    C("GuestMemfd.madvise", lambda w, offset=0, length=PAGE_4K, advice=0: w.f.madvise(offset, length, advice),
      offset=INT, length=INT, advice=INT),
    C("GuestMemfd.mbind", lambda w, offset=0, length=PAGE_4K, mode=2, nodemask=(0,): w.f.mbind(offset, length, mode, nodemask),
      offset=INT, length=INT, mode=INT, nodemask=OBJ),
    C("GuestMemfd.get_mempolicy", lambda w, offset=0: w.f.get_mempolicy(offset), offset=INT),
    C("GuestMemfd.node_of", lambda w, offset=0: w.f.node_of(offset), offset=INT),
    C("GuestMemfd.get_pfn", lambda w, index=0, allocate=True: w.g.get_pfn(index, allocate=allocate),
      index=INT, allocate=BOOL),
    # ---------------------------------------------------------------- vCPU
    C("Vcpu.access", lambda w, gpa=GiB, write=True, private=None: w.vcpu.access(gpa, write=write, private=private),
      gpa=INT, write=BOOL, private=OPT_BOOL),
    C("Vcpu.fault_in", lambda w, gpa=GiB, write=True, private=None: w.vcpu.fault_in(gpa, write=write, private=private),
      gpa=INT, write=BOOL, private=OPT_BOOL),
    C("Vcpu.fill", lambda w, gpa=2 * MiB, length=PAGE_4K, value=1, private=False:
      w.vcpu.fill(gpa, length, value, private=private), gpa=INT, length=INT, value=INT, private=OPT_BOOL),
    C("Vcpu.read", lambda w, gpa=2 * MiB, length=1, private=False: w.vcpu.read(gpa, length, private=private),
      gpa=INT, length=INT, private=OPT_BOOL),
    C("Vcpu.hypercall", lambda w, nr=U.KVM_HC_MAP_GPA_RANGE, gpa=GiB, npages=1, attrs=0, cpl=0, long_mode=True:
      w.vcpu.hypercall(nr, gpa, npages, attrs, cpl=cpl, long_mode=long_mode), codes=True,
      names={"gpa": "args[0]", "npages": "args[1]", "attrs": "args[2]"},
      nr=INT, gpa=INT, npages=INT, attrs=INT, cpl=INT, long_mode=BOOL),
    C("Vcpu.complete_hypercall", lambda w, ret=0: w.vcpu.complete_hypercall(ret), ret=INT),
    C("Vcpu.pre_fault_memory", lambda w, gpa=0, size=PAGE_4K, flags=0: w.vcpu.pre_fault_memory(gpa, size, flags),
      gpa=INT, size=INT, flags=INT),
    C("Vcpu.vmgexit_psc", lambda w, desc=None: w.svcpu.vmgexit_psc(
        PscDesc([PscEntry(4 * R, SNP_PAGE_STATE_PRIVATE, PAGE_4K)]) if desc is None else desc), desc=OPT_INT),
    C("Vcpu.vmgexit_msr", lambda w, msr=None: w.svcpu.vmgexit_msr(
        ghcb_msr_psc_req(4 * R, SNP_PAGE_STATE_PRIVATE) if msr is None else msr), msr=OPT_INT),
    C("Vcpu.vmgexit_msr_psc", lambda w, msr=None: w.svcpu.vmgexit_msr_psc(
        ghcb_msr_psc_req(4 * R, SNP_PAGE_STATE_PRIVATE) if msr is None else msr), msr=OPT_INT),
    C("Vcpu.ghcb_terminate", lambda w, reason_set=0, reason_code=0: w.svcpu.ghcb_terminate(reason_set, reason_code),
      reason_set=INT, reason_code=INT),
    # ---------------------------------------------------------------- VMM
    C("Vmm", lambda w, vm=None, fallocate=True, max_exits=8: Vmm(w.sw if vm is None else vm, fallocate=fallocate,
                                                                 max_exits=max_exits),
      vm=OPT_INT, fallocate=BOOL, max_exits=INT),
    C("Vmm(prefault)", lambda w, prefault=True: Vmm(w.sw, prefault=prefault), prefault=BOOL),
    C("Vmm.pre_fault", lambda w, gpa=GiB, size=PAGE_4K, vcpu=None: w.vmm.pre_fault(gpa, size, vcpu),
      gpa=INT, size=INT, vcpu=OPT_INT),
    C("Vmm.convert", lambda w, gpa=2 * MiB, size=PAGE_4K, private=True: w.vmm.convert(gpa, size, private),
      gpa=INT, size=INT, private=BOOL),
    C("Vmm.handle", lambda w, exit=None: w.vmm.handle(exit) if exit is not None else None, exit=OPT_INT),
    C("Vmm.answer", lambda w, vcpu=None, exit=None: w.vmm.answer(w.vcpu if vcpu is None else vcpu, exit),
      vcpu=OPT_INT, exit=OPT_INT),
    C("Vmm.access", lambda w, vcpu=None, gpa=GiB, write=True, private=None:
      w.vmm.access(w.vcpu if vcpu is None else vcpu, gpa, write=write, private=private),
      vcpu=OPT_INT, gpa=INT, write=BOOL, private=OPT_BOOL),
    # ---------------------------------------------------------------- SEV and SNP
    C("snp.guest_pvalidate", lambda w, gpa=0, pagesize=PAGE_4K, validate=True:
      snp.guest_pvalidate(w.svcpu, gpa, pagesize, validate), codes=True, gpa=INT, pagesize=INT, validate=BOOL),
    C("snp.guest_validate", lambda w, gpa=0, npages=1: snp.guest_validate(w.svcpu, gpa, npages), gpa=INT, npages=INT),
    C("snp.snp_launch_update", lambda w, gfn_start=2 * R, npages=1, page_type=1, flags=0, uaddr=UADDR:
      snp.snp_launch_update(w.snp, gfn_start, npages, page_type, flags, uaddr=uaddr),
      gfn_start=INT, npages=INT, page_type=INT, flags=INT, uaddr=INT),
    C("snp.sev_legacy_command", lambda w, cmd="KVM_SEV_LAUNCH_UPDATE_DATA": snp.sev_legacy_command(w.sev, cmd), cmd=OBJ),
    C("snp.snp_page_reclaim", lambda w, pfn=6 * R + 3: snp.snp_page_reclaim(w.snp, pfn), codes=True, pfn=INT),
    C("snp.snp_begin_psc", lambda w, gfn=2 * R, cur_entry=0, end_entry=None:
      snp.snp_begin_psc(w.svcpu, [(gfn, SNP_PAGE_STATE_PRIVATE, PAGE_4K)], cur_entry=cur_entry, end_entry=end_entry),
      gfn=INT, cur_entry=INT, end_entry=OPT_INT),
    C("snp.snp_begin_psc_msr", lambda w, ghcb_msr=None: snp.snp_begin_psc_msr(
        w.svcpu, ghcb_msr_psc_req(4 * R, SNP_PAGE_STATE_PRIVATE) if ghcb_msr is None else ghcb_msr), ghcb_msr=OPT_INT),
    C("snp.snp_guest_owned_convert", lambda w, gfn=0, npages=1, private=True:
      snp.snp_guest_owned_convert(w.snp, gfn, npages, private), codes=True, gfn=INT, npages=INT, private=BOOL),
    C("snp.sev_handle_rmp_fault", lambda w, gpa=0, error_code=0: snp.sev_handle_rmp_fault(w.snp, gpa, error_code),
      gpa=INT, error_code=INT),
    C("snp.sev_max_mapping_level", lambda w, pfn=0: snp.sev_max_mapping_level(w.host, pfn), pfn=INT),
    C("snp.guest_pvalidate_2m_run", lambda w, gpa=0, nunits=1: snp.guest_pvalidate_2m_run(w.snp, gpa, nunits),
      gpa=INT, nunits=INT),
    C("snp.snp_fault_in_private_2m", lambda w, gfn=0, nunits=1: snp.snp_fault_in_private_2m(w.snp, gfn, nunits),
      gfn=INT, nunits=INT),
    C("sev.register_region", lambda w, addr=UADDR, size=PAGE_4K: sev.register_region(w.sev, addr, size),
      addr=INT, size=INT),
    C("sev.unregister_region", lambda w, addr=UADDR, size=4 * PAGE_4K: sev.unregister_region(w.sev, addr, size),
      addr=INT, size=INT),
    C("ghcb_msr_term_req", lambda w, reason_set=0, reason_code=0: ghcb_msr_term_req(reason_set, reason_code),
      reason_set=INT, reason_code=INT),
    C("ghcb_msr_psc_req", lambda w, gfn=0, op=1: ghcb_msr_psc_req(gfn, op), gfn=INT, op=INT),
    C("PscDesc", lambda w, cur_entry=0, end_entry=0, entries=None: PscDesc(
        [PscEntry(0, 1, PAGE_4K)] if entries is None else entries, cur_entry, end_entry),
      cur_entry=INT, end_entry=OPT_INT, entries=OPT_INT),
    C("PscEntry", lambda w, gfn=0, op=1, pagesize=PAGE_4K, cur_page=0: PscEntry(gfn, op, pagesize, cur_page),
      gfn=INT, op=INT, pagesize=INT, cur_page=INT),
    # ---------------------------------------------------------------- TDX
    C("tdx.shared_bit", lambda w, gpaw=48: tdx.shared_bit(gpaw), gpaw=INT),
    C("tdx.shared_alias", lambda w, gpa=0, gpaw=48: tdx.shared_alias(gpa, gpaw), gpa=INT, gpaw=INT),
    C("tdx.private_alias", lambda w, gpa=0, gpaw=48: tdx.private_alias(gpa, gpaw), gpa=INT, gpaw=INT),
    C("tdx.tdx_init_vm", lambda w, gpaw=48: tdx.tdx_init_vm(w.td, gpaw), gpaw=INT),
    C("tdx.tdvmcall_map_gpa", lambda w, gpa=0, size=PAGE_4K: tdx.tdvmcall_map_gpa(w.tdvcpu, gpa, size),
      gpa=INT, size=INT),
    C("tdx.complete_map_gpa", lambda w, ret=0: tdx.complete_map_gpa(w.tdvcpu, ret), ret=INT),
    # ---------------------------------------------------------------- storage and probes
    C("RmpTable", lambda w, nr_pages=4 * R: RmpTable(nr_pages), nr_pages=INT),
    C("Rmp", lambda w, nr_pages=4 * R, ledger=None: Rmp(nr_pages, ledger=Ledger() if ledger is None else ledger),
      nr_pages=INT, ledger=OPT_INT),
    C("DirectMap", lambda w, nr_pages=4 * R, gbpages=True, ceiling=33:
      DirectMap(nr_pages, ledger=Ledger(), gbpages=gbpages, tlb_single_page_flush_ceiling=ceiling),
      nr_pages=INT, gbpages=BOOL, ceiling=INT, names={"ceiling": "tlb_single_page_flush_ceiling"}),
    C("PhysicalMemory", lambda w, nr_pages=4 * R, placement="lowest":
      PhysicalMemory(nr_pages, rng=np.random.default_rng(0), placement=placement), nr_pages=INT, placement=OBJ),
    C("probe.asid_states", lambda w, last=8: probe.asid_states(w.kvm, last), last=OPT_INT),
    C("probe.conversion_outcome", lambda w, vm_type="sw-protected", owner="userspace", npf="exit",
      backing="guest_memfd", guest="asks first", pages=1, max_exits=8:
      probe.conversion_outcome(vm_type, owner=owner, npf=npf, backing=backing, guest=guest, pages=pages,
                               max_exits=max_exits),
      vm_type=OBJ, owner=OBJ, npf=OBJ, backing=OBJ, guest=OBJ, pages=INT, max_exits=INT,
      names={"npf": "npf_policy", "owner": "attribute_owner"}),
    C("probe.asid_kvm", lambda w, min_sev_asid=4, max_sev_asid=8, cores=4:
      probe.asid_kvm(min_sev_asid, max_sev_asid, cores=cores, mem="64MiB"),
      min_sev_asid=INT, max_sev_asid=INT, cores=INT),
    C("GuestMemfd.ftruncate", lambda w, size=FILE: w.f.ftruncate(size), size=INT),
    C("GuestMemfd.allocate_folios", lambda w, start=0, end=R: w.g.allocate_folios(start, end), start=INT, end=INT),
    C("GuestMemfd.free_folios", lambda w, start=0, end=R: w.g.free_folios(start, end), start=INT, end=INT),
    C("GuestMemfd.mark_allocated", lambda w, start=0, end=1: w.f.mark_allocated(start, end), start=INT, end=INT),
    C("GuestMemfd.invalidate_begin", lambda w, start=0, end=1: w.g.invalidate_begin(start, end), start=INT, end=INT),
    C("GuestMemfd.folio_pfns", lambda w, first=0, count=1: w.g.folio_pfns(first, count), first=INT, count=INT),
    C("GuestMemfd.get_folios", lambda w, first=0, count=1: w.g.get_folios(first, count), first=INT, count=INT),
    C("kvm_gmem_bind", lambda w, offset=0: gmem.kvm_gmem_bind(w.sw, SimpleNamespace(npages=1), w.spare, offset),
      offset=INT),
    C("AsidSpace.alloc", lambda w, vm_type=U.KVM_X86_SEV_VM: w.kvm.asids.alloc(vm_type), vm_type=INT),
    C("AsidSpace.free", lambda w, asid=None: w.kvm.asids.free(w.sev.asid if asid is None else asid), asid=OPT_INT),
    C("snp.sev_gmem_invalidate", lambda w, start=6 * R + 3, end=6 * R + 4: snp.sev_gmem_invalidate(w.host, start, end),
      start=INT, end=INT),
    C("snp.sev_gmem_prepare", lambda w, pfn=9 * R, gfn=0, order=0: snp.sev_gmem_prepare(w.snp, pfn, gfn, order),
      pfn=INT, gfn=INT, order=INT),
    C("RmpRules", lambda w, code=4: RmpRules(overlap_4k_in_2m=code), code=INT, names={"code": "overlap_4k_in_2m"}),
    C("probe.gfn", lambda w, gpa=0: probe.gfn(gpa), gpa=INT),
]


# ------------------------------------------------------------------ the sweep
def _sweep(case: Case, values_of) -> list[str]:
    """Every parameter of ``case`` with each of its hostile values; the findings."""
    w, found = world(), []
    before = digest(*w.roots)
    for param in case.params:
        for v in values_of(param):
            why = refused(lambda: case.call(w, **{param: v}), *w.roots, name=case.names.get(param, param),
                          codes=case.codes, before=before)
            if why:
                found.append(f"{case.label}({param}={v!r}): {why}")
                w = world()                       # something changed: start again from a clean world
                before = digest(*w.roots)
    return found


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.label)
def test_every_hostile_value_is_refused_naming_the_parameter_and_changes_nothing(case):
    found = _sweep(case, case.hostile)
    assert not found, "\n".join(found[:20])


PROPERTY_KINDS = (INT, OPT_INT, BOOL, OPT_BOOL, SEQ)
PAIRS = [(c, p) for c in CASES for p, k in c.params.items() if k in PROPERTY_KINDS]


@settings(max_examples=400, deadline=None)
@given(pair=st.sampled_from(PAIRS), data=st.data())
def test_random_hostile_values_on_any_public_call(pair, data):
    """The property: any wrong type or out-of-range value on any public call is refused and
    leaves the whole state unchanged."""
    case, param = pair
    valid = case.ok.get(param, lambda v: False)
    value = data.draw(hostile_for(case.params[param]).filter(lambda v: not valid(v)), label=param)
    w = _WORLD.get("w") or _WORLD.setdefault("w", world())
    why = refused(lambda: case.call(w, **{param: value}), *w.roots, name=case.names.get(param, param),
                  codes=case.codes)
    if why:
        _WORLD.pop("w", None)
    assert why is None, f"{case.label}({param}={value!r}): {why}"


_WORLD: dict = {}


# ------------------------------------------------------------------ the instances
def test_split_and_collapse_of_a_negative_region_change_no_count():
    for mem in ("64MiB", MEM):
        h = Host(mem=mem)
        before = h.directmap.counts()
        for call in (h.directmap.split_regions, h.directmap.collapse):
            with pytest.raises(ValueError, match=r"^regions: region indices must be 0\.\.\d+, got -1"):
                call([-1])
        assert h.directmap.counts() == before and not h.directmap.vmstat["direct_map_level2_splits"]
        assert sum(before.values()) == h.mem // 1024


def test_lpage_mixed_of_level_zero_names_the_level():
    vm = world().sw
    with pytest.raises(ValueError, match="^level_pages: must be 512 or 262144"):
        vm.lpage_mixed(0, 0)


@pytest.mark.parametrize("host", [None, "x", 3])
def test_kvm_needs_a_host(host):
    with pytest.raises(TypeError, match="^host: expected a kit.host.Host"):
        Kvm(host)


def test_truthy_strings_do_not_turn_options_on():
    h = Host(mem="64MiB")
    with pytest.raises(TypeError, match="^gmem_hugepages: expected True or False, got str 'no'"):
        Kvm(h, gmem_hugepages="no")
    with pytest.raises(TypeError, match="^block_snp_mirror"):
        Kvm(h, block_snp_mirror="no")
    for opt in ("snp", "direct_gbpages"):
        with pytest.raises(TypeError, match=f"^{opt}: expected True or False"):
            Host(mem="64MiB", **{opt: "no"})


def test_create_vm_refuses_a_bool_type():
    kvm = Kvm(Host(mem="64MiB"))
    with pytest.raises(TypeError, match="^type: expected an int, got bool True"):
        kvm.create_vm(True)
    assert not kvm.vms


@pytest.mark.parametrize("make, match", [
    (lambda: Host(mem="64MiB", tlb_single_page_flush_ceiling=-1), "^tlb_single_page_flush_ceiling: expected an integer 0.."),
    (lambda: Vmm(world().sw, max_exits=-1), r"^max_exits: expected an integer 1\.\.65536, got -1"),
    (lambda: Vmm(world().sw, max_exits=0), r"^max_exits: expected an integer 1\.\.65536, got 0"),
    (lambda: Host(mem="64MiB").rmp_ranges(limit=-1), r"^limit: expected an integer 1\.\.65536, got -1"),
    (lambda: Host(mem="64MiB").rmp_ranges(limit=0), "^limit: "),
    (lambda: Host(mem="64MiB", seed=-1), "^seed: "),
    (lambda: Host(mem="64MiB", overlap_retries=-1), "^overlap_retries: "),
])
def test_counts_out_of_range_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_guest_memfd_size_follows_kvm_gmem_create():
    """virt/kvm/guest_memfd.c ``kvm_gmem_create``: ``loff_t size = args->size``; ``size <= 0 ||
    !PAGE_ALIGNED(size)`` is EINVAL. A u64 from 2**63 on is a negative loff_t."""
    w = world()
    before = digest(*w.roots)
    for size in (2 ** 63, 2 ** 64 - PAGE_4K, 0, PAGE_4K + 1):
        with pytest.raises(KvmError) as e:
            w.sw.create_guest_memfd(size)
        assert is_errno(e.value, errno.EINVAL)
    with pytest.raises(ValueError, match="^size: must fit an unsigned 64-bit field"):
        w.sw.create_guest_memfd(2 ** 64)
    assert digest(*w.roots) == before
    big = w.sw.create_guest_memfd(2 ** 63 - PAGE_4K)           # the largest the kernel takes
    assert big.npages == (2 ** 63 - PAGE_4K) // PAGE_4K and big.allocated_pages() == 0


def test_fallocate_of_length_zero_is_einval():
    """fs/open.c ``vfs_fallocate``: ``if (offset < 0 || len <= 0) return -EINVAL;`` before the
    file's own ``fallocate`` (``kvm_gmem_fallocate``) sees the call, for allocation and hole
    punching alike; nothing changes."""
    w = world()
    f = w.sw.create_guest_memfd(2 * PAGE_2M)
    before = digest(*w.roots)
    for mode in (U.FALLOC_FL_KEEP_SIZE, U.FALLOC_FL_KEEP_SIZE | U.FALLOC_FL_PUNCH_HOLE):
        for offset in (0, PAGE_2M, 4 * PAGE_2M):
            with pytest.raises(KvmError) as e:
                f.fallocate(mode, offset, 0)
            assert is_errno(e.value, errno.EINVAL)
    assert digest(*w.roots) == before
    assert f.fallocate(U.FALLOC_FL_KEEP_SIZE, 0, PAGE_4K) == 0 and f.allocated_pages() == 1


def test_guest_accesses_stay_below_the_widest_guest_physical_address():
    w = world()
    before = digest(*w.roots)
    for gpa in (2 ** 64, 2 ** 52, -PAGE_4K):
        with pytest.raises(ValueError, match="^gpa: "):
            w.vcpu.access(gpa)
    assert digest(*w.roots) == before
    assert w.vcpu.access(2 ** 52 - PAGE_4K).reason == U.KVM_EXIT_MMIO      # no memslot: MMIO


def test_kvm_create_vcpu_limits_are_the_kernels():
    """virt/kvm/kvm_main.c ``kvm_vm_ioctl_create_vcpu``: ``id >= KVM_MAX_VCPU_IDS`` and
    ``created_vcpus >= max_vcpus`` are EINVAL."""
    from kit.kvm.limits import KVM_MAX_VCPU_IDS, VCPUS_PER_VM
    vm = Kvm(Host(mem="64MiB")).create_vm(U.KVM_X86_DEFAULT_VM)
    with pytest.raises(KvmError) as e:
        vm.create_vcpu(KVM_MAX_VCPU_IDS)
    assert is_errno(e.value, errno.EINVAL)
    assert vm.create_vcpu(KVM_MAX_VCPU_IDS - 1).id == KVM_MAX_VCPU_IDS - 1
    for i in range(VCPUS_PER_VM.max - 1):
        vm.create_vcpu(i)
    with pytest.raises(KvmError) as e:
        vm.create_vcpu(VCPUS_PER_VM.max)
    assert is_errno(e.value, errno.EINVAL) and len(vm.vcpus) == VCPUS_PER_VM.max


# ------------------------------------------------------------------ sizes
@pytest.mark.parametrize("text", ["\u0663GiB", "\uff13GiB", "1\u0660MiB", "\u0968M", "3\u00a0GiB", "\U0001d7d1GiB"])
def test_sizes_take_ascii_digits_only(text):
    with pytest.raises(ValueError, match="^mem: cannot parse .* only ASCII"):
        parse_size(text, name="mem")
    with pytest.raises(ValueError, match="^mem: "):
        Host(mem=text)


@given(st.text(alphabet=st.characters(categories=("Nd",)), min_size=1, max_size=4), st.sampled_from(["", "M", "GiB"]))
def test_no_digit_of_another_script_is_read_as_a_number(digits, unit):
    text = digits + unit
    if text.isascii():
        assert parse_size(text) == int(digits) * {"": 1, "M": MiB, "GiB": GiB}[unit]
    else:
        with pytest.raises(ValueError, match="only ASCII"):
            parse_size(text)


@pytest.mark.parametrize("mem, match", [
    ("65536TiB", "^mem: at most 64TiB, got 65536TiB"), ("1PiB", "^mem: at most 64TiB, got 1024TiB"),
    ("1024TiB", "^mem: at most 64TiB"), ("3.5MiB", "^mem: must be a whole number of 2MiB regions, got 3584KiB"),
    ("9" * 70, "^mem: cannot parse a size of 70 characters"), (10 ** 30, "^mem: at most 64TiB")])
def test_host_memory_past_its_bound_is_refused_before_any_allocation(mem, match):
    with pytest.raises(ValueError, match=match):
        Host(mem=mem)


# ------------------------------------------------------------------ counts that would cost memory or time
def test_one_4k_allocation_is_bounded():
    from kit.host.limits import ALLOC_4K_PAGES
    h = Host(mem="64MiB")
    before = digest(h)
    with pytest.raises(ValueError, match=r"^count: expected an integer 1\.\.16777216"):
        h.memory.alloc(0, "kernel", ALLOC_4K_PAGES.max + 1)
    with pytest.raises(ValueError, match="^count: "):
        h.memory.alloc(9, "guest", h.memory.nr_regions + 1)
    assert digest(h) == before


def test_a_guest_memfd_holds_a_bounded_number_of_folios():
    """An SNP file's folios are host frames held one by one: ENOMEM past the host's free
    memory (the kernel's answer), a ValueError past the model's bound, both before any change."""
    kvm = Kvm(Host(mem="20TiB"))                        # upstream guest_memfd: 4K folios
    vm = kvm.create_vm(U.KVM_X86_SNP_VM)
    vm.sev_init()
    f = vm.create_guest_memfd(64 * GiB)
    before = digest(kvm)
    with pytest.raises(ValueError, match="^length: the file would hold 16777216 folios; at most 4194304"):
        f.fallocate(U.FALLOC_FL_KEEP_SIZE, 0, 64 * GiB)
    small = Kvm(Host(mem="1GiB")).create_vm(U.KVM_X86_SNP_VM)
    small.sev_init()
    g = small.create_guest_memfd(8 * GiB)
    with pytest.raises(KvmError) as e:
        g.fallocate(U.FALLOC_FL_KEEP_SIZE, 0, 8 * GiB)
    assert is_errno(e.value, errno.ENOMEM) and not g.folios
    assert digest(kvm) == before            # the bound itself is held: the memory-bound test below


def test_range_writes_over_all_of_a_large_host_are_not_a_loop_per_region():
    import time
    h = Host(mem="64TiB")
    t = time.perf_counter()
    h.memory.set_owner(1, h.nr_pages - 2, "firmware")
    h.rmp.firmware_set(1, h.nr_pages - 2, validated=True)
    h.snp_leak_pages(0, h.nr_pages)
    assert time.perf_counter() - t < 20                 # 33 Mi regions one by one: minutes
    assert h.memory.owner(12345) == "leaked" and h.rmp.rmpread(7).validated and not h.rmp.rmpread(0).validated


# ------------------------------------------------------------------ a stated memory bound
#: The address space the worst allowed inputs run in (RLIMIT_AS of a worker process): the model
#: at every bound's maximum fits in it, with room, on the 24 GiB machines the kit targets.
MEMORY_BOUND = 4 * GiB

WORST_INPUTS = r'''
import resource, sys, time
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from kit.errors import KvmError
from kit.host import DIRECTMAP_POLICIES, Host
from kit.host.limits import ALLOC_4K_PAGES, HOST_CORES, HOST_MEM, RMP_RANGES_LIMIT
from kit.kvm import Kvm, uapi as U
from kit.kvm.limits import GMEM_FOLIOS
from kit.sim import api
from kit.sim.scenario import SCENARIO_PARAMS as SP, TOTAL_STEPS, TOTAL_TOUCHED
from kit.units import GiB, PAGE_2M, PAGE_4K, parse_size

def host(policy="split-on-demand", **kw):
    return Host(mem=HOST_MEM.max, cores=HOST_CORES.max, directmap_policy=policy, **kw)

def whole_host_ranges():
    h = host("presplit-4k")
    h.rmp_make_private(0, 0, PAGE_2M, 1, False, npages=h.nr_pages)       # every 2M entry private
    h.memory.set_owner(1, h.nr_pages - 2, "firmware")
    h.memory.alloc(0, "kernel", 1)                                       # the two free edge pages
    return h.rmp_ranges(limit=RMP_RANGES_LIMIT.max)

def snp_file(mem, size):
    vm = Kvm(Host(mem=mem), gmem_hugepages=False).create_vm(U.KVM_X86_SNP_VM)
    vm.sev_init()
    return vm.create_guest_memfd(size)

def max_folios():
    f = snp_file("20TiB", 64 * GiB)
    f.fallocate(U.FALLOC_FL_KEEP_SIZE, 0, GMEM_FOLIOS.max * PAGE_4K)

analytic_max = dict(guests=15, vcpus=4096, guest_mem=SP["guest_mem"].max // 2, host_cores=SP["host_cores"].max,
                    host_mem=SP["host_mem"].max, steps=SP["steps"].max, seed=SP["seed"].max)
ACCEPTED = [
    *[(f"host at the bounds, {p}", lambda p=p: host(p)) for p in DIRECTMAP_POLICIES],
    ("host at the bounds, random placement, a 4K allocation at its bound",
     lambda: host(placement="random").memory.alloc(0, "kernel", ALLOC_4K_PAGES.max)),
    ("host at the bounds, every page's direct-map PTE cleared",
     lambda: (lambda h: h.directmap.set_direct_map_invalid_noflush(0, h.nr_pages))(host("presplit-4k"))),
    ("host at the bounds, whole-memory range operations", whole_host_ranges),
    ("a guest_memfd holding its bound of 4K folios", max_folios),
    ("the largest guest_memfd the kernel takes", lambda: snp_file("64MiB", 2 ** 63 - PAGE_4K)),
    ("simulate (analytic) at every bound", lambda: api.simulate(**analytic_max, touched=analytic_max["guest_mem"])),
    ("simulate conversions (analytic) at every bound", lambda: api.simulate("conversions", **analytic_max)),
    ("simulate (DES) at total_touched", lambda: api.simulate(engine="des", guest_mem=TOTAL_TOUCHED.max,
                                                              vcpus=512, host_mem=TOTAL_TOUCHED.max + 16 * GiB)),
]
REFUSED = [
    ("Host(mem=65536TiB)", lambda: Host(mem="65536TiB")),
    ("Host(mem=1PiB)", lambda: Host(mem="1PiB")),
    ("Host(cores=10000000)", lambda: Host(mem="64MiB", cores=10_000_000)),
    ("simulate(host_mem=1024TiB)", lambda: api.simulate(host_mem="1024TiB")),
    ("simulate(vcpus=10000000)", lambda: api.simulate(vcpus=10_000_000)),
    ("simulate(host_cores=10000000)", lambda: api.simulate(host_cores=10_000_000)),
    ("simulate(guests=10000000)", lambda: api.simulate(guests=10_000_000)),
    ("simulate(guest_mem=8TiB, host_mem=9TiB)", lambda: api.simulate(guest_mem="8TiB", host_mem="9TiB")),
    ("simulate(steps=10**12)", lambda: api.simulate("conversions", steps=10 ** 12)),
    ("simulate DES past total_touched", lambda: api.simulate(engine="des", guest_mem="4TiB", vcpus=1024, host_mem="5TiB")),
    ("simulate DES past total_steps", lambda: api.simulate("conversions", engine="des", steps=TOTAL_STEPS.max + 1)),
    ("a size of a million digits", lambda: parse_size("9" * 10 ** 6 + "TiB")),
    ("a 4K allocation past its bound", lambda: Host(mem="64MiB").memory.alloc(0, "kernel", 2 ** 62)),
    ("fallocate past the host", lambda: snp_file("1GiB", 2 ** 62).fallocate(U.FALLOC_FL_KEEP_SIZE, 0, 2 ** 62)),
    ("a guest_memfd past loff_t", lambda: snp_file("64MiB", 2 ** 63)),
    ("a guest fill past its bound", lambda: Kvm(Host(mem="64MiB")).create_vm(0).create_vcpu(0).fill(0, 2 ** 40, 1)),
]
for want, cases in (("ok", ACCEPTED), ("refused", REFUSED)):
    for label, fn in cases:
        t = time.perf_counter()
        try:
            fn()
            got = "ok"
        except (ValueError, TypeError, KvmError) as e:
            got = "refused: " + str(e).splitlines()[0][:120]
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10
        print(f"{want}|{got}|{label}|{time.perf_counter() - t:.1f}s|{rss}MiB", flush=True)
print(f"end|{len(ACCEPTED) + len(REFUSED)}")
'''


def test_no_input_takes_the_process_past_the_memory_bound(tmp_path):
    """The worst allowed inputs (every bound's maximum) complete, and inputs past a bound are
    refused, in a process whose address space is limited to :data:`MEMORY_BOUND`: never a
    MemoryError, a numpy allocation failure or any other traceback."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    script = tmp_path / "worst.py"
    script.write_text(WORST_INPUTS)
    env = {**os.environ, "PYTHONPATH": str(root), "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, str(script), str(MEMORY_BOUND)], capture_output=True, text=True,
                       env=env, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    *rows, end = [line.split("|") for line in p.stdout.splitlines()]
    assert end[0] == "end" and int(end[1]) == len(rows) >= 20, p.stdout
    wrong = [r for r in rows if not r[1].startswith(r[0])]
    assert not wrong, "\n".join("|".join(r) for r in wrong)


def test_docs_host_and_kvm_bounds_tables_are_the_limits():
    from pathlib import Path
    from kit.host.limits import HOST_PARAMS, bounds_markdown
    from kit.kvm.limits import KVM_PARAMS
    text = (Path(__file__).resolve().parents[1] / "docs" / "host-model.md").read_text()
    for tag, params in (("host", HOST_PARAMS), ("kvm", KVM_PARAMS)):
        block = text.split(f"<!-- {tag} bounds table:")[1].split(f"<!-- end {tag} bounds table -->")[0]
        assert block.splitlines()[1:] == bounds_markdown(params)
        for p in params:
            assert p.why and p.max is not None and p.check(p.max) == p.max, p.name
