"""The SEV-SNP Reverse Map Table: the instructions that read and write it.

The entries themselves live in :class:`~kit.host.rmptable.RmpTable` (the analogue of the
kernel's ``struct rmpentry_raw`` table in arch/x86/virt/svm/sev.c); this module holds what the
hardware does with them: RMPUPDATE, PSMASH, PVALIDATE, RMPADJUST and RMPREAD, their checks and
return codes, the #NPF they raise, and :class:`RmpRules` for the answers no source gives. It
changes entries only through the table's methods. :class:`RmpEntry` is the decoded view
RMPREAD returns (``struct rmpentry``, filled by ``get_rmpentry``).

Sources (the keys of docs/host-model.md):

- [APM2] AMD64 Architecture Programmer's Manual Vol. 2, sections 15.36.3-15.36.12 (RMP entry
  fields, page validation, VMPL permissions, RMP checks, PSMASH, in-use pages), read through a
  translation; the Vol. 3 per-instruction pseudo-code (RMPUPDATE, PSMASH, PVALIDATE,
  RMPADJUST, RMPREAD) was not available.
- [LX] torvalds/linux arch/x86/virt/svm/sev.c (``rmpupdate``, ``psmash``, ``get_rmpentry``,
  ``__snp_lookup_rmpentry``, ``dump_rmpentry``) and arch/x86/include/asm/sev.h (return codes).
- [FW] amd/AMD-ASPFW sev_rmp.c (``subpage_count`` kept in the 2M-aligned entry).
- [VER] microsoft/verismo source/verismo/src/arch/rmp/{access_s,entry_s,perm_s}.rs, a formal
  model (not AMD's text): the check order used here for PVALIDATE and RMPADJUST.

Where no source states the hardware's answer, the model's choice is a field of
:class:`RmpRules` with the default documented there, so a user can change it.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

from ..errors import (PFERR_GUEST_ENC_MASK, PFERR_GUEST_FINAL_MASK, PFERR_GUEST_RMP_MASK,
                      PFERR_GUEST_SIZEM_MASK, NestedPageFault)
from ..units import PAGE_2M, PAGE_4K, PAGE_SHIFT, PAGES_PER_2M, check_bool, check_level
from .ledger import Ledger
from .ranges import check_int, check_pfn_range, check_region, check_regions, region_span
from .rmptable import (F_2M, F_ASSIGNED, F_DETAIL, F_IMMUTABLE, F_LINEAR, F_VALIDATED, F_VMSA,
                       M_ASID, MAX_ASID, MAX_GFN, RmpTable)

__all__ = [
    "RMPUPDATE_FAIL_INPUT", "RMPUPDATE_FAIL_PERMISSION", "RMPUPDATE_FAIL_INUSE",
    "RMPUPDATE_FAIL_OVERLAP", "PSMASH_FAIL_INPUT", "PSMASH_FAIL_PERMISSION", "PSMASH_FAIL_INUSE",
    "PSMASH_FAIL_BADADDR", "PVALIDATE_FAIL_INPUT", "PVALIDATE_FAIL_PERMISSION",
    "PVALIDATE_FAIL_SIZEMISMATCH", "PVALIDATE_FAIL_NOUPDATE", "RMPADJUST_FAIL_INPUT",
    "RMPADJUST_FAIL_PERMISSION", "RMPADJUST_FAIL_SIZEMISMATCH",
    "VMPL_R", "VMPL_W", "VMPL_XU", "VMPL_XS", "VMPL_SSS", "VMPL_ALL", "MAX_ASID", "MAX_GFN",
    "F_ASSIGNED", "F_2M", "F_IMMUTABLE", "F_VALIDATED", "F_VMSA", "F_LINEAR", "F_DETAIL", "M_ASID",
    "RmpEntry", "RmpRules", "Rmp", "RmpTable",
]

# --- return codes [LX asm/sev.h; early SNP patches for the INPUT/PERMISSION/INUSE values]
RMPUPDATE_FAIL_INPUT = 1
RMPUPDATE_FAIL_PERMISSION = 2
RMPUPDATE_FAIL_INUSE = 3
RMPUPDATE_FAIL_OVERLAP = 4

PSMASH_FAIL_INPUT = 1
PSMASH_FAIL_PERMISSION = 2
PSMASH_FAIL_INUSE = 3
PSMASH_FAIL_BADADDR = 4

PVALIDATE_FAIL_INPUT = 1
PVALIDATE_FAIL_PERMISSION = 2
PVALIDATE_FAIL_SIZEMISMATCH = 6
PVALIDATE_FAIL_NOUPDATE = 255  # software-defined: success with rFLAGS.CF=1 [LX]

RMPADJUST_FAIL_INPUT = 1
RMPADJUST_FAIL_PERMISSION = 2
RMPADJUST_FAIL_SIZEMISMATCH = 6

# VMPL permission mask bits [APM2 Table 15-36]
VMPL_R, VMPL_W, VMPL_XU, VMPL_XS, VMPL_SSS = 1, 2, 4, 8, 16
VMPL_ALL = 0x1F


@dataclass(frozen=True)
class RmpEntry:
    """One RMP entry as :meth:`Rmp.rmpread` returns it: the decoded view (``struct rmpentry``
    filled by ``get_rmpentry`` [LX]), VMSA, Validated and the VMPL masks added.

    For a pfn inside a 2M entry, the 2M entry is returned (``pagesize == PAGE_2M``, ``gpa`` of
    the 2M page): see :attr:`RmpRules.read_subpage`.
    """

    assigned: bool
    pagesize: int
    immutable: bool
    validated: bool
    asid: int
    gpa: int
    vmsa: bool
    vmpl_perms: tuple = (VMPL_ALL, 0, 0, 0)

    @property
    def state(self) -> str:
        """The firmware's page-state name (``rmp_entry_get_state`` in [FW])."""
        a, v, i = self.assigned, self.validated, self.immutable
        if not a:
            return "hv-fixed" if i else "hypervisor"
        if self.asid == 0:
            if not i:
                return "reclaim"
            return "context" if self.vmsa else ("firmware" if self.gpa == 0 else "metadata")
        if i:
            return "pre-swap" if v else "pre-guest"
        return "guest-valid" if v else "guest-invalid"


@dataclass(frozen=True)
class RmpRules:
    """Model choices where the hardware's answer is not in any source we have.

    - ``overlap_2m_over_4k``: code for a 2M RMPUPDATE while any of the 511 non-aligned 4K
      entries is assigned. OVERLAP ("4K page and 2MB page overlap" [LX]); the firmware's
      ``subpage_count`` [FW] is the likely mechanism.
    - ``overlap_4k_in_2m``: code for a 4K RMPUPDATE inside an *assigned* 2M entry. OVERLAP by
      the same reading. (KVM always PSMASHes first, ``sev_gmem_invalidate``.) A 4K update inside
      an *unassigned* 2M entry succeeds and turns the region into 4K entries.
    - ``immutable_update``: code for RMPUPDATE on an Immutable entry: PERMISSION [VER]; [APM2]
      only says software cannot change it.
    - ``shared_with_asid``: code for RMPUPDATE with assigned=0 and a non-zero ASID: a
      hypervisor page has ASID 0 [APM2 15.36.5]; INPUT is the kit's choice.
    - ``psmash_not_2m``: code for PSMASH of a region that is not a 2M entry. Non-zero per KVM's
      handling of a failed PSMASH as a race that already produced 4K entries
      (``sev_handle_rmp_fault``); INPUT is the kit's choice.
    - ``psmash_immutable``: code for PSMASH of an immutable 2M entry (kit's choice: PERMISSION).
    - ``not_validated_adjust``: RMPADJUST on a page that is not validated [VER "NotValidated"];
      the APM code is unknown: PERMISSION is the kit's choice.
    - ``pvalidate_not_vmpl0``: PVALIDATE from VMPL > 0 [VER Perm].
    - ``read_subpage``: ``"2m-entry"``: RMPREAD of a pfn inside a 2M entry returns the 2M entry.
      Unknown in hardware; Linux reads the level from the 2M-aligned entry
      (``__snp_lookup_rmpentry``) and KVM expects sub-pages of a private 2M page to read as
      assigned (``sev_gmem_invalidate``).
    """

    overlap_2m_over_4k: int = RMPUPDATE_FAIL_OVERLAP
    overlap_4k_in_2m: int = RMPUPDATE_FAIL_OVERLAP
    immutable_update: int = RMPUPDATE_FAIL_PERMISSION
    shared_with_asid: int = RMPUPDATE_FAIL_INPUT
    psmash_not_2m: int = PSMASH_FAIL_INPUT
    psmash_immutable: int = PSMASH_FAIL_PERMISSION
    not_validated_adjust: int = RMPADJUST_FAIL_PERMISSION
    pvalidate_not_vmpl0: int = PVALIDATE_FAIL_PERMISSION
    read_subpage: str = "2m-entry"

    def __post_init__(self):
        if self.read_subpage != "2m-entry":
            raise ValueError("read_subpage: only '2m-entry' is modelled")
        for f in fields(self):
            if f.name != "read_subpage":   # a return code: the instruction's 8 bits (255: PVALIDATE's CF=1)
                check_int(getattr(self, f.name), f.name, 0, 255)

    def replace(self, **kw) -> "RmpRules":
        return replace(self, **kw)


def _bool(value, name):
    """An instruction's one-bit operand: True/False, or the int 0/1 (not 1.0, not "1")."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    raise TypeError(f"{name}: expected a bool, got {type(value).__name__} {value!r}")


def _check_asid(asid) -> int:
    asid = check_int(asid, "asid")
    if not 0 <= asid <= MAX_ASID:
        raise ValueError(f"asid: must be in [0, {MAX_ASID}] (10-bit RMP field), got {asid}")
    return asid


def _check_gpa(gpa, *, align: int = PAGE_4K, npages: int = 1) -> int:
    gpa = check_int(gpa, "gpa")
    if gpa < 0 or gpa % align:
        raise ValueError(f"gpa: must be a non-negative multiple of {align:#x}, got {gpa:#x}")
    if (gpa >> PAGE_SHIFT) + npages - 1 > MAX_GFN:
        raise ValueError(f"gpa: must fit the 39-bit GFN field of the RMP entry, got {gpa:#x}")
    return gpa


class Rmp:
    """The RMP of one host: the instructions over an :class:`RmpTable` (``table``).

    ``in_use`` holds the pfns VMRUN marked in use [APM2 15.36.12]; ``last_failed_pfn`` the
    entry the last failing RMPUPDATE stopped at.
    """

    def __init__(self, nr_pages: int, *, ledger: Ledger, rules: RmpRules | None = None):
        if not isinstance(ledger, Ledger):
            raise TypeError(f"ledger: expected a Ledger, got {type(ledger).__name__}")
        if rules is not None and not isinstance(rules, RmpRules):
            raise TypeError(f"rules: expected an RmpRules, got {type(rules).__name__}")
        self.table = RmpTable(nr_pages)
        self.nr_pages = self.table.nr_pages
        self.nr_regions = self.nr_pages // PAGES_PER_2M
        self.ledger = ledger
        self.rules = rules or RmpRules()
        self.in_use: set[int] = set()
        self.last_failed_pfn = -1

    # ================================================================ storage views
    @property
    def flags(self) -> np.ndarray:
        """The table's region-word flags (read only; see :class:`RmpTable`)."""
        return self.table.flags

    @property
    def asid(self) -> np.ndarray:
        """The table's region-word ASIDs (read only)."""
        return self.table.asid

    @property
    def nbytes(self) -> int:
        return self.table.nbytes

    @property
    def detail_regions(self) -> int:
        return self.table.detail_regions

    # ================================================================ reading
    def _check_pfn(self, pfn) -> int:
        return check_pfn_range(pfn, 1, self.nr_pages)[0]

    def rmpread(self, pfn) -> RmpEntry:
        """RMPREAD [LX ``get_rmpentry``]: the entry of ``pfn`` (the 2M entry for a sub-page)."""
        pfn = self._check_pfn(pfn)
        bits, asid, gfn, is2m = self.table.entry(pfn)
        key = pfn - pfn % PAGES_PER_2M if is2m else pfn
        return RmpEntry(assigned=bool(bits & F_ASSIGNED), pagesize=PAGE_2M if is2m else PAGE_4K,
                        immutable=bool(bits & F_IMMUTABLE), validated=bool(bits & F_VALIDATED),
                        asid=asid, gpa=gfn << PAGE_SHIFT, vmsa=bool(bits & F_VMSA),
                        vmpl_perms=((VMPL_ALL if bits & F_ASSIGNED else 0),) + self.table.perms(key))

    def region_summary(self) -> dict:
        """Counts of 2M regions by form, for dashboards and reports."""
        f = self.table.region_forms(slice(None))
        return {
            "2m_assigned": int(np.count_nonzero((f & F_2M) & (f & F_ASSIGNED) != 0)),
            "2m_shared": int(np.count_nonzero(((f & F_2M) != 0) & ((f & F_ASSIGNED) == 0))),
            "4k_uniform_assigned": int(np.count_nonzero(((f & (F_2M | F_DETAIL)) == 0) & ((f & F_ASSIGNED) != 0))),
            "4k_uniform_shared": int(np.count_nonzero((f & (F_2M | F_DETAIL | F_ASSIGNED)) == 0)),
            "4k_mixed": int(np.count_nonzero(f & F_DETAIL)),
        }

    def assigned_mask(self, region: int) -> np.ndarray:
        """(512,) bool: which 4K pages of a region are assigned (a 2M entry covers all 512)."""
        return (self.table.page_bits(check_region(region, self.nr_regions)) & F_ASSIGNED) != 0

    def region_has_assigned(self, regions: np.ndarray) -> np.ndarray:
        """Vector: does any 4K page of each region read as assigned?"""
        return self.table.regions_any(check_regions(regions, self.nr_regions), F_ASSIGNED)

    # ================================================================ RMPUPDATE
    def _codes_4k(self, r: int, lo: int, hi: int, assigned: bool) -> np.ndarray:
        """Per-page RMPUPDATE code for 4K updates of pages [lo, hi) of region ``r``."""
        f = self.table.region_form(r)
        imm = (self.table.page_bits(r, lo, hi) & F_IMMUTABLE) != 0
        inuse = np.isin(np.arange(lo, hi) + r * PAGES_PER_2M, list(self.in_use))
        overlap = bool(f & F_2M and f & F_ASSIGNED)
        codes = np.where(overlap, self.rules.overlap_4k_in_2m, 0)
        codes = np.where(inuse, RMPUPDATE_FAIL_INUSE, codes)
        return np.where(imm, self.rules.immutable_update, codes)

    def _code_2m(self, r: int) -> int:
        """RMPUPDATE code for a 2M update of region ``r``."""
        f = self.table.region_form(r)
        flags = None if f & F_2M else self.table.page_bits(r)
        imm = bool(f & F_IMMUTABLE) if flags is None else bool(np.any(flags & F_IMMUTABLE))
        if imm:
            return self.rules.immutable_update
        if any(r * PAGES_PER_2M <= p < (r + 1) * PAGES_PER_2M for p in self.in_use):
            return RMPUPDATE_FAIL_INUSE
        if flags is not None and np.any(flags[1:] & F_ASSIGNED):
            return self.rules.overlap_2m_over_4k
        return 0

    def check_rmpupdate(self, pfn: int, npages: int, *, assigned: bool, size2m: bool,
                        asid: int) -> tuple[int, int]:
        """The checks of RMPUPDATE for each entry of the range, in page order; returns
        ``(code, pfn)`` of the first failing entry, or ``(0, -1)``. Per entry, in this order:

        1. assigned=0 with a non-zero ASID -> :attr:`RmpRules.shared_with_asid`;
        2. the current entry (for a 2M update, any of its 512) is Immutable ->
           :attr:`RmpRules.immutable_update` [VER; APM2 15.36.5];
        3. the entry is marked in use by VMRUN -> FAIL_INUSE [APM2 15.36.12];
        4. 2M update over assigned non-aligned 4K entries, or 4K update inside an assigned 2M
           entry -> FAIL_OVERLAP (see :class:`RmpRules`).
        """
        pfn, npages = check_pfn_range(pfn, npages, self.nr_pages)
        assigned, size2m = _bool(assigned, "assigned"), _bool(size2m, "size2m")
        return self._check_rmpupdate(pfn, npages, assigned, size2m, _check_asid(asid))

    def _check_rmpupdate(self, pfn: int, npages: int, assigned: bool, size2m: bool,
                         asid: int) -> tuple[int, int]:
        """:meth:`check_rmpupdate` on operands already checked (:meth:`rmpupdate_args`)."""
        if not assigned and asid:
            return self.rules.shared_with_asid, pfn
        table = self.table
        r0, r1, off0, off1 = region_span(pfn, npages)
        if r0 == r1 and not self.in_use:
            f = table.region_form(r0)
            if not f & F_DETAIL:
                # one region held as a single word: the rules on scalars
                if f & F_IMMUTABLE:
                    return self.rules.immutable_update, pfn
                if size2m and not f & F_2M and f & F_ASSIGNED:
                    return self.rules.overlap_2m_over_4k, pfn
                if not size2m and f & F_2M and f & F_ASSIGNED:
                    return self.rules.overlap_4k_in_2m, pfn
                return 0, -1
            if not size2m:
                # 4K updates inside one region held entry by entry: only Immutable can fail
                j = table.first_page_with(r0, off0, off1, F_IMMUTABLE)
                if j >= 0:
                    return self.rules.immutable_update, r0 * PAGES_PER_2M + j
                return 0, -1
        f = table.region_forms(slice(r0, r1 + 1))
        # cheap screen over all regions: which might fail?
        suspect = table.range_any(pfn, npages, F_IMMUTABLE)
        if size2m:
            suspect |= (f & (F_2M | F_DETAIL) == 0) & ((f & F_ASSIGNED) != 0)
            suspect |= (f & F_DETAIL) != 0
        else:
            suspect |= ((f & F_2M) != 0) & ((f & F_ASSIGNED) != 0)
        for p in self.in_use:
            if pfn <= p < pfn + npages:
                suspect[p // PAGES_PER_2M - r0] = True
        for i in np.flatnonzero(suspect):
            r = r0 + int(i)
            if size2m:
                code = self._code_2m(r)
                if code:
                    return code, r * PAGES_PER_2M
                continue
            lo = off0 if r == r0 else 0
            hi = off1 if r == r1 else PAGES_PER_2M
            codes = self._codes_4k(r, lo, hi, assigned)
            if codes.any():
                j = int(np.argmax(codes != 0))
                return int(codes[j]), r * PAGES_PER_2M + lo + j
        return 0, -1

    def rmpupdate(self, pfn, *, assigned, pagesize, immutable=False, asid=0, gpa=0,
                  npages=None) -> int:
        """RMPUPDATE: write a 4K or 2M entry [LX ``rmpupdate``; APM2 15.36.3/5/6].

        ``npages`` (default: one entry) writes consecutive entries of ``pagesize``, as the
        kernel would in a loop: an assigned entry's GPA advances with its pfn, an unassigned
        entry stores ``gpa`` as given. The range is checked as a whole first, so a failing entry
        leaves every entry as it was; the first failing entry's code is returned (its pfn in
        :attr:`last_failed_pfn`).

        Written fields: assigned, page size, immutable, ASID, GPA. Validated, VMSA and the
        VMPL1-3 masks are cleared [VER ``rmpupdate`` as used by its transition relation; APM2
        15.36.6: deallocate, reassign, remap or resize -> unvalidated; 15.36.7: on assignment
        VMPL0 gets all permissions, VMPL1-3 none]. Whether an update that changes nothing keeps
        Validated is not known; here it does not.
        """
        pfn, npages, size2m, assigned, immutable, asid, gpa = self.rmpupdate_args(
            pfn, assigned, pagesize, immutable, asid, gpa, npages)
        code, bad = self._check_rmpupdate(pfn, npages, assigned, size2m, asid)
        self.last_failed_pfn = bad
        if code:
            return code
        self.apply_rmpupdate(pfn, npages, assigned, size2m, immutable, asid, gpa)
        self.ledger.record("rmpupdate", rmpupdate=npages // PAGES_PER_2M if size2m else npages)
        return 0

    def rmpupdate_args(self, pfn, assigned, pagesize, immutable, asid, gpa, npages):
        """The operands of :meth:`rmpupdate`, checked (ValueError/TypeError naming the bad
        one): ``(pfn, npages, size2m, assigned, immutable, asid, gpa)``."""
        pagesize = check_level(pagesize, name="pagesize")
        size2m = pagesize == PAGE_2M
        step = PAGES_PER_2M if size2m else 1
        npages = step if npages is None else npages
        pfn, npages = check_pfn_range(pfn, npages, self.nr_pages)
        if size2m and (pfn % PAGES_PER_2M or npages % PAGES_PER_2M):
            raise ValueError(f"pfn: a 2M entry needs a 2M-aligned pfn and whole 2M pages, got "
                             f"pfn {pfn:#x}, npages {npages}")
        assigned = _bool(assigned, "assigned")
        immutable = _bool(immutable, "immutable")
        asid = _check_asid(asid)
        gpa = _check_gpa(gpa, align=PAGE_2M if size2m else PAGE_4K,
                         npages=npages if assigned else 1)
        return pfn, npages, size2m, assigned, immutable, asid, gpa

    def apply_rmpupdate(self, pfn, npages, assigned, size2m, immutable, asid, gpa) -> None:
        """The entries RMPUPDATE writes, once :meth:`check_rmpupdate` passed (the kernel's
        ``rmpupdate()`` runs ``adjust_direct_map`` between the two): assigned, page size,
        immutable, ASID and GPA (advancing with the pfn when assigned); Validated, VMSA and the
        VMPL1-3 masks cleared. Records nothing."""
        bits = (F_ASSIGNED if assigned else 0) | (F_IMMUTABLE if immutable else 0)
        self.table.drop_perms(pfn, npages)
        self.table.set_range(pfn, npages, bits, asid, gpa >> PAGE_SHIFT, linear=assigned,
                             size2m=size2m)

    # ================================================================ PSMASH
    def psmash(self, pfn) -> int:
        """PSMASH a 2M entry into 512 4K entries, keeping Validated [LX ``psmash``; APM2 15.36.11].

        ``pfn`` must be 2M-aligned (KVM aligns it down in ``snp_rmptable_psmash``). Codes:
        :attr:`RmpRules.psmash_immutable` for an immutable entry, FAIL_INUSE when marked in
        use, :attr:`RmpRules.psmash_not_2m` when the region is not a 2M entry.
        """
        pfn = self._check_pfn(pfn)
        if pfn % PAGES_PER_2M:
            raise ValueError(f"pfn: PSMASH takes a 2M-aligned pfn, got {pfn:#x}")
        r = pfn // PAGES_PER_2M
        f = self.table.region_form(r)
        if not f & F_2M:
            return self.rules.psmash_not_2m
        if f & F_IMMUTABLE:
            return self.rules.psmash_immutable
        if any(pfn <= p < pfn + PAGES_PER_2M for p in self.in_use):
            return PSMASH_FAIL_INUSE
        self.table.smash(r)
        self.ledger.record("psmash", psmash=1)
        return 0

    # ================================================================ guest instructions
    def _guest_entry_checks(self, pfn, size2m, asid, gpa, instr) -> tuple:
        """#NPF conditions shared by PVALIDATE and RMPADJUST, in [VER]'s order: the entry must be
        mutable, assigned, owned by ``asid`` and mapped at ``gpa``; a 4K request on a 2M entry
        is a size mismatch #NPF (PFERR_GUEST_SIZEM) [APM2 Table 15-40]."""
        bits, e_asid, e_gfn, is2m = self.table.entry(pfn)
        want_gfn = gpa >> PAGE_SHIFT
        if is2m and not size2m:
            e_gfn += pfn % PAGES_PER_2M
        base = PFERR_GUEST_RMP_MASK | PFERR_GUEST_ENC_MASK | PFERR_GUEST_FINAL_MASK
        why = None
        if bits & F_IMMUTABLE:
            why = "entry is immutable"
        elif not bits & F_ASSIGNED:
            why = "entry is not assigned"
        elif e_asid != asid:
            why = f"entry belongs to ASID {e_asid}, not {asid}"
        elif e_gfn != want_gfn:
            why = f"entry maps gpa {e_gfn << PAGE_SHIFT:#x}, not {gpa:#x}"
        if why:
            raise NestedPageFault(base, gpa=gpa, pfn=pfn, reason=f"{instr}: {why}")
        if is2m and not size2m:
            raise NestedPageFault(base | PFERR_GUEST_SIZEM_MASK, gpa=gpa, pfn=pfn,
                                  reason=f"{instr} at 4K on a 2M RMP entry")
        return bits, is2m

    def _guest_args(self, pfn, pagesize, asid, gpa):
        pfn = self._check_pfn(pfn)
        pagesize = check_level(pagesize, name="pagesize")
        size2m = pagesize == PAGE_2M
        if size2m and pfn % PAGES_PER_2M:
            raise ValueError(f"pfn: a 2M request needs a 2M-aligned pfn, got {pfn:#x}")
        asid = _check_asid(asid)
        gpa = _check_gpa(gpa, align=pagesize)
        if asid == 0:
            raise ValueError("asid: a guest instruction runs in a guest, ASID must be >= 1")
        return pfn, size2m, asid, gpa

    def _set_bit(self, pfn: int, is2m: bool, bit: int, value: bool) -> None:
        """Set or clear ``bit`` of the entry governing ``pfn`` (its 2M entry when ``is2m``)."""
        set_bits, clear_bits = (bit, 0) if value else (0, bit)
        if is2m:
            self.table.update_region_bits(pfn // PAGES_PER_2M, set_bits=set_bits, clear_bits=clear_bits)
        else:
            self.table.update_bits(pfn, 1, set_bits=set_bits, clear_bits=clear_bits)

    def pvalidate(self, pfn, *, pagesize, validate, asid, gpa, vmpl=0) -> int:
        """PVALIDATE from a guest with ``asid`` on its page ``gpa`` backed by ``pfn``.

        Order [VER ``pvalidate``]: caller not VMPL0 -> :attr:`RmpRules.pvalidate_not_vmpl0`;
        #NPF conditions (:meth:`_guest_entry_checks`); 2M request on 4K entries ->
        FAIL_SIZEMISMATCH (the Linux guest retries 512 x 4K, ``pval_pages``); already in the
        requested state -> PVALIDATE_FAIL_NOUPDATE (CF=1, nothing changed); else set/clear
        Validated [APM2 15.36.6].
        """
        pfn, size2m, asid, gpa = self._guest_args(pfn, pagesize, asid, gpa)
        validate = _bool(validate, "validate")
        vmpl = check_int(vmpl, "vmpl")
        if not 0 <= vmpl <= 3:
            raise ValueError(f"vmpl: must be 0..3, got {vmpl}")
        if vmpl != 0:
            return self.rules.pvalidate_not_vmpl0
        bits, is2m = self._guest_entry_checks(pfn, size2m, asid, gpa, "PVALIDATE")
        if size2m and not is2m:
            return PVALIDATE_FAIL_SIZEMISMATCH
        if bool(bits & F_VALIDATED) == validate:
            return PVALIDATE_FAIL_NOUPDATE
        self._set_bit(pfn, is2m, F_VALIDATED, validate)
        self.ledger.record("pvalidate", pvalidate=1)
        return 0

    def pvalidate_2m_run(self, pfn, nregions: int, *, asid, gpa) -> list[int]:
        """PVALIDATE(validate=1, 2M) of ``nregions`` consecutive 2M pages (pfn and gpa advancing
        together), as a guest accepting a contiguous range issues them one by one. The common
        case (every entry a 2M entry of ``asid`` at the right gpa, mutable, not validated) is
        one vectorised update with the same outcome as the single instructions; otherwise each
        entry goes through :meth:`pvalidate`. Returns the per-entry return codes."""
        pfn = self._check_pfn(pfn)
        nregions = check_int(nregions, "nregions")
        if pfn % PAGES_PER_2M or nregions < 1 or pfn + nregions * PAGES_PER_2M > self.nr_pages:
            raise ValueError(f"pfn, nregions: need a 2M-aligned run inside the RMP, got {pfn:#x} x {nregions}")
        asid = _check_asid(asid)
        if asid == 0:
            raise ValueError("asid: a guest instruction runs in a guest, ASID must be >= 1")
        gpa = _check_gpa(gpa, align=PAGE_2M, npages=nregions * PAGES_PER_2M)
        r = np.arange(pfn // PAGES_PER_2M, pfn // PAGES_PER_2M + nregions)
        f = self.table.region_forms(r)
        want = np.uint64(gpa >> PAGE_SHIFT) + np.arange(nregions, dtype=np.uint64) * np.uint64(PAGES_PER_2M)
        ok = (np.all((f & (F_2M | F_ASSIGNED | F_IMMUTABLE | F_VALIDATED | F_DETAIL)) == (F_2M | F_ASSIGNED))
              and np.all(self.table.region_asids(r) == asid) and np.all(self.table.region_gfns(r) == want))
        if ok:
            self.table.update_region_bits(r, set_bits=F_VALIDATED)
            self.ledger.record("pvalidate", pvalidate=nregions)
            return [0] * nregions
        # the instructions in order, the regions held as one word judged together: only a
        # region held entry by entry, or one whose instruction faults, is done on its own
        is2m = (f & F_2M) != 0
        special = ((f & F_DETAIL) != 0) | ((f & F_IMMUTABLE) != 0) | ((f & F_ASSIGNED) == 0) \
            | (self.table.region_asids(r) != asid) | (self.table.region_gfns(r) != want)
        codes = np.where(~is2m, PVALIDATE_FAIL_SIZEMISMATCH,
                         np.where((f & F_VALIDATED) != 0, PVALIDATE_FAIL_NOUPDATE, 0))
        out: list[int] = []
        i = 0
        for j in [*np.flatnonzero(special).tolist(), nregions]:
            if j > i:
                done = i + np.flatnonzero(codes[i:j] == 0)
                if len(done):
                    self.table.update_region_bits(r[done], set_bits=F_VALIDATED)
                    self.ledger.record("pvalidate", pvalidate=len(done))
                out += codes[i:j].tolist()
            if j < nregions:       # raises the #NPF of a faulting region, after those before it
                out.append(self.pvalidate(pfn + j * PAGES_PER_2M, pagesize=PAGE_2M, validate=True,
                                          asid=asid, gpa=gpa + j * PAGE_2M))
            i = j + 1
        return out

    def rmpadjust(self, pfn, *, pagesize, target_vmpl, perms, vmsa=False, asid, gpa,
                  vmpl=0) -> int:
        """RMPADJUST: set the permission mask of a less privileged VMPL, and the VMSA bit.

        Order [VER ``rmpadjust``]: ``target_vmpl`` not numerically above the caller's ->
        FAIL_PERMISSION [APM2 15.36.7]; #NPF conditions; not validated ->
        :attr:`RmpRules.not_validated_adjust`; 2M request on 4K entries -> FAIL_SIZEMISMATCH;
        ``perms`` not a subset of the caller's own -> FAIL_PERMISSION [APM2 15.36.7]; setting
        VMSA from VMPL > 0 -> FAIL_PERMISSION [APM2 15.36.12]. ``perms`` is the mask of
        VMPL_R|VMPL_W|VMPL_XU|VMPL_XS|VMPL_SSS.
        """
        pfn, size2m, asid, gpa = self._guest_args(pfn, pagesize, asid, gpa)
        vmpl, target_vmpl, perms = (check_int(vmpl, "vmpl"), check_int(target_vmpl, "target_vmpl"),
                                    check_int(perms, "perms"))
        vmsa = _bool(vmsa, "vmsa")
        if not 0 <= vmpl <= 3:
            raise ValueError(f"vmpl: must be 0..3, got {vmpl}")
        if not 1 <= target_vmpl <= 3:
            raise ValueError(f"target_vmpl: must be 1..3, got {target_vmpl}")
        if not 0 <= perms <= VMPL_ALL:
            raise ValueError(f"perms: must be a mask of VMPL_R|W|XU|XS|SSS (0..{VMPL_ALL:#x}), got {perms:#x}")
        if target_vmpl <= vmpl:
            return RMPADJUST_FAIL_PERMISSION
        bits, is2m = self._guest_entry_checks(pfn, size2m, asid, gpa, "RMPADJUST")
        if not bits & F_VALIDATED:
            return self.rules.not_validated_adjust
        if size2m and not is2m:
            return RMPADJUST_FAIL_SIZEMISMATCH
        cur = self.table.perms(pfn)
        own = VMPL_ALL if vmpl == 0 else cur[vmpl - 1]
        if perms & ~own:
            return RMPADJUST_FAIL_PERMISSION
        if vmsa and vmpl != 0:
            return RMPADJUST_FAIL_PERMISSION
        new = list(cur)
        new[target_vmpl - 1] = perms
        self.table.set_perms(pfn, new)
        self._set_bit(pfn, is2m, F_VMSA, vmsa)
        self.ledger.record("rmpadjust", rmpadjust=1)
        return 0

    def firmware_set(self, pfn, npages=1, *, validated=None, immutable=None, vmsa=None) -> None:
        """A state change made by the SEV firmware (the PSP), which immutability does not stop:
        e.g. SNP_LAUNCH_UPDATE / SNP_LAUNCH_FINISH moving launch pages Pre-Guest -> Guest-Valid
        (``rmp_entry_get_state`` states [FW]). Only 4K entries; not a host instruction."""
        pfn, npages = check_pfn_range(pfn, npages, self.nr_pages)
        validated, immutable, vmsa = (None if v is None else _bool(v, n) for v, n in
                                      ((validated, "validated"), (immutable, "immutable"), (vmsa, "vmsa")))
        r0, r1, _, _ = region_span(pfn, npages)
        is2m = np.flatnonzero(self.table.region_forms(slice(r0, r1 + 1)) & F_2M)
        if len(is2m):
            raise ValueError(f"pfn: firmware_set works on 4K entries; region {r0 + int(is2m[0])} is a 2M entry")
        set_bits = clear_bits = 0
        for bit, value in ((F_VALIDATED, validated), (F_IMMUTABLE, immutable), (F_VMSA, vmsa)):
            if value is not None:
                if value:
                    set_bits |= bit
                else:
                    clear_bits |= bit
        self.table.update_bits(pfn, npages, set_bits=set_bits, clear_bits=clear_bits)

    def mark_in_use(self, pfn, in_use: bool = True) -> None:
        """VMRUN marks the VMCB, VMSA and AVIC pages in use until #VMEXIT [APM2 15.36.12]."""
        pfn = self._check_pfn(pfn)
        in_use = check_bool(in_use, "in_use")
        (self.in_use.add if in_use else self.in_use.discard)(pfn)
