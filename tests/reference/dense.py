"""Dense per-4K reference model of an SEV-SNP host (RMP + kernel direct map + host accesses).

Written only from docs/host-model.md (the contract; section names below refer to it) and the
primary sources it cites (arch/x86/virt/svm/sev.c, arch/x86/mm/pat/set_memory.c, AMD APM
Vol. 2 section 15.36), never from kit/host. It is deliberately naive: every
pfn has its own slot in a numpy array for every RMP field and for its direct-map PTE, and
every operation walks the pfns of its range in Python. It exists to be obviously right, not
fast, so that a property-based test can cross-check the optimised ``kit.host`` against it.

Representation
- RMP: raw per-pfn entries. A *2M entry* is stored in the slot of its 2M-aligned pfn (with
  pagesize == PAGE_2M); the 511 other slots of its region are zeroed and never read while the
  2M entry exists. ``_gov(p)`` is the slot of the entry governing pfn ``p``.
- Direct map: per-pfn mapping level (PAGE_4K / PAGE_2M / PAGE_1G) and a PRESENT bit (large
  mappings are always present).
"""
from __future__ import annotations

import errno

import numpy as np

from kit.errors import (PFERR_GUEST_ENC_MASK, PFERR_GUEST_FINAL_MASK, PFERR_GUEST_RMP_MASK,
                        PFERR_GUEST_SIZEM_MASK, X86_PF_PROT, X86_PF_RMP, X86_PF_WRITE,
                        HostOops, NestedPageFault, RmpUpdateLivelock)
from kit.units import PAGE_1G, PAGE_2M, PAGE_4K

PTRS = 512                       # 4K pages per 2M region, 2M regions per 1G chunk
PFNS_2M = PAGE_2M // PAGE_4K     # 512
PFNS_1G = PAGE_1G // PAGE_4K     # 262144
GPA_LIMIT = 1 << 51              # RMP GPA field is bits 12..50: a 39-bit GFN
MAX_ASID = 1023
VMPL_ALL = 0x1F

# RMPUPDATE / PSMASH / PVALIDATE return codes (spec: RMPUPDATE, PSMASH, PVALIDATE sections)
FAIL_INUSE = 3
FAIL_OVERLAP = 4
FAIL_SIZEMISMATCH = 6
FAIL_PERMISSION = 2
PVALIDATE_FAIL_NOUPDATE = 255
NPF_BITS = PFERR_GUEST_RMP_MASK | PFERR_GUEST_ENC_MASK | PFERR_GUEST_FINAL_MASK

EVENT_KEYS = ("rmpupdate", "psmash", "pvalidate", "rmpadjust", "split_1g", "split_2m",
              "pgtable_alloc", "pgd_lock", "flush_tlb_all", "flush_tlb_range", "invlpg",
              "cpa_lock", "collapse_2m", "collapse_1g", "adjust_direct_map", "host_rmp_fault",
              "host_np_fault")
DM_POLICIES = ("none", "split-on-demand", "presplit-4k", "invalidate-4k", "invalidate-4k-flush",
               "split-on-demand-collapse")
SPLIT_POLICIES = ("split-on-demand", "presplit-4k", "split-on-demand-collapse")
INVALIDATE_POLICIES = ("invalidate-4k", "invalidate-4k-flush")
HOST_FAULT_POLICIES = ("oops", "auto-convert")
TLB_SINGLE_PAGE_FLUSH_CEILING = 33   # spec: cpa_flush(n), n > 33 -> flush_tlb_all


class Rules:
    """The RmpRules parameters (spec: RMPUPDATE, PSMASH, PVALIDATE, RMPADJUST), with defaults.

    Each value is the code returned when the rule's condition holds.
    SPEC-AMBIGUITY: a value of 0 is read as "the hardware does not fail this check" (the check
    is skipped and the next check / the effect applies), not as "return 0 and do nothing".
    """
    overlap_2m_over_4k = 4
    overlap_4k_in_2m = 4
    immutable_update = 2
    shared_with_asid = 1
    psmash_not_2m = 1
    psmash_immutable = 2
    not_validated_adjust = 2
    pvalidate_not_vmpl0 = 2

    def __init__(self, **overrides):
        for name, value in overrides.items():
            if not hasattr(Rules, name) or name.startswith("_"):
                raise TypeError(f"Rules: unknown rule {name!r}")
            if not _is_int(value):
                raise TypeError(f"Rules.{name}: expected an int code, got {value!r}")
            setattr(self, name, int(value))


class _Fault:
    """What HostOops wants: pfn, write, error_code, kind, level, entry, describe()."""

    def __init__(self, pfn, write, error_code, kind, level, entry):
        self.pfn, self.write, self.error_code = pfn, write, error_code
        self.kind, self.level, self.entry = kind, level, entry

    def describe(self):
        return (f"{'write' if self.write else 'read'} of pfn {self.pfn:#x} ({self.kind}, "
                f"error_code {self.error_code:#x}, direct-map level {self.level:#x}, "
                f"rmp {self.entry})")


def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _int(name, v):
    if not _is_int(v):
        raise TypeError(f"{name}: expected an int, got {v!r}")
    return int(v)


class DenseHost:
    _RMP_ARRAYS = ("assigned", "pagesize", "immutable", "validated", "asid", "gpa", "vmsa",
                   "vmpl1", "vmpl2", "vmpl3")
    _ALL_ARRAYS = _RMP_ARRAYS + ("in_use", "dm_lvl", "dm_pres")

    # ------------------------------------------------------------------ Machine
    def __init__(self, mem_bytes, *, directmap_policy="split-on-demand", host_fault_policy="oops",
                 direct_gbpages=True, rules=None, snp=True, overlap_retries=None):
        mem_bytes = _int("mem_bytes", mem_bytes)
        # Machine: RAM is [0, mem), a whole number of 2M regions.
        if mem_bytes <= 0 or mem_bytes % PAGE_2M:
            raise ValueError(f"mem_bytes: must be a positive multiple of 2M, got {mem_bytes}")
        if directmap_policy not in DM_POLICIES:
            raise ValueError(f"directmap_policy: unknown policy {directmap_policy!r}")
        if host_fault_policy not in HOST_FAULT_POLICIES:
            raise ValueError(f"host_fault_policy: unknown policy {host_fault_policy!r}")
        if overlap_retries is not None:
            overlap_retries = _int("overlap_retries", overlap_retries)
        if rules is not None and not isinstance(rules, Rules):
            raise TypeError("rules: expected a Rules instance")
        n = mem_bytes // PAGE_4K
        self.nr_pages = n
        self.rules = rules if rules is not None else Rules()
        self.snp = bool(snp)
        self.direct_gbpages = bool(direct_gbpages)
        self.overlap_retries = overlap_retries
        self.host_fault_policy = host_fault_policy
        # RMP entries: at boot every entry is 4K, all fields 0.
        self.assigned = np.zeros(n, bool)
        self.pagesize = np.full(n, PAGE_4K, np.int64)
        self.immutable = np.zeros(n, bool)
        self.validated = np.zeros(n, bool)
        self.asid = np.zeros(n, np.int64)
        self.gpa = np.zeros(n, np.int64)
        self.vmsa = np.zeros(n, bool)
        self.vmpl1 = np.zeros(n, np.int64)
        self.vmpl2 = np.zeros(n, np.int64)
        self.vmpl3 = np.zeros(n, np.int64)
        self.in_use = np.zeros(n, bool)                # rmp.mark_in_use
        # Direct map boot: 1G for every whole 1G-aligned chunk when direct_gbpages, 2M for the rest.
        self.dm_lvl = np.full(n, PAGE_2M, np.int64)
        if self.direct_gbpages:
            whole = (n // PFNS_1G) * PFNS_1G
            self.dm_lvl[:whole] = PAGE_1G
        self.dm_pres = np.ones(n, bool)
        self.last_failed_pfn = -1
        self.faults = []
        self.guest_notices = []
        self.events = {k: 0 for k in EVENT_KEYS}
        self.directmap_policy = None
        self.set_directmap_policy(directmap_policy)

    # ------------------------------------------------------------------ input checks
    # Machine: bad input raises ValueError/TypeError and changes nothing.
    def _range(self, pfn, npages):
        pfn, npages = _int("pfn", pfn), _int("npages", npages)
        if npages <= 0:
            raise ValueError(f"npages: must be positive, got {npages}")
        if pfn < 0 or pfn + npages > self.nr_pages:
            raise ValueError(f"pfn: range [{pfn:#x}, +{npages}) is outside memory")
        return pfn, npages

    def _level_range(self, pfn, pagesize, npages):
        """Validate a (pfn, pagesize, npages) request; return (pfn, pagesize, npages, entry pfns)."""
        pagesize = _int("pagesize/level", pagesize)
        if pagesize not in (PAGE_4K, PAGE_2M):
            raise ValueError(f"level: must be PAGE_4K or PAGE_2M, got {pagesize!r}")
        step = pagesize // PAGE_4K
        if npages is None:
            npages = step                                # default: one entry, i.e. 1 or 512
        pfn, npages = self._range(pfn, npages)
        if pagesize == PAGE_2M and (pfn % PFNS_2M or npages % PFNS_2M):
            raise ValueError(f"pfn: 2M request needs a 2M-aligned pfn and npages multiple of 512, "
                             f"got pfn {pfn:#x} npages {npages}")
        return pfn, pagesize, npages, list(range(pfn, pfn + npages, step))

    @staticmethod
    def _asid(asid, lo=0):
        asid = _int("asid", asid)
        if not lo <= asid <= MAX_ASID:
            raise ValueError(f"asid: must be in {lo}..{MAX_ASID}, got {asid}")
        return asid

    @staticmethod
    def _gpa(gpa, pagesize):
        gpa = _int("gpa", gpa)
        # SPEC-AMBIGUITY: only the gpa argument is checked against the 39-bit GFN field; for a
        # multi-entry assigned update the later entries' gpa + i*pagesize is not re-checked.
        if gpa < 0 or gpa % pagesize or gpa >= GPA_LIMIT:
            raise ValueError(f"gpa: {gpa:#x} not aligned to {pagesize:#x} or beyond the GFN field")
        return gpa

    # ------------------------------------------------------------------ RMP entry helpers
    def _gov(self, p):
        """Slot of the entry governing pfn p (RMP entries: a 2M entry governs all 512 pfns)."""
        base = p - p % PFNS_2M
        return base if self.pagesize[base] == PAGE_2M else p

    def _is_2m_entry(self, base):
        return self.pagesize[base] == PAGE_2M

    def _clear_slot(self, p):
        for name in self._RMP_ARRAYS:
            getattr(self, name)[p] = 0
        self.pagesize[p] = PAGE_4K

    def _smash(self, base):
        """PSMASH effect: 512 4K entries, entry i with gpa = 2M gpa + i*4K, assigned/immutable/
        validated/asid/vmsa and VMPL1-3 masks copied [spec PSMASH step 4]."""
        g = int(self.gpa[base])
        for name in ("assigned", "immutable", "validated", "asid", "vmsa", "vmpl1", "vmpl2", "vmpl3"):
            arr = getattr(self, name)
            arr[base:base + PFNS_2M] = arr[base]
        for i in range(PFNS_2M):
            self.gpa[base + i] = g + i * PAGE_4K
            self.pagesize[base + i] = PAGE_4K

    def rmpread(self, pfn):
        pfn, _ = self._range(pfn, 1)
        g = self._gov(pfn)       # RMP entries: any pfn of a 2M entry reads as the 2M entry itself
        assigned = bool(self.assigned[g])
        return {"assigned": assigned, "pagesize": int(self.pagesize[g]),
                "immutable": bool(self.immutable[g]), "validated": bool(self.validated[g]),
                "asid": int(self.asid[g]), "gpa": int(self.gpa[g]), "vmsa": bool(self.vmsa[g]),
                # VMPL0 = all (0x1F) when assigned, else 0
                "vmpl_perms": (VMPL_ALL if assigned else 0, int(self.vmpl1[g]),
                               int(self.vmpl2[g]), int(self.vmpl3[g]))}

    def mark_in_use(self, pfn, in_use=True):
        pfn, _ = self._range(pfn, 1)
        self.in_use[pfn] = bool(in_use)

    # ------------------------------------------------------------------ RMPUPDATE
    def _rmpupdate_entry_check(self, e, pagesize, assigned, asid):
        """Checks per entry, in order, first match wins. Returns (code, first failing pfn)."""
        r = self.rules
        pfns = range(e, e + (PFNS_2M if pagesize == PAGE_2M else 1))
        # 1. unassigned with a non-zero ASID
        if not assigned and asid != 0 and r.shared_with_asid:
            return r.shared_with_asid, e
        # 2. immutable: the governing entry of the pfn (2M: of any of the 512 pfns)
        if r.immutable_update:
            for p in pfns:
                if self.immutable[self._gov(p)]:
                    return r.immutable_update, e   # spec: a failing 2M entry reports its pfn
        # 3. in use: the pfn (2M: any of its 512 pfns) was marked by mark_in_use
        for p in pfns:
            if self.in_use[p]:
                return FAIL_INUSE, e
        # 4. overlap
        if pagesize == PAGE_4K:
            g = self._gov(e)
            if self.pagesize[g] == PAGE_2M and self.assigned[g] and r.overlap_4k_in_2m:
                return r.overlap_4k_in_2m, e
        elif not self._is_2m_entry(e) and r.overlap_2m_over_4k:
            for p in range(e + 1, e + PFNS_2M):      # the 511 non-aligned pfns' 4K entries
                if self.assigned[p]:
                    return r.overlap_2m_over_4k, e
        return 0, -1

    def _rmpupdate_check(self, entries, pagesize, assigned, asid):
        """The whole range is checked first, against the state before the call; the code of
        the first failing entry in pfn order wins."""
        for e in entries:
            code, p = self._rmpupdate_entry_check(e, pagesize, assigned, asid)
            if code:
                return code, p
        return 0, -1

    def _rmpupdate_apply(self, entries, pagesize, assigned, immutable, asid, gpa):
        for i, e in enumerate(entries):
            # entry i gets gpa + i*pagesize when assigned, exactly gpa when not assigned
            egpa = gpa + i * pagesize if assigned else gpa
            if pagesize == PAGE_2M:
                # a 2M update makes the region one 2M entry, whatever its 512 4K entries were
                for p in range(e, e + PFNS_2M):
                    self._clear_slot(p)
                self.pagesize[e] = PAGE_2M
            else:
                base = e - e % PFNS_2M
                if self._is_2m_entry(base):
                    # 4K update under a (unassigned) 2M entry: first smash it as PSMASH would
                    # (no psmash event, no PSMASH checks)
                    # SPEC-AMBIGUITY: PSMASH's own in-use check on the other 511 pfns is not
                    # applied; only RMPUPDATE's checks listed in the spec are.
                    self._smash(base)
                self.pagesize[e] = PAGE_4K
            self.assigned[e] = assigned
            self.immutable[e] = immutable
            self.asid[e] = asid
            self.gpa[e] = egpa
            # validated, vmsa, VMPL1-3 cleared always, even if nothing else changed
            self.validated[e] = False
            self.vmsa[e] = False
            self.vmpl1[e] = self.vmpl2[e] = self.vmpl3[e] = 0
        self.events["rmpupdate"] += len(entries)     # ledger: += number of entries

    def _rmpupdate_args(self, pfn, assigned, pagesize, immutable, asid, gpa, npages):
        pfn, pagesize, npages, entries = self._level_range(pfn, pagesize, npages)
        asid = self._asid(asid)
        gpa = self._gpa(gpa, pagesize)
        return pfn, bool(assigned), pagesize, bool(immutable), asid, gpa, npages, entries

    def rmpupdate(self, pfn, *, assigned, pagesize, immutable=False, asid=0, gpa=0, npages=None):
        pfn, assigned, pagesize, immutable, asid, gpa, npages, entries = self._rmpupdate_args(
            pfn, assigned, pagesize, immutable, asid, gpa, npages)
        code, bad = self._rmpupdate_check(entries, pagesize, assigned, asid)
        self.last_failed_pfn = bad
        if code:
            return code
        self._rmpupdate_apply(entries, pagesize, assigned, immutable, asid, gpa)
        return 0

    # ------------------------------------------------------------------ PSMASH
    def psmash(self, pfn):
        pfn, _ = self._range(pfn, 1)
        if pfn % PFNS_2M:
            raise ValueError(f"pfn: PSMASH needs a 2M-aligned pfn, got {pfn:#x}")
        r = self.rules
        # 1. region is not a 2M entry
        if not self._is_2m_entry(pfn):
            if r.psmash_not_2m:
                return r.psmash_not_2m
            # SPEC-AMBIGUITY: with psmash_not_2m=0 there is no 2M entry to smash; treat it as
            # a successful no-op that still counts a psmash.
            self.events["psmash"] += 1
            return 0
        # 2. immutable 2M entry
        if self.immutable[pfn] and r.psmash_immutable:
            return r.psmash_immutable
        # 3. any of the 512 pfns marked in use
        if self.in_use[pfn:pfn + PFNS_2M].any():
            return FAIL_INUSE
        # 4. smash (works on an unassigned 2M entry too)
        self._smash(pfn)
        self.events["psmash"] += 1
        return 0

    # ------------------------------------------------------------------ PVALIDATE / RMPADJUST
    def _guest_args(self, pfn, pagesize, asid, gpa, asid_lo):
        pfn, pagesize, _, _ = self._level_range(pfn, pagesize, None)
        return pfn, pagesize, self._asid(asid, asid_lo), self._gpa(gpa, pagesize)

    def _npf_checks(self, pfn, pagesize, asid, gpa):
        """PVALIDATE step 2 (also RMPADJUST step 2). Returns the governing slot E."""
        e = self._gov(pfn)    # the 2M entry, or the pfn's 4K entry (2M request: aligned pfn's)
        is2m = self.pagesize[e] == PAGE_2M
        e_gpa = int(self.gpa[e]) + ((pfn - e) * PAGE_4K if is2m else 0)
        reason = None
        if self.immutable[e]:
            reason = "entry is immutable"
        elif not self.assigned[e]:
            reason = "entry is not assigned"
        elif self.asid[e] != asid:
            reason = f"entry asid {int(self.asid[e])} != {asid}"
        elif e_gpa != gpa:
            reason = f"entry gpa {e_gpa:#x} != {gpa:#x}"
        if reason:
            raise NestedPageFault(NPF_BITS, gpa=gpa, pfn=pfn, reason=reason)
        if is2m and pagesize == PAGE_4K:
            raise NestedPageFault(NPF_BITS | PFERR_GUEST_SIZEM_MASK, gpa=gpa, pfn=pfn,
                                  reason="4K request on a 2M RMP entry")
        return e

    def pvalidate(self, pfn, *, pagesize, validate, asid, gpa, vmpl=0):
        pfn, pagesize, asid, gpa = self._guest_args(pfn, pagesize, asid, gpa, asid_lo=1)
        # SPEC-AMBIGUITY: the spec gives no range for PVALIDATE's vmpl; any non-zero int takes
        # step 1 rather than raising ValueError.
        vmpl = _int("vmpl", vmpl)
        validate = bool(validate)
        # 1. not VMPL0
        if vmpl != 0 and self.rules.pvalidate_not_vmpl0:
            return self.rules.pvalidate_not_vmpl0
        # 2. #NPF checks
        e = self._npf_checks(pfn, pagesize, asid, gpa)
        # 3. 2M request on a 4K entry
        if pagesize == PAGE_2M and self.pagesize[e] == PAGE_4K:
            return FAIL_SIZEMISMATCH
        # 4. already in the requested state
        if bool(self.validated[e]) == validate:
            return PVALIDATE_FAIL_NOUPDATE
        # 5. set E.validated
        self.validated[e] = validate
        self.events["pvalidate"] += 1
        return 0

    def rmpadjust(self, pfn, *, pagesize, target_vmpl, perms, vmsa=False, asid, gpa, vmpl=0):
        target_vmpl = _int("target_vmpl", target_vmpl)
        vmpl = _int("vmpl", vmpl)
        perms = _int("perms", perms)
        if not 1 <= target_vmpl <= 3:
            raise ValueError(f"target_vmpl: must be 1..3, got {target_vmpl}")
        if not 0 <= vmpl <= 3:
            raise ValueError(f"vmpl: must be 0..3, got {vmpl}")
        if not 0 <= perms <= VMPL_ALL:
            raise ValueError(f"perms: must be 0..0x1f, got {perms:#x}")
        # SPEC-AMBIGUITY: RMPADJUST states no ASID floor, so the machine-wide 0..1023 applies
        # (PVALIDATE's "asid >= 1" is not carried over).
        pfn, pagesize, asid, gpa = self._guest_args(pfn, pagesize, asid, gpa, asid_lo=0)
        vmsa = bool(vmsa)
        # 1. target must be less privileged than the caller
        if target_vmpl <= vmpl:
            return FAIL_PERMISSION
        # 2. #NPF checks of PVALIDATE step 2
        e = self._npf_checks(pfn, pagesize, asid, gpa)
        # 3. not validated
        if not self.validated[e] and self.rules.not_validated_adjust:
            return self.rules.not_validated_adjust
        # 4. 2M request on a 4K entry
        if pagesize == PAGE_2M and self.pagesize[e] == PAGE_4K:
            return FAIL_SIZEMISMATCH
        # 5. perms must be a subset of the caller's mask on E
        caller_mask = VMPL_ALL if vmpl == 0 else int(getattr(self, f"vmpl{vmpl}")[e])
        if perms & ~caller_mask:
            return FAIL_PERMISSION
        # 6. only VMPL0 may set VMSA
        if vmsa and vmpl != 0:
            return FAIL_PERMISSION
        # 7. effect
        getattr(self, f"vmpl{target_vmpl}")[e] = perms
        self.vmsa[e] = vmsa
        self.events["rmpadjust"] += 1
        return 0

    # ------------------------------------------------------------------ Direct map
    def dm_level(self, pfn):
        pfn, _ = self._range(pfn, 1)
        return int(self.dm_lvl[pfn])

    def dm_present(self, pfn):
        pfn, _ = self._range(pfn, 1)
        return bool(self.dm_pres[pfn])    # large mappings are always present

    def dm_counts(self):
        # each 2M region contributes 2048 kB to the line of its level
        lv = self.dm_lvl[::PFNS_2M]
        kb = PAGE_2M // 1024
        out = {"DirectMap4k": int((lv == PAGE_4K).sum()) * kb,
               "DirectMap2M": int((lv == PAGE_2M).sum()) * kb}
        if self.direct_gbpages:
            out["DirectMap1G"] = int((lv == PAGE_1G).sum()) * kb
        return out

    def _split_cost(self, kind):
        # each split: split_1g/split_2m, pgtable_alloc, pgd_lock, flush_tlb_all += 1, plus
        # one extra cpa_lock (re-taken after the allocation)
        for k in (kind, "pgtable_alloc", "pgd_lock", "flush_tlb_all", "cpa_lock"):
            self.events[k] += 1

    def _split_to_4k(self, pfn, npages):
        """Split every large mapping overlapping [pfn, pfn+npages) down to 4K (1G->4K = 2 splits)."""
        for r in range(pfn // PFNS_2M, (pfn + npages - 1) // PFNS_2M + 1):
            b = r * PFNS_2M
            if self.dm_lvl[b] == PAGE_1G:
                # a 1G mapping splits into 512 x 2M: all 512 regions of the chunk become 2M
                c = b - b % PFNS_1G
                self.dm_lvl[c:c + PFNS_1G] = PAGE_2M
                self._split_cost("split_1g")
            if self.dm_lvl[b] == PAGE_2M:
                # a 2M mapping splits into 512 x 4K PTEs, all present
                self.dm_lvl[b:b + PFNS_2M] = PAGE_4K
                self.dm_pres[b:b + PFNS_2M] = True
                self._split_cost("split_2m")

    def set_memory_4k(self, pfn, npages=1):
        pfn, npages = self._range(pfn, npages)
        self._split_to_4k(pfn, npages)
        self.events["cpa_lock"] += npages            # cpa_lock += n (+1 per split, above)
        return 0

    def split_regions(self, regions):
        # set_memory_4k on one page of each listed 2M region
        for r in regions:
            self.set_memory_4k(r * PFNS_2M, 1)

    def set_direct_map_invalid_noflush(self, pfn, npages=1):
        pfn, npages = self._range(pfn, npages)
        self._split_to_4k(pfn, npages)               # split what is large
        self.dm_pres[pfn:pfn + npages] = False       # then clear PRESENT; no flush
        self.events["cpa_lock"] += npages
        return 0

    def set_direct_map_default_noflush(self, pfn, npages=1):
        pfn, npages = self._range(pfn, npages)
        for p in range(pfn, pfn + npages):           # only 4K PTEs; nothing is split
            if self.dm_lvl[p] == PAGE_4K:
                self.dm_pres[p] = True
        self.events["cpa_lock"] += npages
        return 0

    def collapse(self, regions):
        regions = sorted(set(int(r) for r in regions))
        for r in regions:
            b = r * PFNS_2M
            # split regions whose 512 PTEs are all present become 2M again
            if self.dm_lvl[b] == PAGE_4K and self.dm_pres[b:b + PFNS_2M].all():
                self.dm_lvl[b:b + PFNS_2M] = PAGE_2M
                for k in ("collapse_2m", "pgd_lock", "flush_tlb_all"):
                    self.events[k] += 1
        if not self.direct_gbpages:
            return
        # SPEC-AMBIGUITY: "each 1G-aligned chunk touched" is read as the chunks of the listed
        # regions (in this model a non-1G chunk can only be all-2M right after a 2M collapse,
        # so this is equivalent to "chunks where a collapse happened").
        for c in sorted(set(r * PFNS_2M // PFNS_1G for r in regions)):
            base = c * PFNS_1G
            if base + PFNS_1G > self.nr_pages:       # only whole 1G chunks of RAM
                continue
            lv = self.dm_lvl[base:base + PFNS_1G:PFNS_2M]
            if (lv == PAGE_2M).all():
                self.dm_lvl[base:base + PFNS_1G] = PAGE_1G
                for k in ("collapse_1g", "pgd_lock", "flush_tlb_all"):
                    self.events[k] += 1

    def _cpa_flush(self, n):
        # cpa_flush(n): n > 33 -> flush_tlb_all; else flush_tlb_range + n invlpg
        if n > TLB_SINGLE_PAGE_FLUSH_CEILING:
            self.events["flush_tlb_all"] += 1
        else:
            self.events["flush_tlb_range"] += 1
            self.events["invlpg"] += n

    # ------------------------------------------------------------------ Direct-map policies
    def set_directmap_policy(self, name):
        if name not in DM_POLICIES:
            raise ValueError(f"directmap_policy: unknown policy {name!r}")
        self.directmap_policy = name
        if name == "presplit-4k":
            # boot step: set_memory_4k(0, all pages)
            # SPEC-AMBIGUITY: the boot step's splits and cpa_lock are counted in `events`
            # (including when run from the constructor).
            self.set_memory_4k(0, self.nr_pages)

    def _regions_of(self, pfn, npages):
        return range(pfn // PFNS_2M, (pfn + npages - 1) // PFNS_2M + 1)

    def _region_has_assigned(self, r):
        """Does any pfn of 2M region r have an assigned (governing) entry?"""
        b = r * PFNS_2M
        if self._is_2m_entry(b):
            return bool(self.assigned[b])
        return bool(self.assigned[b:b + PFNS_2M].any())

    def _policy_before(self, pfn, level, npages, entries, private):
        pol = self.directmap_policy
        if pol in SPLIT_POLICIES:
            # spec (clarified): adjust_direct_map is counted for every entry; only 4K splits
            self.events["adjust_direct_map"] += len(entries)
            if level == PAGE_4K:
                self.split_regions([r for r in self._regions_of(pfn, npages)
                                    if self.dm_lvl[r * PFNS_2M] in (PAGE_2M, PAGE_1G)])
        elif pol in INVALIDATE_POLICIES and private:
            for p in range(pfn, pfn + npages):        # every page (2M entries: 512 pages)
                self.set_direct_map_invalid_noflush(p, 1)
            if pol == "invalidate-4k-flush":
                for _ in range(npages):               # a flush of each page changed: cpa_flush(1)
                    self._cpa_flush(1)
        return 0

    def _policy_after(self, pfn, level, npages, entries, private):
        pol = self.directmap_policy
        if pol in INVALIDATE_POLICIES and not private:
            for p in range(pfn, pfn + npages):
                self.set_direct_map_default_noflush(p, 1)
            if pol == "invalidate-4k-flush":
                for _ in range(npages):
                    self._cpa_flush(1)
        elif pol == "split-on-demand-collapse" and not private:
            # collapse every split region of the range with no assigned page left
            self.collapse([r for r in self._regions_of(pfn, npages)
                           if self.dm_lvl[r * PFNS_2M] == PAGE_4K
                           and not self._region_has_assigned(r)])

    # ------------------------------------------------------------------ Kernel helpers
    def _kernel_rmpupdate(self, pfn, assigned, level, immutable, asid, gpa, npages):
        # SPEC-AMBIGUITY: argument validation (ValueError) comes before the snp=False -ENODEV.
        pfn, assigned, level, immutable, asid, gpa, npages, entries = self._rmpupdate_args(
            pfn, assigned, level, immutable, asid, gpa, npages)
        # 1. no SNP
        if not self.snp:
            return -errno.ENODEV
        # 2. RMPUPDATE checks for the whole range
        code, bad = self._rmpupdate_check(entries, level, assigned, asid)
        # SPEC-AMBIGUITY: the helpers' checks also set last_failed_pfn, as rmpupdate does.
        self.last_failed_pfn = bad
        if code == FAIL_OVERLAP:
            if self.overlap_retries is None:
                raise RmpUpdateLivelock(bad, level)
            return -errno.EFAULT
        if code:
            return -errno.EFAULT
        # 3. policy before_rmpupdate
        if self._policy_before(pfn, level, npages, entries, assigned):
            return -errno.EFAULT
        # 4. the RMPUPDATE(s); 5. policy after_rmpupdate
        self._rmpupdate_apply(entries, level, assigned, immutable, asid, gpa)
        self._policy_after(pfn, level, npages, entries, assigned)
        return 0

    def rmp_make_private(self, pfn, gpa, level, asid, immutable, *, npages=None):
        return self._kernel_rmpupdate(pfn, True, level, immutable, asid, gpa, npages)

    def rmp_make_shared(self, pfn, level, *, npages=None):
        return self._kernel_rmpupdate(pfn, False, level, False, 0, 0, npages)

    # ------------------------------------------------------------------ Host accesses
    def _access_fault(self, p, write):
        """Host accesses: does an access to pfn p fault? Returns a _Fault or None."""
        lvl = int(self.dm_lvl[p])
        kind = None
        if lvl == PAGE_4K and not self.dm_pres[p]:
            kind = "not-present"                      # reads too
        elif write and self.snp:
            g = self._gov(p)
            if lvl == PAGE_4K:
                bad = self.assigned[g] or self.immutable[g]
            else:
                # 2M or 1G mapping: checked over its own 2M region (1G checked as 2M)
                bad = self._region_has_assigned(p // PFNS_2M) or self.immutable[g]
            if bad:
                kind = "rmp"
        if kind is None:
            return None
        ec = (X86_PF_WRITE if write else 0) | (X86_PF_PROT | X86_PF_RMP if kind == "rmp" else 0)
        return _Fault(p, write, ec, kind, lvl, self.rmpread(p))

    def _snapshot(self):
        return ({n: getattr(self, n).copy() for n in self._ALL_ARRAYS}, self.last_failed_pfn)

    def _restore(self, snap):
        arrays, self.last_failed_pfn = snap
        for n, a in arrays.items():
            setattr(self, n, a)

    def _auto_convert(self, f):
        """Host fault policy `auto-convert` (2021 proposal)."""
        e = f.entry
        base = self._gov(f.pfn)                       # the entry's aligned pfn
        if f.kind == "rmp":
            if e["immutable"]:
                raise HostOops(f)
            if e["assigned"]:
                rc = self.rmp_make_shared(base, e["pagesize"])
                if rc != 0:                           # spec: a conversion that fails -> oops
                    raise HostOops(f)
                self.guest_notices.append(("validated-cleared", base, e["asid"], e["gpa"],
                                           e["pagesize"]))
            else:
                self.set_memory_4k(f.pfn, 1)          # large mapping over someone's private page
        else:
            if not e["assigned"]:
                raise HostOops(f)                     # CASE2
            # CASE1 (spec clarified: the guest is notified here too)
            self.set_direct_map_default_noflush(f.pfn, 1)
            if self.rmp_make_shared(base, e["pagesize"]) != 0:
                raise HostOops(f)                     # spec: a conversion that fails -> oops
            self.guest_notices.append(("validated-cleared", base, e["asid"], e["gpa"],
                                       e["pagesize"]))

    def _access(self, pfn, npages, write):
        pfn, npages = self._range(pfn, npages)
        events0, notices0 = dict(self.events), len(self.guest_notices)
        snap = None
        last, streak = None, 0
        try:
            p = pfn
            while p < pfn + npages:                   # pages accessed in order
                f = self._access_fault(p, write)
                if f is None:
                    p += 1
                    continue
                self.faults.append((f.pfn, f.write, f.kind, f.level))
                # SPEC-AMBIGUITY: host_rmp_fault / host_np_fault are not in the spec; counted
                # once per fault seen (and rolled back with everything else on an oops).
                self.events["host_rmp_fault" if f.kind == "rmp" else "host_np_fault"] += 1
                streak = streak + 1 if last == p else 1
                last = p
                if self.host_fault_policy == "oops" or streak >= 3:   # 3 in a row: a loop
                    raise HostOops(f)
                if snap is None:
                    snap = self._snapshot()
                self._auto_convert(f)                 # then retry the same page
        except BaseException:
            # all-or-nothing (brief): state, events and notices as before the call; the
            # `faults` list keeps every fault seen.
            if snap is not None:
                self._restore(snap)
            self.events.clear()
            self.events.update(events0)
            del self.guest_notices[notices0:]
            raise

    def write(self, pfn, npages=1):
        self._access(pfn, npages, True)

    def read(self, pfn, npages=1):
        self._access(pfn, npages, False)
