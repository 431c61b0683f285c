"""The SEV-SNP Reverse Map Table and the instructions that read and write it.

Sources (keys as in the kit's reference notes):

- [APM2] AMD64 APM Vol. 2, sections 15.36.3-15.36.12 (RMP entry fields, page validation, VMPL
  permissions, RMP checks, PSMASH, in-use pages), read through a translation; the Vol. 3
  per-instruction pseudo-code was not available.
- [LX] torvalds/linux arch/x86/virt/svm/sev.c and arch/x86/include/asm/sev.h (return codes,
  ``struct rmpentry_raw``, ``__snp_lookup_rmpentry``).
- [FW] amd/AMD-ASPFW sev_rmp.c (``subpage_count`` kept in the 2M-aligned entry).
- [VER] microsoft/verismo source/verismo/src/arch/rmp/{access_s,entry_s,perm_s}.rs, a formal
  model (not AMD's text): the check order used here for PVALIDATE and RMPADJUST.

Where no source states the hardware's answer, the model's choice is a field of
:class:`RmpRules` with the default documented there, so a user can change it.

Representation (two-level, like the hardware's 2M entries): per 2M region one entry
(``flags``, ``asid``, ``gfn``) that is either a 2M entry, or stands for 512 identical 4K entries
(GPAs equal, or consecutive when ``F_LINEAR``), or points at a detail slot holding 512 4K
entries packed in 7 bytes each (gfn 40 bits, asid 10 bits, 4 flag bits). VMPL1-3 permission
masks, which only RMPADJUST sets, are kept sparsely by the entry's first pfn.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..errors import (PFERR_GUEST_ENC_MASK, PFERR_GUEST_FINAL_MASK, PFERR_GUEST_RMP_MASK,
                      PFERR_GUEST_SIZEM_MASK, NestedPageFault)
from ..units import PAGE_2M, PAGE_4K, check_level
from .ranges import PAGES_PER_2M, LazyIndex, SlotPool, check_int, check_pfn_range, region_span
from .ledger import Ledger

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
MAX_ASID = (1 << 10) - 1   # ASID field is bits 51-60 [LX rmpentry_raw]
MAX_GFN = (1 << 39) - 1    # GPA field is bits 12-50

# --- region flags
F_ASSIGNED, F_2M, F_IMMUTABLE, F_VALIDATED, F_VMSA, F_LINEAR, F_DETAIL = 1, 2, 4, 8, 16, 32, 64
_ENTRY_BITS = F_ASSIGNED | F_IMMUTABLE | F_VALIDATED | F_VMSA
# --- detail meta (uint16): asid in bits 0-9, then the four entry bits
M_ASID = 0x3FF
_META_OF = {F_ASSIGNED: 1 << 10, F_IMMUTABLE: 1 << 11, F_VALIDATED: 1 << 12, F_VMSA: 1 << 13}


def _flags_to_meta(flags: np.ndarray) -> np.ndarray:
    f = flags.astype(np.uint16)
    return (((f & F_ASSIGNED) << 10) | ((f & F_IMMUTABLE) << 9) | ((f & F_VALIDATED) << 9)
            | ((f & F_VMSA) << 9)).astype(np.uint16)


def _meta_to_flags(meta: np.ndarray) -> np.ndarray:
    m = meta.astype(np.uint16)
    return (((m >> 10) & F_ASSIGNED) | ((m >> 9) & F_IMMUTABLE) | ((m >> 9) & F_VALIDATED)
            | ((m >> 9) & F_VMSA)).astype(np.uint8)


@dataclass(frozen=True)
class RmpEntry:
    """One RMP entry as :meth:`Rmp.rmpread` returns it (the raw format's fields).

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

    def replace(self, **kw) -> "RmpRules":
        return replace(self, **kw)


def _bool(value, name):
    if not isinstance(value, (bool, np.bool_)) and value not in (0, 1):
        raise TypeError(f"{name}: expected a bool, got {value!r}")
    return bool(value)


def _check_asid(asid) -> int:
    asid = check_int(asid, "asid")
    if not 0 <= asid <= MAX_ASID:
        raise ValueError(f"asid: must be in [0, {MAX_ASID}] (10-bit RMP field), got {asid}")
    return asid


def _check_gpa(gpa, *, align: int = PAGE_4K, npages: int = 1) -> int:
    gpa = check_int(gpa, "gpa")
    if gpa < 0 or gpa % align:
        raise ValueError(f"gpa: must be a non-negative multiple of {align:#x}, got {gpa:#x}")
    if (gpa >> 12) + npages - 1 > MAX_GFN:
        raise ValueError(f"gpa: must fit the 39-bit GFN field of the RMP entry, got {gpa:#x}")
    return gpa


class Rmp:
    """The RMP of one host: 16 bytes per 4K in hardware, far less here (see module doc)."""

    def __init__(self, nr_pages: int, *, ledger: Ledger, rules: RmpRules | None = None):
        self.nr_pages = nr_pages
        self.nr_regions = nr_pages // PAGES_PER_2M
        self.ledger = ledger
        self.rules = rules or RmpRules()
        n = self.nr_regions
        self.flags = np.zeros(n, dtype=np.uint8)
        self.asid = np.zeros(n, dtype=np.uint16)
        self._gfn_lo = np.zeros(n, dtype=np.uint32)   # GFN (39 bits) in 5 bytes
        self._gfn_hi = np.zeros(n, dtype=np.uint8)
        self.didx = LazyIndex(n)
        self._pool = SlotPool(n, {"gfn_lo": (np.uint32, (PAGES_PER_2M,)),
                                  "gfn_hi": (np.uint8, (PAGES_PER_2M,)),
                                  "meta": (np.uint16, (PAGES_PER_2M,))})
        self._perms: dict[int, tuple] = {}   # entry's first pfn -> (vmpl1, vmpl2, vmpl3)
        self.in_use: set[int] = set()        # pfns marked in use by VMRUN [APM2 15.36.12]

    # ================================================================ representation
    @property
    def nbytes(self) -> int:
        return (self.flags.nbytes + self.asid.nbytes + self._gfn_lo.nbytes + self._gfn_hi.nbytes
                + self.didx.nbytes
                + self._pool.nbytes + 64 * len(self._perms))

    @property
    def detail_regions(self) -> int:
        return self._pool.in_use

    def _gfn(self, regions):
        return self._gfn_lo[regions].astype(np.uint64) | (self._gfn_hi[regions].astype(np.uint64) << np.uint64(32))

    def _set_gfn(self, regions, gfn) -> None:
        if isinstance(gfn, (int, np.integer)):
            self._gfn_lo[regions] = int(gfn) & 0xFFFFFFFF
            self._gfn_hi[regions] = int(gfn) >> 32
            return
        gfn = np.asarray(gfn, dtype=np.uint64)
        self._gfn_lo[regions] = (gfn & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        self._gfn_hi[regions] = (gfn >> np.uint64(32)).astype(np.uint8)

    def _expand(self, r: int):
        """(flags[512] uint8 entry bits, asid[512] uint16, gfn[512] uint64) of a 4K-form region."""
        f = int(self.flags[r])
        if f & F_DETAIL:
            s = self.didx[r]
            meta = self._pool.meta[s]
            gfn = self._pool.gfn_lo[s].astype(np.uint64) | (self._pool.gfn_hi[s].astype(np.uint64) << 32)
            return _meta_to_flags(meta), (meta & M_ASID).astype(np.uint16), gfn
        flags = np.full(PAGES_PER_2M, f & _ENTRY_BITS, dtype=np.uint8)
        asid = np.full(PAGES_PER_2M, self.asid[r], dtype=np.uint16)
        gfn = np.full(PAGES_PER_2M, self._gfn(r), dtype=np.uint64)
        if f & F_LINEAR:
            gfn += np.arange(PAGES_PER_2M, dtype=np.uint64)
        return flags, asid, gfn

    def _store(self, r: int, flags, asid, gfn) -> None:
        """Store 512 4K entries into region ``r``, compressing to one entry when uniform."""
        uniform = np.all(flags == flags[0]) and np.all(asid == asid[0])
        if uniform and np.all(gfn == gfn[0]):
            self._set_uniform(slice(r, r + 1), int(flags[0]), int(asid[0]), int(gfn[0]), False)
            return
        if uniform and np.all(gfn == gfn[0] + np.arange(PAGES_PER_2M, dtype=np.uint64)):
            self._set_uniform(slice(r, r + 1), int(flags[0]), int(asid[0]), int(gfn[0]), True)
            return
        if not self.flags[r] & F_DETAIL:
            self.didx[r] = self._pool.alloc(1)[0]
        s = self.didx[r]
        self._pool.meta[s] = _flags_to_meta(flags) | asid
        self._pool.gfn_lo[s] = (gfn & 0xFFFFFFFF).astype(np.uint32)
        self._pool.gfn_hi[s] = (gfn >> 32).astype(np.uint8)
        self.flags[r] = F_DETAIL
        self.asid[r] = 0
        self._set_gfn(r, 0)

    def _set_uniform(self, regions, entry_bits: int, asid: int, gfn, linear: bool,
                     size2m: bool = False) -> None:
        """Regions (an index array or a slice) become one entry each (2M, or 512 uniform 4K);
        their detail slots are freed."""
        fl = self.flags[regions]
        if np.any(fl & F_DETAIL):
            idx = np.arange(self.nr_regions)[regions] if isinstance(regions, slice) else np.asarray(regions)
            det = idx[(fl & F_DETAIL) != 0]
            self._pool.release(self.didx[det])
            self.didx[det] = -1
        self.flags[regions] = entry_bits | (F_2M if size2m else 0) | (F_LINEAR if linear and not size2m else 0)
        self.asid[regions] = asid
        self._set_gfn(regions, gfn)

    # ================================================================ reading
    def _check_pfn(self, pfn) -> int:
        return check_pfn_range(pfn, 1, self.nr_pages)[0]

    def _entry(self, pfn: int) -> tuple:
        """(entry_bits, asid, gfn, is_2m) of the entry governing ``pfn``."""
        r, off = divmod(pfn, PAGES_PER_2M)
        f = int(self.flags[r])
        if f & F_2M:
            return f & _ENTRY_BITS, int(self.asid[r]), int(self._gfn(r)), True
        if f & F_DETAIL:
            s = self.didx[r]
            meta = int(self._pool.meta[s, off])
            gfn = int(self._pool.gfn_lo[s, off]) | (int(self._pool.gfn_hi[s, off]) << 32)
            return int(_meta_to_flags(np.uint16(meta))), meta & M_ASID, gfn, False
        gfn = int(self._gfn(r)) + (off if f & F_LINEAR else 0)
        return f & _ENTRY_BITS, int(self.asid[r]), gfn, False

    def rmpread(self, pfn) -> RmpEntry:
        """RMPREAD [LX ``get_rmpentry``]: the entry of ``pfn`` (the 2M entry for a sub-page)."""
        pfn = self._check_pfn(pfn)
        bits, asid, gfn, is2m = self._entry(pfn)
        key = pfn - pfn % PAGES_PER_2M if is2m else pfn
        p = self._perms.get(key, (0, 0, 0))
        return RmpEntry(assigned=bool(bits & F_ASSIGNED), pagesize=PAGE_2M if is2m else PAGE_4K,
                        immutable=bool(bits & F_IMMUTABLE), validated=bool(bits & F_VALIDATED),
                        asid=asid, gpa=gfn << 12, vmsa=bool(bits & F_VMSA),
                        vmpl_perms=((VMPL_ALL if bits & F_ASSIGNED else 0),) + tuple(p))

    def region_summary(self) -> dict:
        """Counts of 2M regions by form, for dashboards and reports."""
        f = self.flags
        return {
            "2m_assigned": int(np.count_nonzero((f & F_2M) & (f & F_ASSIGNED) != 0)),
            "2m_shared": int(np.count_nonzero(((f & F_2M) != 0) & ((f & F_ASSIGNED) == 0))),
            "4k_uniform_assigned": int(np.count_nonzero(((f & (F_2M | F_DETAIL)) == 0) & ((f & F_ASSIGNED) != 0))),
            "4k_uniform_shared": int(np.count_nonzero((f & (F_2M | F_DETAIL | F_ASSIGNED)) == 0)),
            "4k_mixed": int(np.count_nonzero(f & F_DETAIL)),
        }

    def assigned_mask(self, region: int) -> np.ndarray:
        """(512,) bool: which 4K pages of a region are assigned (a 2M entry covers all 512)."""
        f = int(self.flags[region])
        if f & F_DETAIL:
            return (self._pool.meta[self.didx[region]] & _META_OF[F_ASSIGNED]) != 0
        return np.full(PAGES_PER_2M, bool(f & F_ASSIGNED))

    def region_has_assigned(self, regions: np.ndarray) -> np.ndarray:
        """Vector: does any 4K page of each region read as assigned?"""
        regions = np.asarray(regions)
        f = self.flags[regions]
        out = (f & F_ASSIGNED) != 0
        det = np.flatnonzero(f & F_DETAIL)
        if len(det):
            slots = self.didx[regions[det]]
            out[det] = np.any(self._pool.meta[slots] & _META_OF[F_ASSIGNED], axis=1)
        return out

    def _range_bits(self, pfn: int, npages: int, bit: int) -> np.ndarray:
        """Per-region any(bit) over the pages of ``[pfn, pfn+npages)``; regions r0..r1."""
        r0, r1, off0, off1 = region_span(pfn, npages)
        regions = np.arange(r0, r1 + 1)
        f = self.flags[regions]
        out = (f & bit) != 0
        det = np.flatnonzero(f & F_DETAIL)
        for i in det:   # at most the regions that hold 4K detail
            r = r0 + int(i)
            lo = off0 if r == r0 else 0
            hi = off1 if r == r1 else PAGES_PER_2M
            out[i] = bool(np.any(self._pool.meta[self.didx[r], lo:hi] & _META_OF[bit]))
        return out

    # ================================================================ RMPUPDATE
    def _codes_4k(self, r: int, lo: int, hi: int, assigned: bool) -> np.ndarray:
        """Per-page RMPUPDATE code for 4K updates of pages [lo, hi) of region ``r``."""
        f = int(self.flags[r])
        if f & F_2M:
            imm = np.full(hi - lo, bool(f & F_IMMUTABLE))
        else:
            imm = (self._expand(r)[0][lo:hi] & F_IMMUTABLE) != 0
        inuse = np.isin(np.arange(lo, hi) + r * PAGES_PER_2M, list(self.in_use))
        overlap = bool(f & F_2M and f & F_ASSIGNED)
        codes = np.where(overlap, self.rules.overlap_4k_in_2m, 0)
        codes = np.where(inuse, RMPUPDATE_FAIL_INUSE, codes)
        return np.where(imm, self.rules.immutable_update, codes)

    def _code_2m(self, r: int) -> int:
        """RMPUPDATE code for a 2M update of region ``r``."""
        f = int(self.flags[r])
        flags = None if f & F_2M else self._expand(r)[0]
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
        if not assigned and asid:
            return self.rules.shared_with_asid, pfn
        r0, r1, off0, off1 = region_span(pfn, npages)
        if r0 == r1 and not self.in_use and not self.flags[r0] & F_DETAIL:
            # one region held as a single entry: the rules on scalars
            f = int(self.flags[r0])
            if f & F_IMMUTABLE:
                return self.rules.immutable_update, pfn
            if size2m and not f & F_2M and f & F_ASSIGNED:
                return self.rules.overlap_2m_over_4k, pfn
            if not size2m and f & F_2M and f & F_ASSIGNED:
                return self.rules.overlap_4k_in_2m, pfn
            return 0, -1
        if r0 == r1 and not self.in_use and not size2m:
            # 4K updates inside one region held entry by entry: only Immutable can fail
            imm = self._pool.meta[self.didx[r0], off0:off1] & _META_OF[F_IMMUTABLE]
            if imm.any():
                return self.rules.immutable_update, pfn + int(np.argmax(imm != 0))
            return 0, -1
        regions = np.arange(r0, r1 + 1)
        f = self.flags[regions]
        # cheap screen over all regions: which might fail?
        suspect = self._range_bits(pfn, npages, F_IMMUTABLE)
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
        """RMPUPDATE: write a 4K or 2M entry [LX ``__rmpupdate``; APM2 15.36.3/5/6].

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
        pfn, npages, size2m, assigned, immutable, asid, gpa = self._rmpupdate_args(
            pfn, assigned, pagesize, immutable, asid, gpa, npages)
        code, bad = self.check_rmpupdate(pfn, npages, assigned=assigned, size2m=size2m, asid=asid)
        self.last_failed_pfn = bad
        if code:
            return code
        self._apply_rmpupdate(pfn, npages, assigned, size2m, immutable, asid, gpa)
        self.ledger.record("rmpupdate", rmpupdate=npages // PAGES_PER_2M if size2m else npages)
        return 0

    def _rmpupdate_args(self, pfn, assigned, pagesize, immutable, asid, gpa, npages):
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

    def _apply_rmpupdate(self, pfn, npages, assigned, size2m, immutable, asid, gpa) -> None:
        bits = (F_ASSIGNED if assigned else 0) | (F_IMMUTABLE if immutable else 0)
        gfn0 = gpa >> 12
        linear = assigned
        r0, r1, off0, off1 = region_span(pfn, npages)
        self._drop_perms(pfn, npages)
        full_lo = r0 if off0 == 0 else r0 + 1
        full_hi = r1 if off1 == PAGES_PER_2M else r1 - 1
        if full_hi >= full_lo:
            regions = slice(full_lo, full_hi + 1)
            if linear and full_hi > full_lo:
                gfns = np.uint64(gfn0 + full_lo * PAGES_PER_2M - pfn) + \
                    np.arange(full_hi - full_lo + 1, dtype=np.uint64) * np.uint64(PAGES_PER_2M)
            else:
                gfns = gfn0 + (full_lo * PAGES_PER_2M - pfn if linear else 0)
            self._set_uniform(regions, bits, asid, gfns, linear, size2m)
        for r in {r0, r1}:
            lo = off0 if r == r0 else 0
            hi = off1 if r == r1 else PAGES_PER_2M
            if lo == 0 and hi == PAGES_PER_2M:
                continue
            first = gfn0 + (r * PAGES_PER_2M + lo - pfn if linear else 0)
            self._write_4k(r, lo, hi, bits, asid, first, linear=linear)

    def _write_4k(self, r, lo, hi, bits, asid, gfn_first, *, linear) -> None:
        """4K entries [lo, hi) of region r := bits/asid/gfn (a 2M *unassigned* entry there
        first becomes 512 4K entries: see :attr:`RmpRules.overlap_4k_in_2m`)."""
        if self.flags[r] & F_DETAIL:
            # already held entry by entry: write the slice in place; the whole-region path
            # below only when the region may have become uniform (compressed again)
            s = self.didx[r]
            meta = self._pool.meta[s]
            meta[lo:hi] = int(_flags_to_meta(np.uint8(bits))) | asid
            g = np.uint64(gfn_first) + (np.arange(hi - lo, dtype=np.uint64) if linear else np.uint64(0))
            self._pool.gfn_lo[s, lo:hi] = (g & np.uint64(0xFFFFFFFF)).astype(np.uint32)
            self._pool.gfn_hi[s, lo:hi] = (g >> np.uint64(32)).astype(np.uint8)
            if meta[0] == meta[-1] and np.all(meta == meta[0]):
                self._store(r, *self._expand(r))
            return
        if self.flags[r] & F_2M:
            self._smash_region(r)
        flags, asids, gfn = self._expand(r)
        flags[lo:hi] = bits
        asids[lo:hi] = asid
        gfn[lo:hi] = np.uint64(gfn_first) + (np.arange(hi - lo, dtype=np.uint64) if linear else np.uint64(0))
        self._store(r, flags, asids, gfn)

    # ================================================================ VMPL masks
    def _drop_perms(self, pfn: int, npages: int) -> None:
        if self._perms:
            for k in [k for k in self._perms if pfn <= k < pfn + npages]:
                del self._perms[k]

    # ================================================================ PSMASH
    def _smash_region(self, r: int) -> None:
        """512 4K entries with consecutive GPAs, all other fields copied [APM2 15.36.11]."""
        f = int(self.flags[r])
        self.flags[r] = (f & ~F_2M & 0xFF) | F_LINEAR
        key = r * PAGES_PER_2M
        if key in self._perms:
            p = self._perms.pop(key)
            for i in range(PAGES_PER_2M):
                self._perms[key + i] = p

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
        f = int(self.flags[r])
        if not f & F_2M:
            return self.rules.psmash_not_2m
        if f & F_IMMUTABLE:
            return self.rules.psmash_immutable
        if any(pfn <= p < pfn + PAGES_PER_2M for p in self.in_use):
            return PSMASH_FAIL_INUSE
        self._smash_region(r)
        self.ledger.record("psmash", psmash=1)
        return 0

    # ================================================================ guest instructions
    def _guest_entry_checks(self, pfn, size2m, asid, gpa, instr) -> tuple:
        """#NPF conditions shared by PVALIDATE and RMPADJUST, in [VER]'s order: the entry must be
        mutable, assigned, owned by ``asid`` and mapped at ``gpa``; a 4K request on a 2M entry
        is a size mismatch #NPF (PFERR_GUEST_SIZEM) [APM2 Table 15-40]."""
        bits, e_asid, e_gfn, is2m = self._entry(pfn)
        want_gfn = gpa >> 12
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
            why = f"entry maps gpa {e_gfn << 12:#x}, not {gpa:#x}"
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
        r, off = divmod(pfn, PAGES_PER_2M)
        if is2m:
            self.flags[r] = (int(self.flags[r]) | bit) if value else (int(self.flags[r]) & ~bit & 0xFF)
            return
        flags, asids, gfn = self._expand(r)
        flags[off] = (int(flags[off]) | bit) if value else (int(flags[off]) & ~bit & 0xFF)
        self._store(r, flags, asids, gfn)

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
        r = np.arange(pfn // PAGES_PER_2M, pfn // PAGES_PER_2M + nregions)
        f = self.flags[r]
        want = np.uint64(gpa >> 12) + np.arange(nregions, dtype=np.uint64) * np.uint64(PAGES_PER_2M)
        ok = (np.all((f & (F_2M | F_ASSIGNED | F_IMMUTABLE | F_VALIDATED | F_DETAIL)) == (F_2M | F_ASSIGNED))
              and np.all(self.asid[r] == asid) and np.all(self._gfn(r) == want))
        if not ok:
            return [self.pvalidate(pfn + i * PAGES_PER_2M, pagesize=PAGE_2M, validate=True, asid=asid,
                                   gpa=gpa + i * PAGE_2M) for i in range(nregions)]
        self.flags[r] = f | np.uint8(F_VALIDATED)
        self.ledger.record("pvalidate", pvalidate=nregions)
        return [0] * nregions

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
        cur = self._perms.get(pfn, (0, 0, 0))
        own = VMPL_ALL if vmpl == 0 else cur[vmpl - 1]
        if perms & ~own:
            return RMPADJUST_FAIL_PERMISSION
        if vmsa and vmpl != 0:
            return RMPADJUST_FAIL_PERMISSION
        new = list(cur)
        new[target_vmpl - 1] = perms
        if any(new):
            self._perms[pfn] = tuple(new)
        else:
            self._perms.pop(pfn, None)
        self._set_bit(pfn, is2m, F_VMSA, vmsa)
        self.ledger.record("rmpadjust", rmpadjust=1)
        return 0

    def firmware_set(self, pfn, npages=1, *, validated=None, immutable=None, vmsa=None) -> None:
        """A state change made by the SEV firmware (the PSP), which immutability does not stop:
        e.g. SNP_LAUNCH_UPDATE / SNP_LAUNCH_FINISH moving launch pages Pre-Guest -> Guest-Valid
        (``rmp_entry_get_state`` states [FW]). Only 4K entries; not a host instruction."""
        pfn, npages = check_pfn_range(pfn, npages, self.nr_pages)
        r0, r1, off0, off1 = region_span(pfn, npages)
        for r in range(r0, r1 + 1):
            if self.flags[r] & F_2M:
                raise ValueError(f"pfn: firmware_set works on 4K entries; region {r} is a 2M entry")
            lo = off0 if r == r0 else 0
            hi = off1 if r == r1 else PAGES_PER_2M
            flags, asids, gfn = self._expand(r)
            for bit, value in ((F_VALIDATED, validated), (F_IMMUTABLE, immutable), (F_VMSA, vmsa)):
                if value is not None:
                    flags[lo:hi] = (flags[lo:hi] | np.uint8(bit)) if value else (flags[lo:hi] & np.uint8(~bit & 0xFF))
            self._store(r, flags, asids, gfn)

    def mark_in_use(self, pfn, in_use: bool = True) -> None:
        """VMRUN marks the VMCB, VMSA and AVIC pages in use until #VMEXIT [APM2 15.36.12]."""
        pfn = self._check_pfn(pfn)
        (self.in_use.add if in_use else self.in_use.discard)(pfn)
